//! Inline projections, on PostgreSQL and on SQLite: applied in the append's transaction
//! (read-your-writes; a failure rolls the append back), while their runner applies what was
//! appended elsewhere. Each event is applied once and each stream in order, whichever path
//! applies it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use factum::projection::{ProjectionRunner, RetryOutcome, WithInline};
use factum::store::{SqlStore, StoreKind};
use factum::testing::{TestDatabase, execute, fetch_all};
use factum::{Envelope, Error, EventStore, ExpectedVersion, NewEvent, Payload, Tx};

#[factum::event]
#[derive(Debug)]
pub struct Deposited {
    pub cents: i64,
}

#[factum::event]
#[derive(Debug)]
pub struct Noted {}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LedgerError(String);

/// A ledger per account that refuses an event out of stream order or applied twice: each row
/// keeps the version of the last event applied, and the next must follow it.
#[derive(Debug, Clone)]
pub struct Ledger {
    table: String,
    /// Failures to inject before succeeding.
    failures: Arc<AtomicU32>,
    /// While set, a deposit of 13 cents fails (a poison event).
    poison: Arc<AtomicBool>,
}

impl Ledger {
    /// Makes the ledger for each inline application.
    fn factory(&self) -> impl Fn() -> Self + Send + Sync + 'static {
        let ledger = self.clone();
        move || ledger.clone()
    }
}

#[factum::projection(name = "ledger", inline)]
impl Ledger {
    #[handle]
    async fn deposited(
        &mut self,
        event: &Deposited,
        envelope: &Envelope,
        tx: &mut Tx<'_>,
    ) -> Result<(), LedgerError> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(LedgerError("the ledger is unavailable".into()));
        }
        if event.cents == 13 && self.poison.load(Ordering::SeqCst) {
            return Err(LedgerError("13 cents: poison".into()));
        }
        // The row is locked until the transaction ends on PostgreSQL; SQLite's write
        // transaction already holds the whole database.
        let lock = if tx.kind() == StoreKind::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let previous: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT last_version FROM {} WHERE account = $1{lock}",
            self.table
        )))
        .bind(&envelope.stream_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| LedgerError(e.to_string()))?;
        let version = i64::try_from(envelope.stream_version).unwrap_or(i64::MAX);
        // Deposits are the only events of these streams but for `Noted`, which never comes
        // first: the one before a deposit is the previous version or, after a note, two back.
        let expected = previous.unwrap_or(0);
        if version <= expected || version > expected + 2 {
            return Err(LedgerError(format!(
                "{}@{version} applied after version {expected}: out of order or twice",
                envelope.stream_id
            )));
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {0} (account, cents, events, last_version) VALUES ($1, $2, 1, $3)
             ON CONFLICT (account) DO UPDATE
                 SET cents = {0}.cents + $2, events = {0}.events + 1, last_version = $3",
            self.table
        )))
        .bind(&envelope.stream_id)
        .bind(event.cents)
        .bind(version)
        .execute(&mut *tx)
        .await
        .map_err(|e| LedgerError(e.to_string()))?;
        Ok(())
    }
}

/// A database with the ledger's table, its store, and the ledger.
async fn setup<D: TestDatabase>() -> (D, D::Store, Ledger) {
    let database = D::create().await.unwrap();
    let table = database.table("ledger");
    execute(
        &*database,
        &format!(
            "CREATE TABLE {table} (account text PRIMARY KEY, cents bigint NOT NULL,
                                   events bigint NOT NULL, last_version bigint NOT NULL)"
        ),
    )
    .await
    .unwrap();
    let ledger = Ledger {
        table,
        failures: Arc::default(),
        poison: Arc::default(),
    };
    let store = (*database).clone();
    (database, store, ledger)
}

fn deposit(cents: i64) -> NewEvent {
    NewEvent::new(
        "Deposited",
        1,
        Payload::encode(&serde_json::json!({ "cents": cents })).unwrap(),
    )
}

fn note() -> NewEvent {
    NewEvent::new("Noted", 1, Payload::encode(&serde_json::json!({})).unwrap())
}

type Row = (String, i64, i64, i64);

/// (account, cents, events, last version) per account.
async fn ledger_rows<S: SqlStore>(store: &S, ledger: &Ledger) -> Vec<Row> {
    fetch_all(
        store,
        &format!(
            "SELECT account, cents, events, last_version FROM {} ORDER BY account",
            ledger.table
        ),
    )
    .await
    .unwrap()
}

fn row(account: &str, cents: i64, events: i64, last: i64) -> Row {
    (account.to_owned(), cents, events, last)
}

async fn the_read_model_shows_an_append_when_it_returns_and_a_failure_rolls_the_append_back<
    D: TestDatabase,
>() {
    let (_database, store, ledger) = setup::<D>().await;
    let inline = store.with_inline(ledger.factory());

    // No runner runs: the append itself updated the ledger.
    inline
        .append(
            "acc-1",
            "Account",
            ExpectedVersion::NoStream,
            vec![deposit(100)],
        )
        .await
        .unwrap();
    assert_eq!(
        ledger_rows(&store, &ledger).await,
        [row("acc-1", 100, 1, 1)]
    );
    inline
        .append(
            "acc-1",
            "Account",
            ExpectedVersion::Exact(1),
            vec![deposit(5), note(), deposit(7)],
        )
        .await
        .unwrap();
    assert_eq!(
        ledger_rows(&store, &ledger).await,
        [row("acc-1", 112, 3, 4)]
    );

    // The projection fails: the append is rolled back, nothing of it is stored.
    ledger.failures.store(1, Ordering::SeqCst);
    let error = inline
        .append(
            "acc-1",
            "Account",
            ExpectedVersion::Exact(4),
            vec![deposit(1)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::InlineProjection {
                projection: "ledger",
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("rolled back"), "{error}");
    assert_eq!(store.stream_version("acc-1").await.unwrap(), 4);
    assert_eq!(
        ledger_rows(&store, &ledger).await,
        [row("acc-1", 112, 3, 4)]
    );

    // An idempotent retry of a stored append applies nothing again.
    let once = deposit(20);
    inline
        .append(
            "acc-1",
            "Account",
            ExpectedVersion::Exact(4),
            vec![once.clone()],
        )
        .await
        .unwrap();
    let again = inline
        .append("acc-1", "Account", ExpectedVersion::Exact(4), vec![once])
        .await
        .unwrap();
    assert_eq!(again[0].stream_version, 5);
    assert_eq!(
        ledger_rows(&store, &ledger).await,
        [row("acc-1", 132, 4, 5)]
    );

    // In the caller's transaction: the ledger commits or rolls back with it.
    let mut transaction = store.begin().await.unwrap();
    inline
        .append_in(
            &mut transaction,
            "acc-2",
            "Account",
            ExpectedVersion::NoStream,
            vec![deposit(9)],
        )
        .await
        .unwrap();
    transaction.rollback().await.unwrap();
    assert_eq!(ledger_rows(&store, &ledger).await.len(), 1);
    assert_eq!(store.stream_version("acc-2").await.unwrap(), 0);
    let mut transaction = store.begin().await.unwrap();
    inline
        .append_in(
            &mut transaction,
            "acc-2",
            "Account",
            ExpectedVersion::NoStream,
            vec![deposit(9)],
        )
        .await
        .unwrap();
    transaction.commit().await.unwrap();
    assert_eq!(
        ledger_rows(&store, &ledger).await,
        [row("acc-1", 132, 4, 5), row("acc-2", 9, 1, 1)]
    );

    // The runner finds every event applied: it applies none and its checkpoint moves on.
    let mut runner = ProjectionRunner::new(store.clone(), ledger.clone());
    assert_eq!(runner.catch_up().await.unwrap(), 0);
    let status = runner.status().await.unwrap();
    assert_eq!((status.event_lag, status.parked_events), (0, 0));
    assert_eq!(
        ledger_rows(&store, &ledger).await,
        [row("acc-1", 132, 4, 5), row("acc-2", 9, 1, 1)]
    );
}

async fn inline_appends_and_the_runner_apply_each_event_once_and_each_stream_in_order<
    D: TestDatabase,
>() {
    const STREAMS: usize = 12;
    const WRITERS: usize = 4;
    const APPENDS: usize = 60;
    let (_database, store, ledger) = setup::<D>().await;
    // History from before the projection was inline: only the runner can apply it.
    for stream in 0..STREAMS {
        store
            .append(
                &format!("acc-{stream}"),
                "Account",
                ExpectedVersion::Any,
                vec![deposit(1)],
            )
            .await
            .unwrap();
    }
    let runner = ProjectionRunner::new(store.clone(), ledger.clone())
        .batch_size(7)
        .poll_interval(Duration::from_millis(5))
        .retries(0, Duration::ZERO);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(runner.run(async {
        stopped.await.ok();
    }));

    // Writers append to shared streams, some through the inline store, some through a store
    // without it (another service, say), so both paths meet on every stream.
    let writers = (0..WRITERS).map(|writer| {
        let (plain, inline) = (store.clone(), store.with_inline(ledger.factory()));
        tokio::spawn(async move {
            let mut total = vec![0_i64; STREAMS];
            for n in 0..APPENDS {
                let stream = (writer * 7 + n * 5) % STREAMS;
                let cents = i64::try_from(writer * 1000 + n + 2).unwrap();
                let through = if (n + writer) % 3 == 0 {
                    &plain
                } else {
                    &inline
                };
                let events = if n % 4 == 0 {
                    vec![deposit(cents), note()]
                } else {
                    vec![deposit(cents)]
                };
                through
                    .append(
                        &format!("acc-{stream}"),
                        "Account",
                        ExpectedVersion::Any,
                        events,
                    )
                    .await
                    .unwrap();
                total[stream] += cents;
                if n % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            }
            total
        })
    });
    let mut expected = [1_i64; STREAMS];
    for writer in writers {
        for (stream, cents) in writer.await.unwrap().into_iter().enumerate() {
            expected[stream] += cents;
        }
    }
    stop.send(()).unwrap();
    let ledger_after = running.await.unwrap().unwrap();
    let mut runner = ProjectionRunner::new(store.clone(), ledger_after);
    runner.catch_up().await.unwrap();
    assert!(runner.parked().await.unwrap().is_empty(), "nothing failed");

    let rows = ledger_rows(&store, &ledger).await;
    assert_eq!(rows.len(), STREAMS);
    for (account, cents, events, last) in rows {
        let stream: usize = account["acc-".len()..].parse().unwrap();
        let stored = store.read_stream(&account, ..).await.unwrap();
        let deposits = stored
            .iter()
            .filter(|e| e.event_type == "Deposited")
            .count();
        assert_eq!(
            cents, expected[stream],
            "{account}: every deposit counted once"
        );
        assert_eq!(events, i64::try_from(deposits).unwrap(), "{account}");
        let last_deposit = stored
            .iter()
            .rev()
            .find(|e| e.event_type == "Deposited")
            .unwrap();
        assert_eq!(last, i64::try_from(last_deposit.stream_version).unwrap());
    }
}

async fn a_parked_stream_is_left_to_the_runner_and_drains_in_order_after_the_fix<
    D: TestDatabase,
>() {
    let (_database, store, ledger) = setup::<D>().await;
    let inline = store.with_inline(ledger.factory());
    ledger.poison.store(true, Ordering::SeqCst);
    // Appended elsewhere: the runner meets the poison and parks the stream.
    store
        .append(
            "acc-p",
            "Account",
            ExpectedVersion::Any,
            vec![deposit(4), deposit(13)],
        )
        .await
        .unwrap();
    inline
        .append("acc-q", "Account", ExpectedVersion::Any, vec![deposit(8)])
        .await
        .unwrap();
    let mut runner =
        ProjectionRunner::new(store.clone(), ledger.clone()).retries(0, Duration::ZERO);
    runner.catch_up().await.unwrap();
    assert_eq!(runner.parked().await.unwrap()[0].stream_id, "acc-p");

    // A new event of the parked stream, appended inline, is not applied: it waits behind.
    inline
        .append(
            "acc-p",
            "Account",
            ExpectedVersion::Exact(2),
            vec![deposit(30)],
        )
        .await
        .unwrap();
    runner.catch_up().await.unwrap();
    assert_eq!(runner.parked().await.unwrap()[0].events, 2);
    assert_eq!(
        ledger_rows(&store, &ledger).await,
        [row("acc-p", 4, 1, 1), row("acc-q", 8, 1, 1)]
    );

    ledger.poison.store(false, Ordering::SeqCst);
    assert!(matches!(
        runner.retry_parked("acc-p").await.unwrap(),
        RetryOutcome::Drained { handled: 2 }
    ));
    // The stream flows again, inline.
    inline
        .append(
            "acc-p",
            "Account",
            ExpectedVersion::Exact(3),
            vec![deposit(100)],
        )
        .await
        .unwrap();
    assert_eq!(
        ledger_rows(&store, &ledger).await,
        [row("acc-p", 147, 4, 4), row("acc-q", 8, 1, 1)]
    );
    // The runner finds it applied: nothing again, nothing parked.
    assert_eq!(runner.catch_up().await.unwrap(), 0);
    assert!(runner.parked().await.unwrap().is_empty());
    assert_eq!(
        ledger_rows(&store, &ledger).await,
        [row("acc-p", 147, 4, 4), row("acc-q", 8, 1, 1)]
    );
}

factum::on_both_stores!(
    #[tokio::test]
    the_read_model_shows_an_append_when_it_returns_and_a_failure_rolls_the_append_back,
    #[tokio::test]
    inline_appends_and_the_runner_apply_each_event_once_and_each_stream_in_order,
    #[tokio::test]
    a_parked_stream_is_left_to_the_runner_and_drains_in_order_after_the_fix,
);
