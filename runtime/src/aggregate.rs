//! Aggregates: state rebuilt from events, and command handlers that decide new events.
//!
//! `#[aggregate]` on an inherent `impl` block implements these traits from the methods marked
//! `#[apply]` (state changes, cannot fail) and `#[command]` (invariants, return events or a
//! domain error).

use crate::event::{EventSet, IntoEvents};

/// An event-sourced aggregate: its state, its type name and its set of events.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an aggregate",
    label = "not an aggregate",
    note = "annotate an `impl` block of the state type with `#[factum::aggregate(events = YourEventSet)]`"
)]
pub trait Aggregate: Default + Send + Sync + 'static {
    /// The aggregate type name stored with every event of its streams.
    const TYPE: &'static str;

    /// The schema version of the state, stored with snapshots: bump it
    /// (`#[aggregate(state_version = N)]`) when the state's shape changes, and snapshots of older
    /// versions are ignored.
    const STATE_VERSION: u32 = 1;

    /// The names of the commands it handles, for the catalog's flow diagram.
    const COMMANDS: &'static [&'static str] = &[];

    /// The events this aggregate produces and applies.
    type Event: EventSet;

    /// Applies one event to the state: a plain `match` over the set calling the apply functions.
    fn apply(&mut self, event: &Self::Event);

    /// Rebuilds a state from events, in order.
    fn replay<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self {
        let mut state = Self::default();
        for event in events {
            state.apply(event);
        }
        state
    }
}

/// Applies events of type `E` to the state. Implemented for each `#[apply]` function.
#[diagnostic::on_unimplemented(
    message = "aggregate `{Self}` has no apply function for event `{E}`",
    label = "`{E}` has no apply function in `{Self}`",
    note = "add `#[apply] fn ...(&mut self, event: &{E})` to the `#[aggregate]` impl, or list the event in `#[aggregate(ignore({E}))]`"
)]
pub trait Apply<E> {
    /// Changes the state; no business logic, cannot fail.
    fn apply(&mut self, event: &E);
}

/// The `match` over an event set that calls the aggregate's [`Apply`] implementations.
/// Implemented by `#[event]` on the set for every aggregate that applies all its events.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event set whose every event `{A}` can apply",
    label = "not an event set applicable to `{A}`",
    note = "name an enum annotated with `#[factum::event]` in `#[aggregate(events = ...)]`"
)]
pub trait ApplyTo<A> {
    /// Applies `self` to `aggregate`.
    fn apply_to(&self, aggregate: &mut A);
}

/// Handles command `C`: checks invariants against the current state and returns the events to
/// append, or a domain error. Implemented for each `#[command]` function.
#[diagnostic::on_unimplemented(
    message = "aggregate `{Self}` has no command handler for `{C}`",
    label = "`{C}` is not handled by `{Self}`",
    note = "add `#[command] fn ...(&self, command: &{C}) -> Result<..., YourError>` to the `#[aggregate]` impl"
)]
pub trait Handle<C>: Aggregate {
    /// The domain error of this command.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides the events for `command`.
    ///
    /// # Errors
    /// The domain error when the command breaks an invariant.
    fn handle(&self, command: &C) -> Result<Vec<Self::Event>, Self::Error>;
}

/// What a `#[command]` function may return: `Result<T, E>` where `T` is [`IntoEvents`] (an
/// event, `()`, a `Vec`, an `Option`, a tuple...) and `E` the domain error.
#[diagnostic::on_unimplemented(
    message = "a command handler must return `Result<events, error>`, not `{Self}`",
    label = "expected `Result<events, error>`",
    note = "events: an event of `{S}`, the set itself, `()`, or a Vec, Option, array or tuple of those; error: your domain error type"
)]
pub trait HandlerOutput<S> {
    /// The domain error.
    type Error;

    /// The events, collected.
    ///
    /// # Errors
    /// The handler's domain error.
    fn into_result(self) -> Result<Vec<S>, Self::Error>;
}

impl<S, T: IntoEvents<S>, E> HandlerOutput<S> for Result<T, E> {
    type Error = E;

    #[inline]
    fn into_result(self) -> Result<Vec<S>, E> {
        self.map(|events| {
            let mut out = Vec::new();
            events.into_events(&mut out);
            out
        })
    }
}
