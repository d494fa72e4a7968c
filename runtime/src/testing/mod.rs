//! Test support (feature `testing`): a test kit for aggregates (given past events, when a
//! command, then new events or an error), and databases of their own for tests that need a
//! real store: `postgres::TemporaryStore` (a schema of its own on a server) and
//! `sqlite::TemporaryDatabase` (a file of its own), both [`TestDatabase`]s, so that one test
//! body, generic over it, runs on either store.
//!
//! Aggregates are pure, so their tests need no store and no runtime.
//!
//! ```
//! # #[factum::event] #[derive(Debug, Clone, PartialEq)] pub struct Incremented { by: u64 }
//! # #[factum::event] #[derive(Debug, Clone, PartialEq)] pub enum CounterEvent { Incremented(Incremented) }
//! # pub struct Increment { by: u64 }
//! # #[derive(Debug, PartialEq, thiserror::Error)] #[error("too big")] pub struct TooBig;
//! # #[derive(Default)] pub struct Counter { value: u64 }
//! # #[factum::aggregate(events = CounterEvent)]
//! # impl Counter {
//! #     #[apply] fn incremented(&mut self, e: &Incremented) { self.value += e.by; }
//! #     #[command] fn increment(&self, c: &Increment) -> Result<Incremented, TooBig> {
//! #         if self.value + c.by > 10 { return Err(TooBig); }
//! #         Ok(Incremented { by: c.by })
//! #     }
//! # }
//! use factum::testing::AggregateTest;
//!
//! AggregateTest::<Counter>::given(Incremented { by: 4 })
//!     .when(Increment { by: 5 })
//!     .then(Incremented { by: 5 });
//!
//! AggregateTest::<Counter>::given((Incremented { by: 4 }, Incremented { by: 5 }))
//!     .when(Increment { by: 2 })
//!     .then_error(TooBig);
//! ```

use std::fmt::Debug;

#[cfg(feature = "browser")]
pub mod browser;
#[cfg(feature = "postgres")]
mod cluster;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

#[cfg(any(feature = "browser", feature = "nats", feature = "postgres"))]
mod port;
#[cfg(any(feature = "browser", feature = "nats", feature = "postgres"))]
pub(crate) use port::free_port;

use crate::aggregate::{Aggregate, Handle};
use crate::event::{IntoEvents, collect_events};

#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod database;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use database::{TestDatabase, execute, fetch_all};

/// The "given" step: an aggregate rebuilt from past events.
#[derive(Debug)]
pub struct AggregateTest<A> {
    state: A,
}

impl<A: Aggregate> AggregateTest<A> {
    /// An aggregate with no history.
    #[must_use]
    pub fn given_no_events() -> Self {
        Self {
            state: A::default(),
        }
    }

    /// An aggregate rebuilt from `events`: an event, a tuple, a `Vec`...
    #[must_use]
    pub fn given(events: impl IntoEvents<A::Event>) -> Self {
        Self {
            state: A::replay(&collect_events(events)),
        }
    }

    /// The state after the given events.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// Handles `command` against the state.
    pub fn when<C>(self, command: C) -> Outcome<A, C>
    where
        A: Handle<C>,
    {
        let result = self.state.handle(&command);
        Outcome {
            state: self.state,
            result,
        }
    }
}

/// The "then" step: what the command decided.
#[derive(Debug)]
#[must_use = "an outcome asserts nothing until one of its `then` methods is called"]
pub struct Outcome<A: Handle<C>, C> {
    state: A,
    result: Result<Vec<A::Event>, <A as Handle<C>>::Error>,
}

impl<A: Handle<C>, C> Outcome<A, C> {
    /// Asserts that the command produced exactly `expected`, and returns the state after applying
    /// them.
    ///
    /// # Panics
    /// When the command failed or produced other events.
    #[track_caller]
    pub fn then(self, expected: impl IntoEvents<A::Event>) -> A
    where
        A::Event: PartialEq + Debug,
        <A as Handle<C>>::Error: Debug,
    {
        let expected = collect_events(expected);
        match self.result {
            Ok(events) => {
                assert_eq!(
                    events, expected,
                    "the command produced other events than expected"
                );
                let mut state = self.state;
                for event in &events {
                    state.apply(event);
                }
                state
            }
            Err(error) => {
                panic!("expected events {expected:?}, but the command was rejected with {error:?}")
            }
        }
    }

    /// Asserts that the command produced no events.
    ///
    /// # Panics
    /// When the command failed or produced events.
    #[track_caller]
    pub fn then_no_events(self)
    where
        A::Event: PartialEq + Debug,
        <A as Handle<C>>::Error: Debug,
    {
        self.then(());
    }

    /// Asserts that the command was rejected with `expected`.
    ///
    /// # Panics
    /// When the command succeeded or failed otherwise.
    #[track_caller]
    pub fn then_error(self, expected: <A as Handle<C>>::Error)
    where
        A::Event: Debug,
        <A as Handle<C>>::Error: PartialEq + Debug,
    {
        match self.result {
            Ok(events) => panic!(
                "expected the command to be rejected with {expected:?}, but it produced {events:?}"
            ),
            Err(error) => assert_eq!(
                error, expected,
                "the command was rejected with another error"
            ),
        }
    }

    /// Asserts that the command was rejected with an error for which `check` holds (for errors
    /// without `PartialEq`).
    ///
    /// # Panics
    /// When the command succeeded or `check` returns false.
    #[track_caller]
    pub fn then_error_matches(self, check: impl FnOnce(&<A as Handle<C>>::Error) -> bool)
    where
        A::Event: Debug,
        <A as Handle<C>>::Error: Debug,
    {
        match self.result {
            Ok(events) => panic!("expected the command to be rejected, but it produced {events:?}"),
            Err(error) => assert!(
                check(&error),
                "the command was rejected with an unexpected error: {error:?}"
            ),
        }
    }
}
