//! Upcasting: reading events stored at an older schema version as the current Rust type.
//!
//! Older versions of an event stay in the code as types of their own, tagged with the same name
//! and their version (`#[event(name = "MoneyWithdrawn", version = 1)] struct MoneyWithdrawnV1`).
//! An [`#[upcast]`](macro@crate::upcast) function turns version n into version n + 1 (or into
//! nothing, or into several events of version n + 1). `#[event]` on version n + 1 requires that
//! upcaster, so a missing step, a step skipped, or two upcasters for one step fail to compile.
//!
//! ```
//! use factum::{event, upcast, Event, EventSet};
//!
//! #[event(name = "Renamed", version = 1)]
//! pub struct RenamedV1 { pub name: String }
//!
//! #[event(version = 2)]
//! #[derive(Debug, PartialEq)]
//! pub struct Renamed { pub first: String, pub last: String }
//!
//! #[upcast]
//! fn split_name(old: RenamedV1) -> Renamed {
//!     let (first, last) = old.name.split_once(' ').unwrap_or((&old.name, ""));
//!     Renamed { first: first.to_owned(), last: last.to_owned() }
//! }
//!
//! #[event]
//! #[derive(Debug, PartialEq)]
//! pub enum PersonEvent { Renamed(Renamed) }
//!
//! let read = PersonEvent::decode_all("Renamed", 1, r#"{"name":"Ada Lovelace"}"#)?;
//! assert_eq!(read, [PersonEvent::Renamed(Renamed { first: "Ada".into(), last: "Lovelace".into() })]);
//! # Ok::<_, factum::DecodeError>(())
//! ```

use crate::event::Event;

/// `Self` is the version after `FROM` of an event, and knows how to upcast that version.
/// Implemented by `#[upcast]`; required by `#[event]` for every version above 1.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no upcaster from version {FROM}",
    label = "no `#[upcast]` function turns version {FROM} of this event into `{Self}`",
    note = "keep the version {FROM} type (tagged `#[event(name = \"...\", version = {FROM})]`) and add `#[upcast] fn ...(old: ThatType) -> {Self}`"
)]
pub trait UpcastFrom<const FROM: u32>: Event {
    /// The type of version `FROM`.
    type Previous: Event;

    /// Turns one event of the previous version into none, one or several of this version.
    fn upcast(previous: Self::Previous, out: &mut dyn FnMut(Self));
}

/// What an upcaster may return: the next version, `Option` of it (the old event is dropped when
/// `None`), or a `Vec` of it (the old event is split).
pub trait UpcastOutput<E> {
    /// Hands the events to `out`, in order.
    fn emit(self, out: &mut dyn FnMut(E));
}

impl<E: Event> UpcastOutput<E> for E {
    #[inline]
    fn emit(self, out: &mut dyn FnMut(E)) {
        out(self);
    }
}

impl<E: Event> UpcastOutput<E> for Option<E> {
    #[inline]
    fn emit(self, out: &mut dyn FnMut(E)) {
        if let Some(event) = self {
            out(event);
        }
    }
}

impl<E: Event> UpcastOutput<E> for Vec<E> {
    #[inline]
    fn emit(self, out: &mut dyn FnMut(E)) {
        for event in self {
            out(event);
        }
    }
}

/// The versions before an event, reached through its upcaster from version `FROM`. `#[event]`
/// uses it for versions above 1, so that a missing upcaster is reported once.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no upcaster from version {FROM}",
    label = "no `#[upcast]` function turns version {FROM} of this event into `{Self}`",
    note = "keep the version {FROM} type (tagged `#[event(name = \"...\", version = {FROM})]`) and add `#[upcast] fn ...(old: ThatType) -> {Self}`"
)]
pub trait Chain<const FROM: u32>: Event {
    /// Decodes an older version through the upcaster into `Self`.
    ///
    /// # Errors
    /// As [`Event::decode_stored`].
    fn decode_older(
        version: u32,
        payload: &str,
        out: &mut dyn FnMut(Self),
    ) -> Result<(), crate::error::DecodeError>;

    /// The schemas of the older versions.
    fn older_schemas(out: &mut Vec<crate::event::EventSchema>);
}

impl<E: UpcastFrom<FROM>, const FROM: u32> Chain<FROM> for E {
    fn decode_older(
        version: u32,
        payload: &str,
        out: &mut dyn FnMut(Self),
    ) -> Result<(), crate::error::DecodeError> {
        <E::Previous as Event>::decode_stored(version, payload, &mut |previous| {
            E::upcast(previous, out);
        })
    }

    fn older_schemas(out: &mut Vec<crate::event::EventSchema>) {
        <E::Previous as Event>::schema_versions(out);
    }
}
