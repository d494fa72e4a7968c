//! The sequence dead-letter queue, each scenario written once and run on PostgreSQL and on
//! SQLite: an event its projection keeps failing on (in a handler, or in the flush) parks its
//! stream (the event and the stream's later events wait, in order), other streams complete;
//! retrying after the fix drains the stream in order; skipping keeps the event, marked; a
//! database outage parks nothing.

use std::error::Error;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use factum::projection::Projection;
use factum::projection::{ProjectionRunner, RetryOutcome, RunnerError, RunnerState};
use factum::testing::{TestDatabase, execute, fetch_all};
use factum::{
    Envelope, EnvelopeFields, EventStore, ExpectedVersion, NewEvent, Payload, Source, Tx,
};

#[factum::event]
#[derive(Debug)]
pub struct Deposited {
    pub cents: i64,
}

/// The deposit the flush refuses while `poisoned` is set.
const POISON: i64 = 666;
/// The deposit the handler fails on while `handler_poison` is set.
const HANDLER_POISON: i64 = 22;

#[derive(Debug, thiserror::Error)]
#[error("the ledger refuses {0} cents")]
pub struct Refused(i64);

#[derive(Debug, thiserror::Error)]
#[error("22 cents: poison")]
pub struct Poison;

/// A ledger of applied deposits, written by the flush: one row per event, so an event applied
/// twice violates the primary key, and `seq` records the order of application.
#[derive(Debug)]
struct Ledger {
    table: String,
    pending: Vec<(String, i64, i64)>,
    /// Whether a deposit of `POISON` cents fails the flush (a bug in the read model's code).
    poisoned: Arc<AtomicBool>,
    /// Whether a deposit of `HANDLER_POISON` cents fails its handler.
    handler_poison: Arc<AtomicBool>,
    /// Whether the flush fails as if the database were unreachable.
    outage: Arc<AtomicBool>,
    /// The events of each batch the flush wrote, in order.
    flushed: Arc<Mutex<Vec<usize>>>,
    /// The events of each batch the flush was called with, written or not.
    tried: Arc<Mutex<Vec<usize>>>,
}

#[factum::projection(name = "ledger")]
impl Ledger {
    #[handle]
    async fn deposited(
        &mut self,
        event: &Deposited,
        envelope: &Envelope,
        _tx: &mut Tx<'_>,
    ) -> Result<(), Poison> {
        if event.cents == HANDLER_POISON && self.handler_poison.load(Ordering::SeqCst) {
            return Err(Poison);
        }
        let version = i64::try_from(envelope.stream_version).unwrap();
        self.pending
            .push((envelope.stream_id.clone(), version, event.cents));
        Ok(())
    }

    #[flush]
    async fn flush(&mut self, tx: &mut Tx<'_>) -> Result<(), Box<dyn Error + Send + Sync>> {
        self.tried.lock().unwrap().push(self.pending.len());
        if self.outage.load(Ordering::SeqCst) {
            return Err(Box::new(sqlx::Error::PoolTimedOut));
        }
        let pending = std::mem::take(&mut self.pending);
        if self.poisoned.load(Ordering::SeqCst) && pending.iter().any(|p| p.2 == POISON) {
            return Err(Box::new(Refused(POISON)));
        }
        if pending.is_empty() {
            return Ok(());
        }
        let events = pending.len();
        match tx.postgres() {
            Some(connection) => self.write_arrays(connection, pending).await?,
            None => self.write_rows(tx, pending).await?,
        }
        self.flushed.lock().unwrap().push(events);
        Ok(())
    }

    #[discard]
    fn discard(&mut self) {
        self.pending.clear();
    }
}

impl Ledger {
    /// The batch's rows on PostgreSQL: one statement, through arrays.
    async fn write_arrays(
        &self,
        connection: &mut sqlx::PgConnection,
        pending: Vec<(String, i64, i64)>,
    ) -> Result<(), sqlx::Error> {
        let mut columns = (vec![], vec![], vec![]);
        for (account, version, cents) in pending {
            columns.0.push(account);
            columns.1.push(version);
            columns.2.push(cents);
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {t} (seq, account, stream_version, cents)
             SELECT (SELECT coalesce(max(seq), 0) FROM {t}) + u.n, u.account, u.version, u.cents
             FROM UNNEST($1::text[], $2::int8[], $3::int8[]) WITH ORDINALITY
                  AS u (account, version, cents, n)",
            t = self.table
        )))
        .bind(columns.0)
        .bind(columns.1)
        .bind(columns.2)
        .execute(connection)
        .await?;
        Ok(())
    }

    /// The batch's rows in portable SQL (SQLite's path): one statement per row.
    async fn write_rows(
        &self,
        tx: &mut Tx<'_>,
        pending: Vec<(String, i64, i64)>,
    ) -> Result<(), sqlx::Error> {
        let insert = format!(
            "INSERT INTO {t} (seq, account, stream_version, cents)
             VALUES ((SELECT coalesce(max(seq), 0) + 1 FROM {t}), $1, $2, $3)",
            t = self.table
        );
        for (account, version, cents) in pending {
            sqlx::query(sqlx::AssertSqlSafe(insert.as_str()))
                .bind(account)
                .bind(version)
                .bind(cents)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }
}

struct Setup<D: TestDatabase> {
    database: D,
    table: String,
    poisoned: Arc<AtomicBool>,
    handler_poison: Arc<AtomicBool>,
    outage: Arc<AtomicBool>,
    flushed: Arc<Mutex<Vec<usize>>>,
    tried: Arc<Mutex<Vec<usize>>>,
}

impl<D: TestDatabase> Setup<D> {
    async fn new() -> Self {
        let database = D::create().await.unwrap();
        let table = database.table("ledger");
        execute(
            &*database,
            &format!(
                "CREATE TABLE {table} (seq BIGINT NOT NULL, account TEXT NOT NULL,
                                       stream_version BIGINT NOT NULL, cents BIGINT NOT NULL,
                                       PRIMARY KEY (account, stream_version))"
            ),
        )
        .await
        .unwrap();
        Self {
            database,
            table,
            poisoned: Arc::new(AtomicBool::new(true)),
            handler_poison: Arc::default(),
            outage: Arc::default(),
            flushed: Arc::default(),
            tried: Arc::default(),
        }
    }

    fn ledger(&self) -> Ledger {
        Ledger {
            table: self.table.clone(),
            pending: Vec::new(),
            poisoned: self.poisoned.clone(),
            handler_poison: self.handler_poison.clone(),
            outage: self.outage.clone(),
            flushed: self.flushed.clone(),
            tried: self.tried.clone(),
        }
    }

    /// A runner as another process would run it: on a pool of its own.
    async fn runner(&self) -> ProjectionRunner<D::Store, Ledger> {
        ProjectionRunner::new(self.database.another_client().await.unwrap(), self.ledger())
            .batch_size(16)
            .retries(2, Duration::from_millis(1))
    }

    /// `each` one-cent deposits into each of `accounts` accounts, an append per account.
    async fn fill(&self, accounts: usize, each: usize) {
        for account in 0..accounts {
            let deposits = (0..each).map(|_| deposit(1)).collect();
            self.append(&format!("acc-{account}"), deposits).await;
        }
    }

    /// A runner on a pool of its own whose batches start at `batch_size` and grow to
    /// `max_batch_size`, retrying a failing batch once.
    async fn growing(
        &self,
        batch_size: usize,
        max_batch_size: usize,
    ) -> ProjectionRunner<D::Store, Ledger> {
        ProjectionRunner::new(self.database.another_client().await.unwrap(), self.ledger())
            .batch_size(batch_size)
            .max_batch_size(max_batch_size)
            .retries(1, Duration::from_millis(1))
    }

    /// The events of each batch written so far, in order.
    fn flushed(&self) -> Vec<usize> {
        self.flushed.lock().unwrap().clone()
    }

    async fn deposit(&self, account: &str, cents: i64) {
        self.append(account, vec![deposit(cents)]).await;
    }

    async fn append(&self, account: &str, events: Vec<NewEvent>) {
        self.database
            .append(account, "Account", ExpectedVersion::Any, events)
            .await
            .unwrap();
    }

    /// The applied versions of an account, in the order they were applied.
    async fn applied(&self, account: &str) -> Vec<i64> {
        let rows: Vec<(i64,)> = fetch_all(
            &*self.database,
            &format!(
                "SELECT stream_version FROM {} WHERE account = '{account}' ORDER BY seq",
                self.table
            ),
        )
        .await
        .unwrap();
        rows.into_iter().map(|(version,)| version).collect()
    }

    /// Per account: the cents and the number of deposits applied, by account.
    async fn balances(&self) -> Vec<(String, i64, i64)> {
        fetch_all(
            &*self.database,
            &format!(
                "SELECT account, CAST(sum(cents) AS BIGINT), count(*) FROM {}
                 GROUP BY account ORDER BY account",
                self.table
            ),
        )
        .await
        .unwrap()
    }

    /// Catches up until `expected` events are handled, waiting while other tests' transactions
    /// hold the feed back (PostgreSQL), for a minute at most. Returns the events handled.
    async fn catch_up<P: Projection>(
        &self,
        runner: &mut ProjectionRunner<D::Store, P>,
        expected: u64,
    ) -> u64 {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut handled = 0;
        loop {
            handled += runner.catch_up().await.unwrap();
            if handled >= expected || std::time::Instant::now() > deadline {
                return handled;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn deposit(cents: i64) -> NewEvent {
    NewEvent::new(
        "Deposited",
        1,
        Payload::encode(&serde_json::json!({ "cents": cents })).unwrap(),
    )
}

async fn a_poison_event_parks_its_stream_the_others_complete_and_retry_drains_it_in_order<
    D: TestDatabase,
>() {
    let setup = Setup::<D>::new().await;
    // Five accounts, 20 deposits each, interleaved in the feed; acc-2's fifth is poison to the
    // flush.
    for i in 1..=20 {
        for account in 0..5 {
            let cents = if account == 2 && i == 5 { POISON } else { i };
            setup.deposit(&format!("acc-{account}"), cents).await;
        }
    }
    let mut runner = setup.runner().await;
    assert_eq!(
        setup.catch_up(&mut runner, 84).await,
        84,
        "100 less acc-2's last 16"
    );
    for account in [0, 1, 3, 4] {
        assert_eq!(
            setup.applied(&format!("acc-{account}")).await,
            (1..=20).collect::<Vec<_>>()
        );
    }
    assert_eq!(setup.applied("acc-2").await, [1, 2, 3, 4]);

    let parked = runner.parked().await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(
        (
            parked[0].stream_id.as_str(),
            parked[0].first_version,
            parked[0].events
        ),
        ("acc-2", 5, 16)
    );
    let error = parked[0].error.as_deref().unwrap();
    assert!(error.contains("the ledger refuses 666 cents"), "{error}");
    assert_eq!(parked[0].attempts, 3, "the first try and two retries");
    let status = runner.status().await.unwrap();
    assert_eq!((status.parked_streams, status.parked_events), (1, 16));
    assert_eq!(status.event_lag, 0, "parked events are not lag");

    // New events: acc-2's join the queue behind the poison, acc-0's flow.
    setup.deposit("acc-2", 21).await;
    setup.deposit("acc-0", 21).await;
    setup.deposit("acc-2", 22).await;
    assert_eq!(setup.catch_up(&mut runner, 1).await, 1);
    assert_eq!(runner.parked().await.unwrap()[0].events, 18);
    assert_eq!(setup.applied("acc-0").await.len(), 21);

    // Retrying before the fix stops at the poison again, and applies nothing.
    match runner.retry_parked("acc-2").await.unwrap() {
        RetryOutcome::Stopped {
            handled: 0,
            stream_version: 5,
            error,
        } => assert!(error.to_string().contains("666"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(runner.parked().await.unwrap()[0].attempts, 4);
    assert_eq!(setup.applied("acc-2").await, [1, 2, 3, 4]);

    // After the fix, the retry drains the stream in order, and it flows again.
    setup.poisoned.store(false, Ordering::SeqCst);
    assert!(matches!(
        runner.retry_parked("acc-2").await.unwrap(),
        RetryOutcome::Drained { handled: 18 }
    ));
    assert_eq!(
        setup.applied("acc-2").await,
        (1..=22).collect::<Vec<_>>(),
        "in stream order"
    );
    assert!(runner.parked().await.unwrap().is_empty());
    setup.deposit("acc-2", 23).await;
    assert_eq!(setup.catch_up(&mut runner, 1).await, 1);
    assert_eq!(setup.applied("acc-2").await.len(), 23);
    let status = runner.status().await.unwrap();
    assert_eq!((status.parked_streams, status.parked_events), (0, 0));
}

async fn a_failing_handler_parks_its_stream_while_the_others_complete_and_retry_drains_it<
    D: TestDatabase,
>() {
    let setup = Setup::<D>::new().await;
    for account in 0..4 {
        let events = (1..=3)
            .map(|n| match account * 10 + n {
                // Stored with a nil id, which nothing forbids: it parks like any other.
                HANDLER_POISON => deposit(HANDLER_POISON).event_id(uuid::Uuid::nil()),
                cents => deposit(cents),
            })
            .collect();
        setup.append(&format!("acc-{account}"), events).await;
    }
    // acc-2's second deposit (22 cents) is the poison: its handler fails until the "fix".
    setup.handler_poison.store(true, Ordering::SeqCst);
    let mut runner = ProjectionRunner::new(
        setup.database.another_client().await.unwrap(),
        setup.ledger(),
    )
    .retries(1, Duration::from_millis(1));
    assert_eq!(
        setup.catch_up(&mut runner, 10).await,
        10,
        "12 less the poison and the event behind it"
    );

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
    // The catch-up retried, then parked and went on: once over, it says it retries nothing.
    assert_eq!(runner.handle().state(), RunnerState::NotStarted);
    let rows = setup.balances().await;
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
    setup.deposit("acc-2", 100).await;
    runner.catch_up().await.unwrap();
    assert_eq!(runner.parked().await.unwrap()[0].events, 3);
    assert_eq!(runner.status().await.unwrap().parked_events, 3);

    // Retried before the fix: stops again; after it: drains in order.
    assert!(matches!(
        runner.retry_parked("acc-2").await.unwrap(),
        RetryOutcome::Stopped {
            handled: 0,
            stream_version: 2,
            ..
        }
    ));
    setup.handler_poison.store(false, Ordering::SeqCst);
    assert!(matches!(
        runner.retry_parked("acc-2").await.unwrap(),
        RetryOutcome::Drained { handled: 3 }
    ));
    assert_eq!(
        setup.balances().await[2],
        ("acc-2".to_owned(), 21 + 22 + 23 + 100, 4)
    );
    assert_eq!(
        setup.applied("acc-2").await,
        [1, 2, 3, 4],
        "in stream order"
    );
    assert!(runner.parked().await.unwrap().is_empty());
}

async fn an_undecodable_event_is_parked_at_once_and_can_be_skipped_for_the_record<
    D: TestDatabase,
>() {
    let setup = Setup::<D>::new().await;
    setup.deposit("acc-1", 1).await;
    setup.deposit("acc-7", 1).await;
    setup
        .append(
            "acc-7",
            vec![NewEvent::new(
                "Deposited",
                1,
                Payload::encode(&serde_json::json!({ "cents": "lots" })).unwrap(),
            )],
        )
        .await;
    setup.deposit("acc-7", 3).await;
    setup.deposit("acc-1", 2).await;
    let mut runner = setup.runner().await;
    assert_eq!(setup.catch_up(&mut runner, 3).await, 3);
    let parked = runner.parked().await.unwrap();
    assert_eq!(
        (
            parked[0].first_version,
            parked[0].events,
            parked[0].attempts
        ),
        (2, 2, 1),
        "a decoding error is not retried"
    );
    assert!(
        parked[0]
            .error
            .as_deref()
            .unwrap()
            .contains("does not decode"),
        "{parked:?}"
    );

    assert_eq!(runner.skip_parked("acc-7").await.unwrap(), Some(2));
    assert_eq!(runner.parked().await.unwrap()[0].first_version, 3);
    assert!(matches!(
        runner.retry_parked("acc-7").await.unwrap(),
        RetryOutcome::Drained { handled: 1 }
    ));
    assert_eq!(setup.applied("acc-7").await, [1, 3]);
    assert_eq!(runner.skip_parked("acc-7").await.unwrap(), None);
    let skipped: Vec<(i64,)> = fetch_all(
        &*setup.database,
        &format!(
            "SELECT count(*) FROM {}
             WHERE stream_id = 'acc-7' AND stream_version = 2 AND status = 'skipped'",
            setup.database.table("projection_dead_letters")
        ),
    )
    .await
    .unwrap();
    assert_eq!(skipped, [(1,)], "the skipped event stays on record");
}

async fn a_database_outage_parks_nothing_and_stops_the_runner<D: TestDatabase>() {
    let setup = Setup::<D>::new().await;
    setup.deposit("acc-1", 1).await;
    setup.deposit("acc-2", 2).await;
    setup.outage.store(true, Ordering::SeqCst);
    let mut runner = setup.runner().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let error = loop {
        match runner.catch_up().await {
            Err(error) => break error,
            // Other tests' transactions may still hold the feed back.
            Ok(0) => {
                assert!(std::time::Instant::now() < deadline, "timed out");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(handled) => panic!("{handled} events handled during the outage"),
        }
    };
    assert!(matches!(error, RunnerError::Handler { .. }), "{error:?}");
    assert!(runner.parked().await.unwrap().is_empty());
    assert!(setup.applied("acc-1").await.is_empty());

    setup.outage.store(false, Ordering::SeqCst);
    assert_eq!(setup.catch_up(&mut runner, 2).await, 2);
    assert!(runner.parked().await.unwrap().is_empty());
}

/// Two runners of one version at once (a one-off `catch_up` beside the running one): the second
/// locks the checkpoint while the first is parking a stream, and gets the lock once the first
/// commits. It must see that stream parked, though its statement began before: a later event of
/// the stream joins the queue behind the failed one, it is never applied out of order.
/// PostgreSQL only: SQLite runs one write transaction at a time.
#[tokio::test]
async fn a_runner_that_waited_for_another_s_lock_sees_what_it_parked() {
    let setup = Setup::<factum::testing::postgres::TemporaryStore>::new().await;
    let letters = setup.database.table("projection_dead_letters");
    let slow = setup.database.table("slow_parking");
    // Parking holds the checkpoint's lock for two seconds: the second runner's window.
    for statement in [
        format!(
            "CREATE FUNCTION {slow}() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN PERFORM pg_sleep(2); RETURN NULL; END $$"
        ),
        format!(
            "CREATE TRIGGER slow_parking AFTER INSERT ON {letters}
                 FOR EACH STATEMENT EXECUTE FUNCTION {slow}()"
        ),
    ] {
        execute(&*setup.database, &statement).await.unwrap();
    }
    let mut first = ProjectionRunner::new(
        setup.database.another_client().await.unwrap(),
        setup.ledger(),
    )
    .batch_size(1)
    .retries(1, Duration::from_millis(1));
    // The checkpoint row exists, committed: the runners meet on its lock.
    setup.deposit("acc-t", 1).await;
    assert_eq!(setup.catch_up(&mut first, 1).await, 1);
    setup.handler_poison.store(true, Ordering::SeqCst);
    setup
        .append("acc-s", vec![deposit(HANDLER_POISON), deposit(5)])
        .await;
    // The second runner, connected before the first parks.
    let mut second = setup.runner().await;
    second.checkpoint().await.unwrap();
    let parking = tokio::spawn(async move { first.catch_up().await.unwrap() });
    // Wait until the first runner is parking acc-s (its transaction holds the lock).
    let schema = setup.database.schema().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let sleeping: Vec<(i64,)> = fetch_all(
            &*setup.database,
            &format!(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = '{schema}' AND wait_event = 'PgSleep'"
            ),
        )
        .await
        .unwrap();
        if sleeping[0].0 > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the first runner never parked"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(second.catch_up().await.unwrap(), 0, "acc-s is parked");
    assert_eq!(parking.await.unwrap(), 0);
    let parked = second.parked().await.unwrap();
    assert_eq!(
        (parked.len(), parked[0].first_version, parked[0].events),
        (1, 1, 2),
        "the later event waits behind the failed one: {parked:?}"
    );
    assert!(
        setup.applied("acc-s").await.is_empty(),
        "nothing applied out of order"
    );
}

/// Per-account totals, from handlers that take only each event's [`Source`]: the runner reads
/// no ids or stream versions, which its dead letters and errors still name.
#[derive(Debug)]
struct Tally {
    table: String,
    poison: Arc<AtomicBool>,
}

#[factum::projection(name = "tally")]
impl Tally {
    #[handle]
    async fn deposited(
        &mut self,
        event: &Deposited,
        source: &Source<'_>,
        tx: &mut Tx<'_>,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        if event.cents == HANDLER_POISON && self.poison.load(Ordering::SeqCst) {
            return Err(Box::new(Poison));
        }
        let updated = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {} SET cents = cents + $1, events = events + 1 WHERE account = $2",
            self.table
        )))
        .bind(event.cents)
        .bind(source.stream_id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {} (account, cents, events) VALUES ($1, $2, 1)",
                self.table
            )))
            .bind(source.stream_id)
            .bind(event.cents)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}

async fn a_lean_projection_parks_and_names_events_by_id_and_version<D: TestDatabase>() {
    assert_eq!(<Tally as Projection>::ENVELOPE, EnvelopeFields::Source);
    let setup = Setup::<D>::new().await;
    let table = setup.database.table("tally");
    execute(
        &*setup.database,
        &format!(
            "CREATE TABLE {table} (account TEXT PRIMARY KEY, cents BIGINT NOT NULL,
                                   events BIGINT NOT NULL)"
        ),
    )
    .await
    .unwrap();
    let poison = Arc::new(AtomicBool::new(true));
    let mut runner = ProjectionRunner::new(
        setup.database.another_client().await.unwrap(),
        Tally {
            table: table.clone(),
            poison: poison.clone(),
        },
    )
    .batch_size(16)
    .retries(2, Duration::from_millis(1));
    // Three accounts, 10 deposits each, interleaved; acc-1's fourth fails its handler.
    for i in 1..=10 {
        for account in 0..3 {
            let cents = if account == 1 && i == 4 {
                HANDLER_POISON
            } else {
                i
            };
            setup.deposit(&format!("acc-{account}"), cents).await;
        }
    }
    assert_eq!(setup.catch_up(&mut runner, 23).await, 23);
    let parked = runner.parked().await.unwrap();
    assert_eq!(
        (
            parked.len(),
            parked[0].stream_id.as_str(),
            parked[0].first_version,
            parked[0].events
        ),
        (1, "acc-1", 4, 7),
        "{parked:?}"
    );
    let error = parked[0].error.as_deref().unwrap();
    assert!(
        error.contains("acc-1@4"),
        "the error names the event: {error}"
    );

    // Later events of the parked stream, read lean, join it with their ids and versions.
    setup.deposit("acc-1", 11).await;
    setup.deposit("acc-0", 11).await;
    setup.deposit("acc-1", 12).await;
    assert_eq!(setup.catch_up(&mut runner, 1).await, 1);
    let letters: Vec<(i64, String)> = fetch_all(
        &*setup.database,
        &format!(
            "SELECT stream_version, CAST(event_id AS TEXT) FROM {}
             WHERE projection = 'tally' AND stream_id = 'acc-1' ORDER BY stream_version",
            setup.database.table("projection_dead_letters")
        ),
    )
    .await
    .unwrap();
    let stored: Vec<(i64, String)> = setup
        .database
        .read_stream("acc-1", 4..)
        .await
        .unwrap()
        .iter()
        .map(|e| {
            (
                i64::try_from(e.stream_version).unwrap(),
                e.event_id.to_string(),
            )
        })
        .collect();
    assert_eq!(letters, stored, "versions 4 to 12, each with its stored id");

    poison.store(false, Ordering::SeqCst);
    assert!(matches!(
        runner.retry_parked("acc-1").await.unwrap(),
        RetryOutcome::Drained { handled: 9 }
    ));
    let tally: Vec<(String, i64, i64)> = fetch_all(
        &*setup.database,
        &format!("SELECT account, cents, events FROM {table} ORDER BY account"),
    )
    .await
    .unwrap();
    assert_eq!(
        tally,
        [
            ("acc-0".to_owned(), 66, 11),
            ("acc-1".to_owned(), 55 - 4 + HANDLER_POISON + 23, 12),
            ("acc-2".to_owned(), 55, 10),
        ],
        "every event applied once"
    );
}

async fn a_runner_that_stays_behind_doubles_its_batches_up_to_the_largest_size<D: TestDatabase>() {
    for (max_batch_size, largest) in [(40, 40), (1, 10)] {
        let setup = Setup::<D>::new().await;
        setup.fill(40, 10).await;
        let mut runner = setup.growing(10, max_batch_size).await;
        assert_eq!(setup.catch_up(&mut runner, 400).await, 400);
        let flushed = setup.flushed();
        assert_eq!(flushed.iter().sum::<usize>(), 400, "{flushed:?}");
        assert_eq!(flushed[0], 10, "it starts at the batch size: {flushed:?}");
        // Batches read short (the feed held back by other tests' transactions) start again
        // at the batch size; the largest is reached all the same.
        assert_eq!(
            flushed.iter().max(),
            Some(&largest),
            "batches double while read full, up to max(batch_size, max_batch_size): {flushed:?}"
        );
        assert_eq!(setup.balances().await.len(), 40);
        assert!(setup.balances().await.iter().all(|row| row.2 == 10));
    }
}

/// After a failure the runner reads afresh, its batches starting again at the batch size: a
/// runner that kept a grown size would try each batch grown first, fail, and read it again
/// smaller, every round of an outage.
async fn after_a_failure_batches_start_again_at_the_batch_size<D: TestDatabase>() {
    let setup = Setup::<D>::new().await;
    setup.fill(4, 10).await;
    setup.outage.store(true, Ordering::SeqCst);
    let mut runner = setup.growing(10, 40).await;
    for round in 0..2 {
        setup.tried.lock().unwrap().clear();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match runner.catch_up().await {
                Err(RunnerError::Handler { .. }) => break,
                // Other tests' transactions may still hold the feed back.
                Ok(0) => {
                    assert!(std::time::Instant::now() < deadline, "timed out");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                other => panic!("{other:?} during the outage"),
            }
        }
        let tried = setup.tried.lock().unwrap().clone();
        assert!(
            tried.iter().all(|&events| events <= 10),
            "round {round}: batches tried during the outage: {tried:?}"
        );
    }
    setup.outage.store(false, Ordering::SeqCst);
    assert_eq!(setup.catch_up(&mut runner, 40).await, 40);
    assert!(runner.parked().await.unwrap().is_empty());
    assert_eq!(setup.flushed().iter().sum::<usize>(), 40);
}

async fn a_grown_batch_that_fails_is_read_again_at_the_batch_size<D: TestDatabase>() {
    let setup = Setup::<D>::new().await;
    // The 50th event of 80 is the poison: in the third batch (40 events, from the 31st) once
    // the batches have grown from 10.
    for account in 0..49 {
        setup.deposit(&format!("acc-{account}"), 1).await;
    }
    setup.deposit("poisoned", HANDLER_POISON).await;
    for account in 49..79 {
        setup.deposit(&format!("acc-{account}"), 1).await;
    }
    setup.handler_poison.store(true, Ordering::SeqCst);
    let mut runner = setup.growing(10, 40).await;
    assert_eq!(setup.catch_up(&mut runner, 79).await, 79);

    let parked = runner.parked().await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(
        (parked[0].stream_id.as_str(), parked[0].events),
        ("poisoned", 1)
    );
    let rows = setup.balances().await;
    assert_eq!(rows.len(), 79, "every other account's deposit applied");
    assert!(rows.iter().all(|row| row.1 == 1 && row.2 == 1), "{rows:?}");
    // Isolating applies a failing batch's events one by one: among at most the batch size
    // (the 9 others of its 10), not among the grown batch's 40.
    let flushed = setup.flushed();
    let alone = flushed.iter().filter(|&&events| events == 1).count();
    // (A few more may come alone when other tests' transactions cut a read short.)
    assert!(
        alone < 20,
        "{alone} events applied alone while isolating the poison: {flushed:?}"
    );
    assert_eq!(flushed.iter().sum::<usize>(), 79, "{flushed:?}");
}

factum::on_both_stores!(
    #[tokio::test]
    a_runner_that_stays_behind_doubles_its_batches_up_to_the_largest_size,
    #[tokio::test]
    a_grown_batch_that_fails_is_read_again_at_the_batch_size,
    #[tokio::test]
    after_a_failure_batches_start_again_at_the_batch_size,
    #[tokio::test]
    a_lean_projection_parks_and_names_events_by_id_and_version,
    #[tokio::test]
    a_poison_event_parks_its_stream_the_others_complete_and_retry_drains_it_in_order,
    #[tokio::test]
    a_failing_handler_parks_its_stream_while_the_others_complete_and_retry_drains_it,
    #[tokio::test]
    an_undecodable_event_is_parked_at_once_and_can_be_skipped_for_the_record,
    #[tokio::test]
    a_database_outage_parks_nothing_and_stops_the_runner,
);
