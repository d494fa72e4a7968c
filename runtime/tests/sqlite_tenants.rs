//! Conjoined tenancy on SQLite (issue 15, part 2): tenants share a database file, and SQLite,
//! which has no row-level security, leaves keeping them apart to Factum's statements, each
//! bound to the store's tenant. These cases mirror `postgres_tenants.rs` through every Factum
//! API; raw SQL on the file sees every tenant's rows (the documented difference).

use std::time::Duration;

use factum::feed::Subscription;
use factum::projection::{ProjectionRunner, RunnerState};
use factum::store::{FeedQuery, SqliteStore, Tenancy};
use factum::{
    CommandContext, Error, EventStore, ExecuteError, ExpectedVersion, FeedPosition, NewEvent,
    Repository,
};

#[path = "support/tenant_domain.rs"]
mod tenant_domain;

use tenant_domain::{Account, Credit, Deposit, Ledger, Opened, Registered, Welcome, deposit};

/// The stores of two tenants and of none, on one in-memory database.
struct Tenants {
    acme: SqliteStore,
    globex: SqliteStore,
    none: SqliteStore,
}

/// Acme's three deposits on `acme/a-1`, Globex's two on `globex/a-1`, one without a tenant.
async fn tenants() -> Tenants {
    let none = SqliteStore::in_memory().await.unwrap();
    none.migrate().await.unwrap();
    let acme = none.for_tenant("acme").await.unwrap();
    let globex = none.for_tenant("globex").await.unwrap();
    assert_eq!(acme.tenancy(), &Tenancy::Tenant("acme".to_owned()));
    assert_eq!(none.tenancy(), &Tenancy::None);
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
    Tenants { acme, globex, none }
}

/// The feed as `store` reads it: each event's stream and tenant.
async fn feed(store: &SqliteStore) -> Vec<(String, Option<String>)> {
    store
        .read_feed(&FeedQuery::from_start())
        .await
        .unwrap()
        .events
        .into_iter()
        .map(|event| (event.stream_id, event.tenant))
        .collect()
}

/// A tenant reads, follows, loads and projects its own events only, and cannot append to
/// another tenant's stream; a store without a tenant sees none of theirs.
#[tokio::test]
async fn each_tenant_reads_follows_loads_and_projects_only_its_own_events() {
    let Tenants { acme, globex, none } = tenants().await;
    assert_eq!(
        feed(&acme).await,
        vec![("acme/a-1".to_owned(), Some("acme".to_owned())); 3]
    );
    assert_eq!(
        feed(&globex).await,
        vec![("globex/a-1".to_owned(), Some("globex".to_owned())); 2]
    );
    assert_eq!(feed(&none).await, [("plain-1".to_owned(), None)]);
    // The feed's next position is past every tenant's events: a tenant never rereads them.
    let batch = acme.read_feed(&FeedQuery::from_start()).await.unwrap();
    assert_eq!(batch.next.position, 6);

    // Streams, single events and loads: another tenant's are as if they did not exist.
    assert!(acme.read_stream("globex/a-1", ..).await.unwrap().is_empty());
    assert_eq!(acme.stream_version("globex/a-1").await.unwrap(), 0);
    let theirs = globex.read_stream("globex/a-1", ..).await.unwrap();
    assert!(acme.read_event(theirs[0].event_id).await.unwrap().is_none());
    assert!(
        globex
            .read_event(theirs[0].event_id)
            .await
            .unwrap()
            .is_some()
    );
    let read = acme.read_stream("acme/a-1", ..).await.unwrap();
    assert_eq!(read.len(), 3);
    assert!(read.iter().all(|e| e.tenant.as_deref() == Some("acme")));
    let accounts = Repository::<Account, _>::new(acme.clone());
    assert_eq!(accounts.load("acme/a-1").await.unwrap().state.cents, 6);
    let loaded = accounts.load("globex/a-1").await.unwrap();
    assert_eq!((loaded.version, loaded.state.cents), (0, 0));
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

    // Appending to another tenant's stream is refused, whatever the expectation, alone or in
    // a group, one event or several; theirs stays as it was.
    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(2),
    ] {
        for events in [vec![deposit(666)], vec![deposit(666), deposit(667)]] {
            let refused = acme
                .append("globex/a-1", "Account", expected, events)
                .await
                .unwrap_err();
            assert!(
                matches!(refused, Error::StreamOfAnotherTenant { .. }),
                "{expected:?}: {refused:?}"
            );
        }
    }
    let refused = none
        .append(
            "acme/a-1",
            "Account",
            ExpectedVersion::Any,
            vec![deposit(1)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::StreamOfAnotherTenant { .. }),
        "{refused:?}"
    );
    let refused = accounts
        .execute("globex/a-1", Deposit(666))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("another tenant"), "{refused}");
    assert_eq!(globex.read_stream("globex/a-1", ..).await.unwrap().len(), 2);
    // Inside the caller's transaction too.
    let mut transaction = acme.begin().await.unwrap();
    let refused = acme
        .append_in(
            &mut transaction,
            "globex/a-1",
            "Account",
            ExpectedVersion::Any,
            vec![deposit(666)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::StreamOfAnotherTenant { .. }),
        "{refused:?}"
    );
    let appended = acme
        .append_in(
            &mut transaction,
            "acme/a-3",
            "Account",
            ExpectedVersion::NoStream,
            vec![deposit(0)],
        )
        .await
        .unwrap();
    assert_eq!(appended[0].tenant.as_deref(), Some("acme"));
    transaction.commit().await.unwrap();
    assert_eq!(globex.stream_version("acme/a-3").await.unwrap(), 0);

    // Following the feed: a subscription delivers Acme's events only, the new one included.
    let mut follow = Subscription::new(acme.clone(), FeedPosition::START);
    let mut followed = Vec::new();
    while followed.len() < 5 {
        let event = tokio::time::timeout(Duration::from_secs(10), follow.next())
            .await
            .expect("Acme's five events")
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

    // Projecting: a runner on Acme's store handles Acme's events only, and its status counts
    // Acme's events only.
    let mut ledger = ProjectionRunner::new(acme.clone(), Ledger::default());
    assert_eq!(ledger.status().await.unwrap().event_lag, 6);
    ledger.catch_up().await.unwrap();
    assert_eq!(ledger.projection().cents, 1 + 2 + 3 + 4 + 5);
    assert!(
        ledger
            .projection()
            .streams
            .iter()
            .all(|s| s.starts_with("acme/")),
        "{:?}",
        ledger.projection().streams
    );
    assert_eq!(ledger.status().await.unwrap().event_lag, 0);
}

/// A store across tenants reads every tenant's events, each with its tenant, as a
/// cross-tenant projection does; it appends nothing.
#[tokio::test]
async fn a_store_across_tenants_sees_them_all_and_appends_nothing() {
    let tenants = tenants().await;
    let all = tenants.none.across_tenants();
    assert_eq!(all.tenancy(), &Tenancy::All);
    assert_eq!(
        feed(&all).await,
        [
            ("acme/a-1".to_owned(), Some("acme".to_owned())),
            ("acme/a-1".to_owned(), Some("acme".to_owned())),
            ("acme/a-1".to_owned(), Some("acme".to_owned())),
            ("globex/a-1".to_owned(), Some("globex".to_owned())),
            ("globex/a-1".to_owned(), Some("globex".to_owned())),
            ("plain-1".to_owned(), None),
        ]
    );
    assert_eq!(all.read_stream("globex/a-1", ..).await.unwrap().len(), 2);
    let mut ledger = ProjectionRunner::new(all.clone(), Ledger::default());
    ledger.catch_up().await.unwrap();
    assert_eq!(ledger.projection().cents, 1 + 2 + 3 + 10 + 20 + 100);
    // A ledger of the same name without a tenant keeps its own checkpoint: it starts over and
    // sees the untenanted event only.
    let mut plain = ProjectionRunner::new(tenants.none.clone(), Ledger::default());
    plain.catch_up().await.unwrap();
    assert_eq!(plain.projection().cents, 100);
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
}

/// Snapshots are their stream's tenant's: another tenant neither reads one nor overwrites it.
/// The rows carry their tenant; SQLite itself does not stop raw SQL from reading them all.
#[tokio::test]
async fn snapshots_and_rows_are_each_tenants() {
    let tenants = tenants().await;
    let accounts = Repository::<Account, _>::new(tenants.acme.clone()).snapshot_every(1);
    accounts.execute("acme/a-1", Deposit(4)).await.unwrap();
    let snapshot = tenants
        .acme
        .load_snapshot("acme/a-1")
        .await
        .unwrap()
        .expect("Acme's snapshot");
    assert!(
        tenants
            .globex
            .load_snapshot("acme/a-1")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        tenants
            .none
            .load_snapshot("acme/a-1")
            .await
            .unwrap()
            .is_none()
    );
    // Globex saving a snapshot of Acme's stream changes nothing.
    let mut forged = snapshot.clone();
    forged.stream_version += 10;
    forged.state = factum::Payload::from_json(r#"{"cents":-1}"#.to_owned()).unwrap();
    tenants.globex.save_snapshot(forged).await.unwrap();
    let kept = tenants
        .acme
        .load_snapshot("acme/a-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.stream_version, snapshot.stream_version);
    assert_eq!(accounts.load("acme/a-1").await.unwrap().state.cents, 10);

    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT tenant, count(*) FROM events GROUP BY tenant ORDER BY tenant")
            .fetch_all(tenants.none.pool())
            .await
            .unwrap()
            .into_iter()
            .map(|(tenant, count): (String, i64)| (tenant, count.to_string()))
            .collect();
    assert_eq!(
        rows,
        [
            (String::new(), "1".to_owned()),
            ("acme".to_owned(), "4".to_owned()),
            ("globex".to_owned(), "2".to_owned()),
        ]
    );
    let snapshots: Vec<String> = sqlx::query_scalar("SELECT tenant FROM snapshots")
        .fetch_all(tenants.none.pool())
        .await
        .unwrap();
    assert_eq!(snapshots, ["acme"]);
}

/// A tenant's store is refused for a name that is no plain identifier, and on a database not
/// migrated to tenants.
#[tokio::test]
async fn a_tenant_store_is_refused_for_a_bad_name_or_an_unmigrated_database() {
    let tenants = tenants().await;
    for bad in ["", "a b", "acme'; --", "a/b", &"x".repeat(64)] {
        let refused = tenants.none.for_tenant(bad).await.unwrap_err();
        assert!(
            matches!(&refused, Error::InvalidConfig(why) if why.contains("name a tenant")),
            "{bad:?}: {refused:?}"
        );
    }
    let bare = SqliteStore::in_memory().await.unwrap();
    sqlx::raw_sql("CREATE TABLE events (position INTEGER PRIMARY KEY)")
        .execute(bare.pool())
        .await
        .unwrap();
    let refused = bare.for_tenant("acme").await.unwrap_err();
    assert!(
        matches!(&refused, Error::InvalidConfig(why) if why.contains("migrate()")),
        "{refused:?}"
    );
}

/// An export through a store across tenants names each event's tenant, and an import keeps
/// it: each tenant of the copy reads its own events, in the same order. Through a tenant's
/// store, events naming no tenant become that tenant's, and an event of another tenant is
/// refused (nothing is imported).
#[tokio::test]
async fn an_export_across_tenants_imports_with_each_events_tenant() {
    let tenants = tenants().await;
    let mut export = Vec::new();
    factum::store::transfer::export(&tenants.none.across_tenants(), None, &mut export, |_| {})
        .await
        .unwrap();
    let text = String::from_utf8(export.clone()).unwrap();
    assert_eq!(text.matches("\"tenant\":\"acme\"").count(), 3, "{text}");
    assert_eq!(text.matches("\"tenant\":\"globex\"").count(), 2, "{text}");

    let copy = SqliteStore::in_memory().await.unwrap();
    copy.migrate().await.unwrap();
    assert_eq!(
        copy.across_tenants()
            .import(&export[..], |_| {})
            .await
            .unwrap(),
        6
    );
    let acme = copy.for_tenant("acme").await.unwrap();
    let globex = copy.for_tenant("globex").await.unwrap();
    assert_eq!(feed(&acme).await, feed(&tenants.acme).await);
    assert_eq!(feed(&globex).await, feed(&tenants.globex).await);
    assert_eq!(feed(&copy).await, feed(&tenants.none).await);
    assert_eq!(
        feed(&copy.across_tenants()).await,
        feed(&tenants.none.across_tenants()).await
    );
    let mut ledger = ProjectionRunner::new(acme.clone(), Ledger::default());
    ledger.catch_up().await.unwrap();
    assert_eq!(ledger.projection().cents, 1 + 2 + 3);

    // Acme's events are not Initech's: refused, naming the line, and nothing is imported.
    let target = SqliteStore::in_memory().await.unwrap();
    target.migrate().await.unwrap();
    let initech = target.for_tenant("initech").await.unwrap();
    let refused = initech.import(&export[..], |_| {}).await.unwrap_err();
    assert!(
        matches!(&refused, Error::InvalidImport { line: 1, reason } if reason.contains("tenant acme's")),
        "{refused:?}"
    );
    assert!(feed(&target.across_tenants()).await.is_empty());
    // An export of events of no tenant becomes the importing tenant's.
    let mut plain = Vec::new();
    factum::store::transfer::export(&tenants.none, None, &mut plain, |_| {})
        .await
        .unwrap();
    assert_eq!(initech.import(&plain[..], |_| {}).await.unwrap(), 1);
    assert_eq!(
        feed(&target.across_tenants()).await,
        [("plain-1".to_owned(), Some("initech".to_owned()))]
    );
}

/// The runners' bookkeeping is each tenant's: a projection and a saga of one name run by two
/// tenants at once keep their own checkpoints, leases and instances (an instance id both
/// tenants use is two instances).
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
    loop {
        let mut done = true;
        for store in [&tenants.acme, &tenants.globex] {
            let status = ProjectionRunner::new(store.clone(), Ledger::default())
                .status()
                .await
                .unwrap();
            done &= status.event_lag == 0;
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
    assert_eq!(ledgers, [1 + 2 + 3, 10 + 20]);

    // The saga: instance "a-1" twice, one per tenant, each with its own state. Its command
    // goes to its tenant's accounts; routed to another tenant's repository, it is refused.
    let accounts = |store: &SqliteStore| Repository::<Account, _>::new(store.clone());
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
    // Acme's bonus landed in Acme's stream; Globex's was refused, stored nowhere.
    assert_eq!(tenants.acme.stream_version("bonus/a-1").await.unwrap(), 1);
    assert_eq!(tenants.globex.stream_version("bonus/a-1").await.unwrap(), 0);
    let welcome = factum::saga::SagaRunner::<_, Welcome>::new(
        tenants.none.clone(),
        factum::saga::CommandBus::new(),
    );
    assert!(welcome.instance("a-1").await.unwrap().is_none());

    // The bookkeeping rows, under each tenancy's name.
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT projection FROM projection_checkpoints WHERE projection LIKE '%ledger'
         UNION ALL SELECT saga || ':' || saga_id FROM sagas ORDER BY 1",
    )
    .fetch_all(tenants.none.pool())
    .await
    .unwrap();
    assert_eq!(
        keys,
        [
            "acme/ledger",
            "acme/welcome:a-1",
            "globex/ledger",
            "globex/welcome:a-1"
        ]
    );
}

/// Data keys are each tenant's: two tenants' subjects of one id are two people, each with a
/// key of its own; forgetting one through its tenant's store leaves the other's data readable.
#[tokio::test]
async fn forgetting_a_subject_forgets_it_in_its_own_tenant_only() {
    let tenants = tenants().await;
    let keyed = tenants
        .none
        .clone()
        .with_key_provider(factum::pii::LocalKeyProvider::new([9; 32]));
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
    let name = |store: &SqliteStore| {
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
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM data_keys WHERE subject = 'c-1'")
        .fetch_one(keyed.pool())
        .await
        .unwrap();
    assert_eq!(keys, 2, "one key per tenant's subject");
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
/// stream versions and position apart: the same relayed events are applied once per tenant,
/// and again by neither.
#[tokio::test]
async fn a_consumer_of_one_name_applies_events_once_per_tenant() {
    use factum::consumer::{ProjectionTarget, Target as _};

    let tenants = tenants().await;
    let relayed = tenants
        .acme
        .read_feed(&FeedQuery::from_start())
        .await
        .unwrap()
        .events;
    assert_eq!(relayed.len(), 3);
    let mut targets = [&tenants.acme, &tenants.globex]
        .map(|store| ProjectionTarget::new(store.clone(), "shipping", Ledger::default()));
    for (target, position) in targets.iter_mut().zip([3, 30]) {
        assert_eq!(target.position().await.unwrap(), None);
        assert_eq!(target.apply(&relayed, Some(position)).await.unwrap(), 3);
        assert_eq!(target.apply(&relayed, Some(position)).await.unwrap(), 0);
        assert_eq!(target.position().await.unwrap(), Some(position));
        assert_eq!(target.projection().cents, 1 + 2 + 3);
    }
    let mut untenanted = ProjectionTarget::new(tenants.none.clone(), "shipping", Ledger::default());
    assert_eq!(untenanted.position().await.unwrap(), None);
}
