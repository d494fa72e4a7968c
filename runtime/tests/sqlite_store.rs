//! The SQLite store on a file: concurrent writers and a following reader (every event exactly
//! once, streams in order), append-only rows, reopening, and typed errors.

use std::collections::HashMap;

use factum::store::SqliteStore;
use factum::testing::sqlite::TemporaryDatabase;
use factum::{Error, EventStore, ExpectedVersion, FeedPosition, FeedQuery, NewEvent, Payload};

fn ping(writer: usize, n: usize) -> NewEvent {
    NewEvent::new(
        "Pinged",
        1,
        Payload::encode(&serde_json::json!({ "writer": writer, "n": n })).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_and_a_following_reader_see_every_event_once_in_order() {
    const WRITERS: usize = 6;
    const APPENDS: usize = 150;
    const STREAMS: usize = 10;
    let database = TemporaryDatabase::new().await.unwrap();
    let store = (*database).clone();

    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut checkpoint = FeedPosition::START;
            while seen.len() < WRITERS * APPENDS {
                let batch = store
                    .read_feed(&FeedQuery::after(checkpoint).limit(37))
                    .await
                    .unwrap();
                seen.extend(batch.events);
                checkpoint = batch.next;
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..APPENDS {
                    let stream = format!("s-{}", (writer + n) % STREAMS);
                    store
                        .append(
                            &stream,
                            "Probe",
                            ExpectedVersion::Any,
                            vec![ping(writer, n)],
                        )
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let seen = reader.await.unwrap();

    assert_eq!(seen.len(), WRITERS * APPENDS);
    let mut ids = std::collections::HashSet::new();
    let mut last_version: HashMap<&str, u64> = HashMap::new();
    for pair in seen.windows(2) {
        assert!(
            pair[0].global_position < pair[1].global_position,
            "feed order"
        );
    }
    for event in &seen {
        assert!(ids.insert(event.event_id), "each event once");
        let last = last_version.entry(&event.stream_id).or_default();
        assert_eq!(event.stream_version, *last + 1, "streams in order, no gap");
        *last = event.stream_version;
    }
}

#[tokio::test]
async fn stored_events_survive_reopening_and_cannot_be_changed() {
    let database = TemporaryDatabase::new().await.unwrap();
    {
        let store = SqliteStore::open(database.path()).await.unwrap();
        store
            .append(
                "s-1",
                "Probe",
                ExpectedVersion::NoStream,
                vec![ping(0, 0), ping(0, 1)],
            )
            .await
            .unwrap();
        store.pool().close().await;
    }
    database.pool().close().await;
    let store = SqliteStore::open(database.path()).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.stream_version("s-1").await.unwrap(), 2);

    for statement in ["UPDATE events SET payload = '{}'", "DELETE FROM events"] {
        let error = sqlx::query(statement)
            .execute(store.pool())
            .await
            .unwrap_err();
        assert!(error.to_string().contains("append-only"), "{error}");
    }
    assert_eq!(store.read_stream("s-1", ..).await.unwrap().len(), 2);
}

#[tokio::test]
async fn an_unmigrated_database_and_a_bad_url_get_typed_errors() {
    let store = TemporaryDatabase::unmigrated().await.unwrap();
    let error = store
        .append("s-1", "Probe", ExpectedVersion::Any, vec![ping(0, 0)])
        .await
        .unwrap_err();
    assert!(matches!(error, Error::NotMigrated { .. }), "{error}");

    let error = SqliteStore::connect("postgres://not-sqlite")
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidConfig(_)), "{error}");
}

#[tokio::test]
async fn rows_written_by_another_tool_that_no_append_could_write_are_reported_as_corrupt() {
    let database = TemporaryDatabase::new().await.unwrap();
    let store = (*database).clone();
    store
        .append("s-1", "Probe", ExpectedVersion::NoStream, vec![ping(0, 0)])
        .await
        .unwrap();
    // Metadata that is not a JSON object, and a negative schema version.
    for (version, metadata, schema_version) in [(2, "[1, 2]", 1), (3, "{}", -1)] {
        sqlx::query(
            "INSERT INTO events (stream_id, stream_version, aggregate_type, event_id, event_type,
                 schema_version, payload, metadata, correlation_id, causation_id, recorded_at)
             VALUES ('s-1', ?1, 'Probe', ?2, 'Pinged', ?3, '{}', ?4, ?2, ?2, '2026-01-01T00:00:00Z')",
        )
        .bind(version)
        .bind(factum::Uuid::now_v7().to_string())
        .bind(schema_version)
        .bind(metadata)
        .execute(store.pool())
        .await
        .unwrap();
    }
    // Metadata is the event's own: a decoding error naming the event and the column.
    let error = store.read_stream("s-1", 2..=2).await.unwrap_err();
    assert!(
        matches!(&error, Error::Decode { stream_id, stream_version: 2, cause: factum::DecodeError::Column { column: "metadata", reason } }
            if stream_id == "s-1" && reason.contains("not a JSON object")),
        "{error}"
    );
    let error = store.read_stream("s-1", 3..=3).await.unwrap_err();
    assert!(
        matches!(&error, Error::Corrupt { reason } if reason.contains("schema_version") && reason.contains("-1")),
        "{error}"
    );
    // The good event still reads; the feed stops at the corrupt one rather than skipping it.
    assert_eq!(store.read_stream("s-1", 1..=1).await.unwrap().len(), 1);
    let error = store.read_feed(&FeedQuery::from_start()).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Decode {
                stream_version: 2,
                ..
            }
        ),
        "{error}"
    );
    let error = store
        .read_feed(&FeedQuery::after(FeedPosition::new(2, 2)))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Corrupt { .. }), "{error}");
}

#[tokio::test]
async fn remove_files_removes_the_database_and_its_companions_only() {
    let dir = std::env::temp_dir().join(format!("factum-remove-{}", factum::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("app.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store.migrate().await.unwrap();
    drop(store);
    for companion in [
        "app.db-wal",
        "app.db-shm",
        "app.db-projection-balances-v1.lock",
    ] {
        std::fs::write(dir.join(companion), b"").unwrap();
    }
    for other in ["app.db.bak", "app.dbx", "app.db-notes.txt"] {
        std::fs::write(dir.join(other), b"keep me").unwrap();
    }
    SqliteStore::remove_files(&path).unwrap();
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["app.db-notes.txt", "app.db.bak", "app.dbx"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

mod leases {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use factum::projection::ProjectionRunner;
    use factum::testing::sqlite::TemporaryDatabase;
    use factum::{Envelope, EventStore, ExpectedVersion, NewEvent, Tx};

    #[factum::event]
    #[derive(Debug)]
    pub struct Ticked {
        pub n: u64,
    }

    macro_rules! counter {
        ($type:ident, $name:literal) => {
            #[derive(Debug)]
            pub struct $type(Arc<AtomicU64>);

            #[factum::projection(name = $name)]
            impl $type {
                #[handle]
                async fn ticked(
                    &mut self,
                    _: &Ticked,
                    _: &Envelope,
                    _: &mut Tx<'_>,
                ) -> Result<(), std::convert::Infallible> {
                    self.0.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            }
        };
    }

    counter!(Dashed, "a-b");
    counter!(Underscored, "a_b");

    /// Projections whose names differ only in punctuation hold leases of their own (their lock
    /// files once collided, and the second waited forever).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn projections_named_alike_run_at_once() {
        let database = TemporaryDatabase::new().await.unwrap();
        database
            .append(
                "t-1",
                "Ticker",
                ExpectedVersion::NoStream,
                vec![NewEvent::of(&Ticked { n: 1 }).unwrap()],
            )
            .await
            .unwrap();
        let (dashed, underscored) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let run = |stopped: tokio::sync::watch::Receiver<bool>| async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let first = tokio::spawn(
            ProjectionRunner::new((*database).clone(), Dashed(Arc::clone(&dashed)))
                .poll_interval(Duration::from_millis(20))
                .run(run(stopped.clone())),
        );
        let second = tokio::spawn(
            ProjectionRunner::new((*database).clone(), Underscored(Arc::clone(&underscored)))
                .poll_interval(Duration::from_millis(20))
                .lease_retry(Duration::from_millis(20))
                .run(run(stopped)),
        );
        for _ in 0..500 {
            if dashed.load(Ordering::SeqCst) == 1 && underscored.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(dashed.load(Ordering::SeqCst), 1);
        assert_eq!(
            underscored.load(Ordering::SeqCst),
            1,
            "both leases held at once"
        );
        stop.send(true).unwrap();
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
    }
}
