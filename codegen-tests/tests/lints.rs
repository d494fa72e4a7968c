//! Every macro, used the way a careful user would, in a crate that denies all warnings and
//! clippy's pedantic lints: the generated code must add none.
#![deny(warnings, missing_docs, missing_debug_implementations)]
#![deny(clippy::pedantic, clippy::all)]

use factum::testing::AggregateTest;
use factum::{Aggregate, Event, EventSet, aggregate, event, upcast};

/// A parcel was registered.
#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParcelRegistered {
    /// Tracking number.
    pub tracking: String,
    /// Weight in grams.
    pub grams: u32,
}

/// Version 1 of [`ParcelMoved`]: depots had numbers.
#[event(name = "logistics.ParcelMoved", version = 1)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParcelMovedV1 {
    /// Depot number.
    pub depot_number: u32,
}

/// Version 2 of [`ParcelMoved`]: depots have codes, possibly unknown.
#[event(name = "logistics.ParcelMoved", version = 2)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParcelMovedV2 {
    /// Depot code, empty when unknown.
    pub depot_code: String,
}

#[upcast]
fn number_to_code(old: ParcelMovedV1) -> ParcelMovedV2 {
    ParcelMovedV2 {
        depot_code: format!("D{}", old.depot_number),
    }
}

#[upcast]
fn drop_unknown_depots(old: ParcelMovedV2) -> Option<ParcelMoved> {
    (!old.depot_code.is_empty()).then_some(ParcelMoved {
        depot: old.depot_code,
    })
}

/// A parcel moved to a depot.
#[event(name = "logistics.ParcelMoved", version = 3)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParcelMoved {
    /// Depot code.
    pub depot: String,
}

/// A parcel was delivered.
#[event]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParcelDelivered;

/// Someone looked the parcel up; changes nothing.
#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParcelViewed {
    /// Who looked.
    pub by: String,
}

/// The events of a parcel.
#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParcelEvent {
    /// See [`ParcelRegistered`].
    Registered(ParcelRegistered),
    /// See [`ParcelMoved`].
    Moved(ParcelMoved),
    /// See [`ParcelDelivered`].
    Delivered(ParcelDelivered),
    /// See [`ParcelViewed`].
    Viewed(ParcelViewed),
}

/// Move a parcel.
#[derive(Debug)]
pub struct Move {
    /// Target depot.
    pub depot: String,
}

/// Deliver a parcel.
#[derive(Debug)]
pub struct Deliver;

/// Why a parcel command was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParcelError {
    /// Delivered parcels stay where they are.
    #[error("the parcel was delivered")]
    Delivered,
}

/// A parcel's state.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Parcel {
    location: Option<String>,
    delivered: bool,
}

#[aggregate(events = ParcelEvent, name = "Parcel", ignore(ParcelViewed))]
impl Parcel {
    #[apply]
    fn registered(&mut self, _: &ParcelRegistered) {
        self.location = Some("origin".to_owned());
    }

    #[apply]
    fn moved(&mut self, event: &ParcelMoved) {
        self.location = Some(event.depot.clone());
    }

    #[apply]
    fn delivered(&mut self, _: &ParcelDelivered) {
        self.delivered = true;
    }

    #[command]
    fn move_to(&self, command: &Move) -> Result<ParcelMoved, ParcelError> {
        if self.delivered {
            return Err(ParcelError::Delivered);
        }
        Ok(ParcelMoved {
            depot: command.depot.clone(),
        })
    }

    #[command]
    fn deliver(&self, _: &Deliver) -> Result<(ParcelMoved, ParcelDelivered), ParcelError> {
        if self.delivered {
            return Err(ParcelError::Delivered);
        }
        Ok((
            ParcelMoved {
                depot: "doorstep".to_owned(),
            },
            ParcelDelivered,
        ))
    }
}

/// The depots parcels went through (buffered per batch, written to the journal by the flush;
/// the journal stands in for a table, the projection writes through the transaction it is
/// given all the same).
#[derive(Debug, Default)]
pub struct DepotLog {
    journal: Vec<String>,
    pending: Vec<String>,
}

#[factum::projection(name = "depot_log", version = 2)]
impl DepotLog {
    #[handle]
    async fn moved(
        &mut self,
        event: &ParcelMoved,
        envelope: &factum::Envelope,
        tx: &mut factum::Tx<'_>,
    ) -> Result<(), ParcelError> {
        self.journal
            .push(format!("moved {} on {}", envelope.stream_id, tx.kind()));
        self.pending
            .push(format!("{} -> {}", envelope.stream_id, event.depot));
        Ok(())
    }

    #[flush]
    async fn flush(&mut self, _tx: &mut factum::Tx<'_>) -> Result<(), ParcelError> {
        self.journal.append(&mut self.pending);
        Ok(())
    }

    #[discard]
    fn discard(&mut self) {
        self.pending.clear();
    }

    #[reset]
    async fn reset(&mut self, _tx: &mut factum::Tx<'_>) -> Result<(), ParcelError> {
        self.journal.clear();
        Ok(())
    }
}

#[test]
fn names_versions_and_dispatch() {
    use factum::projection::Projection;
    assert_eq!(DepotLog::EVENT_TYPES, ["logistics.ParcelMoved"]);
    assert_eq!((DepotLog::NAME, DepotLog::VERSION), ("depot_log", 2));

    assert_eq!(ParcelMoved::NAME, "logistics.ParcelMoved");
    assert_eq!(ParcelMoved::VERSION, 3);
    assert_eq!(ParcelRegistered::VERSION, 1);
    assert_eq!(<Parcel as Aggregate>::TYPE, "Parcel");
    let names: Vec<_> = ParcelEvent::EVENTS.iter().map(|e| e.name).collect();
    assert_eq!(
        names,
        [
            "ParcelRegistered",
            "logistics.ParcelMoved",
            "ParcelDelivered",
            "ParcelViewed"
        ]
    );

    let registered = ParcelRegistered {
        tracking: "T1".to_owned(),
        grams: 500,
    };
    let state = AggregateTest::<Parcel>::given((
        registered,
        ParcelViewed {
            by: "clerk".to_owned(),
        },
    ))
    .when(Deliver)
    .then((
        ParcelMoved {
            depot: "doorstep".to_owned(),
        },
        ParcelDelivered,
    ));
    assert!(state.delivered);
    assert_eq!(state.location.as_deref(), Some("doorstep"));

    let moved = ParcelEvent::decode_all("logistics.ParcelMoved", 1, r#"{"depot_number":7}"#);
    assert_eq!(
        moved.ok(),
        Some(vec![ParcelEvent::Moved(ParcelMoved {
            depot: "D7".to_owned()
        })])
    );
    let unknown = ParcelEvent::decode_all("logistics.ParcelMoved", 2, r#"{"depot_code":""}"#);
    assert_eq!(unknown.ok(), Some(vec![]), "an upcaster may drop an event");

    AggregateTest::<Parcel>::given(vec![ParcelEvent::Delivered(ParcelDelivered)])
        .when(Move {
            depot: "X".to_owned(),
        })
        .then_error(ParcelError::Delivered);
}

#[tokio::test]
async fn the_projection_writes_at_the_flush_and_discards_a_dropped_batch() {
    use factum::projection::Projection;
    use factum::{CommandContext, EventStore, ExpectedVersion, FeedQuery, MemoryStore, NewEvent};

    let store = MemoryStore::new();
    let moved = |depot: &str| {
        let event = ParcelEvent::Moved(ParcelMoved {
            depot: depot.to_owned(),
        });
        NewEvent::from_event(&event, &CommandContext::new()).unwrap()
    };
    store
        .append(
            "T1",
            "Parcel",
            ExpectedVersion::Any,
            vec![moved("A"), moved("B")],
        )
        .await
        .unwrap();
    let events = store
        .read_feed(&FeedQuery::from_start())
        .await
        .unwrap()
        .events;

    let database = factum::store::SqliteStore::in_memory().await.unwrap();
    let mut transaction = factum::store::SqlStore::begin(&database).await.unwrap();
    let mut tx = transaction.tx();
    let mut log = DepotLog::default();
    log.handle(&events[0], &mut tx).await.unwrap();
    log.discard(); // the batch was rolled back
    for event in &events {
        log.handle(event, &mut tx).await.unwrap();
    }
    assert_eq!(log.journal, ["moved T1 on SQLite"; 3]);
    log.flush(&mut tx).await.unwrap();
    assert_eq!(log.journal[3..], ["T1 -> A", "T1 -> B"]);
    factum::projection::Reset::reset(&mut log, &mut tx)
        .await
        .unwrap();
    assert!(log.journal.is_empty());
}
