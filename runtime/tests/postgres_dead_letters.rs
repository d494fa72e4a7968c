//! The sequence dead-letter queue: an event its projection keeps failing on parks its stream
//! (the event and the stream's later events wait, in order), other streams complete; retrying
//! after the fix drains the stream in order; skipping keeps the event, marked; a database
//! outage parks nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use factum::projection::{ProjectionRunner, RetryOutcome, RunnerError};
use factum::testing::postgres::TemporaryStore;
use factum::{Envelope, EventStore, ExpectedVersion, NewEvent, Payload};
use sqlx::PgConnection;

#[factum::event]
#[derive(Debug)]
pub struct Deposited {
    pub cents: i64,
}

const POISON: i64 = 666;

#[derive(Debug, thiserror::Error)]
#[error("the ledger refuses {0} cents")]
pub struct Refused(i64);

/// A ledger of applied deposits, written by the flush: one row per event, so an event applied
/// twice violates the primary key, and `seq` records the order of application.
#[derive(Debug)]
pub struct Ledger {
    table: String,
    pending: Vec<(String, i64, i64)>,
    /// Whether a deposit of `POISON` cents fails the flush (a bug in the read model's code).
    poisoned: Arc<AtomicBool>,
    /// Whether the flush fails as if the database were unreachable.
    outage: Arc<AtomicBool>,
}

#[factum::projection(name = "ledger")]
impl Ledger {
    #[handle]
    async fn deposited(
        &mut self,
        event: &Deposited,
        envelope: &Envelope,
        _tx: &mut PgConnection,
    ) -> Result<(), Refused> {
        let version = i64::try_from(envelope.stream_version).unwrap();
        self.pending
            .push((envelope.stream_id.clone(), version, event.cents));
        Ok(())
    }

    #[flush]
    async fn flush(
        &mut self,
        tx: &mut PgConnection,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self.outage.load(Ordering::SeqCst) {
            return Err(Box::new(sqlx::Error::PoolTimedOut));
        }
        let pending = std::mem::take(&mut self.pending);
        if self.poisoned.load(Ordering::SeqCst) && pending.iter().any(|p| p.2 == POISON) {
            return Err(Box::new(Refused(POISON)));
        }
        let (accounts, versions, cents): (Vec<_>, Vec<_>, Vec<_>) =
            pending
                .into_iter()
                .fold((vec![], vec![], vec![]), |mut columns, (a, v, c)| {
                    columns.0.push(a);
                    columns.1.push(v);
                    columns.2.push(c);
                    columns
                });
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {} (account, stream_version, cents)
             SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[])",
            self.table
        )))
        .bind(accounts)
        .bind(versions)
        .bind(cents)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    #[discard]
    fn discard(&mut self) {
        self.pending.clear();
    }
}

struct Setup {
    store: TemporaryStore,
    table: String,
    poisoned: Arc<AtomicBool>,
    outage: Arc<AtomicBool>,
}

impl Setup {
    async fn new() -> Self {
        let store = TemporaryStore::new().await.unwrap();
        let table = format!("\"{}\".ledger", store.schema());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {table} (seq bigserial, account text, stream_version bigint,
                                   cents bigint NOT NULL, PRIMARY KEY (account, stream_version))"
        )))
        .execute(store.pool())
        .await
        .unwrap();
        Self {
            store,
            table,
            poisoned: Arc::new(AtomicBool::new(true)),
            outage: Arc::default(),
        }
    }

    async fn runner(&self) -> ProjectionRunner<Ledger> {
        let ledger = Ledger {
            table: self.table.clone(),
            pending: Vec::new(),
            poisoned: self.poisoned.clone(),
            outage: self.outage.clone(),
        };
        ProjectionRunner::new(self.store.another_client().await.unwrap(), ledger)
            .batch_size(16)
            .retries(2, Duration::from_millis(1))
    }

    async fn deposit(&self, account: &str, cents: i64) {
        self.append(account, deposit(cents)).await;
    }

    async fn append(&self, account: &str, event: NewEvent) {
        self.store
            .append(account, "Account", ExpectedVersion::Any, vec![event])
            .await
            .unwrap();
    }

    /// The applied versions per account, in the order they were applied.
    async fn applied(&self, account: &str) -> Vec<i64> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT stream_version FROM {} WHERE account = $1 ORDER BY seq",
            self.table
        )))
        .bind(account)
        .fetch_all(self.store.pool())
        .await
        .unwrap()
    }

    /// Catches up, waiting while other tests' transactions hold the feed back.
    async fn catch_up(&self, runner: &mut ProjectionRunner<Ledger>, expected: u64) -> u64 {
        let mut handled = 0;
        for _ in 0..200 {
            handled += runner.catch_up().await.unwrap();
            if handled >= expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        handled
    }
}

fn deposit(cents: i64) -> NewEvent {
    NewEvent::new(
        "Deposited",
        1,
        Payload::encode(&serde_json::json!({ "cents": cents })).unwrap(),
    )
}

#[tokio::test]
async fn a_poison_event_parks_its_stream_the_others_complete_and_retry_drains_it_in_order() {
    let setup = Setup::new().await;
    // Five accounts, 20 deposits each, interleaved in the feed; acc-2's fifth is poison.
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

#[tokio::test]
async fn an_undecodable_event_is_parked_at_once_and_can_be_skipped_for_the_record() {
    let setup = Setup::new().await;
    setup.deposit("acc-1", 1).await;
    setup.deposit("acc-7", 1).await;
    setup
        .append(
            "acc-7",
            NewEvent::new(
                "Deposited",
                1,
                Payload::encode(&serde_json::json!({ "cents": "lots" })).unwrap(),
            ),
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
    let skipped: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{}\".projection_dead_letters
         WHERE stream_id = 'acc-7' AND stream_version = 2 AND status = 'skipped'",
        setup.store.schema()
    )))
    .fetch_one(setup.store.pool())
    .await
    .unwrap();
    assert_eq!(skipped, 1, "the skipped event stays on record");
}

#[tokio::test]
async fn a_database_outage_parks_nothing_and_stops_the_runner() {
    let setup = Setup::new().await;
    setup.deposit("acc-1", 1).await;
    setup.deposit("acc-2", 2).await;
    setup.outage.store(true, Ordering::SeqCst);
    let mut runner = setup.runner().await;
    let error = loop {
        match runner.catch_up().await {
            Err(error) => break error,
            // Other tests' transactions may still hold the feed back.
            Ok(0) => tokio::time::sleep(Duration::from_millis(10)).await,
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
