//! Blue/green rebuilds, on PostgreSQL and on SQLite: version 2 of a projection builds beside
//! version 1 (its own checkpoint and table, side effects off), version 1 keeps serving until
//! version 2 has caught up and switches over; version 1 then stops by itself. Side effects run
//! once per event across versions and redeliveries.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use factum::projection::{ProjectionRunner, VersionState, active_version};
use factum::testing::{TestDatabase, execute, fetch_all};
use factum::{Envelope, EventStore, ExpectedVersion, NewEvent, Payload, Tx, Uuid};

#[factum::event]
#[derive(Debug)]
pub struct Deposited {
    pub cents: i64,
}

#[factum::event]
#[derive(Debug)]
pub struct Withdrawn {
    pub cents: i64,
}

/// An account was closed: only version 2 reacts (with a farewell email).
#[factum::event]
#[derive(Debug)]
pub struct Closed {
    pub cents: i64,
}

type Sent = Arc<Mutex<Vec<(u32, Uuid)>>>;

#[derive(Debug, thiserror::Error)]
#[error("version 2 is held partway through its build")]
pub struct Held;

/// Holds version 1's email inside its handler until the test opens it: a runner between a
/// batch's commit and its side effect's completion.
#[derive(Debug)]
pub struct Gate {
    entered: tokio::sync::Semaphore,
    open: tokio::sync::Semaphore,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            entered: tokio::sync::Semaphore::new(0),
            open: tokio::sync::Semaphore::new(0),
        }
    }
}

/// Version 1: balances per account; each withdrawal "sends an email" (a side effect), held at
/// its `gate` when it has one.
#[derive(Debug)]
pub struct TotalsV1 {
    table: String,
    sent: Sent,
    gate: Option<Arc<Gate>>,
}

#[factum::projection(name = "totals", version = 1)]
impl TotalsV1 {
    #[handle]
    async fn deposited(
        &mut self,
        event: &Deposited,
        envelope: &Envelope,
        tx: &mut Tx<'_>,
    ) -> Result<(), sqlx::Error> {
        add(tx, &self.table, &envelope.stream_id, event.cents).await
    }

    #[handle(side_effects)]
    async fn withdrawn(
        &mut self,
        _event: &Withdrawn,
        envelope: &Envelope,
    ) -> Result<(), sqlx::Error> {
        if let Some(gate) = &self.gate {
            gate.entered.add_permits(1);
            gate.open.acquire().await.unwrap().forget();
        }
        self.sent.lock().unwrap().push((1, envelope.event_id));
        Ok(())
    }
}

/// Version 2: balances and event counts, in its own table. New: a farewell email when an
/// account closes.
///
/// While `hold` is set its build stops partway: a deposit that is not its stream's first event
/// fails, so the batch is rolled back and retried (with backoff) until the test lets go. A slow handler
/// would do on PostgreSQL, but on SQLite a batch is a write transaction holding the store's one
/// write lock: a handler that sleeps in it keeps version 1 and every append out until the
/// build is over, and version 1 could not be seen serving meanwhile.
#[derive(Debug)]
pub struct TotalsV2 {
    table: String,
    sent: Sent,
    hold: Arc<AtomicBool>,
}

#[factum::projection(name = "totals", version = 2)]
impl TotalsV2 {
    #[handle]
    async fn deposited(
        &mut self,
        event: &Deposited,
        envelope: &Envelope,
        tx: &mut Tx<'_>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self.hold.load(Ordering::SeqCst) && envelope.stream_version > 1 {
            return Err(Box::new(Held));
        }
        Ok(add(tx, &self.table, &envelope.stream_id, event.cents).await?)
    }

    #[handle(side_effects)]
    async fn withdrawn(
        &mut self,
        _event: &Withdrawn,
        envelope: &Envelope,
    ) -> Result<(), sqlx::Error> {
        self.sent.lock().unwrap().push((2, envelope.event_id));
        Ok(())
    }

    #[handle(side_effects)]
    async fn closed(&mut self, _event: &Closed, envelope: &Envelope) -> Result<(), sqlx::Error> {
        self.sent.lock().unwrap().push((2, envelope.event_id));
        Ok(())
    }
}

async fn add(tx: &mut Tx<'_>, table: &str, account: &str, cents: i64) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} (account, cents, events) VALUES ($1, $2, 1)
         ON CONFLICT (account) DO UPDATE SET cents = {table}.cents + $2, events = {table}.events + 1"
    )))
    .bind(account)
    .bind(cents)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn create_table<D: TestDatabase>(database: &D, name: &str) -> String {
    let table = database.table(name);
    execute(
        &**database,
        &format!(
            "CREATE TABLE {table} (account text PRIMARY KEY, cents bigint NOT NULL, events bigint NOT NULL)"
        ),
    )
    .await
    .unwrap();
    table
}

fn event(event_type: &'static str, cents: i64) -> NewEvent {
    NewEvent::new(
        event_type,
        1,
        Payload::encode(&serde_json::json!({ "cents": cents })).unwrap(),
    )
}

async fn append<D: TestDatabase>(database: &D, account: &str, new: NewEvent) -> Uuid {
    database
        .append(account, "Account", ExpectedVersion::Any, vec![new])
        .await
        .unwrap()[0]
        .event_id
}

async fn table<D: TestDatabase>(database: &D, table: &str) -> Vec<(String, i64, i64)> {
    fetch_all(
        &**database,
        &format!("SELECT account, cents, events FROM {table} ORDER BY account"),
    )
    .await
    .unwrap()
}

/// Forgets where versions got to (all of them, or `version`): the runners see every event
/// again, as after a crash that lost the checkpoints. (Deleted rather than set back: the
/// checkpoint's columns differ between the stores, and a runner recreates a missing one at
/// the start.)
async fn forget_checkpoints<D: TestDatabase>(database: &D, version: Option<u32>) {
    let checkpoints = database.table("projection_checkpoints");
    let filter = version.map_or(String::new(), |v| format!(" WHERE version = {v}"));
    execute(&**database, &format!("DELETE FROM {checkpoints}{filter}"))
        .await
        .unwrap();
}

async fn eventually(mut condition: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !condition().await {
        assert!(std::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How often the runners look for new events. Stores of one SQLite file do not wake each
/// other (each wakes its own subscribers), and each runner here has a client of its own, as
/// another process would: they find new events by polling.
const POLL: Duration = Duration::from_millis(10);

async fn version_2_builds_beside_version_1_and_switches_over_when_caught_up<D: TestDatabase>() {
    let database = D::create().await.unwrap();
    let v1_table = create_table(&database, "totals_v1").await;
    let v2_table = create_table(&database, "totals_v2").await;
    let mut withdrawals = Vec::new();
    for i in 0..100 {
        append(&database, &format!("acc-{}", i % 10), event("Deposited", 1)).await;
        if i % 40 == 0 {
            withdrawals.push(append(&database, "acc-0", event("Withdrawn", 1)).await);
        }
    }
    // Closed before version 2 existed: its farewell email is not for a rebuild to send.
    append(&database, "acc-9", event("Closed", 0)).await;
    let sent: Sent = Arc::default();

    // Version 1 runs, sends its emails, catches up.
    let v1 = TotalsV1 {
        table: v1_table.clone(),
        sent: sent.clone(),
        gate: None,
    };
    let v1_runner =
        ProjectionRunner::new(database.another_client().await.unwrap(), v1).poll_interval(POLL);
    let (stop_v1, v1_stopped) = tokio::sync::oneshot::channel::<()>();
    let v1_task = tokio::spawn(v1_runner.run(async {
        let _ = v1_stopped.await;
    }));
    eventually(async || {
        table(&database, &v1_table)
            .await
            .iter()
            .map(|r| r.2)
            .sum::<i64>()
            == 100
    })
    .await;
    assert_eq!(active_version(&*database, "totals").await.unwrap(), Some(1));

    // Version 2 builds beside it, held partway, with version 1 still serving and following.
    let hold = Arc::new(AtomicBool::new(true));
    let v2 = TotalsV2 {
        table: v2_table.clone(),
        sent: sent.clone(),
        hold: hold.clone(),
    };
    let v2_runner = ProjectionRunner::new(database.another_client().await.unwrap(), v2)
        .batch_size(5)
        .poll_interval(POLL)
        // Held, its batch fails and is retried, never parked: a stream parked would be
        // skipped, not built.
        .retries(u32::MAX, Duration::from_millis(1));
    let observer = ProjectionRunner::new(
        database.another_client().await.unwrap(),
        TotalsV2 {
            table: v2_table.clone(),
            sent: Arc::default(),
            hold: Arc::default(),
        },
    );
    let (stop_v2, v2_stopped) = tokio::sync::oneshot::channel::<()>();
    let v2_task = tokio::spawn(v2_runner.run(async {
        let _ = v2_stopped.await;
    }));
    eventually(async || {
        let status = observer.status().await.unwrap();
        status.state == Some(VersionState::Building)
            && status.progress > 0.0
            && status.progress < 1.0
    })
    .await;
    assert_eq!(active_version(&*database, "totals").await.unwrap(), Some(1));
    append(&database, "acc-3", event("Deposited", 50)).await;
    eventually(async || table(&database, &v1_table).await.iter().any(|r| r.1 == 60)).await;
    assert_eq!(
        observer.status().await.unwrap().state,
        Some(VersionState::Building),
        "version 1 served the new deposit while version 2 was still building"
    );
    assert!(
        table(&database, &v2_table).await.iter().all(|r| r.1 < 60),
        "version 2 has not got to the new deposit"
    );

    // Version 2 catches up and switches over; version 1 stops by itself.
    hold.store(false, Ordering::SeqCst);
    eventually(async || active_version(&*database, "totals").await.unwrap() == Some(2)).await;
    tokio::time::timeout(Duration::from_secs(30), v1_task)
        .await
        .expect("version 1 stops once retired")
        .unwrap()
        .unwrap();
    drop(stop_v1);
    let v1_final = table(&database, &v1_table).await;
    let v2_rows = table(&database, &v2_table).await;
    assert_eq!(v2_rows, v1_final, "version 2 built the same balances");
    assert_eq!(v2_rows.iter().map(|r| r.2).sum::<i64>(), 101);
    assert_eq!(
        observer.status().await.unwrap().state,
        Some(VersionState::Active)
    );

    // Live on version 2: its withdrawal email goes out once; version 1's table stays as it was.
    withdrawals.push(append(&database, "acc-0", event("Withdrawn", 1)).await);
    append(&database, "acc-1", event("Deposited", 7)).await;
    let closed = append(&database, "acc-8", event("Closed", 0)).await;
    // At least as many as expected (an email too many fails below, with the list).
    eventually(async || sent.lock().unwrap().len() > withdrawals.len()).await;
    eventually(async || {
        table(&database, &v2_table)
            .await
            .iter()
            .map(|r| r.2)
            .sum::<i64>()
            == 102
    })
    .await;
    assert_eq!(
        table(&database, &v1_table).await,
        v1_final,
        "version 1 untouched"
    );
    let mut expected: Vec<(u32, Uuid)> = withdrawals[..3].iter().map(|id| (1, *id)).collect();
    expected.push((2, withdrawals[3]));
    expected.push((2, closed));
    assert_eq!(
        *sent.lock().unwrap(),
        expected,
        "history's emails by version 1 only (version 2 replayed without side effects), the new one by version 2"
    );

    // Version 1 started again stays retired.
    let again = ProjectionRunner::new(
        database.another_client().await.unwrap(),
        TotalsV1 {
            table: v1_table.clone(),
            sent: sent.clone(),
            gate: None,
        },
    );
    tokio::time::timeout(Duration::from_secs(30), again.run(std::future::pending()))
        .await
        .expect("a retired version does not run")
        .unwrap();
    assert_eq!(table(&database, &v1_table).await, v1_final);

    // Redelivery of everything to version 2 (its checkpoint reset): no email twice.
    stop_v2.send(()).unwrap();
    v2_task.await.unwrap().unwrap();
    execute(&*database, &format!("DELETE FROM {v2_table}"))
        .await
        .unwrap();
    forget_checkpoints(&database, Some(2)).await;
    let mut redelivery = ProjectionRunner::new(
        database.another_client().await.unwrap(),
        TotalsV2 {
            table: v2_table.clone(),
            sent: sent.clone(),
            hold: Arc::default(),
        },
    );
    assert_eq!(
        redelivery.catch_up().await.unwrap(),
        102,
        "the deposits again"
    );
    assert_eq!(sent.lock().unwrap().len(), 5, "no email sent twice");
    assert_eq!(
        table(&database, &v2_table)
            .await
            .iter()
            .map(|r| r.2)
            .sum::<i64>(),
        102
    );
}

async fn the_active_version_runs_a_side_effect_a_building_version_skipped<D: TestDatabase>() {
    let database = D::create().await.unwrap();
    let tables = create_table(&database, "totals_v1").await;
    let sent: Sent = Arc::default();
    let mut v1 = ProjectionRunner::new(
        database.another_client().await.unwrap(),
        TotalsV1 {
            table: tables.clone(),
            sent: sent.clone(),
            gate: None,
        },
    );
    let mut v2 = ProjectionRunner::new(
        database.another_client().await.unwrap(),
        TotalsV2 {
            table: tables,
            sent: sent.clone(),
            hold: Arc::default(),
        },
    );
    assert_eq!(v1.register().await.unwrap(), VersionState::Active);
    assert_eq!(v2.register().await.unwrap(), VersionState::Building);
    let withdrawn = database
        .append(
            "acc-1",
            "Account",
            ExpectedVersion::Any,
            vec![event("Withdrawn", 1)],
        )
        .await
        .unwrap();
    let next = withdrawn[0].feed_position();

    // Version 2, building, gets there first: it skips (and records the skip).
    v2.apply_batch(&withdrawn, next).await.unwrap();
    assert!(sent.lock().unwrap().is_empty());
    // Version 1, live, still runs it.
    v1.apply_batch(&withdrawn, next).await.unwrap();
    assert_eq!(*sent.lock().unwrap(), [(1, withdrawn[0].event_id)]);
    // Redelivered to either, it is not run again.
    forget_checkpoints(&database, None).await;
    v1.apply_batch(&withdrawn, next).await.unwrap();
    v2.apply_batch(&withdrawn, next).await.unwrap();
    assert_eq!(sent.lock().unwrap().len(), 1);
}

/// The side effects decided and not yet performed: `(event id, version that decided it)`.
async fn pending<D: TestDatabase>(database: &D) -> Vec<(String, i64)> {
    let effects = database.table("projection_side_effects");
    fetch_all(
        &**database,
        &format!(
            "SELECT CAST(event_id AS text), CAST(version AS bigint) FROM {effects}
             WHERE status = 'pending' ORDER BY event_id"
        ),
    )
    .await
    .unwrap()
}

/// Version 1 decides a withdrawal's email and is still sending it (held in its handler) when
/// version 2 builds, catches up and switches over. Version 2 leaves the email to version 1
/// while version 1's runner runs: it is sent once, by version 1 (`crash: false`, version 1
/// finishing); when version 1's runner dies before sending it (`crash: true`), version 2 takes
/// it over and sends it, once.
async fn a_side_effect_version_1_decided_is_performed_once<D: TestDatabase>(crash: bool) {
    let database = D::create().await.unwrap();
    let v1_table = create_table(&database, "totals_v1").await;
    let v2_table = create_table(&database, "totals_v2").await;
    let withdrawal = append(&database, "acc-0", event("Withdrawn", 1)).await;
    append(&database, "acc-0", event("Deposited", 5)).await;
    let sent: Sent = Arc::default();
    let gate = Arc::new(Gate::default());
    let v1 = TotalsV1 {
        table: v1_table,
        sent: sent.clone(),
        gate: Some(gate.clone()),
    };
    let v1_runner =
        ProjectionRunner::new(database.another_client().await.unwrap(), v1).poll_interval(POLL);
    let v1_task = tokio::spawn(v1_runner.run(std::future::pending()));
    // Version 1 committed its batch (the email decided) and is sending the email.
    gate.entered.acquire().await.unwrap().forget();
    assert_eq!(pending(&database).await, [(withdrawal.to_string(), 1)]);

    let v2 = TotalsV2 {
        table: v2_table.clone(),
        sent: sent.clone(),
        hold: Arc::default(),
    };
    let v2_runner =
        ProjectionRunner::new(database.another_client().await.unwrap(), v2).poll_interval(POLL);
    let (stop_v2, v2_stopped) = tokio::sync::oneshot::channel::<()>();
    let v2_task = tokio::spawn(v2_runner.run(async {
        let _ = v2_stopped.await;
    }));
    eventually(async || active_version(&*database, "totals").await.unwrap() == Some(2)).await;
    eventually(async || table(&database, &v2_table).await == [("acc-0".to_owned(), 5, 1)]).await;
    // Version 2 started, switched over and went idle with version 1's email pending: not sent.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        sent.lock().unwrap().is_empty(),
        "{:?}",
        sent.lock().unwrap()
    );
    assert_eq!(pending(&database).await, [(withdrawal.to_string(), 1)]);

    if crash {
        // Version 1's runner dies before the email is out: its lease goes with it.
        v1_task.abort();
        assert!(v1_task.await.unwrap_err().is_cancelled());
        // Version 2, idle, takes it over (within 5 s) and sends it.
        eventually(async || !sent.lock().unwrap().is_empty()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(*sent.lock().unwrap(), [(2, withdrawal)]);
    } else {
        // Version 1 sends it, then stops (retired).
        gate.open.add_permits(1);
        tokio::time::timeout(Duration::from_secs(30), v1_task)
            .await
            .expect("version 1 stops once retired")
            .unwrap()
            .unwrap();
        assert_eq!(*sent.lock().unwrap(), [(1, withdrawal)]);
    }
    assert_eq!(pending(&database).await, []);
    stop_v2.send(()).unwrap();
    v2_task.await.unwrap().unwrap();
    assert_eq!(sent.lock().unwrap().len(), 1, "the email went out once");
}

async fn a_side_effect_decided_by_a_running_retired_version_is_left_to_it<D: TestDatabase>() {
    a_side_effect_version_1_decided_is_performed_once::<D>(false).await;
}

async fn a_side_effect_a_retired_version_crashed_on_is_taken_over<D: TestDatabase>() {
    a_side_effect_version_1_decided_is_performed_once::<D>(true).await;
}

factum::on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    version_2_builds_beside_version_1_and_switches_over_when_caught_up,
    #[tokio::test]
    the_active_version_runs_a_side_effect_a_building_version_skipped,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_side_effect_decided_by_a_running_retired_version_is_left_to_it,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_side_effect_a_retired_version_crashed_on_is_taken_over,
);

/// Registering a version takes a lock of its store's schema only: stores in other schemas of
/// the server (other services, other tests) do not wait for it.
#[tokio::test]
async fn registering_waits_only_for_registrations_in_its_own_schema() {
    use factum::testing::postgres::TemporaryStore;
    use sqlx::{Connection as _, Executor as _};

    let a = TemporaryStore::new().await.unwrap();
    let b = TemporaryStore::new().await.unwrap();
    let runner = |store: &TemporaryStore| {
        let totals = TotalsV1 {
            table: "unused".into(),
            sent: Sent::default(),
            gate: None,
        };
        ProjectionRunner::new((**store).clone(), totals)
    };
    // Another session in the middle of registering "totals" in schema a (no tenant: the scope
    // between the colons is empty).
    let mut session = sqlx::PgConnection::connect(a.url()).await.unwrap();
    session.execute("BEGIN").await.unwrap();
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtext('factum.projection_versions'),
                                      hashtext($1 || '::totals'))",
    )
    .bind(a.schema())
    .execute(&mut session)
    .await
    .unwrap();

    let registered = tokio::time::timeout(Duration::from_secs(30), runner(&b).register()).await;
    assert_eq!(
        registered.expect("schema b waited for schema a").unwrap(),
        VersionState::Active
    );
    // The session holds the lock a registration in schema a takes: it waits for it.
    let mut in_a = runner(&a);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), in_a.register())
            .await
            .is_err()
    );
    session.execute("ROLLBACK").await.unwrap();
    assert_eq!(in_a.register().await.unwrap(), VersionState::Active);
}
