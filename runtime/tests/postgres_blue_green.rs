//! Blue/green rebuilds: version 2 of a projection builds beside version 1 (its own checkpoint
//! and table, side effects off), version 1 keeps serving until version 2 has caught up and
//! switches over; version 1 then stops by itself. Side effects run once per event across
//! versions and redeliveries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use factum::projection::{ProjectionRunner, VersionState, active_version};
use factum::testing::postgres::TemporaryStore;
use factum::{Envelope, EventStore, ExpectedVersion, NewEvent, Payload, Uuid};
use sqlx::PgConnection;

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

/// Version 1: balances per account; each withdrawal "sends an email" (a side effect).
#[derive(Debug)]
pub struct TotalsV1 {
    table: String,
    sent: Sent,
}

#[factum::projection(name = "totals", version = 1)]
impl TotalsV1 {
    #[handle]
    async fn deposited(
        &mut self,
        event: &Deposited,
        envelope: &Envelope,
        tx: &mut PgConnection,
    ) -> Result<(), sqlx::Error> {
        add(tx, &self.table, &envelope.stream_id, event.cents).await
    }

    #[handle(side_effects)]
    async fn withdrawn(
        &mut self,
        _event: &Withdrawn,
        envelope: &Envelope,
        _tx: &mut PgConnection,
    ) -> Result<(), sqlx::Error> {
        self.sent.lock().unwrap().push((1, envelope.event_id));
        Ok(())
    }
}

/// Version 2: balances and event counts, in its own table; slow, so the build takes a while.
/// New: a farewell email when an account closes.
#[derive(Debug)]
pub struct TotalsV2 {
    table: String,
    sent: Sent,
    delay: Arc<AtomicU64>,
}

#[factum::projection(name = "totals", version = 2)]
impl TotalsV2 {
    #[handle]
    async fn deposited(
        &mut self,
        event: &Deposited,
        envelope: &Envelope,
        tx: &mut PgConnection,
    ) -> Result<(), sqlx::Error> {
        tokio::time::sleep(Duration::from_micros(self.delay.load(Ordering::SeqCst))).await;
        add(tx, &self.table, &envelope.stream_id, event.cents).await
    }

    #[handle(side_effects)]
    async fn withdrawn(
        &mut self,
        _event: &Withdrawn,
        envelope: &Envelope,
        _tx: &mut PgConnection,
    ) -> Result<(), sqlx::Error> {
        self.sent.lock().unwrap().push((2, envelope.event_id));
        Ok(())
    }

    #[handle(side_effects)]
    async fn closed(
        &mut self,
        _event: &Closed,
        envelope: &Envelope,
        _tx: &mut PgConnection,
    ) -> Result<(), sqlx::Error> {
        self.sent.lock().unwrap().push((2, envelope.event_id));
        Ok(())
    }
}

async fn add(
    tx: &mut PgConnection,
    table: &str,
    account: &str,
    cents: i64,
) -> Result<(), sqlx::Error> {
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

fn event(event_type: &'static str, cents: i64) -> NewEvent {
    NewEvent::new(
        event_type,
        1,
        Payload::encode(&serde_json::json!({ "cents": cents })).unwrap(),
    )
}

async fn append(store: &TemporaryStore, account: &str, new: NewEvent) -> Uuid {
    store
        .append(account, "Account", ExpectedVersion::Any, vec![new])
        .await
        .unwrap()[0]
        .event_id
}

async fn table(store: &TemporaryStore, table: &str) -> Vec<(String, i64, i64)> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT account, cents, events FROM {table} ORDER BY account"
    )))
    .fetch_all(store.pool())
    .await
    .unwrap()
}

async fn eventually(mut condition: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(std::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn version_2_builds_beside_version_1_and_switches_over_when_caught_up() {
    let store = TemporaryStore::new().await.unwrap();
    let (v1_table, v2_table) = (
        format!("\"{}\".totals_v1", store.schema()),
        format!("\"{}\".totals_v2", store.schema()),
    );
    for name in [&v1_table, &v2_table] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {name} (account text PRIMARY KEY, cents bigint NOT NULL, events bigint NOT NULL)"
        )))
        .execute(store.pool())
        .await
        .unwrap();
    }
    let mut withdrawals = Vec::new();
    for i in 0..100 {
        append(&store, &format!("acc-{}", i % 10), event("Deposited", 1)).await;
        if i % 40 == 0 {
            withdrawals.push(append(&store, "acc-0", event("Withdrawn", 1)).await);
        }
    }
    // Closed before version 2 existed: its farewell email is not for a rebuild to send.
    append(&store, "acc-9", event("Closed", 0)).await;
    let sent: Sent = Arc::default();

    // Version 1 runs, sends its emails, catches up.
    let v1 = TotalsV1 {
        table: v1_table.clone(),
        sent: sent.clone(),
    };
    let v1_runner = ProjectionRunner::new(store.another_client().await.unwrap(), v1);
    let (stop_v1, v1_stopped) = tokio::sync::oneshot::channel::<()>();
    let v1_task = tokio::spawn(v1_runner.run(async {
        let _ = v1_stopped.await;
    }));
    eventually(async || {
        table(&store, &v1_table)
            .await
            .iter()
            .map(|r| r.2)
            .sum::<i64>()
            == 100
    })
    .await;
    assert_eq!(active_version(&store, "totals").await.unwrap(), Some(1));

    // Version 2 builds beside it, slowly, with version 1 still serving and following.
    let delay = Arc::new(AtomicU64::new(3_000));
    let v2 = TotalsV2 {
        table: v2_table.clone(),
        sent: sent.clone(),
        delay: delay.clone(),
    };
    let v2_runner = ProjectionRunner::new(store.another_client().await.unwrap(), v2).batch_size(5);
    let observer = ProjectionRunner::new(
        store.another_client().await.unwrap(),
        TotalsV2 {
            table: v2_table.clone(),
            sent: Arc::default(),
            delay: Arc::default(),
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
    assert_eq!(active_version(&store, "totals").await.unwrap(), Some(1));
    append(&store, "acc-3", event("Deposited", 50)).await;
    eventually(async || table(&store, &v1_table).await.iter().any(|r| r.1 == 60)).await;
    assert_eq!(
        observer.status().await.unwrap().state,
        Some(VersionState::Building),
        "version 1 served the new deposit while version 2 was still building"
    );

    // Version 2 catches up and switches over; version 1 stops by itself.
    delay.store(0, Ordering::SeqCst);
    eventually(async || active_version(&store, "totals").await.unwrap() == Some(2)).await;
    tokio::time::timeout(Duration::from_secs(10), v1_task)
        .await
        .expect("version 1 stops once retired")
        .unwrap()
        .unwrap();
    drop(stop_v1);
    let v1_final = table(&store, &v1_table).await;
    let v2_rows = table(&store, &v2_table).await;
    assert_eq!(v2_rows, v1_final, "version 2 built the same balances");
    assert_eq!(v2_rows.iter().map(|r| r.2).sum::<i64>(), 101);

    // Live on version 2: its withdrawal email goes out once; version 1's table stays as it was.
    withdrawals.push(append(&store, "acc-0", event("Withdrawn", 1)).await);
    append(&store, "acc-1", event("Deposited", 7)).await;
    let closed = append(&store, "acc-8", event("Closed", 0)).await;
    eventually(async || sent.lock().unwrap().len() == withdrawals.len() + 1).await;
    eventually(async || {
        table(&store, &v2_table)
            .await
            .iter()
            .map(|r| r.2)
            .sum::<i64>()
            == 102
    })
    .await;
    assert_eq!(
        table(&store, &v1_table).await,
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
        store.another_client().await.unwrap(),
        TotalsV1 {
            table: v1_table.clone(),
            sent: sent.clone(),
        },
    );
    tokio::time::timeout(Duration::from_secs(10), again.run(std::future::pending()))
        .await
        .expect("a retired version does not run")
        .unwrap();
    assert_eq!(table(&store, &v1_table).await, v1_final);

    // Redelivery of everything to version 2 (its checkpoint reset): no email twice.
    stop_v2.send(()).unwrap();
    v2_task.await.unwrap().unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "TRUNCATE {v2_table}; UPDATE \"{}\".projection_checkpoints SET tx = 0, position = 0 WHERE version = 2",
        store.schema()
    )))
    .execute(store.pool())
    .await
    .unwrap();
    let mut redelivery = ProjectionRunner::new(
        store.another_client().await.unwrap(),
        TotalsV2 {
            table: v2_table.clone(),
            sent: sent.clone(),
            delay: Arc::default(),
        },
    );
    assert_eq!(
        redelivery.catch_up().await.unwrap(),
        102,
        "the deposits again"
    );
    assert_eq!(sent.lock().unwrap().len(), 5, "no email sent twice");
}

#[tokio::test]
async fn the_active_version_runs_a_side_effect_a_building_version_skipped() {
    let store = TemporaryStore::new().await.unwrap();
    let tables = format!("\"{}\".totals_v1", store.schema());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {tables} (account text PRIMARY KEY, cents bigint NOT NULL, events bigint NOT NULL)"
    )))
    .execute(store.pool())
    .await
    .unwrap();
    let sent: Sent = Arc::default();
    let mut v1 = ProjectionRunner::new(
        store.another_client().await.unwrap(),
        TotalsV1 {
            table: tables.clone(),
            sent: sent.clone(),
        },
    );
    let mut v2 = ProjectionRunner::new(
        store.another_client().await.unwrap(),
        TotalsV2 {
            table: tables,
            sent: sent.clone(),
            delay: Arc::default(),
        },
    );
    assert_eq!(v1.register().await.unwrap(), VersionState::Active);
    assert_eq!(v2.register().await.unwrap(), VersionState::Building);
    let withdrawn = store
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
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "UPDATE \"{}\".projection_checkpoints SET tx = 0, position = 0",
        store.schema()
    )))
    .execute(store.pool())
    .await
    .unwrap();
    v1.apply_batch(&withdrawn, next).await.unwrap();
    v2.apply_batch(&withdrawn, next).await.unwrap();
    assert_eq!(sent.lock().unwrap().len(), 1);
}
