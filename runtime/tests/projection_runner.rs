//! The projection runner, each scenario written once and run on PostgreSQL and on SQLite: the
//! read model is committed with the checkpoint, so redelivered events have no second effect,
//! even with two runners at once; old event versions are upcast; a failing handler rolls its
//! batch back and is retried, then stops the runner without the dead-letter queue; one runner
//! holds the lease and another takes over when it dies or stops; live events follow; a
//! checkpoint moved back is noticed, between catch-ups or during one; handlers taking only the
//! events' origins have the runner read only those columns.

use std::error::Error;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use factum::projection::{BatchOutcome, Projection, ProjectionRunner, RunnerError, active_version};
use factum::store::{SqlStore, StoreKind};
use factum::testing::{TestDatabase, execute, fetch_all};
use factum::{
    Envelope, EnvelopeFields, EventStore, ExpectedVersion, FeedBatch, FeedPosition, FeedQuery,
    NewEvent, Origin, Payload, RecordedEvent, Tx,
};

#[factum::event(name = "Deposited")]
#[derive(Debug)]
pub struct DepositedV1 {
    pub dollars: i64,
}

#[factum::event(version = 2)]
#[derive(Debug)]
pub struct Deposited {
    pub cents: i64,
}

#[factum::upcast]
fn to_cents(old: DepositedV1) -> Deposited {
    Deposited {
        cents: old.dollars * 100,
    }
}

#[factum::event]
#[derive(Debug)]
pub struct Withdrawn {
    pub cents: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("the read model is unavailable")]
pub struct Unavailable;

/// Failures a test injects into the handlers.
#[derive(Debug, Default)]
struct Faults {
    /// Failures left to inject.
    remaining: AtomicU32,
    /// The amount (in cents) of the events that fail while failures remain; 0: every event.
    cents: AtomicI64,
}

impl Faults {
    /// Fails the next `times` handlings of events of `cents` (0: of any event).
    fn inject(&self, times: u32, cents: i64) {
        self.cents.store(cents, Ordering::SeqCst);
        self.remaining.store(times, Ordering::SeqCst);
    }

    /// Whether handling an event of `cents` fails now (using up one failure).
    fn strike(&self, cents: i64) -> bool {
        let only = self.cents.load(Ordering::SeqCst);
        (only == 0 || only == cents)
            && self
                .remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
    }
}

/// Balances per account: each event adds to its account's row (increments, so an event applied
/// twice shows), in portable SQL.
#[derive(Debug)]
struct Balances {
    table: String,
    /// Events handled (in batches committed or not).
    handled: Arc<AtomicU64>,
    /// Batches gone through (committed or not; with no event to handle too): a runner that
    /// waits for the lease goes through none.
    batches: Arc<AtomicU64>,
    faults: Arc<Faults>,
}

#[factum::projection(name = "balances")]
impl Balances {
    #[handle]
    async fn deposited(
        &mut self,
        event: &Deposited,
        envelope: &Envelope,
        tx: &mut Tx<'_>,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        self.add(&envelope.stream_id, event.cents, tx).await
    }

    #[handle]
    async fn withdrawn(
        &mut self,
        event: &Withdrawn,
        envelope: &Envelope,
        tx: &mut Tx<'_>,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        self.add(&envelope.stream_id, -event.cents, tx).await
    }

    async fn add(
        &mut self,
        account: &str,
        cents: i64,
        tx: &mut Tx<'_>,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        if self.faults.strike(cents.abs()) {
            return Err(Box::new(Unavailable));
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {} AS b (account, cents, events) VALUES ($1, $2, 1)
             ON CONFLICT (account) DO UPDATE SET cents = b.cents + excluded.cents,
                                                 events = b.events + 1",
            self.table
        )))
        .bind(account)
        .bind(cents)
        .execute(&mut *tx)
        .await?;
        self.handled.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    #[flush]
    async fn flush(&mut self, _tx: &mut Tx<'_>) -> Result<(), Unavailable> {
        self.batches.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// The handlers write at once: nothing is buffered.
    #[discard]
    fn discard(&mut self) {}
}

/// What a projection's handlers were handed, one string per event (the `Debug` of an
/// [`Origin`], or of a whole envelope's origin, metadata and correlation).
type Seen = Arc<std::sync::Mutex<Vec<String>>>;

/// Handlers that take only the events' origins: the runner reads only those columns.
struct Origins(Seen);

#[factum::projection(name = "origins")]
impl Origins {
    #[handle]
    async fn deposited(
        &mut self,
        _event: &Deposited,
        origin: &Origin<'_>,
        _tx: &mut Tx<'_>,
    ) -> Result<(), Unavailable> {
        note(&self.0, format!("{origin:?}"));
        Ok(())
    }

    #[handle(side_effects)]
    async fn withdrawn(
        &mut self,
        _event: &Withdrawn,
        origin: &Origin<'_>,
    ) -> Result<(), Unavailable> {
        note(&self.0, format!("{origin:?}"));
        Ok(())
    }
}

/// One handler takes the whole envelope: the runner reads every column.
struct Envelopes(Seen);

#[factum::projection(name = "envelopes")]
impl Envelopes {
    #[handle]
    async fn deposited(
        &mut self,
        _event: &Deposited,
        origin: &Origin<'_>,
        _tx: &mut Tx<'_>,
    ) -> Result<(), Unavailable> {
        note(&self.0, format!("{origin:?}"));
        Ok(())
    }

    #[handle]
    async fn withdrawn(
        &mut self,
        _event: &Withdrawn,
        envelope: &Envelope,
        _tx: &mut Tx<'_>,
    ) -> Result<(), Unavailable> {
        note(&self.0, whole(envelope));
        Ok(())
    }
}

fn note(seen: &Seen, what: String) {
    seen.lock().unwrap().push(what);
}

fn whole(envelope: &RecordedEvent) -> String {
    format!(
        "{:?} {:?} {} {} {:?}",
        envelope.origin(),
        envelope.metadata,
        envelope.correlation_id,
        envelope.causation_id,
        envelope.actor
    )
}

/// A new database with the balances table; returns the table's name as SQL must write it.
async fn setup<D: TestDatabase>() -> (D, String) {
    let database = D::create().await.unwrap();
    let table = database.table("balances");
    execute(
        &*database,
        &format!(
            "CREATE TABLE {table} (account TEXT PRIMARY KEY, cents BIGINT NOT NULL,
                                   events BIGINT NOT NULL)"
        ),
    )
    .await
    .unwrap();
    (database, table)
}

fn balances(table: &str) -> Balances {
    Balances {
        table: table.to_owned(),
        handled: Arc::default(),
        batches: Arc::default(),
        faults: Arc::default(),
    }
}

/// A runner of `projection` as another process would run it: on a pool of its own.
async fn new_runner<D: TestDatabase>(
    database: &D,
    projection: Balances,
) -> ProjectionRunner<D::Store, Balances> {
    ProjectionRunner::new(database.another_client().await.unwrap(), projection)
}

fn deposit(cents: i64) -> NewEvent {
    NewEvent::new(
        "Deposited",
        2,
        Payload::encode(&serde_json::json!({ "cents": cents })).unwrap(),
    )
}

fn withdrawal(cents: i64) -> NewEvent {
    NewEvent::new(
        "Withdrawn",
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

async fn append(store: &impl EventStore, account: &str, events: Vec<NewEvent>) {
    store
        .append(account, "Account", ExpectedVersion::Any, events)
        .await
        .unwrap();
}

/// The read model: account, cents, events, by account.
async fn read_model<D: TestDatabase>(database: &D, table: &str) -> Vec<(String, i64, i64)> {
    fetch_all(
        &**database,
        &format!("SELECT account, cents, events FROM {table} ORDER BY account"),
    )
    .await
    .unwrap()
}

/// The events applied, over every account (read while runners run).
async fn events_applied<D: TestDatabase>(database: &D, table: &str) -> i64 {
    let sum: Vec<(i64,)> = fetch_all(
        &**database,
        &format!("SELECT CAST(coalesce(sum(events), 0) AS BIGINT) FROM {table}"),
    )
    .await
    .unwrap();
    sum[0].0
}

/// Waits until `condition` holds, polling, for a minute at most: however loaded the machine,
/// a runner gets there long before; a runner that never does fails the test.
async fn eventually<F: Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !condition().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The whole feed from the start, once it shows `events` events (on PostgreSQL, other tests'
/// open transactions may hold it back for a moment).
async fn whole_feed(store: &impl EventStore, events: usize) -> FeedBatch {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let batch = store.read_feed(&FeedQuery::from_start()).await.unwrap();
        if batch.events.len() == events {
            return batch;
        }
        assert!(std::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A projection whose handlers take `&Origin<'_>` has the runner read only the origin columns
/// (the store leaves the metadata, correlation, causation and actor out), and its handlers see
/// exactly what a whole read holds; one handler taking the whole envelope makes it read all.
async fn handlers_taking_origins_read_only_the_origin_columns<D: TestDatabase>() {
    let (database, _table) = setup::<D>().await;
    assert_eq!(<Origins as Projection>::ENVELOPE, EnvelopeFields::Origin);
    assert_eq!(<Envelopes as Projection>::ENVELOPE, EnvelopeFields::All);
    assert_eq!(<Balances as Projection>::ENVELOPE, EnvelopeFields::All);
    let marked = |event: NewEvent| {
        event
            .metadata("request", "r-1")
            .actor("ada")
            .correlation_id(factum::Uuid::now_v7())
    };
    append(
        &*database,
        "acc-1",
        vec![marked(deposit(5)), marked(noise()), marked(withdrawal(2))],
    )
    .await;
    append(&*database, "acc-2", vec![marked(deposit(7))]).await;
    let feed = whole_feed(&*database, 4).await;
    let (deposits, withdrawal): (Vec<_>, Vec<_>) = feed
        .events
        .iter()
        .filter(|e| e.event_type != "Audited")
        .partition(|e| e.event_type == "Deposited");

    // The store's own read of the origin columns.
    let lean = database
        .read_feed(&FeedQuery::from_start().fields(EnvelopeFields::Origin))
        .await
        .unwrap();
    assert_eq!(lean.next, feed.next);
    for (lean, full) in lean.events.iter().zip(&feed.events) {
        assert_eq!((lean.origin(), &lean.event), (full.origin(), &full.event));
        assert!(full.actor.is_some() && !full.metadata.is_empty());
        assert_eq!(
            (
                &lean.metadata,
                lean.correlation_id,
                lean.causation_id,
                &lean.actor
            ),
            (
                &factum::Metadata::new(),
                factum::Uuid::nil(),
                factum::Uuid::nil(),
                &None
            ),
            "the columns an origin leaves out are not read"
        );
    }

    let seen = Seen::default();
    let mut runner = ProjectionRunner::new(
        database.another_client().await.unwrap(),
        Origins(seen.clone()),
    );
    assert_eq!(runner.catch_up().await.unwrap(), 3);
    // The deposits in the batch, then the withdrawal's side effect after its commit.
    let expected: Vec<String> = deposits
        .iter()
        .chain(&withdrawal)
        .map(|e| format!("{:?}", e.origin()))
        .collect();
    assert_eq!(*seen.lock().unwrap(), expected);

    let seen = Seen::default();
    let mut runner = ProjectionRunner::new(
        database.another_client().await.unwrap(),
        Envelopes(seen.clone()),
    );
    assert_eq!(runner.catch_up().await.unwrap(), 3);
    let expected = vec![
        format!("{:?}", deposits[0].origin()),
        whole(withdrawal[0]),
        format!("{:?}", deposits[1].origin()),
    ];
    assert_eq!(
        *seen.lock().unwrap(),
        expected,
        "the whole envelope, metadata and all"
    );
}

async fn catching_up_applies_every_event_once_upcasting_old_versions<D: TestDatabase>() {
    let (database, table) = setup::<D>().await;
    let v1 = NewEvent::new(
        "Deposited",
        1,
        Payload::encode(&serde_json::json!({ "dollars": 3 })).unwrap(),
    );
    append(
        &*database,
        "acc-1",
        vec![deposit(500), noise(), withdrawal(200), v1],
    )
    .await;
    append(&*database, "acc-2", vec![deposit(70)]).await;

    let mut runner = new_runner(&database, balances(&table)).await.batch_size(2);
    assert_eq!(
        runner.catch_up().await.unwrap(),
        4,
        "the event of another type is not delivered"
    );
    let expected = [("acc-1".to_owned(), 600, 3), ("acc-2".to_owned(), 70, 1)];
    assert_eq!(
        read_model(&database, &table).await,
        expected,
        "v1 was read as v2 (3 dollars = 300 cents)"
    );
    assert_eq!(runner.catch_up().await.unwrap(), 0, "nothing twice");

    // The whole feed delivered again: everything is at or below the checkpoint.
    let feed = whole_feed(&*database, 5).await;
    assert_eq!(
        runner.apply_batch(&feed.events, feed.next).await.unwrap(),
        BatchOutcome::default()
    );
    assert_eq!(read_model(&database, &table).await, expected);

    let status = runner.status().await.unwrap();
    assert_eq!(status.event_lag, 0);
    assert_eq!(status.time_lag, Duration::ZERO);
    assert_eq!(status.progress, 1.0);
    assert!(status.checkpoint >= FeedPosition::new(status.head.tx, status.head.position));

    append(&*database, "acc-2", vec![withdrawal(20)]).await;
    let status = runner.status().await.unwrap();
    assert_eq!(status.event_lag, 1);
    assert!(status.time_lag > Duration::ZERO);
}

async fn a_redelivered_batch_has_no_second_effect<D: TestDatabase>() {
    let (database, table) = setup::<D>().await;
    append(&*database, "acc-1", vec![deposit(100), deposit(10)]).await;
    let batch = whole_feed(&*database, 2).await;
    let mut runner = new_runner(&database, balances(&table)).await;
    assert_eq!(
        runner
            .apply_batch(&batch.events, batch.next)
            .await
            .unwrap()
            .handled,
        2
    );
    assert_eq!(
        runner
            .apply_batch(&batch.events, batch.next)
            .await
            .unwrap()
            .handled,
        0,
        "the same batch again"
    );
    assert_eq!(
        runner
            .apply_batch(&batch.events[1..], batch.next)
            .await
            .unwrap()
            .handled,
        0,
        "a part of it"
    );
    assert_eq!(
        read_model(&database, &table).await,
        [("acc-1".to_owned(), 110, 2)]
    );
    assert_eq!(runner.checkpoint().await.unwrap(), batch.next);
}

async fn a_failing_batch_is_rolled_back_and_retried_then_stops_the_runner_without_dead_letters<
    D: TestDatabase,
>() {
    let (database, table) = setup::<D>().await;
    append(
        &*database,
        "acc-1",
        vec![deposit(1), deposit(2), deposit(3)],
    )
    .await;
    let projection = balances(&table);
    let faults = Arc::clone(&projection.faults);
    let mut runner = new_runner(&database, projection)
        .await
        .retries(3, Duration::from_millis(1))
        .dead_letters(false);
    // The second event fails twice, after the first one's write: the batch is rolled back each
    // time (that write too), then applied whole.
    faults.inject(2, 2);
    assert_eq!(runner.catch_up().await.unwrap(), 3);
    assert_eq!(
        faults.remaining.load(Ordering::SeqCst),
        0,
        "both failures were met"
    );
    assert_eq!(
        read_model(&database, &table).await,
        [("acc-1".to_owned(), 6, 3)],
        "no partial batch survived"
    );

    // Without the dead-letter queue, a handler that keeps failing stops the runner; nothing of
    // its batch is applied (the first event's write neither).
    let pending = database
        .append(
            "acc-1",
            "Account",
            ExpectedVersion::Any,
            vec![deposit(10), deposit(20)],
        )
        .await
        .unwrap();
    faults.inject(100, 20);
    let error = runner.catch_up().await.unwrap_err();
    assert!(
        matches!(
            &error,
            RunnerError::Handler {
                projection: "balances",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("the read model is unavailable"),
        "{error}"
    );
    assert_eq!(
        faults.remaining.load(Ordering::SeqCst),
        96,
        "the first try and three retries"
    );
    // The checkpoint may have moved over empty stretches of the feed, never onto the batch.
    assert!(runner.checkpoint().await.unwrap() < pending[0].feed_position());
    assert_eq!(
        read_model(&database, &table).await,
        [("acc-1".to_owned(), 6, 3)],
        "rolled back"
    );
    assert_eq!(
        runner.status().await.unwrap().event_lag,
        2,
        "the checkpoint did not move"
    );
}

async fn two_runners_at_once_apply_each_event_once<D: TestDatabase>() {
    let (database, table) = setup::<D>().await;
    for n in 0..40 {
        let events = (0..25).map(|i| deposit(n * 100 + i)).collect();
        append(&*database, &format!("acc-{}", n % 7), events).await;
    }
    let mut first = new_runner(&database, balances(&table)).await.batch_size(13);
    let mut second = new_runner(&database, balances(&table)).await.batch_size(17);
    let (a, b) = tokio::join!(first.catch_up(), second.catch_up());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a + b, 1000, "each event handled by one of them");
    let rows = read_model(&database, &table).await;
    assert_eq!(rows.iter().map(|r| r.2).sum::<i64>(), 1000);
    let total: i64 = (0..40)
        .flat_map(|n| (0..25).map(move |i| n * 100 + i))
        .sum();
    assert_eq!(rows.iter().map(|r| r.1).sum::<i64>(), total);
}

async fn one_runner_holds_the_lease_and_another_takes_over_when_it_dies<D: TestDatabase>() {
    let (database, table) = setup::<D>().await;
    for i in 0..50 {
        append(&*database, &format!("acc-{}", i % 5), vec![deposit(1)]).await;
    }
    let first = balances(&table);
    let second = balances(&table);
    let (first_handled, second_handled) = (first.handled.clone(), second.handled.clone());
    let second_batches = second.batches.clone();
    let configure = |runner: ProjectionRunner<D::Store, Balances>| {
        runner
            .batch_size(10)
            .poll_interval(Duration::from_millis(20))
            .lease_retry(Duration::from_millis(20))
    };
    let handled = |counter: &Arc<AtomicU64>, n: u64| {
        let counter = Arc::clone(counter);
        move || std::future::ready(counter.load(Ordering::SeqCst) == n)
    };
    let first_task =
        tokio::spawn(configure(new_runner(&database, first).await).run(std::future::pending()));
    // The first has the lease once it has caught up (however long it took to start).
    eventually("the first runner to catch up", handled(&first_handled, 50)).await;
    let (stop_second, stopped) = tokio::sync::oneshot::channel::<()>();
    let second_task = tokio::spawn(configure(new_runner(&database, second).await).run(async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..20 {
        append(&*database, "acc-0", vec![deposit(1)]).await;
    }
    let (first, second) = (first_handled.clone(), second_handled.clone());
    eventually("the new events to be handled", || {
        std::future::ready(first.load(Ordering::SeqCst) + second.load(Ordering::SeqCst) == 70)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        first_handled.load(Ordering::SeqCst),
        70,
        "the first follows"
    );
    assert_eq!(
        second_handled.load(Ordering::SeqCst),
        0,
        "the second instance waits for the lease"
    );
    assert_eq!(
        second_batches.load(Ordering::SeqCst),
        0,
        "it does not even read a batch (it would lose every race to the first and handle nothing)"
    );

    // The first instance dies: its lease goes with it (PostgreSQL: its lease connection
    // closes; SQLite: its lock file is unlocked), the second takes over.
    first_task.abort();
    let _ = first_task.await;
    for _ in 0..30 {
        append(&*database, "acc-1", vec![deposit(1)]).await;
    }
    eventually(
        "the second runner to take over",
        handled(&second_handled, 30),
    )
    .await;
    stop_second.send(()).unwrap();
    second_task.await.unwrap().unwrap();

    assert_eq!(
        first_handled.load(Ordering::SeqCst) + second_handled.load(Ordering::SeqCst),
        100
    );
    let model = read_model(&database, &table).await;
    let total: i64 = model.iter().map(|(_, cents, _)| cents).sum();
    let events: i64 = model.iter().map(|(_, _, events)| events).sum();
    assert_eq!((total, events), (100, 100), "every deposit counted once");
}

async fn one_runner_holds_the_lease_follows_live_events_and_another_takes_over_when_it_stops<
    D: TestDatabase,
>() {
    let (database, table) = setup::<D>().await;
    append(&*database, "acc-1", vec![deposit(5)]).await;
    let applied = |events: i64| {
        let (database, table) = (database.clone(), table.clone());
        move || {
            let (database, table) = (database.clone(), table.clone());
            async move { events_applied(&database, &table).await >= events }
        }
    };
    let (stop_first, first_stopped) = tokio::sync::oneshot::channel::<()>();
    let first = tokio::spawn(
        new_runner(&database, balances(&table))
            .await
            .poll_interval(Duration::from_millis(20))
            .run(async {
                first_stopped.await.ok();
            }),
    );
    eventually("the first event", applied(1)).await;
    // A second runner waits for the lease.
    let second_projection = balances(&table);
    let second_handled = Arc::clone(&second_projection.handled);
    let second_batches = Arc::clone(&second_projection.batches);
    let (stop_second, second_stopped) = tokio::sync::oneshot::channel::<()>();
    let second = tokio::spawn(
        new_runner(&database, second_projection)
            .await
            .poll_interval(Duration::from_millis(20))
            .lease_retry(Duration::from_millis(20))
            .run(async {
                second_stopped.await.ok();
            }),
    );
    // Live: a new event is applied without a catch-up call (once the second runner is up, so
    // that it would race the first for the event if it did not wait for the lease).
    tokio::time::sleep(Duration::from_millis(200)).await;
    append(&*database, "acc-1", vec![deposit(7)]).await;
    eventually("the live event", applied(2)).await;
    // The second waits: the first holds the lease.
    assert!(!second.is_finished());
    assert_eq!(second_handled.load(Ordering::SeqCst), 0);
    assert_eq!(second_batches.load(Ordering::SeqCst), 0);

    // The first stops (releasing the lease): the second takes over.
    stop_first.send(()).unwrap();
    first.await.unwrap().unwrap();
    append(&*database, "acc-1", vec![deposit(11)]).await;
    eventually("the event after the takeover", applied(3)).await;
    stop_second.send(()).unwrap();
    let second = second.await.unwrap().unwrap();
    assert_eq!(second.handled.load(Ordering::SeqCst), 1);
    assert_eq!(
        read_model(&database, &table).await,
        [("acc-1".to_owned(), 23, 3)]
    );
}

async fn a_running_projection_is_woken_by_new_events_and_stops_gracefully<D: TestDatabase>() {
    let (database, table) = setup::<D>().await;
    let projection = balances(&table);
    let handled = projection.handled.clone();
    let store = database.another_client().await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        ProjectionRunner::new(store.clone(), projection)
            .poll_interval(Duration::from_secs(3600))
            .run(async {
                let _ = stopped.await;
            }),
    );
    // The runner subscribes to wake-ups once it has registered its version (PostgreSQL's
    // listening connection then takes a moment to open).
    eventually("the runner to start", || async {
        active_version(&*database, "balances").await.unwrap() == Some(1)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // PostgreSQL wakes runners in every process (LISTEN/NOTIFY): the append comes from another
    // client. SQLite wakes the runners of the appending store only (those of other processes
    // poll), so there it comes through the runner's store.
    let writer = match D::KIND {
        StoreKind::Postgres => database.another_client().await.unwrap(),
        _ => store,
    };
    append(&writer, "acc-9", vec![deposit(42)]).await;
    // The poll interval is an hour: the wake-up wakes the runner.
    eventually("the runner to wake up", || {
        std::future::ready(handled.load(Ordering::SeqCst) == 1)
    })
    .await;
    stop.send(()).unwrap();
    let projection = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(projection.handled.load(Ordering::SeqCst), 1);
    assert_eq!(
        read_model(&database, &table).await,
        [("acc-9".to_owned(), 42, 1)]
    );
}

/// Clears the read model and moves the checkpoint back to the start, in one transaction (as an
/// operator's rebuild by hand would).
async fn reset<D: TestDatabase>(database: &D, table: &str) {
    let checkpoints = database.table("projection_checkpoints");
    // SQLite's positions are in commit order: its checkpoints have no `tx`.
    let start = match D::KIND {
        StoreKind::Postgres => "tx = 0, position = 0",
        _ => "position = 0",
    };
    let mut transaction = database.begin().await.unwrap();
    // The checkpoint first, as a runner's batch locks it before writing the read model: in the
    // other order, a batch running meanwhile deadlocks with the reset on PostgreSQL.
    for sql in [
        format!("UPDATE {checkpoints} SET {start}"),
        format!("DELETE FROM {table}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut transaction.tx())
            .await
            .unwrap();
    }
    transaction.commit().await.unwrap();
}

async fn a_checkpoint_reset_between_or_during_catch_ups_rebuilds_everything<D: TestDatabase>() {
    let (database, table) = setup::<D>().await;
    for i in 0..40 {
        append(&*database, &format!("acc-{}", i % 4), vec![deposit(1)]).await;
    }
    let mut runner = new_runner(&database, balances(&table)).await.batch_size(3);
    let mut handled = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while handled < 40 {
        assert!(std::time::Instant::now() < deadline, "timed out");
        handled += runner.catch_up().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    reset(&database, &table).await;
    assert_eq!(runner.catch_up().await.unwrap(), 40, "the reset is noticed");

    // A reset in the middle of a catch-up (the runner's position is cached and the next batch
    // read ahead): the runner notices it at its next batch and reads from the reset checkpoint.
    let store_events = 40 + 1_500;
    let writer = database.another_client().await.unwrap();
    append(&writer, "acc-big", (0..1_500).map(|_| deposit(1)).collect()).await;
    let projection = balances(&table);
    let handled = projection.handled.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        new_runner(&database, projection)
            .await
            .batch_size(5)
            .run(async {
                let _ = stopped.await;
            }),
    );
    eventually("300 events handled", || {
        std::future::ready(handled.load(Ordering::SeqCst) > 300)
    })
    .await;
    reset(&database, &table).await;
    eventually("every event applied again", || {
        let (database, table) = (&database, &table);
        async move { events_applied(database, table).await >= store_events }
    })
    .await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let model = read_model(&database, &table).await;
    assert_eq!(
        model.iter().map(|row| row.2).sum::<i64>(),
        store_events,
        "every event once after the reset: {model:?}"
    );
    assert_eq!(model.iter().map(|row| row.1).sum::<i64>(), store_events);
}

factum::on_both_stores!(
    #[tokio::test]
    catching_up_applies_every_event_once_upcasting_old_versions,
    #[tokio::test]
    handlers_taking_origins_read_only_the_origin_columns,
    #[tokio::test]
    a_redelivered_batch_has_no_second_effect,
    #[tokio::test]
    a_failing_batch_is_rolled_back_and_retried_then_stops_the_runner_without_dead_letters,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    two_runners_at_once_apply_each_event_once,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    one_runner_holds_the_lease_and_another_takes_over_when_it_dies,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    one_runner_holds_the_lease_follows_live_events_and_another_takes_over_when_it_stops,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_running_projection_is_woken_by_new_events_and_stops_gracefully,
    #[tokio::test]
    a_checkpoint_reset_between_or_during_catch_ups_rebuilds_everything,
);
