//! Snapshot policies beside "every N events" (seed 001): a snapshot after a load that replayed
//! events for too long, and after a load from a snapshot that is too old; time controlled by
//! the test's clock, on both stores.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use factum::clock::{Clock, ManualClock};
use factum::snapshot::SnapshotPolicy;
use factum::testing::TestDatabase;
use factum::{EventStore, Repository};

#[path = "support/counter.rs"]
mod counter;

use counter::{Add, Counter};

/// A clock that moves `step` forward each time it is read: a load (which reads it before and
/// after replaying) then takes `step`, as the repository measures it.
#[derive(Clone)]
struct Ticking {
    clock: ManualClock,
    step: Arc<Mutex<Duration>>,
}

impl Ticking {
    fn new() -> Self {
        Self {
            clock: ManualClock::starting_at("2026-01-01T00:00:00Z".parse().unwrap()),
            step: Arc::default(),
        }
    }

    fn set_step(&self, step: Duration) {
        *self.step.lock().unwrap_or_else(PoisonError::into_inner) = step;
    }
}

impl Clock for Ticking {
    fn now(&self) -> DateTime<Utc> {
        let step = *self.step.lock().unwrap_or_else(PoisonError::into_inner);
        self.clock.advance(step);
        self.clock.now()
    }
}

async fn deposits(counters: &Repository<Counter, impl EventStore>, id: &str, count: u64) {
    for amount in 1..=count {
        counters.execute(id, Add { amount }).await.unwrap();
    }
}

async fn snapshot_version(store: &impl EventStore, id: &str) -> Option<u64> {
    store
        .load_snapshot(id)
        .await
        .unwrap()
        .map(|snapshot| snapshot.stream_version)
}

/// A load that replays events for longer than the limit takes a snapshot; a quick one does
/// not, nor does a slow one that replayed nothing (it started from a fresh snapshot).
async fn a_slow_load_takes_a_snapshot<D: TestDatabase>() {
    let database = D::create().await.unwrap();
    let clock = Ticking::new();
    let counters = Repository::<Counter, _>::new(database.another_client().await.unwrap())
        .snapshots(SnapshotPolicy::default().when_load_takes(Duration::from_millis(100)))
        .clock(clock.clone());
    deposits(&counters, "counter-1", 30).await;
    assert_eq!(
        snapshot_version(&*database, "counter-1").await,
        None,
        "the commands' loads were quick (the clock stood still)"
    );

    clock.set_step(Duration::from_millis(50));
    let loaded = counters.load("counter-1").await.unwrap();
    assert_eq!(loaded.version, 30);
    assert_eq!(
        snapshot_version(&*database, "counter-1").await,
        None,
        "50 ms is within the limit"
    );

    clock.set_step(Duration::from_millis(250));
    let loaded = counters.load("counter-1").await.unwrap();
    assert_eq!(loaded.state.total, (1..=30).sum::<u64>());
    let snapshot = database
        .load_snapshot("counter-1")
        .await
        .unwrap()
        .expect("a snapshot after the slow load");
    assert_eq!(snapshot.stream_version, 30);
    assert_eq!(
        snapshot.state.decode::<Counter>().unwrap(),
        loaded.state,
        "the loaded state"
    );
    let taken_at = snapshot.taken_at;

    // Still slow, but from the snapshot with nothing to replay: no new snapshot.
    let reloaded = counters.load("counter-1").await.unwrap();
    assert_eq!(reloaded, loaded);
    let again = database.load_snapshot("counter-1").await.unwrap().unwrap();
    assert_eq!(
        (again.stream_version, again.taken_at),
        (30, taken_at),
        "not taken again"
    );
}

/// A load that replays events after a snapshot older than the limit takes a new one (taken at
/// the repository clock's time); while the snapshot is young, the interval alone decides.
async fn an_old_snapshot_is_replaced_at_the_next_load<D: TestDatabase>() {
    let database = D::create().await.unwrap();
    let clock = ManualClock::starting_at("2026-01-01T00:00:00Z".parse().unwrap());
    let week = Duration::from_secs(7 * 24 * 3600);
    let counters = Repository::<Counter, _>::new(database.another_client().await.unwrap())
        .snapshots(SnapshotPolicy::every(10).when_older_than(week))
        .clock(clock.clone());
    deposits(&counters, "counter-1", 12).await;
    let first = database.load_snapshot("counter-1").await.unwrap().unwrap();
    assert_eq!(first.stream_version, 10, "the interval's");
    assert_eq!(first.taken_at, clock.now(), "by the repository's clock");

    clock.advance(Duration::from_secs(24 * 3600));
    counters.load("counter-1").await.unwrap();
    assert_eq!(
        snapshot_version(&*database, "counter-1").await,
        Some(10),
        "a day old: kept"
    );

    clock.advance(week);
    let loaded = counters.load("counter-1").await.unwrap();
    assert_eq!(loaded.version, 12);
    let second = database.load_snapshot("counter-1").await.unwrap().unwrap();
    assert_eq!(
        (second.stream_version, second.taken_at),
        (12, clock.now()),
        "eight days old, with events after it: replaced"
    );
    assert_eq!(
        second.state.decode::<Counter>().unwrap().total,
        (1..=12).sum::<u64>()
    );

    // A new stream without a snapshot gets none from its age alone.
    deposits(&counters, "counter-2", 3).await;
    clock.advance(week * 2);
    counters.load("counter-2").await.unwrap();
    assert_eq!(snapshot_version(&*database, "counter-2").await, None);
}

factum::on_both_stores!(
    #[tokio::test]
    a_slow_load_takes_a_snapshot,
    #[tokio::test]
    an_old_snapshot_is_replaced_at_the_next_load,
);
