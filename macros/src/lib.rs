//! Procedural macros of Factum. Use them through the `factum` crate, which re-exports them and
//! documents them.
#![forbid(unsafe_code)]
// Library code handles input and I/O failures; tests may unwrap.
#![warn(clippy::unwrap_used)]

use proc_macro::TokenStream;

/// Declares a domain event (on a struct) or an event set (on an enum whose variants each hold one
/// event).
///
/// On a struct: derives `Serialize`, `Deserialize` and `JsonSchema`, and implements
/// `factum::Event` with a stable type name and a schema version:
/// `#[event]`, `#[event(version = 2)]`, `#[event(name = "MoneyDeposited", version = 2)]`.
///
/// On an enum: implements `factum::EventSet` (decoding a stored event by type name), the apply
/// `match` used by `#[aggregate]`, and `From` each event; checks at compile time that no two
/// events of the set share a type name.
#[proc_macro_attribute]
pub fn event(args: TokenStream, input: TokenStream) -> TokenStream {
    factum_codegen::event(args.into(), input.into()).into()
}

/// Makes the state type of an `impl` block an aggregate:
/// `#[aggregate(events = AccountEvent)]`, optionally `name = "Account"` and
/// `ignore(EventA, EventB)` for events that change no state.
///
/// Methods marked `#[apply]` (`fn(&mut self, event: &Event)`) apply events; every event of the set
/// needs one unless ignored, and an apply function for an event outside the set is an error.
/// Methods marked `#[command]` (`fn(&self, command: &Command) -> Result<events, Error>`) handle
/// commands.
#[proc_macro_attribute]
pub fn aggregate(args: TokenStream, input: TokenStream) -> TokenStream {
    factum_codegen::aggregate(args.into(), input.into()).into()
}

/// Turns one version of an event into the next: `#[upcast] fn v1_to_v2(old: EventV1) -> Event`.
///
/// The function is pure (no I/O). It may return the next version, `Option` of it (to drop the
/// old event) or `Vec` of it (to split it). Both types must be `#[event]`s with the same name and
/// consecutive versions.
#[proc_macro_attribute]
pub fn upcast(args: TokenStream, input: TokenStream) -> TokenStream {
    factum_codegen::upcast(args.into(), input.into()).into()
}

/// Makes a read model fed from the global feed: `#[projection(name = "balances", version = 1)]`
/// on an impl block whose `#[handle]` methods take one event type, its envelope and the batch's
/// transaction: `async fn on_x(&mut self, event: &X, envelope: &Envelope, tx: &mut Tx<'_>)
/// -> Result<(), E>` (`factum::Tx`: runs on either store; `&mut PgConnection` or
/// `&mut SqliteConnection`: on that store only). `#[handle(side_effects)] async fn on_x(&mut
/// self, event: &X, envelope: &Envelope) -> Result<(), E>` (no transaction) acts outside the
/// database: the batch records the decision, the handler runs after the commit and is retried
/// until it succeeds, with `envelope.event_id` as its idempotency key; rebuilds skip it. Optionally
/// `#[flush] async fn(&mut self, tx: &mut Tx<'_>) -> Result<(), E>` writes what the handlers
/// buffered, once per batch, `#[discard] fn(&mut self)` drops that buffer before every batch,
/// and `#[reset] async fn(&mut self, tx: &mut Tx<'_>) -> Result<(), E>` clears the read model
/// for rebuilds. A handler may take `origin: &Origin<'_>` instead of `envelope: &Envelope`
/// (ids, stream, versions, positions and recording time, without metadata, correlation,
/// causation or actor), or `source: &Source<'_>` (the stream, event type and feed position
/// only): the runner reads only the columns of what the handlers take.
#[proc_macro_attribute]
pub fn projection(args: TokenStream, input: TokenStream) -> TokenStream {
    factum_codegen::projection(args.into(), input.into()).into()
}

/// Marks a projection handler inside a `#[projection]` impl block (on its own: an error).
#[proc_macro_attribute]
pub fn handle(_args: TokenStream, input: TokenStream) -> TokenStream {
    factum_codegen::stray_marker("handle", input.into()).into()
}

/// Marks the method of a `#[projection]` that writes what its handlers buffered, once per batch,
/// in the batch's transaction (on its own: an error).
#[proc_macro_attribute]
pub fn flush(_args: TokenStream, input: TokenStream) -> TokenStream {
    factum_codegen::stray_marker("flush", input.into()).into()
}

/// Marks the method of a `#[projection]` that drops what its handlers buffered, called before
/// every batch (on its own: an error).
#[proc_macro_attribute]
pub fn discard(_args: TokenStream, input: TokenStream) -> TokenStream {
    factum_codegen::stray_marker("discard", input.into()).into()
}

/// Marks the method of a `#[projection]` that clears its read model, for rebuilds from the
/// start: `#[reset] async fn reset(&mut self, tx: &mut Tx<'_>) -> Result<(), E>` (on its own:
/// an error).
#[proc_macro_attribute]
pub fn reset(_args: TokenStream, input: TokenStream) -> TokenStream {
    factum_codegen::stray_marker("reset", input.into()).into()
}

/// Marks an apply function inside an `#[aggregate]` impl block (on its own: an error).
#[proc_macro_attribute]
pub fn apply(_args: TokenStream, input: TokenStream) -> TokenStream {
    factum_codegen::stray_marker("apply", input.into()).into()
}

/// On a struct or enum: a command message (a stable name and a JSON form), which sagas send
/// and the command bus delivers; `#[command(name = "...")]` sets the name. On a method: marks
/// a command handler inside an `#[aggregate]` impl block (on its own: an error).
#[proc_macro_attribute]
pub fn command(args: TokenStream, input: TokenStream) -> TokenStream {
    factum_codegen::command(args.into(), input.into()).into()
}

/// Implements a saga on an inherent impl block: `#[start(by = field)]`, `#[handle(by = field)]`
/// (`#[handle(by = field, end)]`), `#[timeout]` and `#[rejected]` handlers;
/// `#[saga(name = "...", commands(...))]` names it and lists the commands it sends.
#[proc_macro_attribute]
pub fn saga(args: TokenStream, input: TokenStream) -> TokenStream {
    factum_codegen::saga(args.into(), input.into()).into()
}

/// Marks the handler of the event that starts a saga instance (on its own: an error).
#[proc_macro_attribute]
pub fn start(_args: TokenStream, input: TokenStream) -> TokenStream {
    factum_codegen::stray_marker("start", input.into()).into()
}

/// On a struct or enum: a saga timeout (a stable name and a JSON form). On a method: marks a
/// saga's timeout handler (on its own: an error).
#[proc_macro_attribute]
pub fn timeout(args: TokenStream, input: TokenStream) -> TokenStream {
    factum_codegen::timeout(args.into(), input.into()).into()
}

/// Marks the handler of a saga's commands refused by their aggregate (on its own: an error).
#[proc_macro_attribute]
pub fn rejected(_args: TokenStream, input: TokenStream) -> TokenStream {
    factum_codegen::stray_marker("rejected", input.into()).into()
}
