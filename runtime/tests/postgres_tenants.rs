//! Conjoined tenancy on PostgreSQL (issue 15, part 2): tenants share a schema, and row-level
//! security, forced on the events and snapshots, keeps each tenant's rows to its own sessions.
//! Every case runs as an application role that owns nothing and is no superuser (a superuser
//! bypasses row-level security), in a schema of its own.

use std::time::Duration;

use factum::feed::Subscription;
use factum::projection::{ProjectionRunner, RunnerState};
use factum::store::{FeedQuery, PostgresStore, Tenancy};
use factum::testing::postgres::LeastPrivilege;
use factum::{
    CommandContext, Envelope, Error, EventStore, ExecuteError, ExpectedVersion, FeedPosition,
    NewEvent, Repository, Tx,
};

#[path = "support/tenant_domain.rs"]
mod tenant_domain;

use tenant_domain::{
    Account, Credit, Deposit, Deposited, Ledger, Opened, Registered, Welcome, deposit,
};

/// The schema's roles, and the stores of two tenants and of none, as the application role.
struct Tenants {
    roles: LeastPrivilege,
    acme: PostgresStore,
    globex: PostgresStore,
    none: PostgresStore,
}

/// Acme's three deposits on `acme/a-1`, Globex's two on `globex/a-1`, one without a tenant.
async fn tenants() -> Tenants {
    let roles = LeastPrivilege::new().await.expect("roles and a schema");
    let none = roles.application().clone();
    let acme = none.for_tenant("acme").await.unwrap();
    let globex = none.for_tenant("globex").await.unwrap();
    assert_eq!(acme.tenancy(), &Tenancy::Tenant("acme".to_owned()));
    for cents in [1, 2, 3] {
        acme.append(
            "acme/a-1",
            "Account",
            ExpectedVersion::Any,
            vec![deposit(cents)],
        )
        .await
        .unwrap();
    }
    for cents in [10, 20] {
        globex
            .append(
                "globex/a-1",
                "Account",
                ExpectedVersion::Any,
                vec![deposit(cents)],
            )
            .await
            .unwrap();
    }
    none.append(
        "plain-1",
        "Account",
        ExpectedVersion::NoStream,
        vec![deposit(100)],
    )
    .await
    .unwrap();
    Tenants {
        roles,
        acme,
        globex,
        none,
    }
}

/// The feed as `store` reads it, once it holds `count` events: the feed holds back events
/// while older transactions of the cluster run (other tests'), and never skips one.
async fn feed(store: &PostgresStore, count: usize) -> Vec<(String, Option<String>)> {
    let began = std::time::Instant::now();
    loop {
        let events: Vec<_> = store
            .read_feed(&FeedQuery::from_start())
            .await
            .unwrap()
            .events
            .into_iter()
            .map(|event| (event.stream_id, event.tenant))
            .collect();
        if events.len() >= count || began.elapsed() > Duration::from_secs(10) {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Catches the ledger up until it holds `cents` (the feed holds back events while other
/// tests' transactions run), and no more.
async fn catch_up(ledger: &mut ProjectionRunner<PostgresStore, Ledger>, cents: i64) {
    let began = std::time::Instant::now();
    while ledger.projection().cents < cents && began.elapsed() < Duration::from_secs(10) {
        ledger.catch_up().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ledger.projection().cents, cents);
}

/// A tenant reads, follows, loads and projects its own events only, and cannot append to
/// another tenant's stream; a store without a tenant sees none of theirs.
#[tokio::test]
async fn each_tenant_reads_follows_loads_and_projects_only_its_own_events() {
    let Tenants {
        roles: _roles,
        acme,
        globex,
        none,
    } = tenants().await;
    let acme_only = vec![("acme/a-1".to_owned(), Some("acme".to_owned())); 3];
    assert_eq!(feed(&acme, 3).await, acme_only);
    assert_eq!(
        feed(&globex, 2).await,
        vec![("globex/a-1".to_owned(), Some("globex".to_owned())); 2]
    );
    assert_eq!(feed(&none, 1).await, [("plain-1".to_owned(), None)]);

    // Streams and loads: another tenant's stream is empty, as if it did not exist.
    assert!(acme.read_stream("globex/a-1", ..).await.unwrap().is_empty());
    assert_eq!(acme.stream_version("globex/a-1").await.unwrap(), 0);
    let read = acme.read_stream("acme/a-1", ..).await.unwrap();
    assert_eq!(read.len(), 3);
    assert!(read.iter().all(|e| e.tenant.as_deref() == Some("acme")));
    let accounts = Repository::<Account, _>::new(acme.clone());
    assert_eq!(accounts.load("acme/a-1").await.unwrap().state.cents, 6);
    let theirs = accounts.load("globex/a-1").await.unwrap();
    assert_eq!((theirs.version, theirs.state.cents), (0, 0));
    let executed = accounts.execute("acme/a-1", Deposit(4)).await.unwrap();
    assert_eq!(executed[0].tenant.as_deref(), Some("acme"));

    // A command context naming a tenant: executed only through that tenant's repository. A
    // command caused by an event is for the event's tenant.
    let for_globex = CommandContext::new().tenant("globex");
    for (repository, store) in [
        (&accounts, Some("acme")),
        (&Repository::<Account, _>::new(none.clone()), None),
    ] {
        let refused = repository
            .execute_with("globex/a-1", Deposit(666), &for_globex)
            .await
            .unwrap_err();
        assert!(
            matches!(
                &refused,
                ExecuteError::Store(Error::TenantMismatch { requested, store: s })
                    if requested == "globex" && s.as_deref() == store
            ),
            "{refused:?}"
        );
    }
    let caused = CommandContext::caused_by(&executed[0]);
    assert_eq!(caused.tenant.as_deref(), Some("acme"));
    let refused = Repository::<Account, _>::new(globex.clone())
        .execute_with("globex/a-1", Deposit(666), &caused)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("tenant \"acme\""), "{refused}");
    assert_eq!(globex.read_stream("globex/a-1", ..).await.unwrap().len(), 2);

    // Appending to another tenant's stream is refused, whatever the expectation; theirs stays.
    for expected in [ExpectedVersion::Any, ExpectedVersion::NoStream] {
        let refused = acme
            .append("globex/a-1", "Account", expected, vec![deposit(666)])
            .await
            .unwrap_err();
        assert!(
            matches!(refused, Error::StreamOfAnotherTenant { .. }),
            "{expected:?}: {refused:?}"
        );
    }
    let refused = accounts
        .execute("globex/a-1", Deposit(666))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("another tenant"), "{refused}");
    assert_eq!(globex.read_stream("globex/a-1", ..).await.unwrap().len(), 2);

    // Following the feed: a subscription delivers Acme's events only, the new one included.
    let mut follow = Subscription::new(acme.clone(), FeedPosition::START);
    let mut followed = Vec::new();
    while followed.len() < 4 {
        let event = tokio::time::timeout(Duration::from_secs(10), follow.next())
            .await
            .expect("Acme's four events")
            .unwrap();
        followed.push(event.stream_id);
    }
    globex
        .append(
            "globex/a-2",
            "Account",
            ExpectedVersion::Any,
            vec![deposit(30)],
        )
        .await
        .unwrap();
    acme.append(
        "acme/a-2",
        "Account",
        ExpectedVersion::Any,
        vec![deposit(5)],
    )
    .await
    .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), follow.next())
        .await
        .expect("Acme's next event")
        .unwrap();
    assert_eq!(
        next.stream_id, "acme/a-2",
        "Globex's event is never delivered"
    );

    // Projecting: a runner on Acme's store handles Acme's events only.
    let mut ledger = ProjectionRunner::new(acme.clone(), Ledger::default());
    catch_up(&mut ledger, 1 + 2 + 3 + 4 + 5).await;
    assert!(
        ledger
            .projection()
            .streams
            .iter()
            .all(|s| s.starts_with("acme/")),
        "{:?}",
        ledger.projection().streams
    );
}

/// A store across tenants reads every tenant's events, each with its tenant, as a
/// cross-tenant projection does; it appends nothing.
#[tokio::test]
async fn a_store_across_tenants_sees_them_all_and_appends_nothing() {
    let tenants = tenants().await;
    let all = tenants.none.across_tenants();
    assert_eq!(all.tenancy(), &Tenancy::All);
    let mut seen = feed(&all, 6).await;
    seen.sort();
    assert_eq!(
        seen,
        [
            ("acme/a-1".to_owned(), Some("acme".to_owned())),
            ("acme/a-1".to_owned(), Some("acme".to_owned())),
            ("acme/a-1".to_owned(), Some("acme".to_owned())),
            ("globex/a-1".to_owned(), Some("globex".to_owned())),
            ("globex/a-1".to_owned(), Some("globex".to_owned())),
            ("plain-1".to_owned(), None),
        ]
    );
    let mut ledger = ProjectionRunner::new(all.clone(), Ledger::default());
    catch_up(&mut ledger, 1 + 2 + 3 + 10 + 20 + 100).await;
    let refused = all
        .append(
            "acme/a-1",
            "Account",
            ExpectedVersion::Any,
            vec![deposit(1)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::TenantRequired { .. }),
        "{refused:?}"
    );
    drop(tenants.acme);
    drop(tenants.globex);
}

/// Raw SQL as the application role: a session sees the rows of the tenant it names and no
/// other, writes none for another tenant, and cannot turn row-level security off; nor does the
/// schema's owner see a tenant's rows without naming it (the security is forced).
#[tokio::test]
async fn raw_sql_as_the_application_role_sees_only_the_tenant_it_names() {
    let tenants = tenants().await;
    let schema = tenants.none.schema().to_owned();
    let app = tenants.none.pool();
    let count = |sql: &'static str| {
        let schema = schema.clone();
        async move {
            let mut tx = app.begin().await.unwrap();
            for statement in sql.split(';').filter(|s| !s.trim().is_empty()) {
                let statement = statement.replace("{schema}", &schema);
                if statement.trim_start().starts_with("SELECT") {
                    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(statement))
                        .fetch_one(&mut *tx)
                        .await
                        .unwrap();
                    return n;
                }
                sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            unreachable!("a SELECT ends each check")
        }
    };
    assert_eq!(count("SELECT count(*) FROM {schema}.events").await, 1);
    assert_eq!(
        count("SET LOCAL factum.tenant = 'acme'; SELECT count(*) FROM {schema}.events").await,
        3
    );
    assert_eq!(
        count(
            "SET LOCAL factum.tenant = 'acme';
             SELECT count(*) FROM {schema}.events WHERE stream_id LIKE 'globex/%'"
        )
        .await,
        0
    );
    assert_eq!(
        count("SET LOCAL factum.tenant = 'nobody'; SELECT count(*) FROM {schema}.events").await,
        0
    );
    // Snapshots too: Acme's aggregate state is Acme's.
    let accounts = Repository::<Account, _>::new(tenants.acme.clone()).snapshot_every(1);
    accounts.execute("acme/a-1", Deposit(4)).await.unwrap();
    assert_eq!(accounts.load("acme/a-1").await.unwrap().state.cents, 10);
    assert_eq!(
        count("SET LOCAL factum.tenant = 'acme'; SELECT count(*) FROM {schema}.snapshots").await,
        1
    );
    assert_eq!(
        count("SET LOCAL factum.tenant = 'globex'; SELECT count(*) FROM {schema}.snapshots").await,
        0
    );
    assert_eq!(count("SELECT count(*) FROM {schema}.snapshots").await, 0);

    let refused = |statement: String| async move {
        let mut tx = app.begin().await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe("SET LOCAL factum.tenant = 'acme'"))
            .execute(&mut *tx)
            .await
            .unwrap();
        let error = sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))
            .execute(&mut *tx)
            .await
            .expect_err(&statement);
        error
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned())
    };
    // A row for another tenant: refused by the policy's check (42501).
    let forged = format!(
        "INSERT INTO {schema}.events (stream_id, stream_version, aggregate_type, event_id,
             event_type, schema_version, payload, metadata, correlation_id, causation_id, tenant)
         VALUES ('globex/a-9', 1, 'Account', gen_random_uuid(), 'Deposited', 1, '{{}}', '{{}}',
                 gen_random_uuid(), gen_random_uuid(), 'globex')"
    );
    assert_eq!(refused(forged).await.as_deref(), Some("42501"));
    for statement in [
        format!("ALTER TABLE {schema}.events DISABLE ROW LEVEL SECURITY"),
        format!("ALTER TABLE {schema}.events NO FORCE ROW LEVEL SECURITY"),
        format!("DROP POLICY tenant_rows ON {schema}.events"),
    ] {
        assert_eq!(
            refused(statement.clone()).await.as_deref(),
            Some("42501"),
            "{statement}"
        );
    }

    // The owner, naming no tenant, sees none of theirs.
    let owner: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {schema}.events"
    )))
    .fetch_one(tenants.roles.owner().pool())
    .await
    .unwrap();
    assert_eq!(owner, 1);
}

/// A tenant's store is refused where PostgreSQL would not keep tenants apart: a superuser's
/// connection (row-level security does not bind it), and a name that is no plain identifier.
#[tokio::test]
async fn a_tenant_store_is_refused_where_the_database_would_not_isolate_it() {
    let tenants = tenants().await;
    let superuser = PostgresStore::with_schema(
        sqlx::PgPool::connect(&factum::testing::postgres::database_url())
            .await
            .unwrap(),
        tenants.none.schema(),
    )
    .unwrap();
    let refused = superuser.for_tenant("acme").await.unwrap_err();
    assert!(
        matches!(&refused, Error::InvalidConfig(why) if why.contains("superuser")),
        "{refused:?}"
    );
    for bad in ["", "a b", "acme'; --", &"x".repeat(64)] {
        let refused = tenants.none.for_tenant(bad).await.unwrap_err();
        assert!(
            matches!(refused, Error::InvalidConfig(_)),
            "{bad:?}: {refused:?}"
        );
    }
}

/// Importing needs a role that row-level security does not bind: the schema forces it on its
/// owner too, and PostgreSQL allows no `COPY FROM` under it; the refusal says so.
#[tokio::test]
async fn an_import_by_a_role_bound_by_row_level_security_says_which_role_it_needs() {
    let roles = LeastPrivilege::new().await.expect("roles and a schema");
    let refused = roles.owner().import(&b""[..], |_| {}).await.unwrap_err();
    assert!(
        matches!(&refused, Error::InvalidConfig(why) if why.contains("BYPASSRLS")),
        "{refused:?}"
    );
}

/// An export of a store across tenants names each event's tenant, and an import (by a role
/// row-level security does not bind) keeps it: the copy holds the same events of the same
/// tenants, in the same order.
#[tokio::test]
async fn an_export_across_tenants_imports_with_each_events_tenant() {
    let tenants = tenants().await;
    let all = tenants.none.across_tenants();
    let source = feed_events(&all, 6).await;
    let mut export = Vec::new();
    factum::store::transfer::export(&all, None, &mut export, |_| {})
        .await
        .unwrap();
    let copy = factum::testing::postgres::TemporaryStore::new()
        .await
        .unwrap();
    assert_eq!(copy.import(&export[..], |_| {}).await.unwrap(), 6);
    let copied = feed_events(&copy, 6).await;
    let identity = |events: &[factum::RecordedEvent]| {
        events
            .iter()
            .map(|e| (e.event_id, e.stream_id.clone(), e.tenant.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(identity(&copied), identity(&source));
    let tenant_of: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT stream_id, tenant FROM \"{}\".events ORDER BY position",
        copy.schema()
    )))
    .fetch_all(copy.pool())
    .await
    .unwrap();
    assert_eq!(
        tenant_of
            .iter()
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>(),
        ["acme", "acme", "acme", "globex", "globex", ""]
    );
}

/// The runners' bookkeeping is each tenant's: a projection and a saga of one name run by two
/// tenants at once keep their own checkpoints, leases and instances (an instance id both
/// tenants use is two instances), and raw SQL of one tenant sees none of the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_of_one_name_keep_each_tenants_bookkeeping_apart() {
    let tenants = tenants().await;
    for (store, cents) in [(&tenants.acme, 7), (&tenants.globex, 70)] {
        let tenant = store.tenant().unwrap().to_owned();
        store
            .append(
                &format!("{tenant}/welcome"),
                "Account",
                ExpectedVersion::NoStream,
                vec![
                    NewEvent::of(&Opened {
                        account: "a-1".into(),
                        cents,
                    })
                    .unwrap(),
                ],
            )
            .await
            .unwrap();
    }

    // Both tenants' "ledger" runners run at once: each holds its own lease.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut runs = Vec::new();
    for store in [&tenants.acme, &tenants.globex] {
        let runner = ProjectionRunner::new(store.clone(), Ledger::default());
        let mut handle = runner.handle();
        let mut stopped = stopped.clone();
        runs.push(tokio::spawn(runner.run(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })));
        let state = tokio::time::timeout(
            Duration::from_secs(10),
            handle.wait_for(|state| !matches!(state, RunnerState::NotStarted)),
        )
        .await
        .expect("the runner starts")
        .unwrap();
        assert_eq!(
            state,
            RunnerState::Running,
            "not standing by for the other tenant's"
        );
    }
    let began = std::time::Instant::now();
    let expected = [1 + 2 + 3, 10 + 20];
    loop {
        let mut done = true;
        for (store, cents) in [&tenants.acme, &tenants.globex].into_iter().zip(expected) {
            let status = ProjectionRunner::new(store.clone(), Ledger::default())
                .status()
                .await
                .unwrap();
            done &= status.event_lag == 0 && cents > 0;
        }
        if done || began.elapsed() > Duration::from_secs(20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send_replace(true);
    let mut ledgers = Vec::new();
    for run in runs {
        ledgers.push(run.await.unwrap().unwrap().cents);
    }
    assert_eq!(ledgers, expected);

    // The saga: instance "a-1" twice, one per tenant, each with its own state. Its command
    // goes to its tenant's accounts; routed to another tenant's repository, it is refused.
    let accounts = |store: &PostgresStore| Repository::<Account, _>::new(store.clone());
    for (store, cents, routed_to) in [
        (&tenants.acme, 7, &tenants.acme),
        (&tenants.globex, 70, &tenants.acme),
    ] {
        let bus = factum::saga::CommandBus::new().route::<Credit>(&accounts(routed_to));
        let mut welcome = factum::saga::SagaRunner::<_, Welcome>::new(store.clone(), bus);
        let settled = welcome.settle().await.unwrap();
        assert_eq!((settled.events, settled.commands), (1, 1));
        let instance = welcome.instance("a-1").await.unwrap().unwrap();
        assert_eq!(instance.state.cents, cents);
        let status = welcome.status().await.unwrap();
        let misrouted = store.tenant() != routed_to.tenant();
        assert_eq!(status.rejected_commands, u64::from(misrouted), "{status:?}");
    }
    // Acme's bonus landed in Acme's stream; Globex's was refused (a refusal the saga's
    // `#[rejected]` handler sees), stored nowhere.
    assert_eq!(tenants.acme.stream_version("bonus/a-1").await.unwrap(), 1);
    assert_eq!(tenants.globex.stream_version("bonus/a-1").await.unwrap(), 0);
    let mut tx = tenants.none.pool().begin().await.unwrap();
    sqlx::query("SELECT set_config('factum.tenant', 'globex', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let error: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT error FROM {}.saga_outbox",
        tenants.none.schema()
    )))
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert!(error.contains("tenant \"globex\""), "{error}");
    drop(tx);

    // Raw SQL as the application role: each tenant's rows only.
    let schema = tenants.none.schema().to_owned();
    // Per tenant: one saga instance; two checkpoints (the ledger's, the saga's event side's).
    // (Acme's bonus stream, written by its saga, is Acme's.)
    for (tenant, expected) in [("acme", [1, 2]), ("globex", [1, 2]), ("", [0, 0])] {
        let mut tx = tenants.none.pool().begin().await.unwrap();
        sqlx::query("SELECT set_config('factum.tenant', $1, true)")
            .bind(tenant)
            .execute(&mut *tx)
            .await
            .unwrap();
        for (table, expected) in ["sagas", "projection_checkpoints"]
            .into_iter()
            .zip(expected)
        {
            let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {schema}.{table}"
            )))
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            assert_eq!(rows, expected, "{table} as tenant {tenant:?}");
        }
    }
}

/// Data keys are each tenant's: two tenants' subjects of one id are two people, each with a
/// key of its own; forgetting one through its tenant's store leaves the other's data readable.
#[tokio::test]
async fn forgetting_a_subject_forgets_it_in_its_own_tenant_only() {
    let tenants = tenants().await;
    let provider = factum::pii::LocalKeyProvider::new([9; 32]);
    let keyed = tenants.none.clone().with_key_provider(provider);
    let acme = keyed.for_tenant("acme").await.unwrap();
    let globex = keyed.for_tenant("globex").await.unwrap();
    for (store, name) in [(&acme, "Ada of Acme"), (&globex, "Ada of Globex")] {
        let tenant = store.tenant().unwrap().to_owned();
        store
            .append(
                &format!("{tenant}/customer-c-1"),
                "Customer",
                ExpectedVersion::NoStream,
                vec![
                    NewEvent::of(&Registered {
                        customer: "c-1".into(),
                        name: name.into(),
                    })
                    .unwrap(),
                ],
            )
            .await
            .unwrap();
    }
    let name = |store: &PostgresStore| {
        let store = store.clone();
        async move {
            let tenant = store.tenant().unwrap().to_owned();
            let read = store
                .read_stream(&format!("{tenant}/customer-c-1"), ..)
                .await
                .unwrap();
            (
                read[0].event.decode::<Registered>().unwrap().name,
                read[0].shredded,
            )
        }
    };
    assert!(acme.forget("c-1").await.unwrap());
    assert_eq!(name(&acme).await, ("[erased]".to_owned(), true));
    assert_eq!(name(&globex).await, ("Ada of Globex".to_owned(), false));
    // Another process of Globex (no cache) reads it too; Globex's subject still has its key.
    let other = tenants
        .none
        .clone()
        .with_key_provider(factum::pii::LocalKeyProvider::new([9; 32]))
        .for_tenant("globex")
        .await
        .unwrap();
    assert_eq!(name(&other).await, ("Ada of Globex".to_owned(), false));
    assert!(globex.forget("c-1").await.unwrap());
    assert_eq!(name(&globex).await, ("[erased]".to_owned(), true));
}

/// A service's consumer of one name, fed into two tenants' stores, keeps each tenant's applied
/// stream versions and position apart (migration 0019): the same relayed events are applied
/// once per tenant, and again by neither.
#[tokio::test]
async fn a_consumer_of_one_name_applies_events_once_per_tenant() {
    use factum::consumer::{ProjectionTarget, Target as _};

    let tenants = tenants().await;
    let relayed = feed_events(&tenants.acme, 3).await;
    let mut targets = [&tenants.acme, &tenants.globex]
        .map(|store| ProjectionTarget::new(store.clone(), "shipping", Ledger::default()));
    for (target, position) in targets.iter_mut().zip([3, 30]) {
        assert_eq!(target.position().await.unwrap(), None);
        assert_eq!(target.apply(&relayed, Some(position)).await.unwrap(), 3);
        assert_eq!(target.apply(&relayed, Some(position)).await.unwrap(), 0);
        assert_eq!(target.position().await.unwrap(), Some(position));
        assert_eq!(target.projection().cents, 1 + 2 + 3);
    }
    // Each tenant's rows only, as its own sessions see them.
    for (tenant, positions) in [("acme", vec![3]), ("globex", vec![30]), ("", vec![])] {
        let mut tx = tenants.none.pool().begin().await.unwrap();
        sqlx::query("SELECT set_config('factum.tenant', $1, true)")
            .bind(tenant)
            .execute(&mut *tx)
            .await
            .unwrap();
        let seen: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT position FROM {}.consumer_positions",
            tenants.none.schema()
        )))
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        assert_eq!(seen, positions, "as tenant {tenant:?}");
    }
}

/// The first `count` events of `store`'s feed, once it holds them.
async fn feed_events(store: &PostgresStore, count: usize) -> Vec<factum::RecordedEvent> {
    let began = std::time::Instant::now();
    loop {
        let events = store
            .read_feed(&FeedQuery::from_start())
            .await
            .unwrap()
            .events;
        if events.len() >= count || began.elapsed() > Duration::from_secs(10) {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each deposit it handles, one row in a table of the schema, written in the batch's
/// transaction: a batch the restart rolled back leaves no row, so a row twice would be an event
/// applied twice.
#[derive(Debug)]
struct DepositRows {
    table: String,
}

#[factum::projection(name = "deposit_rows")]
impl DepositRows {
    #[handle]
    async fn deposited(
        &mut self,
        event: &Deposited,
        envelope: &Envelope,
        tx: &mut Tx<'_>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {} (event_id, stream_id, cents) VALUES ($1, $2, $3)",
            self.table
        )))
        .bind(envelope.event_id.to_string())
        .bind(envelope.stream_id.clone())
        .bind(event.cents)
        .execute(tx)
        .await?;
        Ok(())
    }
}

/// A tenant's projection runner rides out a restart of the server: its pool's and its lease's
/// new connections name the tenant again, and it resumes where its checkpoint stands, applying
/// each of the tenant's events once (its read model is written in its batches' transactions)
/// and none of another tenant's. On a throwaway cluster of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_runner_rides_out_a_server_restart() {
    let cluster = factum::testing::postgres::Cluster::start().await.unwrap();
    let roles = LeastPrivilege::on(&cluster.url()).await.unwrap();
    let table = format!("{}.deposit_rows", roles.owner().schema());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (event_id text NOT NULL, stream_id text NOT NULL, cents bigint NOT NULL);
         GRANT SELECT, INSERT ON {table} TO {app}",
        app = roles.application_role()
    )))
    .execute(roles.owner().pool())
    .await
    .unwrap();
    let acme = roles.application().for_tenant("acme").await.unwrap();
    let globex = roles.application().for_tenant("globex").await.unwrap();

    let runner = ProjectionRunner::new(
        acme.clone(),
        DepositRows {
            table: table.clone(),
        },
    )
    .poll_interval(Duration::from_millis(100));
    let handle = runner.handle();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(runner.run(async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    }));
    // Every state the runner goes through.
    let states = {
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let state = handle.state();
                if seen.last() != Some(&state) {
                    let stopped = matches!(state, RunnerState::Stopped { .. });
                    seen.push(state);
                    if stopped {
                        return seen;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    // Deposits of 1 cent to Acme and 100 to Globex, appended until each is stored (an append
    // the restart interrupts is retried: the same event id, so never stored twice).
    let append = |store: PostgresStore, stream: String, cents: i64| async move {
        let event = deposit(cents);
        let mut failures = 0_u32;
        loop {
            match store
                .append(
                    &stream,
                    "Account",
                    ExpectedVersion::Any,
                    vec![event.clone()],
                )
                .await
            {
                Ok(_) => return failures,
                Err(_) => {
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    };
    let mut failures = 0;
    for i in 0..40 {
        failures += append(acme.clone(), format!("acme/a-{}", i % 4), 1).await;
        failures += append(globex.clone(), format!("globex/a-{}", i % 4), 100).await;
        if i == 19 {
            // The server goes down and stays down until the runner has met the outage (its
            // next poll, at most 100 ms away, fails), so the retry is not left to timing.
            cluster.crash().await.unwrap();
            let retrying = tokio::time::timeout(
                Duration::from_secs(60),
                handle
                    .clone()
                    .wait_for(|state| matches!(state, RunnerState::Retrying { .. })),
            )
            .await;
            assert!(
                matches!(retrying, Ok(Ok(RunnerState::Retrying { .. }))),
                "the runner meets the outage: {:?}",
                handle.state()
            );
            cluster.resume().await.unwrap();
        }
    }
    eprintln!("appends retried across the restart: {failures}");

    // The runner applies Acme's 40 deposits, each once, and none of Globex's.
    let began = std::time::Instant::now();
    loop {
        let status = handle.status().await;
        if matches!(&status, Ok(status) if status.event_lag == 0)
            || began.elapsed() > Duration::from_secs(60)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Running again (a batch begun before the runner took its lease again after the restart
    // is fenced off by the lease token, and the runner retries once more before it runs).
    let running = tokio::time::timeout(
        Duration::from_secs(30),
        handle
            .clone()
            .wait_for(|state| *state == RunnerState::Running),
    )
    .await;
    assert!(
        matches!(running, Ok(Ok(RunnerState::Running))),
        "{:?}",
        handle.state()
    );
    stop.send_replace(true);
    run.await.unwrap().unwrap();
    let states = states.await.unwrap();
    eprintln!("the runner's states: {states:?}");
    assert!(
        states
            .iter()
            .any(|state| matches!(state, RunnerState::Retrying { .. })),
        "the restart reached the runner, which retried: {states:?}"
    );
    let (rows, events, cents, others): (i64, i64, i64, i64) =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), count(DISTINCT event_id), sum(cents)::bigint,
                    count(*) FILTER (WHERE stream_id NOT LIKE 'acme/%')
             FROM {table}"
        )))
        .fetch_one(roles.owner().pool())
        .await
        .unwrap();
    assert_eq!(
        (rows, events, cents, others),
        (40, 40, 40, 0),
        "each of Acme's deposits once, none of Globex's"
    );
    // The restart really happened: the server's log shows it started twice.
    let log = cluster.log();
    assert!(
        log.matches("database system is ready to accept connections")
            .count()
            >= 2,
        "{log}"
    );
    drop(roles);
}
