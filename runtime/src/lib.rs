//! Event sourcing for Rust.
//!
//! Annotate domain types and Factum generates the plumbing:
//!
//! - [`#[event]`](macro@event) on a struct makes it an [`Event`] (stable type name, schema
//!   version, serde, JSON Schema); on an enum of events it makes an [`EventSet`].
//! - [`#[aggregate]`](macro@aggregate) on an `impl` block turns `#[apply]` functions into the
//!   [`Aggregate`] apply dispatch (a plain `match`) and `#[command]` functions into [`Handle`]
//!   implementations, checking at compile time that every event of the set is applied.
//!
//! - [`#[projection]`](macro@projection) builds read models fed from the global feed, with an
//!   exactly-once effect ([`projection`](mod@projection)); [`#[saga]`](macro@saga) builds durable process
//!   managers that send [`#[command]`](macro@command) messages and schedule
//!   [`#[timeout]`](macro@timeout)s ([`saga`](mod@saga)). Both run on either SQL store: their
//!   handlers write through [`Tx`], one transaction type for PostgreSQL and SQLite.
//!
//! The runtime stores events with their [`Envelope`] in an [`EventStore`] (SQLite by default,
//! PostgreSQL with the `postgres` feature, or in memory), executes commands with optimistic
//! concurrency and retries ([`Repository`]), and writes the event catalog ([`catalog`]); the
//! `testing` feature adds the aggregate test kit and test databases (`factum::testing`), the
//! `cli` feature the `factum` tool. `ARCHITECTURE.md` in the repository maps the modules.
//!
//! ```
//! use factum::{aggregate, event, MemoryStore, Repository};
//!
//! #[event]
//! #[derive(Debug, Clone, PartialEq)]
//! pub struct Deposited { pub amount: u64 }
//!
//! #[event]
//! #[derive(Debug, Clone, PartialEq)]
//! pub enum WalletEvent { Deposited(Deposited) }
//!
//! pub struct Deposit { pub amount: u64 }
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("deposits must be positive")]
//! pub struct ZeroDeposit;
//!
//! #[derive(Default)]
//! pub struct Wallet { balance: u64 }
//!
//! #[aggregate(events = WalletEvent)]
//! impl Wallet {
//!     #[apply]
//!     fn deposited(&mut self, event: &Deposited) {
//!         self.balance += event.amount;
//!     }
//!
//!     #[command]
//!     fn deposit(&self, command: &Deposit) -> Result<Deposited, ZeroDeposit> {
//!         if command.amount == 0 {
//!             return Err(ZeroDeposit);
//!         }
//!         Ok(Deposited { amount: command.amount })
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let wallets = Repository::<Wallet, _>::new(MemoryStore::new());
//! wallets.execute("wallet-1", Deposit { amount: 5 }).await?;
//! assert_eq!(wallets.load("wallet-1").await?.state.balance, 5);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
#![forbid(unsafe_code)]
// Library code handles input and I/O failures; tests may unwrap.
#![warn(clippy::unwrap_used)]

extern crate self as factum;

pub mod aggregate;
#[cfg(feature = "archive")]
pub mod archive;
pub mod catalog;
#[cfg(feature = "cli")]
pub mod cli;
pub mod clock;
pub mod command;
#[cfg(feature = "testing")]
pub mod conformance;
#[cfg(feature = "postgres")]
pub mod consumer;
pub mod envelope;
pub mod error;
pub mod event;
pub mod failure;
pub mod feed;
pub mod metrics;
pub mod pii;
pub mod position;
pub mod projection;
pub mod relay;
pub mod repository;
pub mod saga;
pub mod snapshot;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace;
pub mod upcast;

#[doc(hidden)]
pub mod __private;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

pub use factum_macros::{
    aggregate, apply, command, discard, event, flush, handle, projection, rejected, reset, saga,
    start, timeout, upcast,
};

pub use crate::aggregate::{Aggregate, Apply, ApplyTo, Handle, HandlerOutput};
pub use crate::command::{Command, CommandContext};
pub use crate::envelope::{
    Envelope, EnvelopeFields, Metadata, NewEvent, Origin, RecordedEvent, Source,
};
pub use crate::error::{DecodeError, Error, EventPart, ExecuteError, Result, StreamIdProblem};
pub use crate::event::{Event, EventDescriptor, EventOf, EventSet, IntoEvents, Payload};
pub use crate::failure::Transient;
pub use crate::repository::{Executed, Execution, Loaded, Repository};
pub use crate::snapshot::Snapshot;
/// Event, command and correlation ids.
pub use uuid::Uuid;

pub use crate::position::{ExpectedVersion, FeedPosition, KnownHead};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use crate::store::Transaction;
pub use crate::store::{
    EventStore, FeedBatch, FeedQuery, HistoryItem, MemoryStore, StreamEvent, StreamEventRef, Tx,
};
