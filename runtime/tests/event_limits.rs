//! `#[event(max_size = N)]` (issue 16, part 4): an event type declares the largest payload an
//! append accepts, checked by every store before anything is written (the conformance suite
//! checks each store), whether the event comes raw (`NewEvent::of`) or from a command (an
//! event set); the catalog reports it.

use factum::{Error, EventStore, ExpectedVersion, MemoryStore, NewEvent, Repository};

/// A note on an account, at most 64 bytes of JSON.
#[factum::event(max_size = 64)]
#[derive(Debug, Clone, PartialEq)]
pub struct NoteAdded {
    pub text: String,
}

#[factum::event]
#[derive(Debug, Clone, PartialEq)]
pub enum AccountEvent {
    NoteAdded(NoteAdded),
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Account {
    pub notes: usize,
}

#[derive(Debug)]
pub struct AddNote(pub String);

#[factum::aggregate(events = AccountEvent)]
impl Account {
    #[apply]
    fn note_added(&mut self, _: &NoteAdded) {
        self.notes += 1;
    }

    #[command]
    fn add_note(&self, command: &AddNote) -> Result<NoteAdded, std::convert::Infallible> {
        Ok(NoteAdded {
            text: command.0.clone(),
        })
    }
}

#[tokio::test]
async fn an_event_above_its_declared_size_is_refused_and_nothing_is_stored() {
    use factum::Event as _;
    assert_eq!(NoteAdded::MAX_SIZE, Some(64));
    let store = MemoryStore::new();
    let note = |text: &str| {
        NewEvent::of(&NoteAdded {
            text: text.to_owned(),
        })
        .unwrap()
    };
    // `{"text":"…"}` is 11 bytes around the text.
    store
        .append(
            "acc-1",
            "Account",
            ExpectedVersion::Any,
            vec![note(&"a".repeat(53))],
        )
        .await
        .unwrap();
    let refused = store
        .append(
            "acc-1",
            "Account",
            ExpectedVersion::Any,
            vec![note(&"a".repeat(54))],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            &refused,
            Error::EventAboveDeclaredSize { event_type, bytes: 65, max_size: 64, .. }
                if event_type == "NoteAdded"
        ),
        "{refused:?}"
    );
    assert!(
        refused.to_string().contains("#[event(max_size = 64)]"),
        "{refused}"
    );

    // Through a command: the event set's variant carries its type's limit.
    let accounts = Repository::<Account, _>::new(store.clone());
    let refused = accounts
        .execute("acc-1", AddNote("b".repeat(100)))
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("above the 64 its type declares"),
        "{refused}"
    );
    assert_eq!(store.read_stream("acc-1", ..).await.unwrap().len(), 1);
    accounts
        .execute("acc-1", AddNote("ok".into()))
        .await
        .unwrap();
    assert_eq!(accounts.load("acc-1").await.unwrap().state.notes, 2);
}

#[test]
fn the_catalog_reports_the_declared_size() {
    let schema = factum::event::EventSchema::of::<NoteAdded>();
    assert_eq!(schema.schema["x-max-size"], 64);
    let descriptor = factum::EventDescriptor::of::<NoteAdded>();
    assert_eq!(descriptor.max_size, Some(64));
}
