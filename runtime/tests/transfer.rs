//! Bulk export and import: a store's events exported as JSON Lines and imported into an empty
//! store keep every envelope field (ids, versions, correlation, causation, actor, metadata,
//! recording time) and the feed order, and a projection rebuilt on the copy equals the
//! original's; PostgreSQL to SQLite too (replaying production locally). A non-empty target or a
//! bad line is refused before anything is written.

use std::error::Error as _;

use factum::projection::ProjectionRunner;
use factum::store::{SqliteStore, transfer};
use factum::testing::{TestDatabase, execute, fetch_all};
use factum::{
    Envelope, Error, EventStore, ExpectedVersion, FeedQuery, NewEvent, RecordedEvent, Tx,
};

#[factum::event]
#[derive(Debug)]
pub struct Noted {
    pub text: String,
}

/// One row per event: what a rebuilt copy must equal.
#[derive(Debug)]
struct Journal {
    table: String,
}

#[factum::projection(name = "journal")]
impl Journal {
    #[handle]
    async fn noted(
        &mut self,
        event: &Noted,
        envelope: &Envelope,
        tx: &mut Tx<'_>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {} (stream_id, stream_version, event_id, text) VALUES ($1, $2, $3, $4)",
            self.table
        )))
        .bind(&envelope.stream_id)
        .bind(i64::try_from(envelope.stream_version).unwrap_or(i64::MAX))
        .bind(envelope.event_id.to_string())
        .bind(&event.text)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

async fn journal<D: TestDatabase>(database: &D) -> Vec<(String, i64, String, String)> {
    let table = database.table("journal");
    execute(
        &**database,
        &format!(
            "CREATE TABLE {table} (stream_id TEXT NOT NULL, stream_version BIGINT NOT NULL,
                                   event_id TEXT NOT NULL, text TEXT NOT NULL)"
        ),
    )
    .await
    .unwrap();
    let mut runner = ProjectionRunner::new(
        (**database).clone(),
        Journal {
            table: table.clone(),
        },
    );
    runner.catch_up().await.unwrap();
    fetch_all(
        &**database,
        &format!("SELECT stream_id, stream_version, event_id, text FROM {table} ORDER BY 1, 2"),
    )
    .await
    .unwrap()
}

/// Events meant to trip an import: text that `COPY` reads specially, other scripts, metadata,
/// actors, several streams interleaved, appends of several events.
async fn fill(store: &impl EventStore) {
    let texts = [
        "plain",
        "tab\there, newline\nthere, carriage\rreturn",
        "back\\slash and \\N, which COPY reads as NULL",
        "é, 漢字, 😀",
    ];
    for round in 0..5_u32 {
        for (n, text) in texts.iter().enumerate() {
            let stream = format!("note-{n}");
            let mut events = vec![
                NewEvent::of(&Noted {
                    text: format!("{text} #{round}"),
                })
                .unwrap()
                .actor(format!("user\t{n}"))
                .metadata("round", round),
            ];
            if n % 2 == 0 {
                events.push(
                    NewEvent::of(&Noted {
                        text: format!("second {round}"),
                    })
                    .unwrap(),
                );
            }
            store
                .append(&stream, "Note", ExpectedVersion::Any, events)
                .await
                .unwrap();
        }
    }
}

/// The whole feed, once no transaction still running holds it back (another test's long
/// import on the same server does, for a while).
async fn feed(store: &impl EventStore) -> Vec<RecordedEvent> {
    loop {
        let batch = store
            .read_feed(&FeedQuery::from_start().limit(10_000))
            .await
            .unwrap();
        if !batch.held_back {
            return batch.events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// An envelope without what the target assigns (its positions).
fn portable(event: &RecordedEvent) -> RecordedEvent {
    let mut event = event.clone();
    event.global_position = 0;
    event.tx = 0;
    event
}

async fn export(store: &impl EventStore) -> Vec<u8> {
    let mut out = Vec::new();
    let written = transfer::export(store, None, &mut out, |_| {})
        .await
        .unwrap();
    assert_eq!(written, 30);
    out
}

async fn an_export_imported_into_an_empty_store_is_the_same_store<D: TestDatabase>() {
    let source = D::create().await.unwrap();
    fill(&*source).await;
    let exported = export(&*source).await;
    let target = D::create().await.unwrap();
    let imported = import(&target, &exported).await.unwrap();
    assert_eq!(imported, 30);

    let (before, after) = (feed(&*source).await, feed(&*target).await);
    assert_eq!(
        before.iter().map(portable).collect::<Vec<_>>(),
        after.iter().map(portable).collect::<Vec<_>>(),
        "every envelope, in feed order"
    );
    assert_eq!(
        journal(&source).await,
        journal(&target).await,
        "rebuilt alike"
    );

    // The copy takes appends after the imported history.
    target
        .append(
            "note-0",
            "Note",
            ExpectedVersion::Exact(10),
            vec![
                NewEvent::of(&Noted {
                    text: "after".into(),
                })
                .unwrap(),
            ],
        )
        .await
        .unwrap();

    // A store that holds events is refused, and keeps what it had.
    let error = import(&target, &exported).await.unwrap_err();
    assert!(
        matches!(error, Error::ImportTargetNotEmpty { .. }),
        "{error}"
    );
    assert_eq!(feed(&*target).await.len(), 31);

    // A bad line refuses the whole file.
    let fresh = D::create().await.unwrap();
    let mut lines: Vec<&[u8]> = exported.split(|b| *b == b'\n').collect();
    lines.remove(3);
    let gapped = lines.join(&b'\n');
    let error = import(&fresh, &gapped).await.unwrap_err();
    assert!(
        matches!(error, Error::InvalidImport { .. }),
        "{error}: {:?}",
        error.source()
    );
    assert!(feed(&*fresh).await.is_empty(), "nothing imported");
}

/// Imports `export` into `database`'s store, whichever it is.
async fn import<D: TestDatabase>(database: &D, export: &[u8]) -> Result<u64, Error> {
    use std::any::Any;
    let store: &dyn Any = &**database;
    if let Some(postgres) = store.downcast_ref::<factum::store::PostgresStore>() {
        postgres.import(export, |_| {}).await
    } else if let Some(sqlite) = store.downcast_ref::<SqliteStore>() {
        sqlite.import(export, |_| {}).await
    } else {
        panic!("an unknown store")
    }
}

/// Production (PostgreSQL) replayed locally (SQLite): the same envelopes, the same rebuilt
/// read model.
#[tokio::test]
async fn a_postgres_export_imports_into_sqlite() {
    let source = factum::testing::postgres::TemporaryStore::new()
        .await
        .unwrap();
    fill(&*source).await;
    let exported = export(&*source).await;
    let target = factum::testing::sqlite::TemporaryDatabase::new()
        .await
        .unwrap();
    assert_eq!(target.import(&exported[..], |_| {}).await.unwrap(), 30);
    let (before, after) = (feed(&*source).await, feed(&*target).await);
    assert_eq!(
        before.iter().map(portable).collect::<Vec<_>>(),
        after.iter().map(portable).collect::<Vec<_>>()
    );
    assert_eq!(journal(&source).await, journal(&target).await);
}

factum::on_both_stores!(
    #[tokio::test]
    an_export_imported_into_an_empty_store_is_the_same_store,
);

/// PostgreSQL sends the rows while it reads the lines: a bad line after megabytes already sent
/// still leaves the store empty (the COPY is aborted, the transaction rolled back), and the
/// store then takes the good file.
#[tokio::test]
async fn a_bad_line_after_megabytes_sent_leaves_postgres_empty() {
    let source = factum::testing::postgres::TemporaryStore::new()
        .await
        .unwrap();
    for stream in 0..30 {
        let events = (0..100)
            .map(|n| {
                NewEvent::of(&Noted {
                    text: format!("{n} {}", "x".repeat(1_000)),
                })
                .unwrap()
            })
            .collect();
        source
            .append(
                &format!("note-{stream}"),
                "Note",
                ExpectedVersion::Any,
                events,
            )
            .await
            .unwrap();
    }
    let mut exported = Vec::new();
    transfer::export(&*source, None, &mut exported, |_| {})
        .await
        .unwrap();
    assert!(exported.len() > 3_000_000, "more than one COPY chunk");
    let mut broken = exported.clone();
    broken.extend_from_slice(b"{\"not\": \"an envelope\"}\n");

    let target = factum::testing::postgres::TemporaryStore::new()
        .await
        .unwrap();
    let mut sent = 0;
    let error = target
        .import(&broken[..], |so_far| sent = so_far)
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::InvalidImport { line: 3001, .. }),
        "{error}"
    );
    assert!(sent >= 1_000, "rows were sent before the bad line ({sent})");
    assert!(feed(&*target).await.is_empty(), "nothing imported");
    assert_eq!(target.import(&exported[..], |_| {}).await.unwrap(), 3_000);
    assert_eq!(
        feed(&*source)
            .await
            .iter()
            .map(portable)
            .collect::<Vec<_>>(),
        feed(&*target)
            .await
            .iter()
            .map(portable)
            .collect::<Vec<_>>()
    );
}
