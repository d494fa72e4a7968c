//! The cold tier (issue 16): 100,000 events archived into Parquet files as the schema's owner,
//! then read through the application's role: the feed from the beginning (a projection
//! rebuilt from cold + hot) and from a reader's mid-way checkpoint, streams, and aggregate
//! loads (with and without a snapshot) give what they gave before archiving; archived streams
//! take appends; DuckDB reads the files and counts the same events; a missing file stops reads
//! with a typed error instead of skipping; a restore puts every event back where it was. An
//! inline projection catching a stream up applies its archived versions, in order.

#[path = "support/tenant_domain.rs"]
mod tenant_domain;

use std::path::{Path, PathBuf};
use std::process::Command;

use factum::archive::{ArchiveError, ArchiveOptions};
use factum::projection::ProjectionRunner;
use factum::store::{FeedQuery, PostgresStore};
use factum::testing::postgres::LeastPrivilege;
use factum::{
    Envelope, Error, EventStore, ExpectedVersion, FeedPosition, NewEvent, RecordedEvent,
    Repository, Snapshot, Tx,
};
use tenant_domain::{Account, Deposited, Ledger, Opened, Registered, deposit};

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
    feed_of(store, after, |position| {
        FeedQuery::after(position).limit(batch)
    })
    .await
}

/// Reads the feed from `after` to its end, each batch by `query` from the batch's position.
async fn feed_of(
    store: &PostgresStore,
    after: FeedPosition,
    query: impl Fn(FeedPosition) -> FeedQuery,
) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    let mut position = after;
    loop {
        let page = store.read_feed(&query(position)).await.unwrap();
        position = page.next;
        if page.events.is_empty() {
            return events;
        }
        events.extend(page.events);
    }
}

/// The events left in the table, counted by the schema's owner (who sees every tenant's).
async fn hot_events(owner: &PostgresStore) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}.events",
        owner.schema()
    )))
    .fetch_one(owner.pool())
    .await
    .unwrap()
}

/// The deposits' sum.
fn cents(events: &[RecordedEvent]) -> i64 {
    events
        .iter()
        .map(|e| {
            e.event.decode::<serde_json::Value>().unwrap()["cents"]
                .as_i64()
                .unwrap()
        })
        .sum()
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
    let refused = app.archive(&options).await.unwrap_err();
    assert!(
        refused.to_string().contains("permission denied"),
        "{refused}"
    );
    assert!(dir.files().is_empty(), "a refused archive leaves no file");

    let report = owner.archive(&options).await.unwrap();
    // Each stream keeps its first and newest events in the table: the 300 with a newer event
    // archive versions 2 to 100, the others 2 to 99.
    let archived = STREAMS * (OLD_PER_STREAM - 2) + NEWER_STREAMS;
    assert_eq!(report.events, archived as u64);
    assert_eq!(report.files.len(), 4, "{report:?}");
    // Streams whose archived versions two files share count in both.
    assert!(
        (STREAMS as u64..=STREAMS as u64 + 3).contains(&report.streams),
        "{report:?}"
    );
    assert_eq!(dir.files().len(), 4);
    let hot = hot_events(owner).await;
    assert_eq!(hot as usize, total - archived, "the hot table stays lean");

    // DuckDB reads the files: the same events, once each.
    assert_eq!(duckdb_count(&dir.0), (archived as u64, archived as u64));

    // An event read by its id (the console's event page) comes from the cold tier too.
    assert_eq!(
        app.read_event(before[5].event_id).await.unwrap().as_ref(),
        Some(&before[5])
    );

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
    let rebuilt = rebuild_ledger(app).await;
    assert!(
        rebuilt == ledger_before,
        "a projection rebuilt from cold + hot: {} deposits, {} cents",
        rebuilt.0.len(),
        rebuilt.1
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
    let at_40 = cents(&stream_7[..40]);
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
    // Through the head this store wrote (an insert after version 50 with only the primary
    // key and the archived ranges to refuse it), and through a store that reads the head.
    let reads_heads = PostgresStore::with_schema(app.pool().clone(), app.schema()).unwrap();
    for store in [app, &reads_heads] {
        for stale in [50, 1, 99] {
            let refused = store
                .append(
                    &stream(500),
                    "Account",
                    ExpectedVersion::Exact(stale),
                    vec![deposit(5)],
                )
                .await;
            assert!(
                matches!(refused, Err(Error::Conflict { actual: 101, .. })),
                "{stale}: {refused:?}"
            );
        }
    }

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

    // The trigger lets an archiving transaction remove its own archive's rows, no others:
    // not the first nor the newest event of a stream it archived.
    for (archive, version) in [(report.files[0].id, 1), (report.files[0].id, 101)] {
        let mut transaction = owner.pool().begin().await.unwrap();
        sqlx::query("SELECT set_config('factum.archive', $1, true)")
            .bind(archive.to_string())
            .execute(&mut *transaction)
            .await
            .unwrap();
        let removed = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {}.events WHERE stream_id = 'account-0001' AND stream_version = {version}",
            owner.schema()
        )))
        .execute(&mut *transaction)
        .await;
        let error = removed.unwrap_err().to_string();
        assert!(error.contains("append-only"), "{error}");
    }
    let removed = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {}.events WHERE stream_id = 'account-0001'",
        owner.schema()
    )))
    .execute(owner.pool())
    .await;
    assert!(
        removed.unwrap_err().to_string().contains("append-only"),
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

    // Restoring one archive in the middle leaves archived versions on both sides of restored
    // ones in many streams: every read still gives what it gave.
    // A reader part-way through the middle archive meanwhile guesses its next batch from the
    // archives it saw and the middle file it holds decoded: the statement's own list shows the
    // guess wrong after the restore (those events are back in the table), and the reader reads
    // again without it, neither repeating nor missing events.
    let reader = PostgresStore::with_schema(app.pool().clone(), app.schema()).unwrap();
    let read = report.files[0].events as usize + 5_000;
    let first = reader
        .read_feed(&FeedQuery::after(FeedPosition::START).limit(read))
        .await
        .unwrap();
    assert_eq!(first.events[..], before[..read]);
    let middle = report.files[1].id;
    assert_eq!(owner.restore(middle).await.unwrap(), report.files[1].events);
    let rest = feed(&reader, first.next, 1_000).await;
    assert!(
        rest[..total - read] == before[read..],
        "the reader's feed after the restore: {} events, {} expected before the new ones",
        rest.len(),
        total - read
    );
    let fresh = PostgresStore::with_schema(app.pool().clone(), app.schema()).unwrap();
    assert_eq!(
        feed(&fresh, FeedPosition::START, 1_000).await[..total],
        before[..]
    );
    // The ledger as before, and the deposit appended to stream 500 since.
    let (mut streams, sum) = ledger_before.clone();
    streams.push(stream(500));
    let rebuilt = rebuild_ledger(&fresh).await;
    assert!(
        rebuilt == (streams, sum + 5),
        "a projection rebuilt after a partial restore: {} deposits, {} cents",
        rebuilt.0.len(),
        rebuilt.1
    );
    for n in [0, 250, 303, 304, 600, 608, 609, 610, 999] {
        let events = fresh.read_stream(&stream(n), ..).await.unwrap();
        let sum = cents(&events);
        assert!(
            events
                .iter()
                .map(|e| e.stream_version)
                .eq(1..=events.len() as u64),
            "stream {n}"
        );
        let loaded = Repository::<Account, _>::new(fresh.clone())
            .load(&stream(n))
            .await
            .unwrap();
        assert_eq!(
            (loaded.state.cents, loaded.version),
            (sum, events.len() as u64),
            "stream {n}"
        );
    }

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

/// Two tenants' events archived into the same files: each tenant reads back its own (the
/// feed, filtered by type too, its streams, its loads) and nothing of the other's; a stream
/// id of one tenant stays refused to the other (its first event stays in the table); a stream
/// with personal data stays whole in the table.
#[tokio::test]
async fn each_tenant_reads_back_its_own_archived_events_only() {
    let schema = LeastPrivilege::new().await.unwrap();
    let owner = schema.owner();
    let acme = schema.application().for_tenant("acme").await.unwrap();
    let globex = schema.application().for_tenant("globex").await.unwrap();
    let keyed = acme
        .clone()
        .with_key_provider(factum::pii::LocalKeyProvider::new([9; 32]));
    for i in 0..40 {
        let opened = NewEvent::of(&Opened {
            account: format!("a-{i}"),
            cents: i,
        })
        .unwrap();
        acme.append(
            "acme/a-1",
            "Account",
            ExpectedVersion::Any,
            vec![deposit(i)],
        )
        .await
        .unwrap();
        acme.append("acme/o-1", "Onboarding", ExpectedVersion::Any, vec![opened])
            .await
            .unwrap();
        globex
            .append(
                "globex/g-1",
                "Account",
                ExpectedVersion::Any,
                vec![deposit(100 + i)],
            )
            .await
            .unwrap();
        let registered = NewEvent::of(&Registered {
            customer: "c-1".to_owned(),
            name: format!("Ada {i}"),
        })
        .unwrap();
        keyed
            .append(
                "acme/c-1",
                "Customer",
                ExpectedVersion::Any,
                vec![registered],
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let cut_off = chrono::Utc::now();

    let read = |store: PostgresStore| async move {
        let all = feed(&store, FeedPosition::START, 7).await;
        let opened = feed_of(&store, FeedPosition::START, |after| {
            FeedQuery::after(after).limit(7).event_types(["Opened"])
        })
        .await;
        (all, opened)
    };
    let acme_before = read(acme.clone()).await;
    let globex_before = read(globex.clone()).await;
    assert_eq!((acme_before.0.len(), acme_before.1.len()), (120, 40));
    assert_eq!(globex_before.0.len(), 40);
    let acme_loaded = Repository::<Account, _>::new(acme.clone())
        .load("acme/a-1")
        .await
        .unwrap();

    let dir = Dir::new();
    let report = owner
        .archive(&ArchiveOptions::new(&dir.0, cut_off).events_per_file(25))
        .await
        .unwrap();
    // Versions 2 to 39 of acme/a-1, acme/o-1 and globex/g-1; not acme/c-1 (personal data).
    assert_eq!(report.events, 3 * 38, "{report:?}");
    assert_eq!(report.files.len(), 5);
    assert_eq!(keyed.read_stream("acme/c-1", ..).await.unwrap().len(), 40);

    assert!(
        read(acme.clone()).await == acme_before,
        "acme's feed, and its opened events"
    );
    assert!(read(globex.clone()).await == globex_before, "globex's feed");
    assert!(globex.read_stream("acme/a-1", ..).await.unwrap().is_empty());
    assert!(
        acme.read_stream("globex/g-1", 2..)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        acme.read_stream("acme/a-1", ..).await.unwrap(),
        acme_before
            .0
            .iter()
            .filter(|e| e.stream_id == "acme/a-1")
            .cloned()
            .collect::<Vec<_>>()
    );
    let loaded = Repository::<Account, _>::new(acme.clone())
        .load("acme/a-1")
        .await
        .unwrap();
    assert_eq!(
        (loaded.state.cents, loaded.version),
        (acme_loaded.state.cents, acme_loaded.version)
    );
    for expected in [ExpectedVersion::Any, ExpectedVersion::NoStream] {
        let refused = globex
            .append("acme/a-1", "Account", expected, vec![deposit(666)])
            .await;
        assert!(
            matches!(refused, Err(Error::StreamOfAnotherTenant { .. })),
            "{expected:?}: {refused:?}"
        );
    }
}

/// A ledger row per stream, applied inline (in the append's transaction), that refuses an event
/// out of stream order or applied twice: each row keeps the version of the last event applied,
/// and the next must follow it.
#[derive(Debug, Clone)]
struct StreamLedger {
    table: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct LedgerError(String);

#[factum::projection(name = "stream_ledger", inline)]
impl StreamLedger {
    #[handle]
    async fn deposited(
        &mut self,
        event: &Deposited,
        envelope: &Envelope,
        tx: &mut Tx<'_>,
    ) -> Result<(), LedgerError> {
        let previous: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT last_version FROM {} WHERE stream_id = $1 FOR UPDATE",
            self.table
        )))
        .bind(&envelope.stream_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| LedgerError(e.to_string()))?;
        let version = i64::try_from(envelope.stream_version).unwrap_or(i64::MAX);
        if version != previous.unwrap_or(0) + 1 {
            return Err(LedgerError(format!(
                "{}@{version} applied after version {previous:?}: a version skipped, or twice",
                envelope.stream_id
            )));
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {0} (stream_id, cents, events, last_version) VALUES ($1, $2, 1, $3)
             ON CONFLICT (stream_id) DO UPDATE
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

#[tokio::test]
async fn an_inline_projection_catches_a_stream_up_over_its_archived_versions() {
    let schema = LeastPrivilege::new().await.unwrap();
    let (owner, app) = (schema.owner(), schema.application());
    let table = format!("{}.stream_ledger_rows", owner.schema());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (stream_id text PRIMARY KEY, cents bigint NOT NULL,
                               events bigint NOT NULL, last_version bigint NOT NULL);
         GRANT SELECT, INSERT, UPDATE ON {table} TO {app}",
        app = schema.application_role()
    )))
    .execute(owner.pool())
    .await
    .unwrap();
    // Ten deposits to each of two streams, appended where the inline projection does not run
    // (another service, say): only a runner, or a catch-up, can apply them.
    for cents in 1..=10 {
        for stream in ["account-a", "account-b"] {
            app.append(
                stream,
                "Account",
                ExpectedVersion::Any,
                vec![deposit(cents)],
            )
            .await
            .unwrap();
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let dir = Dir::new();
    let report = owner
        .archive(&ArchiveOptions::new(&dir.0, chrono::Utc::now()))
        .await
        .unwrap();
    // Versions 2 to 9 of each stream: each stream's first and newest stay in the table.
    assert_eq!(report.events, 16, "{report:?}");
    let hot = hot_events(owner).await;
    assert_eq!(hot, 4, "the archived versions left the table");

    // (stream, cents, events, last version) per stream.
    let ledger_rows = || async {
        sqlx::query_as::<_, (String, i64, i64, i64)>(sqlx::AssertSqlSafe(format!(
            "SELECT stream_id, cents, events, last_version FROM {table} ORDER BY stream_id"
        )))
        .fetch_all(owner.pool())
        .await
        .unwrap()
    };
    // An append through the inline projection catches account-a up first: versions 1 and 10
    // from the table, 2 to 9 from the Parquet file, in order, then its own version 11.
    let inline = app.with_inline({
        let table = table.clone();
        move || StreamLedger {
            table: table.clone(),
        }
    });
    inline
        .append(
            "account-a",
            "Account",
            ExpectedVersion::Exact(10),
            vec![deposit(100)],
        )
        .await
        .unwrap();
    assert_eq!(
        ledger_rows().await,
        vec![("account-a".to_owned(), 55 + 100, 11, 11)],
        "every archived version applied once, in order; account-b waits for its runner"
    );
    // The runner then applies account-b from the cold tier and the table, and nothing of
    // account-a again.
    let mut runner = ProjectionRunner::new(
        app.clone(),
        StreamLedger {
            table: table.clone(),
        },
    );
    runner.catch_up().await.unwrap();
    assert!(runner.parked().await.unwrap().is_empty(), "nothing failed");
    assert_eq!(
        ledger_rows().await,
        vec![
            ("account-a".to_owned(), 155, 11, 11),
            ("account-b".to_owned(), 55, 10, 10)
        ]
    );
}
