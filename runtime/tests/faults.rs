//! Faults a runner meets in production, injected for real: a lease whose connection is killed
//! while another instance waits, and a handler whose downstream system is unavailable for 10 s
//! (transient) beside one that refuses an event for good (permanent). The database restarts
//! and connection storms are in `examples/orders/tests/faults.rs` (they need the order saga).

use std::error::Error;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use factum::feed::Subscription;
use factum::projection::{ProjectionRunner, RunnerState};
use factum::testing::postgres::TemporaryStore;
use factum::testing::{TestDatabase, execute, fetch_all};
use factum::{Envelope, EventStore, ExpectedVersion, FeedQuery, NewEvent, Payload, Transient, Tx};

#[factum::event]
#[derive(Debug)]
pub struct Noted {
    pub n: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("the search index answers 503")]
pub struct Unavailable;

#[derive(Debug, thiserror::Error)]
#[error("event {0} is refused for good")]
pub struct Refused(i64);

/// What the journal's handler does, shared with the test.
#[derive(Debug, Default)]
struct Behaviour {
    /// Events of stream `flaky` fail with a transient error until then.
    flaky_until: std::sync::Mutex<Option<Instant>>,
    /// Failed handlings of stream `flaky`.
    flaky_failures: AtomicU64,
    /// Handlings under way now, across every instance (at most one may be).
    active: AtomicU64,
    /// Set when two handlings overlapped.
    overlapped: AtomicBool,
    /// The next event of stream `hung` hangs its handler for this long (once).
    hang: std::sync::Mutex<Option<Duration>>,
    /// Set when a handler hung.
    hung: AtomicBool,
    /// Events of stream `down` are refused (a permanent error) until then.
    down_until: std::sync::Mutex<Option<Instant>>,
}

/// One row per event, naming the instance that applied it: an event applied twice breaks the
/// primary key, a missing one shows in the count.
#[derive(Debug)]
struct Journal {
    table: String,
    instance: i64,
    /// How long each event takes.
    pause: Duration,
    behaviour: Arc<Behaviour>,
}

#[factum::projection(name = "journal")]
impl Journal {
    #[handle]
    async fn noted(
        &mut self,
        event: &Noted,
        envelope: &Envelope,
        tx: &mut Tx<'_>,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        if envelope.stream_id == "flaky" {
            let until = *self
                .behaviour
                .flaky_until
                .lock()
                .map_err(|_| "poisoned lock")?;
            if until.is_some_and(|until| Instant::now() < until) {
                self.behaviour.flaky_failures.fetch_add(1, Ordering::SeqCst);
                return Err(Box::new(Transient::new(Unavailable)));
            }
        }
        if envelope.stream_id == "hung" {
            let hang = self
                .behaviour
                .hang
                .lock()
                .map_err(|_| "poisoned lock")?
                .take();
            if let Some(hang) = hang {
                self.behaviour.hung.store(true, Ordering::SeqCst);
                tokio::time::sleep(hang).await;
            }
        }
        if envelope.stream_id == "down" {
            let until = *self
                .behaviour
                .down_until
                .lock()
                .map_err(|_| "poisoned lock")?;
            if until.is_some_and(|until| Instant::now() < until) {
                return Err(Box::new(Refused(event.n)));
            }
        }
        if envelope.stream_id == "poison" && event.n == 2 {
            return Err(Box::new(Refused(event.n)));
        }
        if self.behaviour.active.fetch_add(1, Ordering::SeqCst) > 0 {
            self.behaviour.overlapped.store(true, Ordering::SeqCst);
        }
        tokio::time::sleep(self.pause).await;
        self.behaviour.active.fetch_sub(1, Ordering::SeqCst);
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {} (stream_id, stream_version, n, instance) VALUES ($1, $2, $3, $4)",
            self.table
        )))
        .bind(&envelope.stream_id)
        .bind(i64::try_from(envelope.stream_version)?)
        .bind(event.n)
        .bind(self.instance)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

impl Journal {
    /// Instance `instance`'s journal in `table`, handling each event at once.
    fn new(table: &str, instance: i64, behaviour: &Arc<Behaviour>) -> Self {
        Self {
            table: table.to_owned(),
            instance,
            pause: Duration::ZERO,
            behaviour: Arc::clone(behaviour),
        }
    }
}

async fn journal_table<D: TestDatabase>(database: &D) -> String {
    let table = database.table("journal");
    execute(
        &**database,
        &format!(
            "CREATE TABLE {table} (stream_id TEXT NOT NULL, stream_version BIGINT NOT NULL,
                                   n BIGINT NOT NULL, instance BIGINT NOT NULL,
                                   PRIMARY KEY (stream_id, stream_version))"
        ),
    )
    .await
    .unwrap();
    table
}

fn noted(n: i64) -> NewEvent {
    NewEvent::new(
        "Noted",
        1,
        Payload::encode(&serde_json::json!({ "n": n })).unwrap(),
    )
}

async fn note(store: &impl EventStore, stream: &str, n: i64) {
    store
        .append(stream, "Journal", ExpectedVersion::Any, vec![noted(n)])
        .await
        .unwrap();
}

/// Waits (a minute at most) until `condition` holds.
async fn eventually<F: Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn rows<D: TestDatabase>(database: &D, table: &str) -> Vec<(String, i64, i64, i64)> {
    fetch_all(
        &**database,
        &format!(
            "SELECT stream_id, stream_version, n, instance FROM {table}
             ORDER BY stream_id, stream_version"
        ),
    )
    .await
    .unwrap()
}

/// The lease connection of a running runner is terminated while a second instance waits for
/// the lease: the first stops applying before the second starts (fencing: the second's claim
/// of the checkpoint row waits for the first's batch, and the first's next batch finds the
/// claim and stops), so the instances that applied the events, in feed order, switch once; and
/// every event is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_that_loses_its_lease_stops_before_another_applies() {
    const EVENTS: i64 = 600;
    let database = TemporaryStore::new().await.unwrap();
    let table = journal_table(&database).await;
    let behaviour = Arc::new(Behaviour::default());
    let journal = |instance| Journal {
        pause: Duration::from_millis(3),
        ..Journal::new(&table, instance, &behaviour)
    };
    let runner = |journal| async {
        ProjectionRunner::new(database.another_client().await.unwrap(), journal)
            .batch_size(5)
            .poll_interval(Duration::from_millis(20))
            .lease_retry(Duration::from_millis(10))
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let shutdown = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };

    let first = runner(journal(1)).await;
    let mut first_handle = first.handle();
    let first_task = tokio::spawn(first.run(shutdown(stopped.clone())));
    first_handle
        .wait_for(|state| *state == RunnerState::Running)
        .await
        .unwrap();
    let second = runner(journal(2)).await;
    let mut second_handle = second.handle();
    let second_task = tokio::spawn(second.run(shutdown(stopped.clone())));
    second_handle
        .wait_for(|state| *state == RunnerState::Standby)
        .await
        .unwrap();

    // A writer keeps the runners busy (they never wait for events, so only fencing can stop
    // the first in time): one stream, so that feed order is version order.
    let writer = {
        let store = database.another_client().await.unwrap();
        tokio::spawn(async move {
            for chunk in 0..EVENTS / 10 {
                let events = (1..=10).map(|n| noted(chunk * 10 + n)).collect();
                store
                    .append("s", "Journal", ExpectedVersion::Any, events)
                    .await
                    .unwrap();
            }
        })
    };
    eventually("the first runner to apply events", || async {
        rows(&database, &table).await.len() > 50
    })
    .await;

    // The first's lease connection dies (a network cut, an idle-session kill...).
    let key = format!("{}:journal:1", database.schema());
    let terminated: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND objsubid = 2
           AND classid = (hashtext('factum.projection')::bigint & 4294967295)::oid
           AND objid = (hashtext($1)::bigint & 4294967295)::oid",
    )
    .bind(&key)
    .fetch_all(database.pool())
    .await
    .unwrap();
    assert_eq!(terminated, [(true,)], "the first runner's lease connection");

    writer.await.unwrap();
    eventually("every event to be applied", || async {
        rows(&database, &table).await.len() == EVENTS as usize
    })
    .await;
    let first_state = first_handle.state();
    let second_state = second_handle.state();
    stop.send(true).unwrap();
    first_task.await.unwrap().unwrap();
    second_task.await.unwrap().unwrap();

    let rows = rows(&database, &table).await;
    let numbers: Vec<i64> = rows.iter().map(|row| row.2).collect();
    assert_eq!(numbers, (1..=EVENTS).collect::<Vec<_>>(), "each event once");
    let instances: Vec<i64> = rows.iter().map(|row| row.3).collect();
    let switches = instances.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(switches, 1, "one hand-over, no interleaving: {instances:?}");
    assert_eq!((instances[0], instances[instances.len() - 1]), (1, 2));
    assert!(!behaviour.overlapped.load(Ordering::SeqCst));
    assert_eq!(second_state, RunnerState::Running, "the second took over");
    assert!(
        matches!(
            first_state,
            RunnerState::Standby | RunnerState::Retrying { .. }
        ),
        "the first competes for the lease again: {first_state:?}"
    );
}

/// A handler whose downstream system is unavailable for 10 s (a transient error) parks
/// nothing: the runner retries (with backoff) and completes when it is back, each event once.
/// A handler refusing an event for good still parks that stream alone.
async fn a_transient_failure_for_10_s_parks_nothing_and_a_permanent_one_parks_its_stream_only<
    D: TestDatabase,
>() {
    let database = D::create().await.unwrap();
    let table = journal_table(&database).await;
    let behaviour = Arc::new(Behaviour::default());
    *behaviour.flaky_until.lock().unwrap() = Some(Instant::now() + Duration::from_secs(10));
    let runner = ProjectionRunner::new(
        database.another_client().await.unwrap(),
        Journal::new(&table, 1, &behaviour),
    )
    .batch_size(10)
    .retries(2, Duration::from_millis(10))
    .poll_interval(Duration::from_millis(20));
    let handle = runner.handle();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runner.run(async {
        let _ = stopped.await;
    }));
    let started = Instant::now();
    for n in 1..=3 {
        note(&*database, "steady", n).await;
        note(&*database, "flaky", n).await;
        note(&*database, "poison", n).await;
    }
    // The runner says it is retrying (a handle sees the failure while the batch is retried).
    eventually("the runner to report its retries", || async {
        matches!(handle.state(), RunnerState::Retrying { attempts, ref error, .. }
            if attempts >= 1 && error.contains("503"))
    })
    .await;
    eventually("the flaky stream to be applied", || async {
        rows(&database, &table)
            .await
            .iter()
            .filter(|row| row.0 == "flaky")
            .count()
            == 3
    })
    .await;
    let took = started.elapsed();
    eprintln!(
        "flaky stream applied after {took:?}, {} transient failures",
        behaviour.flaky_failures.load(Ordering::SeqCst)
    );
    assert!(took >= Duration::from_secs(10), "it waited for the system");
    assert!(
        behaviour.flaky_failures.load(Ordering::SeqCst) >= 3,
        "the transient failure really happened, and was retried"
    );
    eventually("the steady stream", || async {
        rows(&database, &table)
            .await
            .iter()
            .filter(|row| row.0 == "steady")
            .count()
            == 3
    })
    .await;
    let parked = match handle.parked().await {
        Ok(parked) => parked,
        // Say why (the runner may have stopped; a running one is not waited for).
        Err(error) => panic!(
            "{error:?} in state {:?}; the runner ended with {:?}",
            handle.state(),
            tokio::time::timeout(Duration::from_secs(5), task).await
        ),
    };
    assert_eq!(
        parked
            .iter()
            .map(|p| p.stream_id.as_str())
            .collect::<Vec<_>>(),
        ["poison"],
        "the permanent failure parks its stream, the transient one nothing"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let rows = rows(&database, &table).await;
    let applied: Vec<(&str, i64)> = rows.iter().map(|r| (r.0.as_str(), r.1)).collect();
    assert_eq!(
        applied,
        [
            ("flaky", 1),
            ("flaky", 2),
            ("flaky", 3),
            ("poison", 1),
            ("steady", 1),
            ("steady", 2),
            ("steady", 3)
        ],
        "each event once; the poison stream stops at its refused event"
    );
}

/// A handler hanging for 10 s inside its batch (awaiting something else than the database)
/// holds the batch's transaction, and with it every reader of the feed on the server. The
/// runner's idle-in-transaction timeout (1 s here) cuts it off: readers of other streams wait
/// about that long, not 10 s; the batch is retried and its events applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_handler_holds_readers_back_no_longer_than_the_idle_timeout() {
    let database = TemporaryStore::new().await.unwrap();
    let table = journal_table(&database).await;
    let behaviour = Arc::new(Behaviour::default());
    *behaviour.hang.lock().unwrap() = Some(Duration::from_secs(10));
    let runner = ProjectionRunner::new(
        database.another_client().await.unwrap(),
        Journal::new(&table, 1, &behaviour),
    )
    .transaction_timeouts(Duration::from_secs(5), Duration::from_secs(1))
    .poll_interval(Duration::from_millis(20));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runner.run(async {
        let _ = stopped.await;
    }));
    let start = database
        .read_feed(&FeedQuery::from_start())
        .await
        .unwrap()
        .next;
    note(&*database, "hung", 1).await;
    eventually("the handler to hang", || async {
        behaviour.hung.load(Ordering::SeqCst)
    })
    .await;

    // A reader of other streams, from here on.
    let mut reader = Subscription::new(database.another_client().await.unwrap(), start)
        .event_types(["Noted"])
        .poll_interval(Duration::from_millis(20));
    let appended = Instant::now();
    note(&*database, "other", 1).await;
    let seen = loop {
        let event = tokio::time::timeout(Duration::from_secs(30), reader.next())
            .await
            .expect("the reader is held back")
            .unwrap();
        if event.stream_id == "other" {
            break appended.elapsed();
        }
    };
    eprintln!("a reader of other streams waited {seen:?} behind a handler hung for 10 s");
    assert!(
        seen < Duration::from_secs(5),
        "the hung batch held readers back for {seen:?}"
    );

    eventually("both events to be applied", || async {
        rows(&database, &table).await.len() == 2
    })
    .await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let applied: Vec<(String, i64)> = rows(&database, &table)
        .await
        .into_iter()
        .map(|row| (row.0, row.1))
        .collect();
    assert_eq!(applied, [("hung".to_owned(), 1), ("other".to_owned(), 1)]);
}

/// [`PostgresStore::connect`] asks the server for TCP keepalives on every connection.
#[tokio::test]
async fn connections_made_by_the_store_ask_for_server_keepalives() {
    let store = factum::store::PostgresStore::connect(&factum::testing::postgres::database_url())
        .await
        .unwrap();
    let settings: (String, String, String) = sqlx::query_as(
        "SELECT current_setting('tcp_keepalives_idle'), current_setting('tcp_keepalives_interval'),
                current_setting('tcp_keepalives_count')",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(settings, ("30".into(), "10".into(), "3".into()));
}

/// A stream parked by a failure that passes later without anyone's help drains by itself when
/// the runner re-drives its parked streams on a schedule.
async fn parked_streams_are_re_driven_on_a_schedule<D: TestDatabase>() {
    let database = D::create().await.unwrap();
    let table = journal_table(&database).await;
    let behaviour = Arc::new(Behaviour::default());
    *behaviour.down_until.lock().unwrap() = Some(Instant::now() + Duration::from_secs(2));
    let runner = ProjectionRunner::new(
        database.another_client().await.unwrap(),
        Journal::new(&table, 1, &behaviour),
    )
    .retries(0, Duration::from_millis(10))
    .redrive_parked(Duration::from_millis(300))
    .poll_interval(Duration::from_millis(20));
    let handle = runner.handle();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runner.run(async {
        let _ = stopped.await;
    }));
    for n in 1..=3 {
        note(&*database, "down", n).await;
        note(&*database, "steady", n).await;
    }
    eventually("the stream to park", || async {
        // (`NotRunning` until the runner has started)
        handle
            .parked()
            .await
            .unwrap_or_default()
            .iter()
            .any(|p| p.stream_id == "down")
    })
    .await;
    eventually("the re-drive to drain it", || async {
        rows(&database, &table).await.len() == 6
    })
    .await;
    assert!(handle.parked().await.unwrap().is_empty());
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let applied: Vec<(String, i64)> = rows(&database, &table)
        .await
        .into_iter()
        .map(|row| (row.0, row.1))
        .collect();
    assert_eq!(
        applied,
        [
            ("down".to_owned(), 1),
            ("down".to_owned(), 2),
            ("down".to_owned(), 3),
            ("steady".to_owned(), 1),
            ("steady".to_owned(), 2),
            ("steady".to_owned(), 3)
        ],
        "in order, once"
    );
}

factum::on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    parked_streams_are_re_driven_on_a_schedule,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_transient_failure_for_10_s_parks_nothing_and_a_permanent_one_parks_its_stream_only,
);
