//! The conformance suite: the semantics of [`EventStore`], written once and run against every
//! backend.
//!
//! A backend's test file runs every case with [`conformance_tests!`](crate::conformance_tests),
//! given an async function that returns a fresh, empty store (and optionally one that disposes
//! of it):
//!
//! ```
//! async fn fresh_store() -> factum::MemoryStore {
//!     factum::MemoryStore::new()
//! }
//!
//! factum::conformance_tests!(setup = fresh_store);
//! ```
//!
//! Each case is also a public async function of this module, for backends that need their own
//! harness. The cases panic on a failed check, like tests.

#![allow(clippy::missing_panics_doc, clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use uuid::Uuid;

use crate::envelope::{NewEvent, RecordedEvent};
use crate::error::Error;
use crate::event::Payload;
use crate::snapshot::Snapshot;
use crate::store::{
    EventStore, ExpectedVersion, FeedPosition, FeedQuery, HistoryItem, KnownHead, StreamEvent,
};

const AGGREGATE: &str = "Probe";

/// An event of the suite: type `Pinged` carrying `{"n": n}`.
fn ping(n: u64) -> NewEvent {
    NewEvent::new(
        "Pinged",
        1,
        Payload::encode(&serde_json::json!({ "n": n })).unwrap(),
    )
}

fn pings(range: std::ops::Range<u64>) -> Vec<NewEvent> {
    range.map(ping).collect()
}

fn numbers(events: &[RecordedEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.event.to_value()["n"].as_u64().unwrap())
        .collect()
}

fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.stream_version).collect()
}

fn unique_stream(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::now_v7())
}

#[track_caller]
fn assert_conflict(
    result: crate::Result<Vec<RecordedEvent>>,
    stream: &str,
    expected: ExpectedVersion,
    actual: u64,
) {
    match result {
        Err(Error::Conflict {
            stream_id,
            expected: e,
            actual: a,
        }) => {
            assert_eq!(stream_id, stream, "the conflict names the stream");
            assert_eq!(e, expected, "the conflict names the expected version");
            assert_eq!(a, actual, "the conflict names the actual version");
        }
        other => panic!("expected a conflict ({expected} vs {actual}), got {other:?}"),
    }
}

/// Reads the whole feed in batches of `batch`.
async fn read_all<S: EventStore>(store: &S, batch: usize) -> Vec<RecordedEvent> {
    read_from(store, FeedPosition::START, batch).await
}

/// Reads the feed after `after` up to its end, waiting out events held back by transactions
/// still open elsewhere (other tests sharing the server, for instance).
async fn read_from<S: EventStore>(
    store: &S,
    mut after: FeedPosition,
    batch: usize,
) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let read = store
            .read_feed(&FeedQuery::after(after).limit(batch))
            .await
            .unwrap();
        assert!(read.next >= after, "the feed cursor never moves back");
        after = read.next;
        if read.events.is_empty() {
            if !read.held_back {
                return all;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the feed stays held back"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(read.events.len() <= batch, "a batch respects its limit");
        all.extend(read.events);
    }
}

/// `NoStream` creates a stream, and conflicts once it exists.
pub async fn no_stream<S: EventStore>(store: &S) {
    let stream = unique_stream("no-stream");
    let stored = store
        .append(&stream, AGGREGATE, ExpectedVersion::NoStream, pings(0..2))
        .await
        .unwrap();
    assert_eq!(versions(&stored), [1, 2]);
    let again = store
        .append(&stream, AGGREGATE, ExpectedVersion::NoStream, pings(2..3))
        .await;
    assert_conflict(again, &stream, ExpectedVersion::NoStream, 2);
    assert_eq!(store.stream_version(&stream).await.unwrap(), 2);
}

/// `Exact(n)` appends at n + 1 when the stream is at n, and conflicts otherwise, naming both
/// versions.
pub async fn exact_version<S: EventStore>(store: &S) {
    let stream = unique_stream("exact");
    store
        .append(&stream, AGGREGATE, ExpectedVersion::Exact(0), pings(0..1))
        .await
        .unwrap();
    let stored = store
        .append(&stream, AGGREGATE, ExpectedVersion::Exact(1), pings(1..3))
        .await
        .unwrap();
    assert_eq!(versions(&stored), [2, 3]);

    let stale = store
        .append(&stream, AGGREGATE, ExpectedVersion::Exact(1), pings(3..4))
        .await;
    assert_conflict(stale, &stream, ExpectedVersion::Exact(1), 3);
    let ahead = store
        .append(&stream, AGGREGATE, ExpectedVersion::Exact(7), pings(3..4))
        .await;
    assert_conflict(ahead, &stream, ExpectedVersion::Exact(7), 3);

    let missing = unique_stream("exact-missing");
    let result = store
        .append(&missing, AGGREGATE, ExpectedVersion::Exact(2), pings(0..1))
        .await;
    assert_conflict(result, &missing, ExpectedVersion::Exact(2), 0);
    assert_eq!(store.stream_version(&missing).await.unwrap(), 0);
}

/// `StreamExists` conflicts on a missing stream and appends to an existing one.
pub async fn stream_exists<S: EventStore>(store: &S) {
    let stream = unique_stream("exists");
    let missing = store
        .append(
            &stream,
            AGGREGATE,
            ExpectedVersion::StreamExists,
            pings(0..1),
        )
        .await;
    assert_conflict(missing, &stream, ExpectedVersion::StreamExists, 0);
    store
        .append(&stream, AGGREGATE, ExpectedVersion::NoStream, pings(0..1))
        .await
        .unwrap();
    let stored = store
        .append(
            &stream,
            AGGREGATE,
            ExpectedVersion::StreamExists,
            pings(1..2),
        )
        .await
        .unwrap();
    assert_eq!(versions(&stored), [2]);
}

/// `Any` appends to a new and to an existing stream.
pub async fn any_version<S: EventStore>(store: &S) {
    let stream = unique_stream("any");
    let first = store
        .append(&stream, AGGREGATE, ExpectedVersion::Any, pings(0..1))
        .await
        .unwrap();
    let second = store
        .append(&stream, AGGREGATE, ExpectedVersion::Any, pings(1..3))
        .await
        .unwrap();
    assert_eq!(versions(&first), [1]);
    assert_eq!(versions(&second), [2, 3]);
}

/// A multi-event append is all or nothing: when its last event is refused (its id is already
/// stored elsewhere), none of its events is stored, in the stream or in the feed.
pub async fn multi_event_append_is_atomic<S: EventStore>(store: &S) {
    let other = unique_stream("atomic-other");
    let taken = store
        .append(&other, AGGREGATE, ExpectedVersion::NoStream, pings(0..1))
        .await
        .unwrap();
    let feed_before = read_all(store, 100).await.len();

    let stream = unique_stream("atomic");
    let mut batch = pings(0..3);
    batch.push(ping(3).event_id(taken[0].event_id));
    let result = store
        .append(&stream, AGGREGATE, ExpectedVersion::NoStream, batch)
        .await;
    assert!(
        matches!(result, Err(Error::DuplicateEventId { .. })),
        "a reused event id is refused: {result:?}"
    );
    assert!(store.read_stream(&stream, 1..).await.unwrap().is_empty());
    assert_eq!(store.stream_version(&stream).await.unwrap(), 0);
    assert_eq!(
        read_all(store, 100).await.len(),
        feed_before,
        "nothing reached the feed"
    );

    let stored = store
        .append(&stream, AGGREGATE, ExpectedVersion::NoStream, pings(0..3))
        .await
        .unwrap();
    assert_eq!(versions(&stored), [1, 2, 3], "the stream is still new");
}

/// Concurrent multi-event appends to one stream never interleave: each lands whole, at
/// consecutive versions, or is refused whole.
pub async fn concurrent_appends_are_atomic<S: EventStore + 'static>(store: Arc<S>) {
    let stream = unique_stream("interleave");
    let mut tasks = Vec::new();
    for writer in 0..8_u64 {
        let store = store.clone();
        let stream = stream.clone();
        tasks.push(tokio::spawn(async move {
            let mut landed = Vec::new();
            for round in 0..5_u64 {
                let batch = pings(writer * 1000 + round * 10..writer * 1000 + round * 10 + 3);
                match store
                    .append(&stream, AGGREGATE, ExpectedVersion::Any, batch)
                    .await
                {
                    Ok(stored) => landed.push(stored),
                    Err(error) => panic!("an `Any` append cannot conflict: {error}"),
                }
            }
            landed
        }));
    }
    let mut expected_total = 0;
    for task in tasks {
        for stored in task.await.unwrap() {
            expected_total += 3;
            let v = versions(&stored);
            assert_eq!(
                v,
                [v[0], v[0] + 1, v[0] + 2],
                "one append, consecutive versions"
            );
        }
    }
    let all = store.read_stream(&stream, 1..).await.unwrap();
    assert_eq!(versions(&all), (1..=expected_total).collect::<Vec<_>>());
    for chunk in numbers(&all).chunks(3) {
        assert_eq!(
            chunk,
            [chunk[0], chunk[0] + 1, chunk[0] + 2],
            "appends did not interleave"
        );
    }
}

/// Tasks racing with `Exact` versions: every version is taken exactly once, and every loser is
/// told it conflicted.
pub async fn racing_exact_appends<S: EventStore + 'static>(store: Arc<S>) {
    let stream = unique_stream("race");
    let mut tasks = Vec::new();
    for writer in 0..16_u64 {
        let store = store.clone();
        let stream = stream.clone();
        tasks.push(tokio::spawn(async move {
            let (mut won, mut lost) = (Vec::new(), 0_u32);
            while won.len() < 3 {
                let current = store.stream_version(&stream).await.unwrap();
                let event = ping(writer * 100 + won.len() as u64);
                match store
                    .append(
                        &stream,
                        AGGREGATE,
                        ExpectedVersion::Exact(current),
                        vec![event],
                    )
                    .await
                {
                    Ok(stored) => won.push(stored[0].stream_version),
                    Err(Error::Conflict { actual, .. }) => {
                        assert!(actual > current, "a conflict reports a newer version");
                        lost += 1;
                    }
                    Err(other) => panic!("unexpected error: {other}"),
                }
                tokio::task::yield_now().await;
            }
            (won, lost)
        }));
    }
    let mut taken = HashSet::new();
    for task in tasks {
        let (won, _lost) = task.await.unwrap();
        for version in won {
            assert!(taken.insert(version), "version {version} was given twice");
        }
    }
    assert_eq!(taken.len(), 48);
    let all = store.read_stream(&stream, 1..).await.unwrap();
    assert_eq!(
        versions(&all),
        (1..=48).collect::<Vec<_>>(),
        "no version lost"
    );
}

/// Reading a stream from a version, up to a version, and a stream that does not exist.
pub async fn read_stream_ranges<S: EventStore>(store: &S) {
    let stream = unique_stream("ranges");
    store
        .append(&stream, AGGREGATE, ExpectedVersion::NoStream, pings(1..6))
        .await
        .unwrap();
    let all = store.read_stream(&stream, 1..).await.unwrap();
    assert_eq!(versions(&all), [1, 2, 3, 4, 5]);
    assert_eq!(numbers(&all), [1, 2, 3, 4, 5]);
    assert_eq!(
        versions(&store.read_stream(&stream, 3..).await.unwrap()),
        [3, 4, 5]
    );
    assert_eq!(
        versions(&store.read_stream(&stream, ..=2).await.unwrap()),
        [1, 2]
    );
    assert_eq!(
        versions(&store.read_stream(&stream, 2..4).await.unwrap()),
        [2, 3]
    );
    assert!(store.read_stream(&stream, 6..).await.unwrap().is_empty());
    assert!(
        store
            .read_stream(&unique_stream("nothing"), 1..)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Everything written is read back: ids, type, version, payload, correlation, causation, actor,
/// metadata; the store fills in stream, aggregate type, positions and time.
pub async fn envelope_round_trip<S: EventStore>(store: &S) {
    let stream = unique_stream("envelope");
    let correlation = Uuid::now_v7();
    let causation = Uuid::now_v7();
    let payload = serde_json::json!({ "text": "ünïcødé \"quoted\"", "list": [1, 2.5, null], "nested": { "ok": true } });
    let event = NewEvent::new("Noted", 3, Payload::encode(&payload).unwrap())
        .correlation_id(correlation)
        .causation_id(causation)
        .actor("alice")
        .metadata("tenant", "acme")
        .metadata("attempt", 2);
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    let stored = store
        .append(
            &stream,
            AGGREGATE,
            ExpectedVersion::NoStream,
            vec![event.clone()],
        )
        .await
        .unwrap();
    let read = store.read_stream(&stream, 1..).await.unwrap();
    assert_eq!(stored, read, "append returns what is stored");
    let e = &read[0];
    assert_eq!(e.event_id, event.event_id);
    assert_eq!(e.event_type, "Noted");
    assert_eq!(e.schema_version, 3);
    assert_eq!(e.stream_id, stream);
    assert_eq!(e.aggregate_type, AGGREGATE);
    assert_eq!(e.stream_version, 1);
    assert!(e.global_position > 0);
    assert_eq!(e.correlation_id, correlation);
    assert_eq!(e.causation_id, causation);
    assert_eq!(e.actor.as_deref(), Some("alice"));
    assert_eq!(e.metadata["tenant"], "acme");
    assert_eq!(e.metadata["attempt"], 2);
    assert_eq!(e.event.to_value(), payload);
    assert!(
        e.recorded_at > before && e.recorded_at < chrono::Utc::now() + chrono::Duration::seconds(5)
    );
}

/// The global feed holds every event once, in order, each stream in version order, and reads
/// in batches from a position.
pub async fn global_feed_order<S: EventStore>(store: &S) {
    let before = read_all(store, 1000).await;
    let after_existing = before
        .last()
        .map_or(FeedPosition::START, RecordedEvent::feed_position);
    let a = unique_stream("feed-a");
    let b = unique_stream("feed-b");
    store
        .append(&a, AGGREGATE, ExpectedVersion::Any, pings(0..2))
        .await
        .unwrap();
    store
        .append(&b, AGGREGATE, ExpectedVersion::Any, pings(10..13))
        .await
        .unwrap();
    store
        .append(&a, AGGREGATE, ExpectedVersion::Any, pings(2..3))
        .await
        .unwrap();

    let ours: Vec<RecordedEvent> = read_from(store, after_existing, 2)
        .await
        .into_iter()
        .filter(|e| e.stream_id == a || e.stream_id == b)
        .collect();
    let order: Vec<(String, u64)> = ours
        .iter()
        .map(|e| (e.stream_id.clone(), e.stream_version))
        .collect();
    assert_eq!(
        order,
        [
            (a.clone(), 1),
            (a.clone(), 2),
            (b.clone(), 1),
            (b.clone(), 2),
            (b.clone(), 3),
            (a.clone(), 3)
        ],
        "the feed is in commit order"
    );
    let positions: Vec<FeedPosition> = ours.iter().map(RecordedEvent::feed_position).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "feed positions increase"
    );
    let globals: HashSet<u64> = ours.iter().map(|e| e.global_position).collect();
    assert_eq!(globals.len(), ours.len(), "global positions are unique");

    let whole = read_all(store, 1000).await;
    let ids: HashSet<Uuid> = whole.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), whole.len(), "no event is delivered twice");
    let mut last_version: HashMap<&str, u64> = HashMap::new();
    for event in &whole {
        let last = last_version.entry(&event.stream_id).or_insert(0);
        assert_eq!(
            event.stream_version,
            *last + 1,
            "each stream in version order, none skipped"
        );
        *last = event.stream_version;
    }
}

/// A feed read filtered by event type returns only those types, and its cursor moves past the
/// events it skipped.
pub async fn filtered_feed<S: EventStore>(store: &S) {
    let start = read_all(store, 1000)
        .await
        .last()
        .map_or(FeedPosition::START, RecordedEvent::feed_position);
    let stream = unique_stream("filtered");
    let mixed = vec![
        ping(1),
        NewEvent::new(
            "Ponged",
            1,
            Payload::encode(&serde_json::json!({ "n": 2 })).unwrap(),
        ),
        ping(3),
        NewEvent::new(
            "Ponged",
            1,
            Payload::encode(&serde_json::json!({ "n": 4 })).unwrap(),
        ),
    ];
    store
        .append(&stream, AGGREGATE, ExpectedVersion::NoStream, mixed)
        .await
        .unwrap();
    // Once readable, events stay readable: wait until ours are, then read with filters.
    let visible = read_from(store, start, 100).await;
    assert_eq!(visible.iter().filter(|e| e.stream_id == stream).count(), 4);

    let pongs = store
        .read_feed(&FeedQuery::after(start).event_types(["Ponged"]))
        .await
        .unwrap();
    assert_eq!(numbers(&pongs.events), [2, 4]);
    let rest = store
        .read_feed(&FeedQuery::after(pongs.next).event_types(["Ponged"]))
        .await
        .unwrap();
    assert!(
        rest.events.is_empty(),
        "the cursor moved past what was read"
    );

    let first_pong = store
        .read_feed(&FeedQuery::after(start).event_types(["Ponged"]).limit(1))
        .await
        .unwrap();
    assert_eq!(numbers(&first_pong.events), [2]);
    let second = store
        .read_feed(
            &FeedQuery::after(first_pong.next)
                .event_types(["Ponged"])
                .limit(1),
        )
        .await
        .unwrap();
    assert_eq!(
        numbers(&second.events),
        [4],
        "nothing after a full batch is skipped"
    );
}

/// Re-appending the same events at the same positions is a no-op that returns the stored
/// events; reusing their ids any other way is refused.
pub async fn idempotent_retry<S: EventStore>(store: &S) {
    let stream = unique_stream("retry");
    let batch = pings(0..3);
    let first = store
        .append(&stream, AGGREGATE, ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    let retried = store
        .append(&stream, AGGREGATE, ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    assert_eq!(first, retried, "the retry returns the stored events");
    let retried_exact = store
        .append(&stream, AGGREGATE, ExpectedVersion::Exact(0), batch.clone())
        .await
        .unwrap();
    assert_eq!(first, retried_exact);
    assert_eq!(
        store.stream_version(&stream).await.unwrap(),
        3,
        "nothing was stored twice"
    );

    let later = store
        .append(&stream, AGGREGATE, ExpectedVersion::Exact(3), pings(3..4))
        .await
        .unwrap();
    assert_eq!(versions(&later), [4]);
    let retried_later = store
        .append(
            &stream,
            AGGREGATE,
            ExpectedVersion::Exact(3),
            vec![ping(0).event_id(later[0].event_id)],
        )
        .await
        .unwrap();
    assert_eq!(later, retried_later);

    let shifted = store
        .append(
            &stream,
            AGGREGATE,
            ExpectedVersion::Exact(1),
            batch[1..].to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(
        shifted,
        first[1..].to_vec(),
        "a retry of a later part of the append"
    );

    let moved = store
        .append(
            &stream,
            AGGREGATE,
            ExpectedVersion::Exact(4),
            batch[..1].to_vec(),
        )
        .await;
    assert!(
        matches!(moved, Err(Error::DuplicateEventId { .. })),
        "{moved:?}"
    );
    let elsewhere = store
        .append(
            &unique_stream("retry-other"),
            AGGREGATE,
            ExpectedVersion::Any,
            batch[..1].to_vec(),
        )
        .await;
    assert!(
        matches!(elsewhere, Err(Error::DuplicateEventId { .. })),
        "{elsewhere:?}"
    );
    let mixed = store
        .append(
            &stream,
            AGGREGATE,
            ExpectedVersion::Exact(0),
            vec![batch[0].clone(), ping(9)],
        )
        .await;
    assert!(
        matches!(mixed, Err(Error::DuplicateEventId { .. })),
        "{mixed:?}"
    );
    assert_eq!(store.stream_version(&stream).await.unwrap(), 4);

    let twice = store
        .append(
            &unique_stream("retry-twice"),
            AGGREGATE,
            ExpectedVersion::Any,
            vec![
                ping(5),
                ping(6).event_id(batch[0].event_id),
                ping(7).event_id(batch[0].event_id),
            ],
        )
        .await;
    assert!(
        twice.is_err(),
        "an append reusing an id is refused: {twice:?}"
    );
}

/// Replays a stream's history: the snapshot, and the versions of the events handed over (checking
/// each against its full read, stored aggregate type included, as the stream's own aggregate
/// and as another one).
async fn replay<S: EventStore>(
    store: &S,
    stream: &str,
    with_snapshot: bool,
) -> (Option<Snapshot>, Vec<u64>) {
    let other = replay_as(store, stream, "SomeOtherAggregate", with_snapshot).await;
    let own = replay_as(store, stream, AGGREGATE, with_snapshot).await;
    assert_eq!(
        own, other,
        "what a replay hands over does not depend on who asks"
    );
    own
}

async fn replay_as<S: EventStore>(
    store: &S,
    stream: &str,
    aggregate_type: &str,
    with_snapshot: bool,
) -> (Option<Snapshot>, Vec<u64>) {
    let full = store.read_stream(stream, 1..).await.unwrap();
    let mut snapshot = None;
    let mut versions = Vec::new();
    store
        .replay_history(stream, aggregate_type, with_snapshot, |item| {
            match item {
                HistoryItem::Snapshot(s) => {
                    assert!(versions.is_empty(), "the snapshot comes first");
                    snapshot = Some(s);
                }
                HistoryItem::Event(event) => {
                    let stored = &full[usize::try_from(event.stream_version).unwrap() - 1];
                    assert_eq!(event, StreamEvent::from(stored.clone()).borrow());
                    versions.push(event.stream_version);
                }
            }
            Ok(())
        })
        .await
        .unwrap();
    (snapshot, versions)
}

/// The lean reads for rebuilding aggregates agree with the full ones, and a history starts after
/// its snapshot.
pub async fn stream_events_and_history<S: EventStore>(store: &S) {
    let stream = unique_stream("history");
    store
        .append(&stream, AGGREGATE, ExpectedVersion::NoStream, pings(1..6))
        .await
        .unwrap();
    let full = store.read_stream(&stream, 2..=4).await.unwrap();
    let lean = store.read_stream_events(&stream, 2..=4).await.unwrap();
    let expected: Vec<StreamEvent> = full.into_iter().map(StreamEvent::from).collect();
    assert_eq!(lean, expected);
    assert_eq!(
        lean.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        [2, 3, 4]
    );
    assert_eq!(lean[0].aggregate_type, AGGREGATE);

    let (snapshot, events) = replay(store, &stream, false).await;
    assert!(snapshot.is_none());
    assert_eq!(events, [1, 2, 3, 4, 5]);
    let (snapshot, events) = replay(store, &unique_stream("no-history"), true).await;
    assert!(snapshot.is_none() && events.is_empty());

    let state = Payload::encode(&serde_json::json!({ "sum": 3 })).unwrap();
    match store
        .save_snapshot(Snapshot::new(&stream, AGGREGATE, 2, 1, state.clone()))
        .await
    {
        Err(Error::Unsupported(_)) => return,
        other => other.unwrap(),
    }
    let (snapshot, events) = replay(store, &stream, true).await;
    let snapshot = snapshot.expect("the saved snapshot");
    assert_eq!((snapshot.stream_version, snapshot.state_version), (2, 1));
    assert_eq!(snapshot.state, state);
    assert_eq!(snapshot.aggregate_type, AGGREGATE);
    assert_eq!(events, [3, 4, 5], "only the events after the snapshot");
    let (snapshot, events) = replay(store, &stream, false).await;
    assert!(snapshot.is_none());
    assert_eq!(events, [1, 2, 3, 4, 5]);

    // An older snapshot does not replace a newer one; another state version does.
    store
        .save_snapshot(Snapshot::new(&stream, AGGREGATE, 1, 1, state.clone()))
        .await
        .unwrap();
    assert_eq!(
        store
            .load_snapshot(&stream)
            .await
            .unwrap()
            .unwrap()
            .stream_version,
        2
    );
    store
        .save_snapshot(Snapshot::new(&stream, AGGREGATE, 1, 2, state))
        .await
        .unwrap();
    assert_eq!(
        store
            .load_snapshot(&stream)
            .await
            .unwrap()
            .unwrap()
            .state_version,
        2
    );
}

/// Appending after a head the runtime has seen: consecutive versions when the head is current,
/// a conflict naming the actual version when another append got there first, and an idempotent
/// retry of the same events.
pub async fn append_after_known_head<S: EventStore>(store: &S) {
    let stream = unique_stream("known-head");
    let first = store
        .append_after(&stream, AGGREGATE, KnownHead::new(0), pings(0..2))
        .await
        .unwrap();
    assert_eq!(versions(&first), [1, 2]);
    let batch = pings(2..3);
    let next = store
        .append_after(&stream, AGGREGATE, KnownHead::new(2), batch.clone())
        .await
        .unwrap();
    assert_eq!(versions(&next), [3]);
    let retried = store
        .append_after(&stream, AGGREGATE, KnownHead::new(2), batch)
        .await
        .unwrap();
    assert_eq!(retried, next, "an idempotent retry");
    let stale = store
        .append_after(&stream, AGGREGATE, KnownHead::new(2), pings(3..4))
        .await;
    assert_conflict(stale, &stream, ExpectedVersion::Exact(2), 3);
    let taken = store
        .append_after(
            &unique_stream("known-head-new"),
            AGGREGATE,
            KnownHead::new(0),
            pings(0..1),
        )
        .await
        .unwrap();
    let raced = store
        .append_after(
            &taken[0].stream_id,
            AGGREGATE,
            KnownHead::new(0),
            pings(1..2),
        )
        .await;
    assert_conflict(raced, &taken[0].stream_id, ExpectedVersion::Exact(0), 1);
    assert_eq!(store.stream_version(&stream).await.unwrap(), 3);
}

/// A stream belongs to the aggregate type that created it.
pub async fn aggregate_type_is_fixed<S: EventStore>(store: &S) {
    let stream = unique_stream("typed");
    store
        .append(&stream, "Account", ExpectedVersion::NoStream, pings(0..1))
        .await
        .unwrap();
    let result = store
        .append(&stream, "Order", ExpectedVersion::Any, pings(1..2))
        .await;
    match result {
        Err(Error::AggregateTypeMismatch {
            stream_id,
            existing,
            requested,
        }) => {
            assert_eq!(
                (stream_id.as_str(), existing.as_str(), requested.as_str()),
                (stream.as_str(), "Account", "Order")
            );
        }
        other => panic!("expected an aggregate type mismatch, got {other:?}"),
    }
    assert_eq!(store.stream_version(&stream).await.unwrap(), 1);
}

/// An append of no events stores nothing and still checks the expected version.
pub async fn empty_append<S: EventStore>(store: &S) {
    let stream = unique_stream("empty");
    let stored = store
        .append(&stream, AGGREGATE, ExpectedVersion::NoStream, Vec::new())
        .await
        .unwrap();
    assert!(stored.is_empty());
    assert_eq!(store.stream_version(&stream).await.unwrap(), 0);
    let result = store
        .append(
            &stream,
            AGGREGATE,
            ExpectedVersion::StreamExists,
            Vec::new(),
        )
        .await;
    assert_conflict(result, &stream, ExpectedVersion::StreamExists, 0);
}

/// An append no store could keep as asked (a schema version above `i32::MAX`) is refused
/// whole, and nothing of it is stored.
pub async fn unstorable_append_is_refused<S: EventStore>(store: &S) {
    let stream = unique_stream("unstorable");
    let mut huge = NewEvent::new(
        "Pinged",
        1,
        Payload::encode(&serde_json::json!({})).unwrap(),
    );
    huge.schema_version = u32::MAX;
    let fine = NewEvent::new(
        "Pinged",
        1,
        Payload::encode(&serde_json::json!({})).unwrap(),
    );
    let result = store
        .append(&stream, AGGREGATE, ExpectedVersion::Any, vec![fine, huge])
        .await;
    assert!(
        matches!(&result, Err(Error::InvalidAppend { reason, .. }) if reason.contains("schema version")),
        "{result:?}"
    );
    assert_eq!(store.stream_version(&stream).await.unwrap(), 0);
}

/// Bad input is refused before anything is written, with a typed, permanent error naming the
/// stream and the event type: an empty stream id, one over
/// [`MAX_STREAM_ID_BYTES`](crate::store::MAX_STREAM_ID_BYTES), one holding NUL or another
/// control character, a payload or metadata above the default limits (1 MiB each). One bad
/// event refuses the whole append, through `append` and `append_after` alike.
pub async fn bad_input_is_refused_before_anything_is_written<S: EventStore>(store: &S) {
    use crate::error::{EventPart, StreamIdProblem};
    use crate::store::MAX_STREAM_ID_BYTES;

    let longest = format!("{:x<1$}", unique_stream("long"), MAX_STREAM_ID_BYTES);
    let stored = store
        .append(&longest, AGGREGATE, ExpectedVersion::NoStream, pings(0..1))
        .await
        .unwrap();
    assert_eq!(stored[0].stream_id, longest, "the longest id is stored");
    let before = read_all(store, 100).await.len();

    let too_long = format!("{longest}y");
    let cases: [(&str, StreamIdProblem); 5] = [
        ("", StreamIdProblem::Empty),
        (
            &too_long,
            StreamIdProblem::TooLong {
                bytes: MAX_STREAM_ID_BYTES + 1,
                limit: MAX_STREAM_ID_BYTES,
            },
        ),
        (
            "order-\0-1",
            StreamIdProblem::ControlCharacter {
                character: '\0',
                at: 6,
            },
        ),
        (
            "tab\there",
            StreamIdProblem::ControlCharacter {
                character: '\t',
                at: 3,
            },
        ),
        (
            "bell\u{7}",
            StreamIdProblem::ControlCharacter {
                character: '\u{7}',
                at: 4,
            },
        ),
    ];
    for (stream, expected) in cases {
        for after_head in [false, true] {
            let result = if after_head {
                store
                    .append_after(stream, AGGREGATE, KnownHead::new(0), pings(0..2))
                    .await
            } else {
                store
                    .append(stream, AGGREGATE, ExpectedVersion::Any, pings(0..2))
                    .await
            };
            match result {
                Err(error @ Error::InvalidStreamId { .. }) => {
                    assert!(!error.is_transient(), "{error}");
                    let message = error.to_string();
                    let Error::InvalidStreamId {
                        stream_id,
                        event_type,
                        problem,
                    } = error
                    else {
                        unreachable!()
                    };
                    assert_eq!((stream_id.as_str(), problem), (stream, expected));
                    assert_eq!(event_type.as_deref(), Some("Pinged"));
                    assert!(message.contains("Pinged"), "{message}");
                }
                other => panic!("{stream:?}: expected InvalidStreamId, got {other:?}"),
            }
        }
    }

    let big =
        |bytes: usize| Payload::encode(&serde_json::json!({ "blob": "b".repeat(bytes) })).unwrap();
    let stream = unique_stream("large");
    let oversized = NewEvent::new("Uploaded", 1, big(2 * 1024 * 1024));
    let result = store
        .append(
            &stream,
            AGGREGATE,
            ExpectedVersion::Any,
            vec![ping(1), oversized],
        )
        .await;
    match result {
        Err(Error::EventTooLarge {
            stream_id,
            event_type,
            part: EventPart::Payload,
            bytes,
            limit,
        }) => {
            assert_eq!(
                (stream_id.as_str(), event_type.as_str()),
                (stream.as_str(), "Uploaded")
            );
            assert_eq!(limit, 1024 * 1024);
            assert_eq!(bytes, 2 * 1024 * 1024 + r#"{"blob":""}"#.len());
        }
        other => panic!("expected EventTooLarge, got {other:?}"),
    }
    let metadata = ping(2).metadata("trace", "t".repeat(2 * 1024 * 1024));
    let result = store
        .append_after(&stream, AGGREGATE, KnownHead::new(0), vec![metadata])
        .await;
    assert!(
        matches!(
            &result,
            Err(error @ Error::EventTooLarge { part: EventPart::Metadata, event_type, .. })
                if event_type == "Pinged" && !error.is_transient()
        ),
        "{result:?}"
    );
    // A type's declared size (`#[event(max_size = 256)]`), below the store's limit.
    let mut declared = NewEvent::new("Receipted", 1, big(300));
    declared.max_size = Some(256);
    let result = store
        .append(&stream, AGGREGATE, ExpectedVersion::Any, vec![declared])
        .await;
    assert!(
        matches!(
            &result,
            Err(error @ Error::EventAboveDeclaredSize { event_type, bytes, max_size: 256, .. })
                if event_type == "Receipted"
                    && *bytes == 300 + r#"{"blob":""}"#.len()
                    && !error.is_transient()
                    && error.to_string().contains("max_size = 256")
        ),
        "{result:?}"
    );
    let fits = NewEvent::new("Uploaded", 1, big(1024 * 1024 - 100));
    store
        .append(&stream, AGGREGATE, ExpectedVersion::NoStream, vec![fits])
        .await
        .unwrap();

    assert_eq!(
        read_all(store, 100).await.len(),
        before + 1,
        "nothing of a refused append is stored"
    );
}

/// An event is found by its id, with its envelope; an unknown id finds nothing.
pub async fn read_event_by_id<S: EventStore>(store: &S) {
    let stream = unique_stream("by-id");
    let stored = store
        .append(&stream, AGGREGATE, ExpectedVersion::NoStream, pings(0..3))
        .await
        .unwrap();
    let found = store.read_event(stored[1].event_id).await.unwrap();
    assert_eq!(found.as_ref(), Some(&stored[1]), "the event is found by id");
    assert_eq!(store.read_event(Uuid::now_v7()).await.unwrap(), None);
}

/// Runs every case of the suite as its own `#[tokio::test]`.
///
/// `setup` is an async function returning a fresh store; `teardown`, if given, receives the store
/// after the case passed (a failed case leaves its store for inspection).
#[macro_export]
macro_rules! conformance_tests {
    (setup = $setup:path $(, teardown = $teardown:path)? $(,)?) => {
        $crate::__conformance_case!(by_ref no_stream [$setup] [$($teardown)?]);
        $crate::__conformance_case!(by_ref exact_version [$setup] [$($teardown)?]);
        $crate::__conformance_case!(by_ref stream_exists [$setup] [$($teardown)?]);
        $crate::__conformance_case!(by_ref any_version [$setup] [$($teardown)?]);
        $crate::__conformance_case!(by_ref multi_event_append_is_atomic [$setup] [$($teardown)?]);
        $crate::__conformance_case!(by_ref read_stream_ranges [$setup] [$($teardown)?]);
        $crate::__conformance_case!(by_ref envelope_round_trip [$setup] [$($teardown)?]);
        $crate::__conformance_case!(by_ref global_feed_order [$setup] [$($teardown)?]);
        $crate::__conformance_case!(by_ref filtered_feed [$setup] [$($teardown)?]);
        $crate::__conformance_case!(by_ref idempotent_retry [$setup] [$($teardown)?]);
        $crate::__conformance_case!(by_ref aggregate_type_is_fixed [$setup] [$($teardown)?]);
        $crate::__conformance_case!(by_ref stream_events_and_history [$setup] [$($teardown)?]);
        $crate::__conformance_case!(by_ref append_after_known_head [$setup] [$($teardown)?]);
        $crate::__conformance_case!(by_ref empty_append [$setup] [$($teardown)?]);
        $crate::__conformance_case!(by_ref unstorable_append_is_refused [$setup] [$($teardown)?]);
        $crate::__conformance_case!(by_ref read_event_by_id [$setup] [$($teardown)?]);
        $crate::__conformance_case!(by_ref bad_input_is_refused_before_anything_is_written [$setup] [$($teardown)?]);
        $crate::__conformance_case!(shared concurrent_appends_are_atomic [$setup] [$($teardown)?]);
        $crate::__conformance_case!(shared racing_exact_appends [$setup] [$($teardown)?]);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_case {
    (by_ref $case:ident [$setup:path] [$($teardown:path)?]) => {
        #[$crate::__private::tokio::test(crate = "factum::__private::tokio", flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let store = $setup().await;
            $crate::conformance::$case(&store).await;
            $( $teardown(store).await; )?
        }
    };
    (shared $case:ident [$setup:path] [$($teardown:path)?]) => {
        #[$crate::__private::tokio::test(crate = "factum::__private::tokio", flavor = "multi_thread", worker_threads = 4)]
        async fn $case() {
            let store = ::std::sync::Arc::new($setup().await);
            $crate::conformance::$case(::std::sync::Arc::clone(&store)).await;
            $(
                if let ::core::result::Result::Ok(store) = ::std::sync::Arc::try_unwrap(store) {
                    $teardown(store).await;
                }
            )?
        }
    };
}
