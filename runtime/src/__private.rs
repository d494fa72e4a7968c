//! Items used by generated code. Not public API: they may change in any release.

pub use schemars;
pub use serde;
pub use serde_json;
pub use tokio;

pub use crate::event::{Decoded, decode_event};
pub use crate::upcast::{Chain, UpcastFrom, UpcastOutput};

/// `a == b` for `&str` in const context, for the compile-time check that the events of a set
/// have distinct type names.
#[must_use]
pub const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Compiles only when `E` is an event of the set `S`; generated at each apply function.
pub const fn assert_event_of<S: EventSet, E: EventOf<S>>() {}

pub use crate::aggregate::{Aggregate, Apply, ApplyTo, Handle, HandlerOutput};
pub use crate::error::DecodeError;
pub use crate::event::{
    Event, EventDescriptor, EventOf, EventSchema, EventSet, IntoEvents, Payload,
};

/// Serializes one event; bounded on `Event` so that a non-event in a set is reported as such.
///
/// # Errors
/// When the event's `Serialize` implementation fails.
pub fn encode_event<E: Event>(event: &E) -> Result<Payload, serde_json::Error> {
    Payload::encode(event)
}

pub use crate::command::Command;
pub use crate::envelope::{EnvelopeFields, RecordedEvent};
pub use crate::projection::{HandlerError, InlineProjection, Projection, Reset, RunsOn};
pub use crate::store::{StoreConnection, StoreKind, Tx};

/// The SQL stores a projection whose handlers take [`Tx`] runs on: every one compiled in.
pub trait Store {}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl<S: crate::store::SqlStore> Store for S {}
pub use crate::saga::{
    Association, FiredTimeout, Rejection, Role, Saga, SagaContext, Schedules, Sends, Timeout,
};

pub use crate::pii::{PiiField, PiiSpec};

/// Types a `#[pii(subject)]` field may have: their JSON is a string or an integer, which names
/// the data subject.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot name a data subject",
    label = "a `#[pii(subject)]` field must be a string, an integer or a UUID",
    note = "name the subject by its id: a `String`, an integer or a `Uuid`"
)]
pub trait PiiSubject {}
impl PiiSubject for String {}
impl PiiSubject for &str {}
impl PiiSubject for uuid::Uuid {}
impl PiiSubject for u8 {}
impl PiiSubject for u16 {}
impl PiiSubject for u32 {}
impl PiiSubject for u64 {}
impl PiiSubject for i8 {}
impl PiiSubject for i16 {}
impl PiiSubject for i32 {}
impl PiiSubject for i64 {}

/// Compiles only when `T` may name a data subject; generated at a `#[pii(subject)]` field.
pub const fn assert_pii_subject<T: PiiSubject + ?Sized>() {}
