//! The PostgreSQL store beyond the shared conformance suite: the global feed under late commits
//! and concurrent writers, conflicts under contention, append-only enforcement, migrations,
//! decode errors, the horizon report and live subscriptions.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use factum::feed::Subscription;
use factum::testing::postgres::TemporaryStore as TestStore;
use factum::{
    Error, EventStore, ExpectedVersion, FeedPosition, FeedQuery, NewEvent, Payload, RecordedEvent,
};
use sqlx::Connection as _;

fn ping(n: u64) -> NewEvent {
    NewEvent::new(
        "Pinged",
        1,
        Payload::encode(&serde_json::json!({ "n": n })).unwrap(),
    )
}

/// Reads the feed from `after` to its current end.
async fn drain(store: &impl EventStore, after: &mut FeedPosition) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    loop {
        let batch = store
            .read_feed(&FeedQuery::after(*after).limit(500))
            .await
            .unwrap();
        *after = batch.next;
        if batch.events.is_empty() {
            return all;
        }
        all.extend(batch.events);
    }
}

/// Drains until `count` events came (other tests' open transactions may hold the feed back for
/// a while), or ten seconds passed.
async fn drain_until(
    store: &impl EventStore,
    after: &mut FeedPosition,
    count: usize,
) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    for _ in 0..1000 {
        all.extend(drain(store, after).await);
        if all.len() >= count {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    all
}

#[tokio::test]
async fn a_late_commit_is_not_skipped() {
    let store = TestStore::new().await.unwrap();
    let mut checkpoint = FeedPosition::START;

    // A takes a position first and stays open.
    let mut a = store.pool().begin().await.unwrap();
    let a_events = store
        .append_in(
            &mut a,
            "stream-a",
            "Probe",
            ExpectedVersion::Any,
            vec![ping(1)],
        )
        .await
        .unwrap();
    // B takes a higher position and commits.
    let b_events = store
        .append("stream-b", "Probe", ExpectedVersion::Any, vec![ping(2)])
        .await
        .unwrap();
    assert!(a_events[0].global_position < b_events[0].global_position);

    // B is committed and readable in its stream, yet the feed holds it back while A is open:
    // a reader checkpointing after B would otherwise skip A forever.
    assert_eq!(store.read_stream("stream-b", 1..).await.unwrap().len(), 1);
    let early = drain(&*store, &mut checkpoint).await;
    assert!(
        early.is_empty(),
        "nothing is delivered past an open transaction: {early:?}"
    );

    a.commit().await.unwrap();
    let late = drain_until(&*store, &mut checkpoint, 2).await;
    let streams: Vec<&str> = late.iter().map(|e| e.stream_id.as_str()).collect();
    assert_eq!(
        streams,
        ["stream-a", "stream-b"],
        "A is delivered, in commit order"
    );
    assert!(
        drain(&*store, &mut checkpoint).await.is_empty(),
        "and only once"
    );
}

#[tokio::test]
async fn an_aborted_append_leaves_no_gap_behind() {
    let store = TestStore::new().await.unwrap();
    let mut checkpoint = FeedPosition::START;
    let mut aborted = store.pool().begin().await.unwrap();
    store
        .append_in(
            &mut aborted,
            "stream-a",
            "Probe",
            ExpectedVersion::Any,
            vec![ping(1)],
        )
        .await
        .unwrap();
    store
        .append("stream-b", "Probe", ExpectedVersion::Any, vec![ping(2)])
        .await
        .unwrap();
    aborted.rollback().await.unwrap();
    let events = drain_until(&*store, &mut checkpoint, 1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].stream_id, "stream-b");
    assert_eq!(store.stream_version("stream-a").await.unwrap(), 0);
}

/// A small deterministic generator for delays (no dependency needed).
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_and_a_checkpointing_reader_see_every_event_once_in_stream_order() {
    const WRITERS: u64 = 8;
    const PER_WRITER: u64 = 5_000;
    const STREAMS: u64 = 40;
    let store = Arc::new(TestStore::with_pool_size(12).await.unwrap());

    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut random = XorShift(0x9E37_79B9_7F4A_7C15 ^ (writer + 1));
            for i in 0..PER_WRITER {
                // Writers share streams, so one stream's versions come from several writers.
                let stream = format!("stream-{}", random.below(STREAMS));
                let event = ping(writer * PER_WRITER + i);
                loop {
                    let mut tx = store.pool().begin().await.unwrap();
                    match store
                        .append_in(
                            &mut tx,
                            &stream,
                            "Probe",
                            ExpectedVersion::Any,
                            vec![event.clone()],
                        )
                        .await
                    {
                        Ok(_) => {}
                        // Two transactions raced for the same version: retry the transaction.
                        Err(error) if error.is_conflict() => {
                            tx.rollback().await.unwrap();
                            continue;
                        }
                        Err(error) => panic!("{error}"),
                    }
                    // Random delays inside the transaction make commits overtake each other.
                    match random.below(10) {
                        0 => tokio::time::sleep(Duration::from_millis(random.below(3))).await,
                        1..=3 => tokio::task::yield_now().await,
                        _ => {}
                    }
                    tx.commit().await.unwrap();
                    break;
                }
            }
        }));
    }

    let reader_store = store.clone();
    let reader = tokio::spawn(async move {
        let mut checkpoint = FeedPosition::START;
        let mut seen = Vec::new();
        while seen.len() < (WRITERS * PER_WRITER) as usize {
            let batch = reader_store
                .read_feed(&FeedQuery::after(checkpoint).limit(700))
                .await
                .unwrap();
            assert!(batch.next >= checkpoint);
            checkpoint = batch.next;
            if batch.events.is_empty() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seen.extend(batch.events);
        }
        (seen, checkpoint)
    });
    for writer in writers {
        writer.await.unwrap();
    }
    let (seen, mut checkpoint) = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .expect("the reader catches up")
        .unwrap();

    assert!(
        drain(&**store, &mut checkpoint).await.is_empty(),
        "nothing more after the end"
    );
    let ids: HashSet<_> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), seen.len(), "no event delivered twice");
    assert_eq!(seen.len() as u64, WRITERS * PER_WRITER, "no event missed");
    let payloads: HashSet<u64> = seen
        .iter()
        .map(|e| e.event.to_value()["n"].as_u64().unwrap())
        .collect();
    assert_eq!(payloads.len() as u64, WRITERS * PER_WRITER);
    let mut last_version: HashMap<&str, u64> = HashMap::new();
    for event in &seen {
        let last = last_version.entry(&event.stream_id).or_default();
        assert_eq!(
            event.stream_version,
            *last + 1,
            "stream {} out of order",
            event.stream_id
        );
        *last = event.stream_version;
    }
    assert!(
        seen.windows(2)
            .all(|w| w[0].feed_position() < w[1].feed_position()),
        "feed positions increase"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_racing_writers_lose_with_a_conflict_and_no_version_is_lost_or_doubled() {
    let store = Arc::new(TestStore::with_pool_size(17).await.unwrap());
    let mut winners = Vec::new();
    for round in 0..10_u64 {
        let barrier = Arc::new(tokio::sync::Barrier::new(16));
        let tasks: Vec<_> = (0..16_u64)
            .map(|writer| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store
                        .append(
                            "contended",
                            "Probe",
                            ExpectedVersion::Exact(round),
                            vec![ping(round * 100 + writer)],
                        )
                        .await
                })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(stored) => {
                    assert_eq!(stored[0].stream_version, round + 1);
                    winners.push(stored[0].event_id);
                    won += 1;
                }
                Err(Error::Conflict {
                    stream_id,
                    expected,
                    actual,
                }) => {
                    assert_eq!(stream_id, "contended");
                    assert_eq!(expected, ExpectedVersion::Exact(round));
                    assert_eq!(actual, round + 1, "the loser learns the winner's version");
                }
                Err(other) => panic!("a loser gets a conflict, not {other}"),
            }
        }
        assert_eq!(won, 1, "exactly one append wins round {round}");
    }
    let stored = store.read_stream("contended", 1..).await.unwrap();
    let versions: Vec<u64> = stored.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, (1..=10).collect::<Vec<_>>());
    let ids: Vec<_> = stored.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, winners);
}

#[tokio::test]
async fn the_database_refuses_to_change_or_remove_events() {
    let store = TestStore::new().await.unwrap();
    store
        .append("stream-a", "Probe", ExpectedVersion::Any, vec![ping(1)])
        .await
        .unwrap();
    let schema = store.schema().to_owned();
    for statement in [
        format!("UPDATE \"{schema}\".events SET event_type = 'Tampered'"),
        format!("DELETE FROM \"{schema}\".events"),
        format!("TRUNCATE \"{schema}\".events"),
    ] {
        let error = sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
            .execute(store.pool())
            .await
            .expect_err("refused");
        let database = error.as_database_error().expect("a database error");
        assert_eq!(
            database.code().as_deref(),
            Some("FA001"),
            "{statement}: {database}"
        );
        assert!(
            database.message().contains("append-only"),
            "{}",
            database.message()
        );
    }
    let stored = store.read_stream("stream-a", 1..).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event_type, "Pinged");
}

/// The versions `replay_history` visits for a stream whose rows were written, by hand, in the
/// order `written` (an import or a repair could lay rows out so; Factum's appends do not).
async fn replayed_versions(store: &TestStore, stream: &str, written: &[i64]) -> Vec<u64> {
    let schema = store.schema().to_owned();
    for &version in written {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO \"{schema}\".events (stream_id, stream_version, aggregate_type, event_id,
                 event_type, schema_version, payload, metadata, correlation_id, causation_id,
                 recorded_at)
             VALUES ($1, $2, 'Probe', gen_random_uuid(), 'Pinged', 1, '{{}}', '{{}}',
                     gen_random_uuid(), gen_random_uuid(), now())"
        )))
        .bind(stream)
        .bind(version)
        .execute(store.pool())
        .await
        .unwrap();
    }
    let mut versions = Vec::new();
    store
        .replay_history(stream, "Probe", false, |item| {
            if let factum::store::HistoryItem::Event(event) = item {
                versions.push(event.stream_version);
            }
            Ok(())
        })
        .await
        .unwrap();
    versions
}

#[tokio::test]
async fn a_stream_whose_rows_lie_out_of_order_replays_in_version_order() {
    let store = TestStore::new().await.unwrap();
    assert_eq!(
        replayed_versions(&store, "shuffled", &[3, 1, 5, 2, 4]).await,
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        replayed_versions(&store, "gapped", &[4, 2, 7, 1]).await,
        [1, 2, 4, 7],
        "a gap holds nothing back"
    );
    assert_eq!(
        replayed_versions(&store, "in-order", &[1, 2, 3]).await,
        [1, 2, 3]
    );
}

#[tokio::test]
async fn migrations_are_idempotent_and_safe_to_run_concurrently() {
    let store = TestStore::new().await.unwrap();
    let (a, b, c) = tokio::join!(store.migrate(), store.migrate(), store.migrate());
    a.unwrap();
    b.unwrap();
    c.unwrap();
    let applied: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{}\".factum_migrations",
        store.schema()
    )))
    .fetch_one(store.pool())
    .await
    .unwrap();
    let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count();
    assert!(
        shipped >= 14,
        "the migrations are where they were: {shipped}"
    );
    assert_eq!(applied, shipped as i64, "every shipped migration, once");
}

#[tokio::test]
async fn an_unmigrated_schema_and_a_bad_schema_name_get_clear_errors() {
    let store = TestStore::new().await.unwrap();
    let pool = store.pool().clone();
    let bare =
        factum::store::PostgresStore::with_schema(pool.clone(), "factum_never_migrated").unwrap();
    let error = bare
        .append("s", "Probe", ExpectedVersion::Any, vec![ping(1)])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::NotMigrated { schema } if schema == "factum_never_migrated"),
        "{error:?}"
    );
    assert!(error.to_string().contains("migrate()"), "{error}");
    let error = bare.read_feed(&FeedQuery::from_start()).await.unwrap_err();
    assert!(matches!(error, Error::NotMigrated { .. }), "{error:?}");

    let error = factum::store::PostgresStore::with_schema(pool, "Robert'); DROP TABLE students;--")
        .unwrap_err();
    assert!(matches!(error, Error::InvalidConfig(_)), "{error:?}");
}

#[tokio::test]
async fn a_schema_migrated_by_a_newer_build_is_refused() {
    let store = TestStore::new().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO \"{}\".factum_migrations (version, name, checksum) VALUES (99, 'future', 'x')",
        store.schema()
    )))
    .execute(store.pool())
    .await
    .unwrap();
    let error = store.migrate().await.unwrap_err();
    assert!(
        matches!(error, Error::IncompatibleSchema { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("newer"), "{error}");
}

#[tokio::test]
async fn a_stored_event_that_no_longer_decodes_is_a_typed_error_naming_it() {
    #[factum::event]
    #[derive(Debug)]
    struct Pinged {
        #[allow(dead_code)]
        n: u64,
    }
    #[factum::event]
    #[derive(Debug)]
    enum PingEvent {
        Pinged(Pinged),
    }

    let store = TestStore::new().await.unwrap();
    let bad = NewEvent::new(
        "Pinged",
        1,
        Payload::encode(&serde_json::json!({ "n": "one" })).unwrap(),
    );
    let unknown = NewEvent::new(
        "Ponged",
        1,
        Payload::encode(&serde_json::json!({})).unwrap(),
    );
    store
        .append(
            "stream-a",
            "Probe",
            ExpectedVersion::Any,
            vec![ping(1), bad, unknown],
        )
        .await
        .unwrap();
    let stored = store.read_stream("stream-a", 1..).await.unwrap();
    assert!(stored[0].decode_events::<PingEvent>().is_ok());
    let error = stored[1].decode_events::<PingEvent>().unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(
            error,
            Error::Decode {
                stream_version: 2,
                ..
            }
        ),
        "{error:?}"
    );
    for part in ["stream-a", "version 2", "Pinged", "invalid type"] {
        assert!(message.contains(part), "`{part}` in: {message}");
    }
    let error = stored[2].decode_events::<PingEvent>().unwrap_err();
    assert!(
        error.to_string().contains("unknown event type `Ponged`"),
        "{error}"
    );
}

#[tokio::test]
async fn the_horizon_report_names_the_transaction_holding_readers_back() {
    let store = TestStore::new().await.unwrap();
    let mut blocker = sqlx::PgConnection::connect(store.url()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    let blocker_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut blocker)
        .await
        .unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut blocker)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    // Other tests' transactions may be older; ours must be at most as young as the oldest.
    let report = store.horizon().await.unwrap();
    let oldest = report
        .oldest_open_transaction
        .expect("an open transaction is reported");
    assert!(
        oldest
            .age
            .is_some_and(|age| age >= Duration::from_millis(50))
            || oldest.pid != Some(blocker_pid)
    );
    assert!(report.horizon_tx > 0);

    sqlx::query("COMMIT").execute(&mut blocker).await.unwrap();
    let after = store.horizon().await.unwrap();
    assert!(
        after
            .oldest_open_transaction
            .is_none_or(|t| t.pid != Some(blocker_pid)),
        "a finished transaction no longer holds the horizon"
    );
}

/// On a cluster of its own (it needs `max_prepared_transactions` and roles of its own): a
/// prepared (two-phase) transaction holds readers back like a running one and is named by its
/// global id; a role without `pg_read_all_stats` still sees which session holds the feed, with
/// its age unknown (not 0 s), and sees the age once granted.
#[tokio::test]
async fn the_horizon_names_prepared_transactions_and_works_without_privileges() {
    let cluster = factum::testing::postgres::Cluster::builder()
        .setting("max_prepared_transactions", "4")
        .start()
        .await
        .unwrap();
    let admin = factum::store::PostgresStore::with_schema(
        sqlx::PgPool::connect(&cluster.url()).await.unwrap(),
        "factum",
    )
    .unwrap();
    admin.migrate().await.unwrap();
    admin
        .append("s", "Probe", ExpectedVersion::Any, vec![ping(1)])
        .await
        .unwrap();

    // A prepared transaction: no session holds it.
    let mut session = sqlx::PgConnection::connect(&cluster.url()).await.unwrap();
    for statement in [
        "BEGIN",
        "SELECT pg_current_xact_id()",
        "PREPARE TRANSACTION 'factum-horizon-test'",
    ] {
        sqlx::query(statement).execute(&mut session).await.unwrap();
    }
    session.close().await.unwrap();
    admin
        .append("s", "Probe", ExpectedVersion::Any, vec![ping(2)])
        .await
        .unwrap();
    let report = admin.horizon().await.unwrap();
    let oldest = report
        .oldest_open_transaction
        .clone()
        .expect("the prepared one");
    assert_eq!(oldest.prepared.as_deref(), Some("factum-horizon-test"));
    assert_eq!(oldest.state.as_deref(), Some("prepared"));
    assert_eq!(oldest.pid, None);
    assert_eq!(oldest.owner.as_deref(), Some("postgres"));
    assert!(oldest.age.is_some());
    assert!(
        report.newest_event_tx.unwrap() >= report.horizon_tx,
        "the newest event waits behind it: {report:?}"
    );
    sqlx::query("ROLLBACK PREPARED 'factum-horizon-test'")
        .execute(admin.pool())
        .await
        .unwrap();
    let report = admin.horizon().await.unwrap();
    assert!(report.oldest_open_transaction.is_none(), "{report:?}");
    assert!(report.horizon_tx > report.newest_event_tx.unwrap());

    // A role with no extra privileges.
    for statement in [
        "CREATE ROLE horizon_reader LOGIN",
        "GRANT USAGE ON SCHEMA factum TO horizon_reader",
        "GRANT SELECT ON factum.events TO horizon_reader",
    ] {
        sqlx::query(statement).execute(admin.pool()).await.unwrap();
    }
    let url = cluster.url().replace("postgres@", "horizon_reader@");
    let reader = factum::store::PostgresStore::with_schema(
        sqlx::PgPool::connect(&url).await.unwrap(),
        "factum",
    )
    .unwrap();
    let mut blocker = sqlx::PgConnection::connect(&cluster.url()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    let blocker_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut blocker)
        .await
        .unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut blocker)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let oldest = reader
        .horizon()
        .await
        .unwrap()
        .oldest_open_transaction
        .expect("visible without privileges");
    assert_eq!(oldest.pid, Some(blocker_pid));
    assert_eq!(oldest.owner.as_deref(), Some("postgres"));
    assert_eq!(oldest.age, None, "unknown, not 0 s");
    sqlx::query("GRANT pg_read_all_stats TO horizon_reader")
        .execute(admin.pool())
        .await
        .unwrap();
    let oldest = reader
        .horizon()
        .await
        .unwrap()
        .oldest_open_transaction
        .unwrap();
    assert!(
        oldest
            .age
            .is_some_and(|age| age >= Duration::from_millis(100)),
        "{oldest:?}"
    );
    assert!(oldest.query.is_some());
    sqlx::query("COMMIT").execute(&mut blocker).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_catches_up_then_follows_live_appends_woken_by_notify() {
    let store = TestStore::new().await.unwrap();
    store
        .append(
            "stream-a",
            "Probe",
            ExpectedVersion::Any,
            vec![ping(1), ping(2)],
        )
        .await
        .unwrap();
    // A poll interval far beyond the test's patience: only a notification can deliver in time.
    let mut feed = Subscription::new(store.another_client().await.unwrap(), FeedPosition::START)
        .poll_interval(Duration::from_secs(3600));
    let caught_up = [feed.next().await.unwrap(), feed.next().await.unwrap()];
    assert_eq!(caught_up.map(|e| e.stream_version), [1, 2]);

    let writer = store.another_client().await.unwrap();
    let appended = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        writer
            .append("stream-b", "Probe", ExpectedVersion::Any, vec![ping(3)])
            .await
            .unwrap()
    });
    let live = tokio::time::timeout(Duration::from_secs(10), feed.next())
        .await
        .expect("woken by the notification")
        .unwrap();
    assert_eq!(live.event_id, appended.await.unwrap()[0].event_id);
    assert!(feed.position() >= live.feed_position());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_notification_only_delays_a_subscription() {
    let store = TestStore::new().await.unwrap();
    let mut feed = Subscription::new(store.another_client().await.unwrap(), FeedPosition::START)
        .poll_interval(Duration::from_millis(200));
    // Appended in a transaction and never announced: no notification is sent.
    let mut tx = store.pool().begin().await.unwrap();
    store
        .append_in(
            &mut tx,
            "quiet",
            "Probe",
            ExpectedVersion::Any,
            vec![ping(1)],
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), feed.next())
        .await
        .expect("found by polling")
        .unwrap();
    assert_eq!(event.stream_id, "quiet");
}

#[tokio::test]
async fn an_append_after_other_writes_cannot_put_a_stream_out_of_feed_order() {
    let store = TestStore::new().await.unwrap();
    // This transaction takes its id first (by writing), then appends late.
    let mut old = store.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *old)
        .await
        .unwrap();
    // Meanwhile a newer transaction appends version 1 and commits.
    store
        .append("ordered", "Probe", ExpectedVersion::Any, vec![ping(1)])
        .await
        .unwrap();
    // Version 2 with the older transaction id would reach readers before version 1.
    let error = store
        .append_in(
            &mut old,
            "ordered",
            "Probe",
            ExpectedVersion::Any,
            vec![ping(2)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::StaleTransaction { stream_id } if stream_id == "ordered"),
        "{error:?}"
    );
    assert!(error.is_conflict(), "retrying the transaction cures it");
    old.rollback().await.unwrap();

    // A transaction whose first write is the append is always in order.
    let mut fresh = store.pool().begin().await.unwrap();
    store
        .append_in(
            &mut fresh,
            "ordered",
            "Probe",
            ExpectedVersion::Exact(1),
            vec![ping(2)],
        )
        .await
        .unwrap();
    fresh.commit().await.unwrap();
    let mut checkpoint = FeedPosition::START;
    let versions: Vec<u64> = drain_until(&*store, &mut checkpoint, 2)
        .await
        .iter()
        .map(|e| e.stream_version)
        .collect();
    assert_eq!(versions, [1, 2]);

    // Two appends to one stream in one transaction: the second follows the transaction's own
    // first, which is no newer transaction, and both reach readers in order.
    let mut twice = store.begin().await.unwrap();
    for version in [3, 4] {
        store
            .append_in(
                &mut twice,
                "ordered",
                "Probe",
                ExpectedVersion::Exact(version - 1),
                vec![ping(version)],
            )
            .await
            .unwrap();
    }
    twice.commit().await.unwrap();
    let versions: Vec<u64> = drain_until(&*store, &mut checkpoint, 2)
        .await
        .iter()
        .map(|e| e.stream_version)
        .collect();
    assert_eq!(versions, [3, 4]);
}

/// A schema name of the longest kind (63 bytes) still gets working notifications: appends
/// wake another client's subscription. (Every test's `TemporaryStore` has such a name too, so
/// the saga tests cover the saga's signal.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_work_with_the_longest_schema_names() {
    let url = factum::testing::postgres::database_url();
    let schema = format!("factum_long_{}", factum::Uuid::now_v7().simple());
    let schema = format!("{schema}{}", "x".repeat(63 - schema.len()));
    assert_eq!(schema.len(), 63);
    let store = factum::store::PostgresStore::with_schema(
        sqlx::PgPool::connect(&url).await.unwrap(),
        &schema,
    )
    .unwrap();
    store.migrate().await.unwrap();
    let other = factum::store::PostgresStore::with_schema(
        sqlx::PgPool::connect(&url).await.unwrap(),
        &schema,
    )
    .unwrap();
    let mut feed = Subscription::new(other.clone(), FeedPosition::START)
        .poll_interval(Duration::from_secs(60));
    assert!(feed.try_next_batch().await.unwrap().is_empty());
    let waiting = tokio::spawn(async move { feed.next().await.unwrap().stream_id });
    tokio::time::sleep(Duration::from_millis(300)).await;
    store
        .append("long-1", "Probe", ExpectedVersion::NoStream, vec![ping(1)])
        .await
        .unwrap();
    let stream = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("woken by the notification, long before the minute's poll")
        .unwrap();
    assert_eq!(stream, "long-1");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(store.pool())
    .await
    .unwrap();
}

/// A store inserts after the heads it wrote without reading them; a head another client moved
/// since costs a retry, never a gap, a lost event, a false conflict or a doubled retry.
#[tokio::test]
async fn an_append_after_a_head_another_client_moved_lands_at_the_real_head() {
    let store = TestStore::new().await.unwrap();
    let other = store.another_client().await.unwrap();
    let versions = |stored: Vec<RecordedEvent>| -> Vec<u64> {
        stored.iter().map(|e| e.stream_version).collect()
    };
    let first = store
        .append("moved", "Probe", ExpectedVersion::NoStream, vec![ping(1)])
        .await
        .unwrap();
    assert_eq!(versions(first), [1]);
    // This store remembers head 1; the other client writes 2 and 3 behind its back.
    let moved = other
        .append(
            "moved",
            "Probe",
            ExpectedVersion::Any,
            vec![ping(2), ping(3)],
        )
        .await
        .unwrap();
    assert_eq!(versions(moved), [2, 3]);
    let any = store
        .append("moved", "Probe", ExpectedVersion::Any, vec![ping(4)])
        .await
        .unwrap();
    assert_eq!(versions(any), [4], "lands after the real head, not at 2");
    // Moved again; an exact expectation of the remembered head is a conflict naming the real one.
    other
        .append("moved", "Probe", ExpectedVersion::Exact(4), vec![ping(5)])
        .await
        .unwrap();
    match store
        .append("moved", "Probe", ExpectedVersion::Exact(4), vec![ping(6)])
        .await
    {
        Err(Error::Conflict { actual, .. }) => assert_eq!(actual, 5),
        other => panic!("expected a conflict at version 5, got {other:?}"),
    }
    match store
        .append("moved", "Probe", ExpectedVersion::NoStream, vec![ping(6)])
        .await
    {
        Err(Error::Conflict { actual, .. }) => assert_eq!(actual, 5),
        other => panic!("expected a conflict for an existing stream, got {other:?}"),
    }
    match store
        .append("moved", "Other", ExpectedVersion::Any, vec![ping(6)])
        .await
    {
        Err(Error::AggregateTypeMismatch { existing, .. }) => assert_eq!(existing, "Probe"),
        other => panic!("expected an aggregate type mismatch, got {other:?}"),
    }
    // A retry of a stored append, after a head this store wrote, is recognised, not stored twice.
    let retried = ping(6);
    let stored = store
        .append(
            "moved",
            "Probe",
            ExpectedVersion::Any,
            vec![retried.clone()],
        )
        .await
        .unwrap();
    let again = store
        .append("moved", "Probe", ExpectedVersion::Any, vec![retried])
        .await
        .unwrap();
    assert_eq!(stored, again);
    let all = store.read_stream("moved", 1..).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
    let payloads: Vec<u64> = all
        .iter()
        .map(|e| e.event.to_value()["n"].as_u64().unwrap())
        .collect();
    assert_eq!(payloads, [1, 2, 3, 4, 5, 6]);
}
