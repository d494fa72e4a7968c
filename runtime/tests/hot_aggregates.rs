//! Hot aggregates (`Repository::serialize_streams`): 64 tasks commanding one stream get every
//! command applied, in one writer's order, with no conflict surfaced; a writer in another
//! process only makes batches retry; a full queue is a typed, transient error. On every store.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use factum::testing::TestDatabase;
use factum::{Error, EventStore, ExecuteError, MemoryStore, Repository};

#[path = "support/counter.rs"]
mod counter;

use counter::{Add, Added, Counter, Zero};

#[path = "support/probe.rs"]
mod probe;

use probe::Probe;

const TASKS: u64 = 64;
const EACH: u64 = 40;

/// 64 tasks, 40 commands each, on one stream; returns every command's (version, amount).
async fn hammer<S: EventStore + Clone + 'static>(
    repository: &Repository<Counter, S>,
) -> Vec<(u64, u64, u32)> {
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let repository = repository.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            for n in 0..EACH {
                let amount = task * 1000 + n + 1;
                let execution = repository
                    .execute_detailed("hot", Add { amount }, &factum::CommandContext::new())
                    .await
                    .unwrap();
                assert_eq!(execution.events.len(), 1);
                done.push((
                    execution.events[0].stream_version,
                    amount,
                    execution.attempts,
                ));
            }
            done
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    all
}

/// Every command applied once, versions 1..=n in one writer's order (each event's total is
/// the previous total plus its amount), and no command needed a second attempt.
async fn check(store: &impl EventStore, done: &[(u64, u64, u32)]) {
    let n = TASKS * EACH;
    assert_eq!(
        done.iter().map(|d| d.0).collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    assert!(
        done.iter().all(|d| d.2 == 1),
        "a conflict between in-process commands surfaced"
    );
    let stored = store.read_stream("hot", ..).await.unwrap();
    assert_eq!(stored.len() as u64, n);
    let mut total = 0;
    for (event, (version, amount, _)) in stored.iter().zip(done) {
        let added: Added = event.event.decode().unwrap();
        assert_eq!((event.stream_version, added.amount), (*version, *amount));
        total += added.amount;
        assert_eq!(
            added.total, total,
            "decided on the state after every earlier event"
        );
    }
}

async fn many_tasks_on_one_stream_apply_every_command_once_without_conflicts<D: TestDatabase>() {
    let database = D::create().await.unwrap();
    let repository = Repository::<Counter, _>::new((*database).clone())
        .serialize_streams(NonZeroUsize::new(1024).unwrap());
    let done = hammer(&repository).await;
    check(&*database, &done).await;
}

async fn another_writer_makes_batches_retry_and_loses_nothing<D: TestDatabase>() {
    let database = D::create().await.unwrap();
    let serialized = Repository::<Counter, _>::new((*database).clone())
        .serialize_streams(NonZeroUsize::new(1024).unwrap())
        .max_retries(1000);
    // Another process: its own repository, no shared lane.
    let other =
        Repository::<Counter, _>::new(database.another_client().await.unwrap()).max_retries(1000);
    let outsider = tokio::spawn(async move {
        for _ in 0..100 {
            other.execute("hot", Add { amount: 1 }).await.unwrap();
        }
    });
    let mut tasks = Vec::new();
    for task in 0..16_u64 {
        let repository = serialized.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..20 {
                repository
                    .execute(
                        "hot",
                        Add {
                            amount: 2 + task * 100 + n,
                        },
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    outsider.await.unwrap();
    let stored = database.read_stream("hot", ..).await.unwrap();
    assert_eq!(stored.len(), 100 + 16 * 20, "every command once");
    let mut total = 0;
    for event in &stored {
        let added: Added = event.event.decode().unwrap();
        total += added.amount;
        assert_eq!(added.total, total, "every decision saw every earlier event");
    }
}

factum::on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    many_tasks_on_one_stream_apply_every_command_once_without_conflicts,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    another_writer_makes_batches_retry_and_loses_nothing,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_command_delivered_again_within_a_batch_is_applied_once,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_batch_decided_on_top_of_a_refused_one_costs_no_attempt,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_memory_too() {
    let store = MemoryStore::new();
    let repository = Repository::<Counter, _>::new(store.clone())
        .serialize_streams(NonZeroUsize::MIN.saturating_add(1023));
    let done = hammer(&repository).await;
    check(&store, &done).await;
}

/// A full queue is refused at once, with a transient error; a rejected command changes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_is_a_typed_transient_error_and_rejections_change_nothing() {
    // On a server, so that appends take long enough for commands to queue up.
    let temporary = factum::testing::postgres::TemporaryStore::new()
        .await
        .unwrap();
    let store = (*temporary).clone();
    let repository = Arc::new(
        Repository::<Counter, _>::new(store.clone())
            .serialize_streams(NonZeroUsize::new(2).unwrap()),
    );
    let mut tasks = Vec::new();
    for n in 0..200 {
        let repository = Arc::clone(&repository);
        tasks.push(tokio::spawn(async move {
            repository.execute("hot", Add { amount: n + 1 }).await
        }));
    }
    let (mut applied, mut busy) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => applied += 1,
            Err(ExecuteError::Store(error @ Error::StreamBusy { .. })) => {
                assert!(error.is_transient());
                busy += 1;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert!(busy > 0, "the queue filled up");
    assert_eq!(applied + busy, 200);
    assert_eq!(store.read_stream("hot", ..).await.unwrap().len(), applied);

    let before = store.read_stream("hot", ..).await.unwrap().len();
    let refused = repository
        .execute("hot", Add { amount: 0 })
        .await
        .unwrap_err();
    assert_eq!(refused.rejected(), Some(&Zero));
    let after = repository.execute("hot", Add { amount: 5 }).await.unwrap();
    assert_eq!(after[0].stream_version as usize, before + 1);
}

/// The same command delivered 8 times at once (`execute_once`, one command id) lands in one
/// batch with its own duplicates: the store refuses the batch, each delivery tries alone, and
/// exactly one applies it while the others recognise it.
async fn a_command_delivered_again_within_a_batch_is_applied_once<D: TestDatabase>() {
    let database = D::create().await.unwrap();
    let repository = Repository::<Counter, _>::new((*database).clone())
        .serialize_streams(NonZeroUsize::new(64).unwrap());
    let context = factum::CommandContext::new();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (repository, context) = (repository.clone(), context.clone());
        tasks.push(tokio::spawn(async move {
            repository
                .execute_once("hot", Add { amount: 7 }, &context)
                .await
                .unwrap()
        }));
    }
    let mut applied = 0;
    for task in tasks {
        if matches!(task.await.unwrap(), factum::Executed::Applied(_)) {
            applied += 1;
        }
    }
    assert_eq!(
        applied, 1,
        "one delivery applies it, the others recognise it"
    );
    assert_eq!(database.read_stream("hot", ..).await.unwrap().len(), 1);
}

/// A batch decided on top of one the store refused was never tried: deciding it again is not
/// an attempt. Lined up with a store whose appends and id lookups are held back: one delivery
/// of a command is stored in the first batch, its duplicates are refused in the second, and
/// the deliveries that decide while the second is in flight form a third on top of it. With
/// no retries allowed, none of them may report a conflict: each recognises the command.
async fn a_batch_decided_on_top_of_a_refused_one_costs_no_attempt<D: TestDatabase>() {
    let database = D::create().await.unwrap();
    let store = Probe::new((*database).clone())
        .hold_read_event(Duration::from_millis(45))
        .hold_appends(Duration::from_millis(40));
    let repository = Repository::<Counter, _>::new(store.clone())
        .serialize_streams(NonZeroUsize::new(64).unwrap())
        .max_retries(0);
    let context = factum::CommandContext::new();
    let mut tasks = Vec::new();
    for n in 0..48 {
        let (repository, context) = (repository.clone(), context.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(3 * n)).await;
            repository
                .execute_once("hot", Add { amount: 7 }, &context)
                .await
        }));
    }
    let mut applied = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(factum::Executed::Applied(_)) => applied += 1,
            Ok(_) => {}
            Err(error) => panic!("a delivery failed: {error:?}"),
        }
    }
    assert_eq!(applied, 1);
    assert_eq!(database.read_stream("hot", ..).await.unwrap().len(), 1);
    assert!(
        store.appends() >= 4,
        "the batches stacked up and were refused ({} appends)",
        store.appends()
    );
}

/// Serialized commands still take snapshots: a batch that crosses the interval while nothing
/// later is decided saves the state it committed, which loads back equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serialized_streams_take_snapshots() {
    let store = MemoryStore::new();
    let repository = Repository::<Counter, _>::new(store.clone())
        .serialize_streams(NonZeroUsize::new(1024).unwrap())
        .snapshot_every(10);
    for amount in 1..=95 {
        repository.execute("hot", Add { amount }).await.unwrap();
    }
    let snapshot = store
        .load_snapshot("hot")
        .await
        .unwrap()
        .expect("a snapshot");
    assert_eq!(snapshot.stream_version, 90);
    let state: Counter = snapshot.state.decode().unwrap();
    assert_eq!(state.total, (1..=90).sum::<u64>());
}
