//! The cold tier (issue 16): 100,000 events archived into Parquet files as the schema's owner,
//! then read through the application's role: the feed from the beginning (a projection
//! rebuilt from cold + hot) and from a reader's mid-way checkpoint, streams, and aggregate
//! loads (with and without a snapshot) give what they gave before archiving; archived streams
//! take appends; DuckDB reads the files and counts the same events; a missing file stops reads
//! with a typed error instead of skipping; a restore puts every event back where it was.

#[path = "support/tenant_domain.rs"]
mod tenant_domain;

use std::path::{Path, PathBuf};
use std::process::Command;

use factum::archive::{ArchiveError, ArchiveOptions};
use factum::projection::ProjectionRunner;
use factum::store::{FeedQuery, PostgresStore};
use factum::testing::postgres::LeastPrivilege;
use factum::{
    Error, EventStore, ExpectedVersion, FeedPosition, NewEvent, RecordedEvent, Repository, Snapshot,
};
use tenant_domain::{Account, Ledger, deposit};

const STREAMS: usize = 1_000;
/// Events per stream before the cut-off.
const OLD_PER_STREAM: usize = 100;
/// Streams with one more event after the cut-off.
const NEWER_STREAMS: usize = 300;

/// A directory of the test's own, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "factum-archive-test-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        files
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stream(n: usize) -> String {
    format!("account-{n:04}")
}

/// Reads the feed from `after` to its end, in batches of `batch`.
async fn feed(store: &PostgresStore, after: FeedPosition, batch: usize) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    let mut position = after;
    loop {
        let page = store
            .read_feed(&FeedQuery::after(position).limit(batch))
            .await
            .unwrap();
        position = page.next;
        if page.events.is_empty() {
            return events;
        }
        events.extend(page.events);
    }
}

/// Counts the events and distinct event ids of the Parquet files with DuckDB.
fn duckdb_count(dir: &Path) -> (u64, u64) {
    let script = format!(
        "import duckdb\n\
         n, ids = duckdb.connect().execute(\"SELECT count(*), count(DISTINCT event_id) FROM read_parquet('{}/*.parquet')\").fetchone()\n\
         print(n, ids)",
        dir.display()
    );
    let output = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs (the test command installs the duckdb package)");
    assert!(
        output.status.success(),
        "DuckDB could not read the archive files (is the duckdb package installed? `python3 -m pip install duckdb`): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let mut numbers = text.split_whitespace().map(|n| n.parse::<u64>().unwrap());
    (numbers.next().unwrap(), numbers.next().unwrap())
}

/// Builds the ledger from the beginning of the feed: its streams (in the order it saw them)
/// and its sum.
async fn rebuild_ledger(store: &PostgresStore) -> (Vec<String>, i64) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {}.projection_checkpoints WHERE projection = 'ledger'",
        store.schema()
    )))
    .execute(store.pool())
    .await
    .unwrap();
    let mut ledger = ProjectionRunner::new(store.clone(), Ledger::default());
    ledger.catch_up().await.unwrap();
    let ledger = ledger.projection();
    (ledger.streams.clone(), ledger.cents)
}

#[tokio::test]
async fn archived_events_read_back_from_parquet_through_every_path_and_restore() {
    let schema = LeastPrivilege::new().await.unwrap();
    let (owner, app) = (schema.owner(), schema.application());

    // 100,000 events, 100 per stream, appended 100 at a time; then a cut-off; then 300 streams
    // get one more event.
    for n in 0..STREAMS {
        let events: Vec<NewEvent> = (0..OLD_PER_STREAM)
            .map(|i| deposit((n * OLD_PER_STREAM + i) as i64))
            .collect();
        app.append(&stream(n), "Account", ExpectedVersion::NoStream, events)
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let cut_off = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    for n in 0..NEWER_STREAMS {
        app.append(
            &stream(n),
            "Account",
            ExpectedVersion::Exact(100),
            vec![deposit(1)],
        )
        .await
        .unwrap();
    }
    let total = STREAMS * OLD_PER_STREAM + NEWER_STREAMS;

    // What every read gives before archiving.
    let before = feed(app, FeedPosition::START, 1_000).await;
    assert_eq!(before.len(), total);
    let ledger_before = rebuild_ledger(app).await;
    let stream_7 = app.read_stream(&stream(7), ..).await.unwrap();
    let stream_700 = app.read_stream(&stream(700), ..).await.unwrap();
    let accounts = Repository::<Account, _>::new(app.clone());
    let loaded_before = accounts.load(&stream(7)).await.unwrap();
    // A reader a quarter of the way through when the archive runs.
    let checkpoint = before[total / 4].feed_position();

    // The application's role cannot archive: it may not remove rows.
    let dir = Dir::new();
    let options = ArchiveOptions::new(&dir.0, cut_off).events_per_file(30_000);
    assert!(app.archive(&options).await.is_err());
    assert!(dir.files().is_empty(), "a refused archive leaves no file");

    let report = owner.archive(&options).await.unwrap();
    // Each stream keeps its newest event in the table: the 300 with a newer event archive all
    // 100 old ones, the others 99.
    let archived = STREAMS * (OLD_PER_STREAM - 1) + NEWER_STREAMS;
    assert_eq!(report.events, archived as u64);
    assert_eq!(report.files.len(), 4, "{report:?}");
    // Streams whose archived versions two files share count in both.
    assert!(
        (STREAMS as u64..=STREAMS as u64 + 3).contains(&report.streams),
        "{report:?}"
    );
    assert_eq!(dir.files().len(), 4);
    let hot: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}.events",
        owner.schema()
    )))
    .fetch_one(owner.pool())
    .await
    .unwrap();
    assert_eq!(hot as usize, total - archived, "the hot table stays lean");

    // DuckDB reads the files: the same events, once each.
    assert_eq!(duckdb_count(&dir.0), (archived as u64, archived as u64));

    // Every read path gives what it gave before, through the application's role.
    for batch in [1_000, 777] {
        let after = feed(app, FeedPosition::START, batch).await;
        assert_eq!(
            after, before,
            "the feed from the beginning, batches of {batch}"
        );
    }
    assert_eq!(
        feed(app, checkpoint, 500).await,
        before[total / 4 + 1..],
        "a reader continues from its checkpoint without a gap or a repeat"
    );
    assert_eq!(
        rebuild_ledger(app).await,
        ledger_before,
        "a projection rebuilt from cold + hot"
    );
    assert_eq!(app.read_stream(&stream(7), ..).await.unwrap(), stream_7);
    assert_eq!(app.read_stream(&stream(700), ..).await.unwrap(), stream_700);
    assert_eq!(
        app.read_stream(&stream(7), 10..=20).await.unwrap(),
        stream_7[9..20],
        "a range inside the archived versions"
    );
    assert_eq!(
        app.read_stream(&stream(7), 95..).await.unwrap(),
        stream_7[94..],
        "a range across the archived and hot versions"
    );
    let loaded = accounts.load(&stream(7)).await.unwrap();
    assert_eq!(
        (loaded.state.cents, loaded.version),
        (loaded_before.state.cents, loaded_before.version)
    );
    // A snapshot in the middle of the archived versions: the rest comes from the file.
    let at_40: i64 = stream_7[..40]
        .iter()
        .map(|e| {
            e.event.decode::<serde_json::Value>().unwrap()["cents"]
                .as_i64()
                .unwrap()
        })
        .sum();
    owner
        .save_snapshot(Snapshot::new(
            stream(7),
            "Account",
            40,
            0,
            factum::Payload::encode(&serde_json::json!({ "cents": at_40 })).unwrap(),
        ))
        .await
        .unwrap();
    let with_snapshots = Repository::<Account, _>::new(app.clone()).snapshot_every(1_000);
    let loaded = with_snapshots.load(&stream(7)).await.unwrap();
    assert_eq!(
        (loaded.state.cents, loaded.version),
        (loaded_before.state.cents, loaded_before.version)
    );

    // An archived stream takes appends at its head, and refuses a stale expected version.
    let appended = app
        .append(
            &stream(500),
            "Account",
            ExpectedVersion::Exact(100),
            vec![deposit(5)],
        )
        .await
        .unwrap();
    assert_eq!(appended[0].stream_version, 101);
    assert!(matches!(
        app.append(
            &stream(500),
            "Account",
            ExpectedVersion::Exact(50),
            vec![deposit(5)]
        )
        .await,
        Err(Error::Conflict { .. })
    ));

    // A new stream of an archived stream's id is no new stream.
    assert!(matches!(
        app.append(
            &stream(3),
            "Account",
            ExpectedVersion::NoStream,
            vec![deposit(5)]
        )
        .await,
        Err(Error::Conflict { .. })
    ));

    // Nobody removes archived-range rows by hand: the trigger still guards the table.
    let removed = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {}.events WHERE stream_id = 'account-0001'",
        owner.schema()
    )))
    .execute(owner.pool())
    .await;
    assert!(
        removed.is_err(),
        "the owner cannot delete events outside an archive"
    );

    // A missing file stops the read with a typed error naming it, rather than skip its events.
    let file = report.files[1].file.clone();
    let aside = file.with_extension("aside");
    std::fs::rename(&file, &aside).unwrap();
    let fresh = PostgresStore::with_schema(app.pool().clone(), app.schema()).unwrap();
    let missing = fresh
        .read_feed(&FeedQuery::after(checkpoint).limit(50_000))
        .await;
    assert!(
        matches!(missing, Err(Error::Archive(ArchiveError::Read { ref file, .. })) if *file == report.files[1].file),
        "{missing:?}"
    );
    std::fs::rename(&aside, &file).unwrap();
    // With the file back, the read goes on: the events after the checkpoint, and the append.
    assert_eq!(
        feed(&fresh, checkpoint, 5_000).await.len(),
        total - (total / 4 + 1) + 1
    );

    // Restoring every archive puts each event back in its place; the files are gone.
    for archive in owner.archives().await.unwrap() {
        owner.restore(archive.id).await.unwrap();
    }
    assert!(owner.archives().await.unwrap().is_empty());
    assert!(dir.files().is_empty(), "{:?}", dir.files());
    let restored = feed(app, FeedPosition::START, 1_000).await;
    assert_eq!(
        restored[..total],
        before[..],
        "every event back at its position"
    );
    assert_eq!(
        restored.len(),
        total + 1,
        "and the append made while archived"
    );
}
