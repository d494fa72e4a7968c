//! Events, event sets and their JSON payloads.
//!
//! An *event* is a struct annotated with [`#[event]`](macro@crate::event): a fact with a stable type
//! name and a schema version. An *event set* is an enum annotated with `#[event]` whose variants
//! each hold one event; it is what an aggregate produces and applies. The macro implements the
//! traits of this module; users rarely implement them by hand.

use std::fmt;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::DecodeError;

/// A domain event: one immutable fact, with a stable type name and a schema version.
///
/// Implemented by `#[event]` on a struct, which also derives `Serialize`, `Deserialize` and
/// `JsonSchema`.
///
/// ```
/// #[factum::event]
/// #[derive(Debug, Clone, PartialEq)]
/// pub struct MoneyDeposited {
///     pub amount: u64,
///     pub balance_after: u64,
/// }
///
/// use factum::Event as _;
/// assert_eq!(MoneyDeposited::NAME, "MoneyDeposited");
/// assert_eq!(MoneyDeposited::VERSION, 1);
/// ```
///
/// Versions above 1 need an upcaster from the previous version (see [`crate::upcast`]).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event",
    label = "not an event",
    note = "annotate the type with `#[factum::event]`"
)]
pub trait Event: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static {
    /// The stable type name stored with every event of this type (default: the Rust name).
    const NAME: &'static str;
    /// The schema version of this Rust type (default 1).
    const VERSION: u32;

    /// Decodes a stored payload of this event at `version` into this type, handing each result
    /// to `out`: the payload itself at [`Event::VERSION`], and, for an older version, what the
    /// chain of [`#[upcast]`](macro@crate::upcast) functions makes of it (none, one or several
    /// events). `#[event]` generates the chain for versions above 1; this default accepts only
    /// [`Event::VERSION`].
    ///
    /// # Errors
    /// [`DecodeError::UnknownVersion`] for a version this build cannot read, or
    /// [`DecodeError::Payload`] when the JSON does not match the type of its version.
    fn decode_stored(
        version: u32,
        payload: &str,
        out: &mut dyn FnMut(Self),
    ) -> Result<(), DecodeError> {
        out(decode_event::<Self>(version, payload)?);
        Ok(())
    }
}

/// Name and version of one event of an [`EventSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventDescriptor {
    /// The stored type name.
    pub name: &'static str,
    /// The current schema version.
    pub version: u32,
}

impl EventDescriptor {
    /// The descriptor of event type `E`.
    #[must_use]
    pub const fn of<E: Event>() -> Self {
        Self {
            name: E::NAME,
            version: E::VERSION,
        }
    }
}

/// The closed set of events an aggregate produces: an enum with one variant per event type.
///
/// Implemented by `#[event]` on an enum whose variants each hold one event struct. Decoding a
/// stored `(type name, version, JSON)` triple into the right variant is a plain `match` on the
/// type name, with no registry lookups.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event set",
    label = "not an event set",
    note = "annotate an enum whose variants each hold one event with `#[factum::event]`"
)]
pub trait EventSet: Sized + Send + Sync + 'static {
    /// The Rust name of the set, for messages.
    const NAME: &'static str;

    /// The events of the set, in declaration order.
    const EVENTS: &'static [EventDescriptor];

    /// The stored type name of this event.
    fn event_type(&self) -> &'static str;

    /// The schema version of this event.
    fn schema_version(&self) -> u32;

    /// Serializes the event held by this variant (not the enum) to JSON.
    ///
    /// # Errors
    /// When the event's `Serialize` implementation fails (for example a map with non-string keys).
    fn encode(&self) -> Result<Payload, serde_json::Error>;

    /// Decodes a stored event (its JSON text) into the matching variant, handing each result to
    /// `out`: one event, or as many as upcasting an old version makes of it (possibly none).
    ///
    /// # Errors
    /// [`DecodeError`] when the type is not in the set, the version is not known, or the JSON does
    /// not match the Rust type.
    fn decode(
        event_type: &str,
        schema_version: u32,
        payload: &str,
        out: &mut dyn FnMut(Self),
    ) -> Result<(), DecodeError>;

    /// [`EventSet::decode`], collected.
    ///
    /// # Errors
    /// As [`EventSet::decode`].
    fn decode_all(
        event_type: &str,
        schema_version: u32,
        payload: &str,
    ) -> Result<Vec<Self>, DecodeError> {
        let mut events = Vec::with_capacity(1);
        Self::decode(event_type, schema_version, payload, &mut |event| {
            events.push(event);
        })?;
        Ok(events)
    }
}

/// Marks `Self` as one of the events of the set `S`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not one of the events of `{S}`",
    label = "this event is not in the aggregate's event set",
    note = "add a variant holding `{Self}` to `{S}`, or remove this apply function"
)]
pub trait EventOf<S: EventSet>: Event {}

/// Values a command handler may return as its events: one event, the set itself, `()` for none,
/// and `Vec`s, `Option`s, arrays and tuples of those.
///
/// ```
/// # #[factum::event] #[derive(Debug, PartialEq)] pub struct A;
/// # #[factum::event] #[derive(Debug, PartialEq)] pub struct B { n: u8 }
/// #[factum::event]
/// #[derive(Debug, PartialEq)]
/// pub enum Events { A(A), B(B) }
///
/// use factum::IntoEvents;
/// let mut out = Vec::new();
/// (A, vec![B { n: 1 }, B { n: 2 }]).into_events(&mut out);
/// assert_eq!(out, [Events::A(A), Events::B(B { n: 1 }), Events::B(B { n: 2 })]);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be turned into events of `{S}`",
    label = "not events of `{S}`",
    note = "return an event of the set, the set itself, `()`, or a Vec, Option, array or tuple of those"
)]
pub trait IntoEvents<S> {
    /// Appends the events to `out`, in order.
    fn into_events(self, out: &mut Vec<S>);
}

impl<S> IntoEvents<S> for () {
    #[inline]
    fn into_events(self, _: &mut Vec<S>) {}
}

impl<S, T: IntoEvents<S>> IntoEvents<S> for Vec<T> {
    #[inline]
    fn into_events(self, out: &mut Vec<S>) {
        for item in self {
            item.into_events(out);
        }
    }
}

impl<S, T: IntoEvents<S>> IntoEvents<S> for Option<T> {
    #[inline]
    fn into_events(self, out: &mut Vec<S>) {
        if let Some(item) = self {
            item.into_events(out);
        }
    }
}

impl<S, T: IntoEvents<S>, const N: usize> IntoEvents<S> for [T; N] {
    #[inline]
    fn into_events(self, out: &mut Vec<S>) {
        for item in self {
            item.into_events(out);
        }
    }
}

macro_rules! tuple_into_events {
    ($($name:ident)+) => {
        impl<S, $($name: IntoEvents<S>),+> IntoEvents<S> for ($($name,)+) {
            #[inline]
            #[allow(non_snake_case)]
            fn into_events(self, out: &mut Vec<S>) {
                let ($($name,)+) = self;
                $($name.into_events(out);)+
            }
        }
    };
}
tuple_into_events!(A);
tuple_into_events!(A B);
tuple_into_events!(A B C);
tuple_into_events!(A B C D);
tuple_into_events!(A B C D E);
tuple_into_events!(A B C D E F);
tuple_into_events!(A B C D E F G);
tuple_into_events!(A B C D E F G H);

/// Collects anything that is [`IntoEvents`] into a `Vec`.
pub fn collect_events<S>(events: impl IntoEvents<S>) -> Vec<S> {
    let mut out = Vec::new();
    events.into_events(&mut out);
    out
}

/// The JSON of one event as stored, kept as text so that it is parsed once, into its Rust type.
///
/// It always holds valid JSON: built by serializing, by [`Payload::from_json`] (which checks), or
/// by a store reading what it stored (which was checked on the way in).
///
/// Equality compares JSON values, not text: stores may normalise whitespace and key order.
#[derive(Clone)]
pub struct Payload(Box<str>);

impl Payload {
    /// Serializes a value.
    ///
    /// # Errors
    /// When `value`'s `Serialize` implementation fails.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_string(value).map(|json| Self(json.into_boxed_str()))
    }

    /// Wraps JSON text, checking that it is valid JSON.
    ///
    /// # Errors
    /// When `json` is not valid JSON.
    pub fn from_json(json: String) -> Result<Self, serde_json::Error> {
        serde_json::from_str::<serde::de::IgnoredAny>(&json)?;
        Ok(Self(json.into_boxed_str()))
    }

    /// Wraps JSON text a store read back from a column that only accepts valid JSON.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn from_stored_json(json: String) -> Self {
        Self(json.into_boxed_str())
    }

    /// Deserializes into `T`.
    ///
    /// # Errors
    /// When the JSON does not match `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }

    /// The JSON text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The JSON as a [`serde_json::Value`].
    #[must_use]
    pub fn to_value(&self) -> serde_json::Value {
        // Valid JSON by construction, so this only fails on pathological nesting depth.
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = RawValue::from_string(self.0.to_string()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Ok(Self(raw.get().into()))
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str() || self.to_value() == other.to_value()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decodes one stored event of type `E` at exactly its schema version (no upcasting).
///
/// # Errors
/// [`DecodeError::UnknownVersion`] when `schema_version` is not `E::VERSION`, or
/// [`DecodeError::Payload`].
pub fn decode_event<E: Event>(schema_version: u32, payload: &str) -> Result<E, DecodeError> {
    if schema_version != E::VERSION {
        return Err(DecodeError::UnknownVersion {
            event_type: E::NAME.to_owned(),
            found: schema_version,
            expected: E::VERSION,
        });
    }
    serde_json::from_str(payload).map_err(|cause| DecodeError::Payload {
        event_type: E::NAME.to_owned(),
        version: schema_version,
        cause,
    })
}
