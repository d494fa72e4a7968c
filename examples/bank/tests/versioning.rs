//! `MoneyWithdrawn` is at version 3; events stored at versions 1 and 2 are read as version 3 on
//! every read path: aggregates on the in-memory store and on PostgreSQL, and the global feed.

use bank::legacy::{MoneyWithdrawnV1, MoneyWithdrawnV2};
use bank::{AccountEvent, BankAccount, Channel, MoneyWithdrawn, Withdraw, dollars};
use factum::testing::postgres::TemporaryStore;
use factum::{
    CommandContext, EventStore, ExpectedVersion, FeedPosition, FeedQuery, MemoryStore, NewEvent,
    Payload, Repository,
};

/// An account opened with 100.00, then one withdrawal stored at each version of the event:
/// 10 dollars (v1), 2000 cents (v2), 3000 cents at the ATM (v3).
fn history() -> Vec<NewEvent> {
    let context = CommandContext::new();
    let opened = AccountEvent::from(bank::AccountOpened {
        owner: "Ada".into(),
        initial_deposit: dollars(100),
    });
    let v1 = MoneyWithdrawnV1 {
        amount: 10,
        balance_after: 90,
    };
    let v2 = MoneyWithdrawnV2 {
        amount: dollars(20),
        balance_after: dollars(70),
    };
    let v3 = AccountEvent::from(MoneyWithdrawn {
        amount: dollars(30),
        balance_after: dollars(40),
        channel: Channel::Atm,
    });
    let stored = |version: u32, payload: Payload| NewEvent::new("MoneyWithdrawn", version, payload);
    vec![
        NewEvent::from_event(&opened, &context).unwrap(),
        stored(1, Payload::encode(&v1).unwrap()),
        stored(2, Payload::encode(&v2).unwrap()),
        NewEvent::from_event(&v3, &context).unwrap(),
    ]
}

fn read_as_v3() -> Vec<MoneyWithdrawn> {
    vec![
        MoneyWithdrawn {
            amount: dollars(10),
            balance_after: dollars(90),
            channel: Channel::Teller,
        },
        MoneyWithdrawn {
            amount: dollars(20),
            balance_after: dollars(70),
            channel: Channel::Teller,
        },
        MoneyWithdrawn {
            amount: dollars(30),
            balance_after: dollars(40),
            channel: Channel::Atm,
        },
    ]
}

async fn check(store: impl EventStore + Clone) {
    let stored = store
        .append("acc-1", "BankAccount", ExpectedVersion::NoStream, history())
        .await
        .unwrap();
    let versions: Vec<u32> = stored.iter().map(|e| e.schema_version).collect();
    assert_eq!(versions, [1, 1, 2, 3], "stored as written");

    // The aggregate applies every withdrawal as version 3.
    let accounts = Repository::<BankAccount, _>::new(store.clone());
    let account = accounts.load("acc-1").await.unwrap();
    assert_eq!(account.state.balance, dollars(40));
    assert_eq!(account.version, 4);
    // And commands go on from there.
    accounts
        .execute("acc-1", Withdraw::at_teller(dollars(40)))
        .await
        .unwrap();

    // The feed reads them as version 3 too.
    let mut read = Vec::new();
    let mut after = FeedPosition::START;
    loop {
        let batch = store.read_feed(&FeedQuery::after(after)).await.unwrap();
        after = batch.next;
        if batch.events.is_empty() && !batch.held_back {
            break;
        }
        for envelope in batch.events {
            for event in envelope.decode::<AccountEvent>().unwrap() {
                if let AccountEvent::Withdrawn(withdrawn) = event.event {
                    read.push(withdrawn);
                }
            }
        }
    }
    let mut expected = read_as_v3();
    expected.push(MoneyWithdrawn {
        amount: dollars(40),
        balance_after: 0,
        channel: Channel::Teller,
    });
    assert_eq!(read, expected);

    // A stream read, decoded event by event, gives the same.
    let decoded: Vec<AccountEvent> = store
        .read_stream("acc-1", 2..=4)
        .await
        .unwrap()
        .iter()
        .flat_map(|e| e.decode_events::<AccountEvent>().unwrap())
        .collect();
    let expected: Vec<AccountEvent> = read_as_v3().into_iter().map(AccountEvent::from).collect();
    assert_eq!(decoded, expected);
}

#[tokio::test]
async fn old_versions_read_as_the_current_one_on_the_memory_store() {
    check(MemoryStore::new()).await;
}

#[tokio::test]
async fn old_versions_read_as_the_current_one_on_postgres() {
    let store = TemporaryStore::new().await.unwrap();
    check(store.another_client().await.unwrap()).await;
}

#[tokio::test]
async fn a_version_newer_than_this_build_is_a_typed_error() {
    let store = MemoryStore::new();
    let mut events = history();
    events.push(NewEvent::new(
        "MoneyWithdrawn",
        4,
        Payload::encode(&serde_json::json!({ "amount": 1 })).unwrap(),
    ));
    store
        .append("acc-1", "BankAccount", ExpectedVersion::NoStream, events)
        .await
        .unwrap();
    let error = Repository::<BankAccount, _>::new(store)
        .load("acc-1")
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("version 4") && message.contains("MoneyWithdrawn"),
        "{message}"
    );
    assert!(matches!(
        error,
        factum::Error::Decode {
            stream_version: 5,
            cause: factum::DecodeError::UnknownVersion {
                found: 4,
                expected: 3,
                ..
            },
            ..
        }
    ));
}

#[tokio::test]
async fn an_added_optional_field_needs_no_new_version() {
    // Weak schema: `tags` was added later with a serde default, so events stored before it
    // decode at the same version.
    #[factum::event(name = "Noted")]
    #[derive(Debug, PartialEq)]
    struct Noted {
        text: String,
        #[serde(default)]
        tags: Vec<String>,
    }
    #[factum::event]
    #[derive(Debug, PartialEq)]
    enum NoteEvent {
        Noted(Noted),
    }
    let old: Vec<NoteEvent> =
        factum::EventSet::decode_all("Noted", 1, r#"{"text":"hello"}"#).unwrap();
    assert_eq!(
        old,
        [NoteEvent::Noted(Noted {
            text: "hello".into(),
            tags: vec![]
        })]
    );
}
