//! Commands executed through the repository on the in-memory store: envelopes, correlation and
//! causation, rejections, concurrency retries, and events that no longer decode.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bank::{
    AccountEvent, AccountOpened, BankAccount, Deposit, MoneyDeposited, OpenAccount, Withdraw,
};
use factum::repository::rehydrate;
use factum::{
    CommandContext, Error, EventStore, ExecuteError, ExpectedVersion, FeedBatch, FeedQuery,
    MemoryStore, NewEvent, Payload, RecordedEvent, Repository, Uuid,
};

fn open(owner: &str, initial_deposit: u64) -> OpenAccount {
    OpenAccount {
        owner: owner.into(),
        initial_deposit,
    }
}

#[tokio::test]
async fn envelopes_carry_correlation_and_causation_from_the_command_context() {
    let accounts = Repository::<BankAccount, _>::new(MemoryStore::new());
    let request = Uuid::now_v7();
    let command = Uuid::now_v7();
    let context = CommandContext::new()
        .command_id(command)
        .correlation_id(request)
        .actor("teller-7")
        .metadata("channel", "branch");
    let committed = accounts
        .execute_with("acc-1", open("Alice", 10), &context)
        .await
        .unwrap();

    let envelope = &committed[0];
    assert_eq!(envelope.correlation_id, request);
    assert_eq!(
        envelope.causation_id, command,
        "the command caused the event"
    );
    assert_eq!(envelope.actor.as_deref(), Some("teller-7"));
    assert_eq!(envelope.metadata["channel"], "branch");
    assert_eq!(envelope.event_type, "AccountOpened");
    assert_eq!(envelope.schema_version, 1);
    assert_eq!(envelope.aggregate_type, "BankAccount");
    assert_eq!(envelope.stream_id, "acc-1");
    assert_eq!(envelope.stream_version, 1);
    assert_eq!(
        envelope.event_id.get_version_num(),
        7,
        "event ids are UUIDv7"
    );
    assert!(matches!(envelope.event, AccountEvent::Opened(_)));

    let stored = accounts.store().read_stream("acc-1", 1..).await.unwrap();
    assert_eq!(
        stored[0].correlation_id, request,
        "what is stored, not only what is returned"
    );
    assert_eq!(stored[0].causation_id, command);
    assert_eq!(stored[0].event_id, envelope.event_id);
}

#[tokio::test]
async fn a_new_context_starts_a_flow_and_a_caused_context_joins_it() {
    let accounts = Repository::<BankAccount, _>::new(MemoryStore::new());
    let first = accounts.execute("acc-1", open("Alice", 10)).await.unwrap();
    let first = &first[0];
    assert_eq!(
        first.correlation_id, first.causation_id,
        "a new flow is correlated by its first command"
    );

    let reaction = CommandContext::caused_by(first);
    let second = accounts
        .execute_with("acc-1", Deposit { amount: 5 }, &reaction)
        .await
        .unwrap();
    assert_eq!(second[0].correlation_id, first.correlation_id, "same flow");
    assert_eq!(second[0].causation_id, reaction.command_id);
    assert_ne!(second[0].causation_id, first.causation_id);
}

#[tokio::test]
async fn every_event_of_one_command_gets_the_same_context() {
    // A command returning several events: open with a deposit, then two deposits in a batch,
    // here through the store directly, to show the executor's envelope mapping on a multi-event
    // append.
    let store = MemoryStore::new();
    let context = CommandContext::new().actor("batch");
    let events: Vec<AccountEvent> = vec![
        AccountOpened {
            owner: "A".into(),
            initial_deposit: 0,
        }
        .into(),
        MoneyDeposited {
            amount: 1,
            balance_after: 1,
        }
        .into(),
    ];
    let new: Vec<NewEvent> = events
        .iter()
        .map(|e| NewEvent::from_event(e, &context).unwrap())
        .collect();
    let stored = store
        .append("acc-9", "BankAccount", ExpectedVersion::NoStream, new)
        .await
        .unwrap();
    assert!(
        stored
            .iter()
            .all(|e| e.correlation_id == context.correlation_id
                && e.causation_id == context.command_id
                && e.actor.as_deref() == Some("batch"))
    );
    assert_ne!(stored[0].event_id, stored[1].event_id);
}

#[tokio::test]
async fn a_rejected_command_stores_nothing() {
    let accounts = Repository::<BankAccount, _>::new(MemoryStore::new());
    accounts.execute("acc-1", open("Alice", 10)).await.unwrap();
    let result = accounts.execute("acc-1", Withdraw::at_teller(11)).await;
    match result {
        Err(ExecuteError::Rejected(bank::AccountError::InsufficientFunds {
            balance,
            requested,
        })) => {
            assert_eq!((balance, requested), (10, 11));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(accounts.store().stream_version("acc-1").await.unwrap(), 1);
}

/// A store in which another writer appends to the stream just before each of our first
/// `races` appends, as a competing process would.
#[derive(Clone)]
struct Contended {
    inner: MemoryStore,
    races: Arc<AtomicU32>,
}

impl EventStore for Contended {
    async fn append(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> factum::Result<Vec<RecordedEvent>> {
        if self
            .races
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            // The competitor deposits 1 on the state it sees.
            let history = self.inner.read_stream_events(stream_id, 1..).await?;
            let seen = rehydrate::<BankAccount>(stream_id, &history)?;
            let competing = NewEvent::from_event(
                &AccountEvent::from(MoneyDeposited {
                    amount: 1,
                    balance_after: seen.state.balance + 1,
                }),
                &CommandContext::new(),
            )?;
            self.inner
                .append(
                    stream_id,
                    aggregate_type,
                    ExpectedVersion::Any,
                    vec![competing],
                )
                .await?;
        }
        self.inner
            .append(stream_id, aggregate_type, expected, events)
            .await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        versions: impl std::ops::RangeBounds<u64> + Send,
    ) -> factum::Result<Vec<RecordedEvent>> {
        self.inner.read_stream(stream_id, versions).await
    }

    async fn read_feed(&self, query: &FeedQuery) -> factum::Result<FeedBatch> {
        self.inner.read_feed(query).await
    }

    async fn stream_version(&self, stream_id: &str) -> factum::Result<u64> {
        self.inner.stream_version(stream_id).await
    }

    async fn read_event(
        &self,
        event_id: factum::Uuid,
    ) -> factum::Result<Option<factum::RecordedEvent>> {
        self.inner.read_event(event_id).await
    }
}

async fn contended_account(races: u32) -> Contended {
    let store = Contended {
        inner: MemoryStore::new(),
        races: Arc::new(AtomicU32::new(0)),
    };
    Repository::<BankAccount, _>::new(store.clone())
        .execute("acc-1", open("Alice", 100))
        .await
        .expect("the account opens");
    store.races.store(races, Ordering::SeqCst);
    store
}

#[tokio::test]
async fn a_conflict_reloads_and_retries() {
    let store = contended_account(2).await;
    let accounts = Repository::<BankAccount, _>::new(store.clone()).max_retries(2);
    let committed = accounts
        .execute("acc-1", Withdraw::at_teller(10))
        .await
        .unwrap();
    // Two competing events landed first (versions 2 and 3); the retried command saw them.
    assert_eq!(committed[0].stream_version, 4);
    let loaded = accounts.load("acc-1").await.unwrap();
    assert_eq!(loaded.version, 4);
    assert_eq!(
        loaded.state.balance,
        100 + 1 + 1 - 10,
        "decided on the reloaded state"
    );
}

#[tokio::test]
async fn conflicts_beyond_the_retry_limit_are_reported() {
    let store = contended_account(3).await;
    let accounts = Repository::<BankAccount, _>::new(store.clone()).max_retries(2);
    let result = accounts.execute("acc-1", Withdraw::at_teller(10)).await;
    match result {
        Err(ExecuteError::Conflict {
            stream_id,
            attempts,
            cause: Error::Conflict {
                expected, actual, ..
            },
        }) => {
            assert_eq!(stream_id, "acc-1");
            assert_eq!(attempts, 3, "one try and two retries");
            assert_eq!(expected, ExpectedVersion::Exact(3));
            assert_eq!(actual, 4);
        }
        other => panic!("expected a conflict after retries, got {other:?}"),
    }
    assert_eq!(
        store.stream_version("acc-1").await.unwrap(),
        4,
        "only the competing events"
    );
}

#[tokio::test]
async fn concurrent_commands_all_land_exactly_once() {
    let accounts = Repository::<BankAccount, _>::new(MemoryStore::new()).max_retries(100);
    accounts.execute("acc-1", open("Alice", 0)).await.unwrap();
    let tasks: Vec<_> = (1..=20_u64)
        .map(|amount| {
            let accounts = accounts.clone();
            tokio::spawn(async move { accounts.execute("acc-1", Deposit { amount }).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let loaded = accounts.load("acc-1").await.unwrap();
    assert_eq!(loaded.version, 21);
    assert_eq!(loaded.state.balance, (1..=20).sum::<u64>());
}

#[tokio::test]
async fn an_event_that_no_longer_decodes_stops_the_load_with_a_typed_error() {
    let store = MemoryStore::new();
    let accounts = Repository::<BankAccount, _>::new(store.clone());
    accounts.execute("acc-1", open("Alice", 10)).await.unwrap();
    let broken = NewEvent::new(
        "MoneyDeposited",
        1,
        Payload::encode(&serde_json::json!({ "amount": "ten" })).unwrap(),
    );
    store
        .append(
            "acc-1",
            "BankAccount",
            ExpectedVersion::Exact(1),
            vec![broken],
        )
        .await
        .unwrap();
    let unknown = NewEvent::new(
        "InterestAccrued",
        1,
        Payload::encode(&serde_json::json!({})).unwrap(),
    );
    store
        .append(
            "acc-2",
            "BankAccount",
            ExpectedVersion::NoStream,
            vec![unknown],
        )
        .await
        .unwrap();

    let error = accounts.load("acc-1").await.unwrap_err();
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
    assert!(
        message.contains("acc-1") && message.contains("MoneyDeposited"),
        "{message}"
    );

    let error = accounts
        .execute("acc-2", Deposit { amount: 1 })
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            ExecuteError::Store(Error::Decode {
                cause: factum::DecodeError::UnknownType { .. },
                ..
            })
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("InterestAccrued"), "{error}");
    assert_eq!(
        store.stream_version("acc-1").await.unwrap(),
        2,
        "nothing rewritten"
    );
}

#[tokio::test]
async fn another_aggregate_type_cannot_take_over_a_stream() {
    let store = MemoryStore::new();
    let other = NewEvent::new(
        "Pinged",
        1,
        Payload::encode(&serde_json::json!({})).unwrap(),
    );
    store
        .append(
            "shared-id",
            "Pinger",
            ExpectedVersion::NoStream,
            vec![other],
        )
        .await
        .unwrap();
    let accounts = Repository::<BankAccount, _>::new(store);
    let error = accounts
        .execute("shared-id", open("Alice", 1))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ExecuteError::Store(Error::AggregateTypeMismatch { existing, .. }) if existing == "Pinger"),
        "{error:?}"
    );
}
