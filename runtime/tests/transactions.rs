//! Factum's own transactions on either store: appends made in a `Transaction` commit or roll
//! back with its other writes and wake live subscribers when it commits (no manual
//! `notify_subscribers`), a failed append leaves nothing of itself in it, and handlers' SQL runs
//! through `Tx` on both stores; the repository tells how many attempts a command took.

use std::time::{Duration, Instant};

use factum::feed::Subscription;
use factum::store::SqlStore;
use factum::testing::{TestDatabase, execute, fetch_all};
use factum::{Error, EventStore, ExpectedVersion, FeedPosition, NewEvent};

#[factum::event]
#[derive(Debug)]
pub struct Noted {
    pub text: String,
}

fn noted(text: &str) -> NewEvent {
    NewEvent::of(&Noted {
        text: text.to_owned(),
    })
    .unwrap()
}

async fn notes<D: TestDatabase>(database: &D) -> Vec<(String,)> {
    let table = database.table("notes");
    fetch_all(
        &**database,
        &format!("SELECT text FROM {table} ORDER BY text"),
    )
    .await
    .unwrap()
}

async fn appends_commit_and_roll_back_with_the_transaction_and_wake_subscribers<D: TestDatabase>() {
    let database = D::create().await.unwrap();
    let table = database.table("notes");
    execute(
        &*database,
        &format!("CREATE TABLE {table} (text TEXT PRIMARY KEY)"),
    )
    .await
    .unwrap();
    let store = database.another_client().await.unwrap();

    // Rolled back: neither the events nor the other write are stored.
    let mut transaction = store.begin().await.unwrap();
    append_in(
        &store,
        &mut transaction,
        "note-1",
        ExpectedVersion::NoStream,
        "a",
    )
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} (text) VALUES ($1)"
    )))
    .bind("a")
    .execute(&mut transaction.tx())
    .await
    .unwrap();
    transaction.rollback().await.unwrap();
    assert!(store.read_stream("note-1", ..).await.unwrap().is_empty());
    assert!(notes(&database).await.is_empty());

    // Committed: both are, and a live subscriber (polling only every minute) sees the event at
    // once, woken by the commit.
    let mut subscription = Subscription::new(store.clone(), FeedPosition::START)
        .poll_interval(Duration::from_secs(60));
    assert!(subscription.try_next_batch().await.unwrap().is_empty());
    let waiting = tokio::spawn(async move {
        let event = subscription.next().await.unwrap();
        (event.stream_id, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(200)).await; // the subscriber waits
    let mut transaction = store.begin().await.unwrap();
    append_in(
        &store,
        &mut transaction,
        "note-1",
        ExpectedVersion::NoStream,
        "b",
    )
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} (text) VALUES ($1)"
    )))
    .bind("b")
    .execute(&mut transaction.tx())
    .await
    .unwrap();
    transaction.commit().await.unwrap();
    let committed = Instant::now();
    let (stream, seen) = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the commit woke the subscriber long before its poll")
        .unwrap();
    assert_eq!(stream, "note-1");
    assert!(seen.duration_since(committed) < Duration::from_secs(20));
    assert_eq!(notes(&database).await, [("b".to_owned(),)]);

    // A failed append leaves nothing of itself in the transaction: its other writes commit.
    let mut transaction = store.begin().await.unwrap();
    let error = append_in(
        &store,
        &mut transaction,
        "note-1",
        ExpectedVersion::NoStream,
        "c",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, Error::Conflict { actual: 1, .. }),
        "{error}"
    );
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} (text) VALUES ($1)"
    )))
    .bind("c")
    .execute(&mut transaction.tx())
    .await
    .unwrap();
    transaction.commit().await.unwrap();
    assert_eq!(store.read_stream("note-1", ..).await.unwrap().len(), 1);
    assert_eq!(notes(&database).await.len(), 2);
}

async fn append_in<S: SqlStore>(
    store: &S,
    transaction: &mut factum::Transaction,
    stream: &str,
    expected: ExpectedVersion,
    text: &str,
) -> factum::Result<Vec<factum::RecordedEvent>> {
    SqlStore::append_in(
        store,
        transaction,
        stream,
        "Note",
        expected,
        vec![noted(text)],
    )
    .await
}

factum::on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    appends_commit_and_roll_back_with_the_transaction_and_wake_subscribers,
);
