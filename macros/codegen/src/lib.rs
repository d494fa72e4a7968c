//! The code generation behind `factum-macros`, as plain functions on token streams, so that it
//! can be tested (and its expansions snapshot) without a compiler in the loop.
//!
//! Each entry point parses its input, validates it, and expands it; on mistakes it reports all
//! of them at once, at the user's tokens, and emits a fallback. The modules, by concern:
//!
//! - `ast`: the input shapes, read from syn and keeping its nodes (one file per macro family:
//!   event, aggregate, upcast, projection, saga, message); `attr` parses the arguments of our
//!   attributes and the options of our markers; `symbol` names their keys.
//! - `valid`: the judging of those shapes (headers, method signatures, rules over a whole item),
//!   which for impl blocks also yields the handlers that expansion works from.
//! - `event`, `event_set`, `aggregate`, `upcast`, `projection`, `saga`, `message`: the expansion
//!   of each macro.
//! - `fallback`: what is emitted on mistakes: the errors, the user's item, and stub
//!   implementations where they are safe, so that one mistake is one error.
//! - `ctxt`: the error collector; it reports errors in the order of the code they are about,
//!   whichever pass found them, and must be checked.

#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used)]

mod aggregate;
mod ast;
mod attr;
mod ctxt;
mod event;
mod event_set;
mod fallback;
mod message;
mod projection;
mod saga;
mod symbol;
mod upcast;
mod valid;

use proc_macro2::TokenStream;

use crate::ast::{
    AggregateInput, EventInput, MessageInput, MessageKind, ProjectionInput, SagaInput, UpcastInput,
};
use crate::ctxt::Ctxt;

/// `#[event]` on a struct (one event) or on an enum of events (an event set).
#[must_use]
pub fn event(args: TokenStream, input: TokenStream) -> TokenStream {
    let cx = Ctxt::new();
    let input = EventInput::from_syn(&cx, args, input);
    valid::event(&cx, &input);
    match (cx.check(), &input) {
        (Ok(()), EventInput::Struct(event)) => event::expand(event),
        (Ok(()), EventInput::Set(set)) => event_set::expand(set),
        (Ok(()), EventInput::Other(tokens)) => tokens.clone(),
        (Err(errors), _) => fallback::event(&input, &errors),
    }
}

/// `#[aggregate(events = ...)]` on an inherent impl block.
#[must_use]
pub fn aggregate(args: TokenStream, input: TokenStream) -> TokenStream {
    let cx = Ctxt::new();
    let input = AggregateInput::from_syn(&cx, args, input);
    let aggregate = input.map(|input| valid::aggregate(&cx, input));
    match (cx.check(), &aggregate) {
        (Ok(()), Ok(aggregate)) => aggregate::expand(aggregate),
        (Ok(()), Err(tokens)) => tokens.clone(),
        (Err(errors), aggregate) => fallback::aggregate(aggregate.as_ref(), &errors),
    }
}

/// `#[upcast]` on a function turning one version of an event into the next.
#[must_use]
pub fn upcast(args: TokenStream, input: TokenStream) -> TokenStream {
    let cx = Ctxt::new();
    let input = UpcastInput::from_syn(&cx, args, input);
    let upcast = input.and_then(|input| valid::upcast(&cx, input));
    match (cx.check(), &upcast) {
        (Ok(()), Ok(upcast)) => upcast::expand(upcast),
        (Ok(()), Err(tokens)) => tokens.clone(),
        (Err(errors), Ok(upcast)) => fallback::item_as_written(&upcast.item, &errors),
        (Err(errors), Err(tokens)) => fallback::item_as_written(tokens, &errors),
    }
}

/// `#[projection(name = ..., version = ...)]` on an inherent impl block with `#[handle]` methods.
#[must_use]
pub fn projection(args: TokenStream, input: TokenStream) -> TokenStream {
    let cx = Ctxt::new();
    let input = ProjectionInput::from_syn(&cx, args, input);
    let projection = input.map(|input| valid::projection(&cx, input));
    match (cx.check(), &projection) {
        (Ok(()), Ok(projection)) => projection::expand(projection),
        (Ok(()), Err(tokens)) => tokens.clone(),
        (Err(errors), projection) => fallback::projection(projection.as_ref(), &errors),
    }
}

/// `#[saga]` on an impl block.
#[must_use]
pub fn saga(args: TokenStream, input: TokenStream) -> TokenStream {
    let cx = Ctxt::new();
    let input = SagaInput::from_syn(&cx, args, input);
    let saga = input.map(|input| valid::saga(&cx, input));
    match (cx.check(), &saga) {
        (Ok(()), Ok(saga)) => saga::expand(saga),
        (Ok(()), Err(tokens)) => tokens.clone(),
        (Err(errors), saga) => fallback::saga(saga.as_ref(), &errors),
    }
}

/// `#[command]`: on a type, a command message; on a method, the marker of an aggregate's
/// command handler (on its own: an error).
#[must_use]
pub fn command(args: TokenStream, input: TokenStream) -> TokenStream {
    message(MessageKind::Command, args, input)
}

/// `#[timeout]`: on a type, a saga timeout; on a method, the marker of a saga's timeout
/// handler (on its own: an error).
#[must_use]
pub fn timeout(args: TokenStream, input: TokenStream) -> TokenStream {
    message(MessageKind::Timeout, args, input)
}

fn message(kind: MessageKind, args: TokenStream, input: TokenStream) -> TokenStream {
    if ast::on_a_function(&input) {
        return fallback::stray_marker(kind.marker(), input);
    }
    let cx = Ctxt::new();
    let input = MessageInput::from_syn(&cx, kind, args, input);
    if let Ok(message) = &input {
        valid::message(&cx, message);
    }
    match (cx.check(), &input) {
        (Ok(()), Ok(message)) => message::expand(message),
        (Ok(()), Err(tokens)) => tokens.clone(),
        (Err(errors), Ok(message)) => fallback::item_as_written(&message.item, &errors),
        (Err(errors), Err(tokens)) => fallback::item_as_written(tokens, &errors),
    }
}

/// A marker of a method (`#[apply]`, `#[handle]`, `#[start]`, ...) used on its own, outside the
/// impl block whose attribute consumes it: always an error.
#[must_use]
pub fn stray_marker(marker: &str, input: TokenStream) -> TokenStream {
    fallback::stray_marker(marker, input)
}
