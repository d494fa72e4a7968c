//! The command executor on PostgreSQL: snapshots (taken, used, ignored when unusable, refused
//! when their state version does not fit), the hot aggregate cache (one round trip per command,
//! conflicts evict), and temporal queries.

use std::num::NonZeroUsize;

use factum::testing::postgres::TemporaryStore as TestStore;
use factum::{
    EventStore, ExpectedVersion, NewEvent, Payload, Repository, Snapshot, aggregate, event,
};
use serde::{Deserialize, Serialize};

#[path = "support/probe.rs"]
mod probe;

use probe::Probe;

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct Deposited {
    pub amount: u64,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum AccountEvent {
    Deposited(Deposited),
}

#[derive(Debug)]
pub struct Deposit(pub u64);

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("never")]
pub struct Never;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    balance: u64,
    deposits: u64,
}

#[aggregate(events = AccountEvent)]
impl Account {
    #[apply]
    fn deposited(&mut self, event: &Deposited) {
        self.balance += event.amount;
        self.deposits += 1;
    }

    #[command]
    fn deposit(&self, command: &Deposit) -> Result<Deposited, Never> {
        Ok(Deposited { amount: command.0 })
    }
}

/// The same aggregate after a change of its state's shape: its state version is bumped.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountV2 {
    cents: u64,
}

#[aggregate(events = AccountEvent, name = "Account", state_version = 2)]
impl AccountV2 {
    #[apply]
    fn deposited(&mut self, event: &Deposited) {
        self.cents += event.amount;
    }
}

async fn deposits(
    accounts: &Repository<Account, impl EventStore>,
    id: &str,
    amounts: impl IntoIterator<Item = u64>,
) {
    for amount in amounts {
        accounts.execute(id, Deposit(amount)).await.unwrap();
    }
}

#[tokio::test]
async fn snapshots_are_taken_every_n_events_and_used_when_loading() {
    let store = TestStore::new().await.unwrap();
    let accounts =
        Repository::<Account, _>::new(store.another_client().await.unwrap()).snapshot_every(10);
    deposits(&accounts, "acc-1", 1..=25).await;

    let snapshot = store
        .load_snapshot("acc-1")
        .await
        .unwrap()
        .expect("a snapshot");
    assert_eq!(snapshot.stream_version, 20, "the latest multiple of 10");
    assert_eq!(snapshot.aggregate_type, "Account");
    assert_eq!(snapshot.state_version, 1);
    let at_20: Account = snapshot.state.decode().unwrap();
    assert_eq!(
        at_20,
        Account {
            balance: (1..=20).sum(),
            deposits: 20
        }
    );

    // A doctored snapshot shows that loading starts from it (and replays 21..=25 on top).
    let doctored = Account {
        balance: 1_000_000,
        deposits: 20,
    };
    store
        .save_snapshot(Snapshot::new(
            "acc-1",
            "Account",
            21,
            1,
            Payload::encode(&doctored).unwrap(),
        ))
        .await
        .unwrap();
    let loaded = accounts.load("acc-1").await.unwrap();
    assert_eq!(loaded.version, 25);
    assert_eq!(loaded.state.balance, 1_000_000 + 22 + 23 + 24 + 25);
}

#[tokio::test]
async fn unusable_snapshots_are_ignored_and_the_state_rebuilt_from_events() {
    let store = TestStore::new().await.unwrap();
    let accounts =
        Repository::<Account, _>::new(store.another_client().await.unwrap()).snapshot_every(10);
    deposits(&accounts, "acc-1", 1..=12).await;
    let truth = Account {
        balance: (1..=12).sum(),
        deposits: 12,
    };
    let doctored = Payload::encode(&Account {
        balance: 7,
        deposits: 1,
    })
    .unwrap();

    let unusable = [
        (
            "another state version",
            Snapshot::new("acc-1", "Account", 12, 2, doctored.clone()),
        ),
        (
            "another aggregate type",
            Snapshot::new("acc-1", "Wallet", 12, 1, doctored.clone()),
        ),
        (
            "a state that does not decode",
            Snapshot::new(
                "acc-1",
                "Account",
                12,
                1,
                Payload::encode(&serde_json::json!({ "balance": "lots" })).unwrap(),
            ),
        ),
    ];
    for (what, snapshot) in unusable {
        // Replace whatever is stored (a newer stream version always wins the upsert).
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM \"{}\".snapshots",
            store.schema()
        )))
        .execute(store.pool())
        .await
        .unwrap();
        store.save_snapshot(snapshot).await.unwrap();
        let loaded = accounts.load("acc-1").await.unwrap();
        assert_eq!(
            (loaded.state, loaded.version),
            (truth.clone(), 12),
            "with {what}"
        );
    }

    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM \"{}\".snapshots",
        store.schema()
    )))
    .execute(store.pool())
    .await
    .unwrap();
    let loaded = accounts.load("acc-1").await.unwrap();
    assert_eq!(
        (loaded.state, loaded.version),
        (truth, 12),
        "with no snapshot"
    );
}

/// A replay reads the stream's aggregate type only where it is not the loading aggregate's;
/// a stream of another aggregate type is still refused, with or without snapshots.
#[tokio::test]
async fn loading_another_aggregates_stream_is_refused() {
    let store = TestStore::new().await.unwrap();
    let event = AccountEvent::from(Deposited { amount: 5 });
    let context = factum::CommandContext::new();
    store
        .append(
            "wallet-1",
            "Wallet",
            ExpectedVersion::NoStream,
            (0..3)
                .map(|_| NewEvent::from_event(&event, &context).unwrap())
                .collect(),
        )
        .await
        .unwrap();
    let plain = Repository::<Account, _>::new(store.clone());
    let with_snapshots = Repository::<Account, _>::new(store.clone()).snapshot_every(2);
    for (what, result) in [
        ("without snapshots", plain.load("wallet-1").await),
        ("with snapshots", with_snapshots.load("wallet-1").await),
    ] {
        match result {
            Err(factum::Error::AggregateTypeMismatch {
                stream_id,
                existing,
                requested,
            }) => assert_eq!(
                (stream_id.as_str(), existing.as_str(), requested.as_str()),
                ("wallet-1", "Wallet", "Account"),
                "{what}"
            ),
            other => panic!("{what}: expected an aggregate type mismatch, got {other:?}"),
        }
    }
    // The stream's own aggregate, and a stream of the loading one, load.
    deposits(&plain, "acc-1", [1, 2]).await;
    let loaded = with_snapshots.load("acc-1").await.unwrap();
    assert_eq!((loaded.state.balance, loaded.version), (3, 2));
}

#[tokio::test]
async fn a_state_version_above_what_postgres_keeps_is_refused_not_clamped() {
    let store = TestStore::new().await.unwrap();
    let state = Payload::encode(&Account::default()).unwrap();
    let largest = u32::try_from(i32::MAX).unwrap();

    let refused = store
        .save_snapshot(Snapshot::new(
            "acc-1",
            "Account",
            1,
            largest + 1,
            state.clone(),
        ))
        .await;
    match refused {
        Err(factum::Error::InvalidAppend { stream_id, reason }) => {
            assert_eq!(stream_id, "acc-1");
            assert!(reason.contains(&(largest + 1).to_string()), "{reason}");
        }
        other => panic!("a state version above i32::MAX is refused, got {other:?}"),
    }
    assert!(
        store.load_snapshot("acc-1").await.unwrap().is_none(),
        "nothing is stored in its place"
    );

    // The largest it keeps is stored as it is.
    store
        .save_snapshot(Snapshot::new("acc-1", "Account", 1, largest, state))
        .await
        .unwrap();
    let stored = store.load_snapshot("acc-1").await.unwrap().unwrap();
    assert_eq!(stored.state_version, largest);
}

#[tokio::test]
async fn bumping_the_state_version_ignores_older_snapshots() {
    let store = TestStore::new().await.unwrap();
    let v1 = Repository::<Account, _>::new(store.another_client().await.unwrap()).snapshot_every(5);
    deposits(&v1, "acc-1", [10, 20, 30, 40, 50]).await;
    assert_eq!(
        store
            .load_snapshot("acc-1")
            .await
            .unwrap()
            .unwrap()
            .state_version,
        1
    );

    let v2 =
        Repository::<AccountV2, _>::new(store.another_client().await.unwrap()).snapshot_every(5);
    let loaded = v2.load("acc-1").await.unwrap();
    assert_eq!(
        loaded.state,
        AccountV2 { cents: 150 },
        "rebuilt from events, not the v1 snapshot"
    );
    assert_eq!(loaded.version, 5);
}

#[tokio::test]
async fn temporal_queries_give_the_state_as_of_a_version_or_a_time() {
    let store = TestStore::new().await.unwrap();
    let accounts = Repository::<Account, _>::new(store.another_client().await.unwrap());
    deposits(&accounts, "acc-1", [1, 2, 4]).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    deposits(&accounts, "acc-1", [8, 16]).await;

    let at_3 = accounts.load_at_version("acc-1", 3).await.unwrap();
    assert_eq!((at_3.state.balance, at_3.version), (7, 3));
    let beyond = accounts.load_at_version("acc-1", 99).await.unwrap();
    assert_eq!((beyond.state.balance, beyond.version), (31, 5));

    let events = store.read_stream("acc-1", 1..).await.unwrap();
    let between = events[2].recorded_at + chrono::Duration::milliseconds(5);
    assert!(between < events[3].recorded_at);
    let then = accounts.load_as_of("acc-1", between).await.unwrap();
    assert_eq!((then.state.balance, then.version), (7, 3));
    let exactly = accounts
        .load_as_of("acc-1", events[0].recorded_at)
        .await
        .unwrap();
    assert_eq!(
        exactly.version, 1,
        "an event recorded at the instant is included"
    );
    let before = accounts
        .load_as_of(
            "acc-1",
            events[0].recorded_at - chrono::Duration::seconds(1),
        )
        .await
        .unwrap();
    assert_eq!((before.state, before.version), (Account::default(), 0));
}

#[tokio::test]
async fn a_cached_aggregate_costs_one_round_trip_and_a_conflict_evicts_it() {
    let store = TestStore::new().await.unwrap();
    let counting = Probe::new(store.another_client().await.unwrap());
    let accounts =
        Repository::<Account, _>::new(counting.clone()).cache(NonZeroUsize::new(100).unwrap());

    accounts.execute("acc-1", Deposit(5)).await.unwrap();
    assert_eq!(
        (counting.reads(), counting.appends()),
        (1, 1),
        "a miss loads"
    );
    for amount in [1, 2, 3] {
        accounts.execute("acc-1", Deposit(amount)).await.unwrap();
    }
    assert_eq!(
        (counting.reads(), counting.appends()),
        (1, 4),
        "hits only append"
    );

    // Another process writes to the stream: the cached state is stale.
    let other = Repository::<Account, _>::new(store.another_client().await.unwrap());
    other.execute("acc-1", Deposit(100)).await.unwrap();
    let committed = accounts.execute("acc-1", Deposit(1000)).await.unwrap();
    assert_eq!(
        committed[0].stream_version, 6,
        "the stale append conflicted, reloaded and retried"
    );
    assert_eq!(counting.appends(), 6, "one failed append, one retried");
    assert_eq!(counting.reads(), 2, "one reload");

    let truth = Repository::<Account, _>::new(store.another_client().await.unwrap())
        .load("acc-1")
        .await
        .unwrap();
    assert_eq!(
        truth.state,
        Account {
            balance: 5 + 1 + 2 + 3 + 100 + 1000,
            deposits: 6
        }
    );
    accounts.execute("acc-1", Deposit(0)).await.unwrap();
    assert_eq!(counting.reads(), 2, "the reloaded state is cached again");
}

#[tokio::test]
async fn snapshots_and_cache_work_on_the_memory_store_too() {
    let store = factum::MemoryStore::new();
    let accounts = Repository::<Account, _>::new(store.clone())
        .snapshot_every(3)
        .cache(NonZeroUsize::new(1).unwrap());
    deposits(&accounts, "acc-1", 1..=7).await;
    deposits(&accounts, "acc-2", [5]).await;
    assert_eq!(
        store
            .load_snapshot("acc-1")
            .await
            .unwrap()
            .unwrap()
            .stream_version,
        6
    );
    let loaded = accounts.load("acc-1").await.unwrap();
    assert_eq!((loaded.state.balance, loaded.version), ((1..=7).sum(), 7));
}
