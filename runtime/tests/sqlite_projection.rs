//! Projections on SQLite: the read model commits with the checkpoint, so redelivered events
//! have no second effect, even with two runners at once; a failing batch is rolled back and
//! retried; a poison event parks its stream while the others flow, and retry drains it in order
//! after the fix; one runner holds the lease and another takes over; live events follow.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use factum::projection::{RunnerError, SqliteProjectionRunner};
use factum::store::SqliteStore;
use factum::testing::sqlite::TemporaryDatabase;
use factum::{Envelope, EventStore, ExpectedVersion, FeedQuery, NewEvent, Payload};
use sqlx::SqliteConnection;

#[factum::event]
#[derive(Debug)]
pub struct Deposited {
    pub cents: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("the read model is unavailable")]
pub struct Unavailable;

#[derive(Debug, Clone, Default)]
pub struct Balances {
    failures: Arc<AtomicU32>,
}

#[factum::projection(name = "balances")]
impl Balances {
    #[handle]
    async fn deposited(
        &mut self,
        event: &Deposited,
        envelope: &Envelope,
        tx: &mut SqliteConnection,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Box::new(Unavailable));
        }
        sqlx::query(
            "INSERT INTO balances (account, cents, events) VALUES (?1, ?2, 1)
             ON CONFLICT (account) DO UPDATE
                 SET cents = balances.cents + excluded.cents, events = balances.events + 1",
        )
        .bind(&envelope.stream_id)
        .bind(event.cents)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

async fn setup() -> (TemporaryDatabase, SqliteStore) {
    let database = TemporaryDatabase::new().await.unwrap();
    let store = (*database).clone();
    sqlx::raw_sql(
        "CREATE TABLE balances (account TEXT PRIMARY KEY, cents INTEGER NOT NULL, events INTEGER NOT NULL)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    (database, store)
}

fn deposit(cents: i64) -> NewEvent {
    NewEvent::new(
        "Deposited",
        1,
        Payload::encode(&serde_json::json!({ "cents": cents })).unwrap(),
    )
}

fn noise() -> NewEvent {
    NewEvent::new(
        "Audited",
        1,
        Payload::encode(&serde_json::json!({})).unwrap(),
    )
}

async fn read_model(store: &SqliteStore) -> Vec<(String, i64, i64)> {
    sqlx::query_as("SELECT account, cents, events FROM balances ORDER BY account")
        .fetch_all(store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn every_event_is_applied_once_and_a_redelivered_batch_changes_nothing() {
    let (_file, store) = setup().await;
    store
        .append(
            "acc-1",
            "Account",
            ExpectedVersion::Any,
            vec![deposit(500), noise(), deposit(25)],
        )
        .await
        .unwrap();
    store
        .append("acc-2", "Account", ExpectedVersion::Any, vec![deposit(70)])
        .await
        .unwrap();
    let mut runner = SqliteProjectionRunner::new(store.clone(), Balances::default()).batch_size(2);
    assert_eq!(
        runner.catch_up().await.unwrap(),
        3,
        "the noise is filtered out"
    );
    assert_eq!(runner.catch_up().await.unwrap(), 0);
    let expected = vec![("acc-1".to_owned(), 525, 2), ("acc-2".to_owned(), 70, 1)];
    assert_eq!(read_model(&store).await, expected);

    // The whole feed delivered again: everything is at or below the checkpoint.
    let batch = store.read_feed(&FeedQuery::from_start()).await.unwrap();
    assert_eq!(
        runner.apply_batch(&batch.events, batch.next).await.unwrap(),
        0
    );
    assert_eq!(read_model(&store).await, expected);
    let status = runner.status().await.unwrap();
    assert_eq!((status.event_lag, status.progress), (0, 1.0));
}

#[tokio::test]
async fn a_failing_batch_is_rolled_back_and_retried_then_stops_the_runner_without_dead_letters() {
    let (_file, store) = setup().await;
    store
        .append(
            "acc-1",
            "Account",
            ExpectedVersion::Any,
            vec![deposit(1), deposit(2), deposit(3)],
        )
        .await
        .unwrap();
    let projection = Balances::default();
    // The second event fails twice: the batch is rolled back each time (the first event's
    // write too), then applied whole.
    projection.failures.store(0, Ordering::SeqCst);
    let mut runner = SqliteProjectionRunner::new(store.clone(), projection.clone())
        .retries(3, Duration::from_millis(1))
        .dead_letters(false);
    projection.failures.store(2, Ordering::SeqCst);
    assert_eq!(runner.catch_up().await.unwrap(), 3);
    assert_eq!(read_model(&store).await, [("acc-1".to_owned(), 6, 3)]);

    store
        .append("acc-1", "Account", ExpectedVersion::Any, vec![deposit(10)])
        .await
        .unwrap();
    projection.failures.store(10, Ordering::SeqCst);
    let error = runner.catch_up().await.unwrap_err();
    assert!(
        matches!(
            error,
            RunnerError::Handler {
                projection: "balances",
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(
        read_model(&store).await,
        [("acc-1".to_owned(), 6, 3)],
        "rolled back"
    );
    assert_eq!(
        runner.status().await.unwrap().event_lag,
        1,
        "the checkpoint did not move"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runners_at_once_apply_each_event_once() {
    let (_file, store) = setup().await;
    for n in 0..40 {
        let events = (0..25).map(|i| deposit(n * 100 + i)).collect();
        store
            .append(
                &format!("acc-{}", n % 7),
                "Account",
                ExpectedVersion::Any,
                events,
            )
            .await
            .unwrap();
    }
    let mut first = SqliteProjectionRunner::new(store.clone(), Balances::default()).batch_size(13);
    let mut second = SqliteProjectionRunner::new(store.clone(), Balances::default()).batch_size(17);
    let (a, b) = tokio::join!(first.catch_up(), second.catch_up());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a + b, 1000, "each event handled by one of them");
    let rows = read_model(&store).await;
    assert_eq!(rows.iter().map(|r| r.2).sum::<i64>(), 1000);
    let total: i64 = (0..40)
        .flat_map(|n| (0..25).map(move |i| n * 100 + i))
        .sum();
    assert_eq!(rows.iter().map(|r| r.1).sum::<i64>(), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_runner_holds_the_lease_follows_live_events_and_another_takes_over() {
    let (_file, store) = setup().await;
    store
        .append("acc-1", "Account", ExpectedVersion::Any, vec![deposit(5)])
        .await
        .unwrap();
    let (stop_first, first_stopped) = tokio::sync::oneshot::channel::<()>();
    let first = tokio::spawn(
        SqliteProjectionRunner::new(store.clone(), Balances::default())
            .poll_interval(Duration::from_millis(20))
            .run(async {
                first_stopped.await.ok();
            }),
    );
    wait_for(&store, 1).await;
    // A second runner waits for the lease.
    let (stop_second, second_stopped) = tokio::sync::oneshot::channel::<()>();
    let second = tokio::spawn(
        SqliteProjectionRunner::new(store.clone(), Balances::default())
            .poll_interval(Duration::from_millis(20))
            .lease_retry(Duration::from_millis(20))
            .run(async {
                second_stopped.await.ok();
            }),
    );
    // Live: a new event is applied without a catch-up call.
    store
        .append("acc-1", "Account", ExpectedVersion::Any, vec![deposit(7)])
        .await
        .unwrap();
    wait_for(&store, 2).await;
    // The second waits: the first holds the lease (a lock on a file beside the database).
    assert!(!second.is_finished());

    // The first stops (releasing the lease): the second takes over.
    stop_first.send(()).unwrap();
    first.await.unwrap().unwrap();
    store
        .append("acc-1", "Account", ExpectedVersion::Any, vec![deposit(11)])
        .await
        .unwrap();
    wait_for(&store, 3).await;
    stop_second.send(()).unwrap();
    second.await.unwrap().unwrap();
    assert_eq!(read_model(&store).await, [("acc-1".to_owned(), 23, 3)]);
}

async fn wait_for(store: &SqliteStore, events: i64) {
    for _ in 0..500 {
        let applied: i64 = sqlx::query_scalar("SELECT coalesce(sum(events), 0) FROM balances")
            .fetch_one(store.pool())
            .await
            .unwrap();
        if applied >= events {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the projection did not apply {events} events in time");
}

#[tokio::test]
async fn a_poison_event_parks_its_stream_while_the_others_complete_and_retry_drains_it() {
    let (_file, store) = setup().await;
    for account in 0..4 {
        let events = (1..=3).map(|n| deposit(account * 10 + n)).collect();
        store
            .append(
                &format!("acc-{account}"),
                "Account",
                ExpectedVersion::Any,
                events,
            )
            .await
            .unwrap();
    }
    // acc-2's second deposit (22 cents) is the poison: it fails until the "fix".
    let poison = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let poisoned = Poisoned {
        inner: Balances::default(),
        poison: Arc::clone(&poison),
    };
    let mut runner =
        SqliteProjectionRunner::new(store.clone(), poisoned).retries(1, Duration::from_millis(1));
    runner.catch_up().await.unwrap();

    let parked = runner.parked().await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(
        (parked[0].stream_id.as_str(), parked[0].first_version),
        ("acc-2", 2)
    );
    assert_eq!(
        parked[0].events, 2,
        "the poison and the stream's later event"
    );
    assert!(parked[0].error.as_deref().unwrap().contains("poison"));
    assert_eq!(parked[0].attempts, 2);
    let rows = read_model(&store).await;
    assert_eq!(rows.len(), 4);
    assert_eq!(
        rows[2],
        ("acc-2".to_owned(), 21, 1),
        "acc-2 stopped before the poison"
    );
    assert_eq!(
        rows[3],
        ("acc-3".to_owned(), 31 + 32 + 33, 3),
        "the others complete"
    );

    // A new event of the parked stream waits behind it.
    store
        .append("acc-2", "Account", ExpectedVersion::Any, vec![deposit(100)])
        .await
        .unwrap();
    runner.catch_up().await.unwrap();
    assert_eq!(runner.parked().await.unwrap()[0].events, 3);
    assert_eq!(runner.status().await.unwrap().parked_events, 3);

    // Retried before the fix: stops again; after it: drains in order.
    assert!(matches!(
        runner.retry_parked("acc-2").await.unwrap(),
        factum::projection::RetryOutcome::Stopped {
            handled: 0,
            stream_version: 2,
            ..
        }
    ));
    poison.store(false, Ordering::SeqCst);
    assert!(matches!(
        runner.retry_parked("acc-2").await.unwrap(),
        factum::projection::RetryOutcome::Drained { handled: 3 }
    ));
    assert_eq!(
        read_model(&store).await[2],
        ("acc-2".to_owned(), 21 + 22 + 23 + 100, 4)
    );
    assert!(runner.parked().await.unwrap().is_empty());
}

/// `Balances` failing on a deposit of 22 cents while `poison` is set.
#[derive(Debug, Clone)]
pub struct Poisoned {
    inner: Balances,
    poison: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("22 cents: poison")]
pub struct Poison;

#[factum::projection(name = "poisoned")]
impl Poisoned {
    #[handle]
    async fn deposited(
        &mut self,
        event: &Deposited,
        envelope: &Envelope,
        tx: &mut SqliteConnection,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if event.cents == 22 && self.poison.load(Ordering::SeqCst) {
            return Err(Box::new(Poison));
        }
        self.inner.deposited(event, envelope, tx).await
    }
}
