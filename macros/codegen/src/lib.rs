//! The code generation behind `factum-macros`, as plain functions on token streams, so that it
//! can be tested (and its expansions snapshot) without a compiler in the loop.
//!
//! Each entry point parses into our own syntax tree (`ast`), validates it (`check`), and
//! expands it; on mistakes it reports all of them and emits a fallback (`fallback`).

#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used)]

mod aggregate;
mod ast;
mod attr;
mod check;
mod ctxt;
mod event;
mod event_set;
mod fallback;
mod message;
mod projection;
mod saga;
mod symbol;
mod upcast;

use proc_macro2::TokenStream;

use crate::ast::{
    AggregateInput, EventInput, MessageInput, MessageKind, ProjectionInput, SagaInput, UpcastFn,
};
use crate::ctxt::Ctxt;

/// `#[event]` on a struct (one event) or on an enum of events (an event set).
#[must_use]
pub fn event(args: TokenStream, input: TokenStream) -> TokenStream {
    let cx = Ctxt::new();
    let input = EventInput::from_syn(&cx, args, input);
    check::event(&cx, &input);
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
    if let Ok(input) = &input {
        check::aggregate(&cx, input);
    }
    match (cx.check(), &input) {
        (Ok(()), Ok(input)) => aggregate::expand(input),
        (Ok(()), Err(tokens)) => tokens.clone(),
        (Err(errors), input) => fallback::aggregate(input.as_ref(), &errors),
    }
}

/// `#[upcast]` on a function turning one version of an event into the next.
#[must_use]
pub fn upcast(args: TokenStream, input: TokenStream) -> TokenStream {
    let cx = Ctxt::new();
    let input = UpcastFn::from_syn(&cx, args, input);
    match (cx.check(), &input) {
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
    if let Ok(input) = &input {
        check::projection(&cx, input);
    }
    match (cx.check(), &input) {
        (Ok(()), Ok(input)) => projection::expand(input),
        (Ok(()), Err(tokens)) => tokens.clone(),
        (Err(errors), Ok(input)) => fallback::item_as_written(&input.item, &errors),
        (Err(errors), Err(tokens)) => fallback::item_as_written(tokens, &errors),
    }
}

/// `#[apply]` or `#[command]` used on its own: always an error (the `#[aggregate]` impl block
/// consumes these markers).
/// `#[saga]` on an impl block.
#[must_use]
pub fn saga(args: TokenStream, input: TokenStream) -> TokenStream {
    let cx = Ctxt::new();
    let input = SagaInput::from_syn(&cx, args, input);
    if let Ok(input) = &input {
        check::saga(&cx, input);
    }
    match (cx.check(), &input) {
        (Ok(()), Ok(input)) => saga::expand(input),
        (Ok(()), Err(tokens)) => tokens.clone(),
        (Err(errors), Ok(input)) => fallback::item_as_written(&input.item, &errors),
        (Err(errors), Err(tokens)) => fallback::item_as_written(tokens, &errors),
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
    let parsed = MessageInput::from_syn(&cx, kind, args, input);
    match (cx.check(), &parsed) {
        (Ok(()), Ok(message)) => message::expand(message),
        (Ok(()), Err(tokens)) => tokens.clone(),
        (Err(errors), Ok(message)) => fallback::item_as_written(&message.item, &errors),
        (Err(errors), Err(tokens)) => fallback::item_as_written(tokens, &errors),
    }
}

#[must_use]
pub fn stray_marker(marker: &str, input: TokenStream) -> TokenStream {
    fallback::stray_marker(marker, input)
}
