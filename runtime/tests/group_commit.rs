//! Group commit: concurrent appends go to the database together, and each keeps its own
//! outcome. A conflicting, mistyped or duplicate append among fifty fails alone; an idempotent
//! retry in a group is recognised; many writers on shared streams get every event into the
//! feed once, in stream order; cached commands from two processes lose nothing. On both SQL
//! stores, with groups observed to form (the tests fail when nothing was grouped).

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use factum::store::{GroupCommit, GroupCommitStats, PostgresStore, SqlStore, SqliteStore};
use factum::testing::TestDatabase;
use factum::{
    Error, EventStore, ExpectedVersion, FeedPosition, FeedQuery, NewEvent, Payload, Repository,
};

/// The group commit settings of both stores, for tests written once.
trait Grouped: SqlStore {
    fn grouped(&self, config: GroupCommit) -> Self;
    fn stats(&self) -> GroupCommitStats;
}

impl Grouped for PostgresStore {
    fn grouped(&self, config: GroupCommit) -> Self {
        self.clone().with_group_commit(config)
    }
    fn stats(&self) -> GroupCommitStats {
        self.group_commit_stats().expect("group commit is on")
    }
}

impl Grouped for SqliteStore {
    fn grouped(&self, config: GroupCommit) -> Self {
        self.clone().with_group_commit(config)
    }
    fn stats(&self) -> GroupCommitStats {
        self.group_commit_stats().expect("group commit is on")
    }
}

fn ping(n: u64) -> NewEvent {
    NewEvent::new(
        "Pinged",
        1,
        Payload::encode(&serde_json::json!({ "n": n })).unwrap(),
    )
}

async fn count<S: EventStore>(store: &S, stream: &str) -> usize {
    store.read_stream(stream, 1..).await.unwrap().len()
}

/// A transaction of the test's that appended to `stream` and stays open: appends to that
/// stream (on SQLite: every append) wait at the database until it ends.
async fn hold<S: SqlStore>(store: &S, stream: &str) -> factum::store::Transaction {
    let mut holder = store.begin().await.unwrap();
    store
        .append_in(
            &mut holder,
            stream,
            "Probe",
            ExpectedVersion::NoStream,
            vec![ping(0)],
        )
        .await
        .unwrap();
    holder
}

/// Waits until `ready` holds of the store's group commit (ten seconds at most).
async fn until<S: Grouped>(store: &S, ready: impl Fn(&GroupCommitStats) -> bool) {
    for _ in 0..1000 {
        if ready(&store.stats()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("group commit never got there: {:?}", store.stats());
}

/// Fifty appends at once, one group: 46 good ones, a stale expected version, another aggregate
/// type, the retry of an append already stored, and two events the second of which has an id
/// another stream holds.
async fn one_bad_append_among_fifty_fails_alone<D>()
where
    D: TestDatabase,
    D::Store: Grouped,
{
    let database = D::create().await.unwrap();
    // One append at the database at a time: while a lead append holds it, the fifty wait (as
    // long as it takes), and go together when it is done.
    let store = database.grouped(GroupCommit::new(1).stall(Duration::from_secs(600)));
    for stream in 0..50 {
        store
            .append(
                &format!("s-{stream}"),
                "Probe",
                ExpectedVersion::NoStream,
                vec![ping(stream)],
            )
            .await
            .unwrap();
    }
    let stored = store
        .append(
            "retried",
            "Probe",
            ExpectedVersion::NoStream,
            vec![ping(100), ping(101)],
        )
        .await
        .unwrap();
    let retry: Vec<NewEvent> = stored
        .iter()
        .map(|event| {
            let mut again = NewEvent::new(
                event.event_type.clone(),
                event.schema_version,
                event.event.clone(),
            );
            again.event_id = event.event_id;
            again.correlation_id = event.correlation_id;
            again.causation_id = event.causation_id;
            again
        })
        .collect();
    let taken = store
        .append("other", "Probe", ExpectedVersion::NoStream, vec![ping(200)])
        .await
        .unwrap()[0]
        .event_id;
    let before = store.stats();

    // The lead append waits for a transaction of the test's that holds what it needs (SQLite:
    // the write lock; PostgreSQL: the stream's first version), and so holds the one slot.
    let holder = hold(&store, "lead").await;
    let lead = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append("lead", "Probe", ExpectedVersion::Any, vec![ping(301)])
                .await
        })
    };
    until(&store, |stats| stats.in_flight == 1).await;

    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = Vec::new();
    for i in 0..50_u64 {
        let (store, barrier, retry) = (store.clone(), barrier.clone(), retry.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let stream = format!("s-{i}");
            match i {
                46 => {
                    store
                        .append(&stream, "Probe", ExpectedVersion::Exact(0), vec![ping(i)])
                        .await
                }
                47 => {
                    store
                        .append(&stream, "Other", ExpectedVersion::Exact(1), vec![ping(i)])
                        .await
                }
                48 => {
                    store
                        .append("retried", "Probe", ExpectedVersion::NoStream, retry)
                        .await
                }
                49 => {
                    // The first event would be stored, the second cannot: neither is.
                    let mut second = ping(i + 1);
                    second.event_id = taken;
                    store
                        .append(
                            &stream,
                            "Probe",
                            ExpectedVersion::Exact(1),
                            vec![ping(i), second],
                        )
                        .await
                }
                _ => {
                    store
                        .append(&stream, "Probe", ExpectedVersion::Exact(1), vec![ping(i)])
                        .await
                }
            }
        }));
    }
    until(&store, |stats| stats.waiting == 50).await;
    holder.rollback().await.unwrap();
    let lead = lead.await.unwrap().unwrap();
    assert_eq!(lead[0].stream_version, 1, "the lead went first, alone");
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }

    for (i, outcome) in outcomes.iter().enumerate().take(46) {
        let appended = outcome.as_ref().unwrap_or_else(|e| panic!("s-{i}: {e}"));
        assert_eq!(appended.len(), 1);
        assert_eq!(appended[0].stream_version, 2, "s-{i}");
        assert_eq!(appended[0].stream_id, format!("s-{i}"));
        assert_eq!(
            count(&store, &format!("s-{i}")).await,
            2,
            "s-{i} stored once"
        );
    }
    assert!(
        matches!(
            &outcomes[46],
            Err(Error::Conflict {
                actual: 1,
                expected: ExpectedVersion::Exact(0),
                ..
            })
        ),
        "{:?}",
        outcomes[46]
    );
    assert!(
        matches!(&outcomes[47], Err(Error::AggregateTypeMismatch { existing, .. }) if existing == "Probe"),
        "{:?}",
        outcomes[47]
    );
    let retried = outcomes[48].as_ref().expect("the retry is recognised");
    assert_eq!(retried, &stored, "the retry returns the stored events");
    assert!(
        matches!(&outcomes[49], Err(Error::DuplicateEventId { event_id, .. }) if *event_id == taken),
        "{:?}",
        outcomes[49]
    );
    for stream in ["s-46", "s-47", "s-49"] {
        assert_eq!(count(&store, stream).await, 1, "{stream} unchanged");
    }
    assert_eq!(
        count(&store, "retried").await,
        2,
        "the retry stored nothing"
    );
    let mut all = FeedPosition::START;
    let mut total = 0;
    loop {
        let batch = store
            .read_feed(&FeedQuery::after(all).limit(500))
            .await
            .unwrap();
        all = batch.next;
        if batch.events.is_empty() {
            if !batch.held_back {
                break;
            }
            // Another test's open transaction holds the feed back: its end is not reached.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        total += batch.events.len();
    }
    assert_eq!(total, 50 + 2 + 1 + 1 + 46, "nothing else was stored");

    let after = store.stats();
    assert_eq!(
        (after.groups - before.groups, after.largest_group),
        (1, 50),
        "the fifty went as one group: {before:?} then {after:?}"
    );
}

/// Sixteen writers append to twenty shared streams (some appends of three events) while a
/// reader follows the feed with a checkpoint: every event comes once, each stream in version
/// order, each writer's events in the order it appended them.
async fn racing_writers_and_a_reader_see_every_event_once_in_order<D>()
where
    D: TestDatabase,
    D::Store: Grouped,
{
    const WRITERS: u64 = 16;
    const APPENDS: u64 = 150;
    const STREAMS: u64 = 20;
    let database = D::create().await.unwrap();
    let store = database.grouped(GroupCommit::new(2));
    let mut writers = Vec::new();
    let mut expected = 0;
    for writer in 0..WRITERS {
        expected += (0..APPENDS)
            .map(|i| if i % 7 == 0 { 3 } else { 1 })
            .sum::<u64>();
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..APPENDS {
                let stream = format!("stream-{}", (writer * 7 + i * 3) % STREAMS);
                let n = writer * 10_000 + i * 10;
                let events = if i % 7 == 0 {
                    vec![ping(n), ping(n + 1), ping(n + 2)]
                } else {
                    vec![ping(n)]
                };
                store
                    .append(&stream, "Probe", ExpectedVersion::Any, events)
                    .await
                    .unwrap();
            }
        }));
    }
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut checkpoint = FeedPosition::START;
            let mut seen = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while (seen.len() as u64) < expected && tokio::time::Instant::now() < deadline {
                let batch = store
                    .read_feed(&FeedQuery::after(checkpoint).limit(300))
                    .await
                    .unwrap();
                assert!(batch.next >= checkpoint);
                checkpoint = batch.next;
                if batch.events.is_empty() {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                seen.extend(batch.events);
            }
            seen
        })
    };
    for writer in writers {
        writer.await.unwrap();
    }
    let seen = reader.await.unwrap();

    let ids: HashSet<_> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), seen.len(), "no event delivered twice");
    assert_eq!(seen.len() as u64, expected, "no event missed");
    let mut last_version: HashMap<&str, u64> = HashMap::new();
    let mut last_of_writer: HashMap<u64, u64> = HashMap::new();
    for event in &seen {
        let last = last_version.entry(&event.stream_id).or_default();
        assert_eq!(
            event.stream_version,
            *last + 1,
            "stream {} out of order",
            event.stream_id
        );
        *last = event.stream_version;
        let n = event.event.to_value()["n"].as_u64().unwrap();
        if let Some(previous) = last_of_writer.insert(n / 10_000, n) {
            assert!(previous < n, "writer {}'s events out of order", n / 10_000);
        }
    }
    let stats = store.stats();
    assert!(
        stats.groups > 0 && stats.largest_group >= 2,
        "appends were grouped: {stats:?}"
    );
}

/// A lone append held up at the server (it waits for a lock another transaction holds) holds
/// up the appends behind it for the stall time, no longer: they go alone, beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_held_up_by_a_lock_holds_up_the_others_only_until_the_stall() {
    let database = factum::testing::postgres::TemporaryStore::new()
        .await
        .unwrap();
    let store = database.grouped(GroupCommit::new(1).stall(Duration::from_millis(200)));
    let holder = hold(&store, "locked").await;
    let held = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append("locked", "Probe", ExpectedVersion::Any, vec![ping(2)])
                .await
        })
    };
    until(&store, |stats| stats.in_flight == 1).await;

    let started = tokio::time::Instant::now();
    let others: Vec<_> = (0..4)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(
                        &format!("free-{i}"),
                        "Probe",
                        ExpectedVersion::NoStream,
                        vec![ping(i)],
                    )
                    .await
            })
        })
        .collect();
    for other in others {
        tokio::time::timeout(Duration::from_secs(10), other)
            .await
            .expect("the others do not wait for the lock")
            .unwrap()
            .unwrap();
    }
    let waited = started.elapsed();
    assert!(
        !held.is_finished(),
        "the held append still waits for the lock"
    );
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(5),
        "the others waited about the stall time, not for the lock: {waited:?}"
    );
    assert_eq!(store.stats().stalled, 4, "{:?}", store.stats());

    holder.rollback().await.unwrap();
    let held = held.await.unwrap().unwrap();
    assert_eq!(held[0].stream_version, 1);
}

#[path = "support/counter.rs"]
mod counter;

use counter::{Add, Counter};

/// Two "processes" (two stores on one database, each with its own hot cache) command the same
/// twelve counters from eight tasks each: cached heads go stale, appends after them conflict
/// inside groups and are retried; every command is applied once.
async fn cached_commands_from_two_processes_lose_nothing<D>()
where
    D: TestDatabase,
    D::Store: Grouped,
{
    const COUNTERS: u64 = 12;
    const TASKS: u64 = 8;
    const EACH: u64 = 25;
    let database = D::create().await.unwrap();
    let other = database.another_client().await.unwrap();
    let processes = [
        database.grouped(GroupCommit::new(1)),
        other.grouped(GroupCommit::new(1)),
    ];
    let mut tasks = Vec::new();
    for (p, store) in processes.iter().enumerate() {
        // Sixteen tasks on twelve counters conflict a lot: the test is about what is stored,
        // not about how often a command has to try.
        let repository = Repository::<Counter, _>::new(store.clone())
            .cache(NonZeroUsize::new(64).unwrap())
            .max_retries(1_000);
        for task in 0..TASKS {
            let repository = repository.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..EACH {
                    let counter = (task + n) % COUNTERS;
                    repository
                        .execute(&format!("counter-{counter}"), Add { amount: 1 })
                        .await
                        .unwrap_or_else(|e| panic!("process {p}, task {task}: {e}"));
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut total = 0;
    for counter in 0..COUNTERS {
        let events = processes[0]
            .read_stream(&format!("counter-{counter}"), 1..)
            .await
            .unwrap();
        let versions: Vec<u64> = events.iter().map(|e| e.stream_version).collect();
        assert_eq!(versions, (1..=events.len() as u64).collect::<Vec<_>>());
        let last = events
            .last()
            .map_or(0, |e| e.event.to_value()["total"].as_u64().unwrap());
        assert_eq!(
            last,
            events.len() as u64,
            "counter-{counter}: every add on the one before"
        );
        total += events.len() as u64;
    }
    assert_eq!(total, 2 * TASKS * EACH, "every command applied once");
    let grouped: u64 = processes.iter().map(|store| store.stats().groups).sum();
    assert!(grouped > 0, "appends were grouped");
}

/// With `alone_up_to(3)`, an append goes to the database alone, beside the one slot's append,
/// while fewer than three appends are there; the fourth waits for a group. Three appends to a
/// stream that a transaction of the test's holds are at the database at once, an append to
/// another stream waits; when the transaction ends, all four are stored.
async fn a_few_appends_go_alone_beside_the_slot<D>()
where
    D: TestDatabase,
    D::Store: Grouped,
{
    let database = D::create().await.unwrap();
    let store = database.grouped(
        GroupCommit::new(1)
            .alone_up_to(3)
            .stall(Duration::from_secs(600)),
    );
    let holder = hold(&store, "held").await;
    let mut tasks = Vec::new();
    for (n, stream, waits_for) in [
        (1, "held", 1),
        (2, "held", 2),
        (3, "held", 3),
        (4, "free", 3),
    ] {
        let appending = store.clone();
        tasks.push(tokio::spawn(async move {
            appending
                .append(stream, "Probe", ExpectedVersion::Any, vec![ping(n)])
                .await
        }));
        until(&store, |stats| stats.in_flight == waits_for).await;
    }
    until(&store, |stats| stats.waiting == 1).await;
    assert_eq!(
        (
            store.stats().in_flight,
            store.stats().waiting,
            store.stats().groups
        ),
        (3, 1, 0),
        "three alone at the database, the fourth waiting"
    );
    holder.rollback().await.unwrap();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(count(&store, "held").await, 3);
    assert_eq!(count(&store, "free").await, 1);
}

/// A runtime shut down while an append holds the slot and another waits for it: the waiting
/// append's task and the slot's hand-on are dropped with the runtime, and nothing is left
/// behind: no slot stays taken, no append stays queued (and the process does not recurse
/// into a stack overflow handing the slot on to tasks the runtime drops at once).
#[test]
fn a_runtime_shut_down_with_appends_waiting_frees_the_slot() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (database, store) = runtime.block_on(async {
        let database = factum::testing::sqlite::TemporaryDatabase::new()
            .await
            .unwrap();
        let store = database.grouped(GroupCommit::new(1).stall(Duration::from_secs(600)));
        // The write lock, held: the lone append waits for it at the database.
        let holder = hold(&store, "held").await;
        for n in 1..=2 {
            let appending = store.clone();
            tokio::spawn(async move {
                appending
                    .append("other", "Probe", ExpectedVersion::Any, vec![ping(n)])
                    .await
            });
        }
        until(&store, |stats| stats.in_flight == 1 && stats.waiting == 1).await;
        // Held until the runtime drops it.
        tokio::spawn(async move {
            let _holder = holder;
            std::future::pending::<()>().await;
        });
        (database, store)
    });
    drop(runtime);
    let stats = store.stats();
    assert_eq!((stats.in_flight, stats.waiting), (0, 0), "{stats:?}");
    drop(database);
}

factum::on_both_stores! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    one_bad_append_among_fifty_fails_alone,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    racing_writers_and_a_reader_see_every_event_once_in_order,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    cached_commands_from_two_processes_lose_nothing,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_few_appends_go_alone_beside_the_slot,
}
