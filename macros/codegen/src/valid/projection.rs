//! Judging `#[projection]`: the signatures of `#[handle]`, `#[flush]`, `#[discard]` and
//! `#[reset]` methods, and the rules of the whole block (a handler at least, one handler per
//! event, one connection type, a `#[discard]` beside a `#[flush]`, no side effects in an inline
//! projection).
//!
//! The connection type says where the projection runs: `Tx<'_>` (factum's transaction, any
//! path ending in `Tx`) on either store, another type (`PgConnection`, `SqliteConnection`) on
//! that type's store only.

use syn::{Ident, ItemImpl, ReturnType, Signature, Type};

use super::{
    ImplRules, impl_header, receiver_or_name, reference_receiver, shared_reference, typed_inputs,
};
use crate::ast::{ProjectionInput, ProjectionMethod};
use crate::ctxt::{Ctxt, Place, tokens_key};

/// A projection as judged.
pub struct Projection {
    /// The impl block, with the markers removed.
    pub item: ItemImpl,
    /// The projection's name (empty when none could be derived, which is reported).
    pub name: String,
    pub version: u32,
    /// The handlers whose signatures are right.
    pub handlers: Vec<HandlerFn>,
    /// The `#[flush]` method, when its signature is right.
    pub flush: Option<FlushFn>,
    /// The `#[discard]` method, when its signature is right.
    pub discard: Option<Ident>,
    /// The `#[reset]` method, when its signature is right.
    pub reset: Option<FlushFn>,
    /// The connection type of the handlers (the first one's, else the flush's or the reset's).
    pub connection: Option<Connection>,
    /// `inline`: it may also run in the append's transaction.
    pub inline: bool,
    /// Whether traits can be implemented for the impl block's type (inherent, not generic, a
    /// plain path): only then does the fallback emit stubs.
    pub well_formed: bool,
}

/// `#[handle] async fn method(&mut self, event: &Event, envelope: &Envelope, tx: &mut Conn)`,
/// or `#[handle(side_effects)] async fn method(&mut self, event: &Event, envelope: &Envelope)`
/// (run after the batch commits, outside any transaction: no connection). The envelope may be
/// `origin: &Origin<'_>` instead (the event's ids and positions only), or `source: &Source<'_>`
/// (its stream and feed position only).
pub struct HandlerFn {
    pub method: Ident,
    pub event: Type,
    /// What of the envelope it takes.
    pub view: EnvelopeView,
    /// What it writes through; `None` for a side-effect handler.
    pub connection: Option<Type>,
    /// `#[handle(side_effects)]`.
    pub side_effects: bool,
}

/// What of the stored event a handler takes, from the least to the most the runner reads.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EnvelopeView {
    /// `&Source<'_>`.
    Source,
    /// `&Origin<'_>`.
    Origin,
    /// `&Envelope` (or any other type: the compiler says when it is not one).
    Envelope,
}

/// `#[flush] async fn method(&mut self, tx: &mut Conn) -> Result<(), E>` (and `#[reset]`, of the
/// same shape).
pub struct FlushFn {
    pub method: Ident,
    pub connection: Type,
}

/// What the handlers write through.
#[derive(Clone)]
pub enum Connection {
    /// `Tx<'_>`: either store.
    Tx,
    /// A store's own connection type: that store only.
    Store(Box<Type>),
}

impl Connection {
    pub fn of(ty: &Type) -> Self {
        if named(ty, "Tx") {
            Self::Tx
        } else {
            Self::Store(Box::new(ty.clone()))
        }
    }

    /// What two connection types are compared by.
    fn key(ty: &Type) -> String {
        match Self::of(ty) {
            Self::Tx => "Tx".to_owned(),
            Self::Store(ty) => tokens_key(&ty),
        }
    }
}

const HANDLE_USAGE: &str = "#[handle] async fn on_event(&mut self, event: &EventType, envelope: &Envelope, tx: &mut Tx<'_>) -> Result<(), Error>";

const SIDE_EFFECTS_USAGE: &str = "#[handle(side_effects)] async fn on_event(&mut self, event: &EventType, envelope: &Envelope) -> Result<(), Error>";

const FLUSH_USAGE: &str =
    "#[flush] async fn flush(&mut self, tx: &mut Tx<'_>) -> Result<(), Error>";

const RESET_USAGE: &str =
    "#[reset] async fn reset(&mut self, tx: &mut Tx<'_>) -> Result<(), Error>";

pub fn projection(cx: &Ctxt, input: ProjectionInput) -> Projection {
    let ProjectionInput {
        item,
        args,
        name,
        methods,
    } = input;
    let well_formed = impl_header(
        cx,
        &item,
        name.as_deref(),
        &ImplRules {
            kind: "projection",
            not_generic: "projections cannot be generic: a checkpoint is kept under one name",
            name_of: "a projection name",
        },
    );
    let mut handlers = Vec::new();
    let mut flush: Option<FlushFn> = None;
    let mut discard: Option<Ident> = None;
    let mut reset: Option<FlushFn> = None;
    // The first method marked `#[flush]` / `#[discard]` / `#[reset]`, right or not.
    let (mut flush_marked, mut discard_marked): (Option<&Ident>, Option<&Ident>) = (None, None);
    let mut reset_marked: Option<&Ident> = None;
    for method in &methods {
        let (sig, ident) = (&method.sig, &method.sig.ident);
        cx.about(Place::Member(method.index), || match method.role {
            ProjectionMethod::Handle { side_effects } => {
                handlers.extend(handler_fn(cx, sig, side_effects));
            }
            ProjectionMethod::Flush => {
                if let Some(first) = flush_marked {
                    cx.error_spanned_by(
                        ident,
                        format!("a projection has one `#[flush]` method, and `{first}` is it: merge them"),
                    );
                } else {
                    flush_marked = Some(ident);
                    flush = flush_fn(cx, sig, "#[flush]", FLUSH_USAGE);
                }
            }
            ProjectionMethod::Reset => {
                if let Some(first) = reset_marked {
                    cx.error_spanned_by(
                        ident,
                        format!("a projection has one `#[reset]` method, and `{first}` is it: merge them"),
                    );
                } else {
                    reset_marked = Some(ident);
                    reset = flush_fn(cx, sig, "#[reset]", RESET_USAGE);
                }
            }
            ProjectionMethod::Discard => {
                if let Some(first) = discard_marked {
                    cx.error_spanned_by(
                        ident,
                        format!("a projection has one `#[discard]` method, and `{first}` is it: merge them"),
                    );
                } else {
                    discard_marked = Some(ident);
                    if discard_signature(cx, sig) {
                        discard = Some(ident.clone());
                    }
                }
            }
        });
    }
    let handles = methods
        .iter()
        .filter(|method| matches!(method.role, ProjectionMethod::Handle { .. }))
        .count();
    cx.about(Place::Whole, || {
        if let (Some(flush), None) = (flush_marked, discard_marked) {
            cx.error_spanned_by(
                flush,
                "a projection that buffers writes until `#[flush]` says how to drop a rolled-back batch's buffer: add `#[discard] fn discard(&mut self)` (called before every batch)",
            );
        }
        if handles == 0 {
            cx.error_spanned_by(
                &item.self_ty,
                format!("a projection handles at least one event: mark a method `{HANDLE_USAGE}`"),
            );
        }
        if let Some(inline) = &args.inline {
            for handler in handlers.iter().filter(|h| h.side_effects) {
                cx.error_spanned_by(
                    inline,
                    format!(
                        "an inline projection runs in the append's transaction, which may still roll back, so it cannot act outside the database: move `#[handle(side_effects)] {}` to a projection that is not inline",
                        handler.method
                    ),
                );
            }
        }
    });
    let connection = handlers
        .iter()
        .find_map(|h| h.connection.as_ref())
        .or_else(|| flush.as_ref().map(|f| &f.connection))
        .or_else(|| reset.as_ref().map(|r| &r.connection))
        .map(Connection::of)
        // Only side-effect handlers: nothing is written in the batch, on either store.
        .or_else(|| (!handlers.is_empty()).then_some(Connection::Tx));
    let projection = Projection {
        item,
        name: name.unwrap_or_default(),
        version: args.version.as_ref().map_or(1, |(version, _)| *version),
        handlers,
        flush,
        discard,
        reset,
        connection,
        inline: args.inline.is_some(),
        well_formed,
    };
    cx.about(Place::Whole, || whole(cx, &projection));
    projection
}

fn handler_fn(cx: &Ctxt, sig: &Signature, side_effects: bool) -> Option<HandlerFn> {
    let usage = if side_effects {
        SIDE_EFFECTS_USAGE
    } else {
        HANDLE_USAGE
    };
    let mut ok = true;
    if sig.asyncness.is_none() {
        cx.error_spanned_by(
            sig.fn_token,
            format!("projection handlers are async: `{usage}`"),
        );
        ok = false;
    }
    if !sig.generics.params.is_empty() {
        cx.error_spanned_by(
            &sig.generics,
            "projection handlers take no generic parameters",
        );
        ok = false;
    }
    if !matches!(reference_receiver(sig), Some((true, _))) {
        cx.error_spanned_by(
            receiver_or_name(sig),
            format!("projection handlers take `&mut self`: `{usage}`"),
        );
        ok = false;
    }
    if matches!(sig.output, ReturnType::Default) {
        cx.error_spanned_by(
            &sig.ident,
            format!("projection handlers return `Result<(), Error>`: `{usage}`"),
        );
        ok = false;
    }
    let typed = typed_inputs(sig);
    let (event, envelope, connection) = match (typed.as_slice(), side_effects) {
        ([event, envelope, connection], false) => (event, envelope, Some(connection)),
        ([event, envelope], true) => (event, envelope, None),
        ([_, _, connection], true) => {
            cx.error_spanned_by(
                &connection.ty,
                format!(
                    "a side-effect handler runs after its batch commits, outside any transaction (so a slow one holds no one back), and is retried until it succeeds: drop the transaction and use `envelope.event_id` as the idempotency key: `{usage}`"
                ),
            );
            return None;
        }
        _ => {
            let takes = if side_effects {
                "the event and its envelope"
            } else {
                "the event, its envelope and the transaction"
            };
            cx.error_spanned_by(
                &sig.ident,
                format!("projection handlers take {takes}: `{usage}`"),
            );
            return None;
        }
    };
    let Some(event) = shared_reference(&event.ty) else {
        cx.error_spanned_by(
            &event.ty,
            format!("the event is taken by shared reference: `{usage}`"),
        );
        return None;
    };
    let connection = match connection.map(|connection| &*connection.ty) {
        None => None,
        Some(Type::Reference(reference)) if reference.mutability.is_some() => {
            Some((*reference.elem).clone())
        }
        Some(other) => {
            cx.error_spanned_by(
                other,
                format!("the transaction is taken by mutable reference: `{usage}`"),
            );
            return None;
        }
    };
    ok.then(|| HandlerFn {
        method: sig.ident.clone(),
        event: event.clone(),
        view: envelope_view(&envelope.ty),
        connection,
        side_effects,
    })
}

/// What the envelope parameter takes: `&Origin<'_>` or `&Source<'_>` (by the last path
/// segment), or the whole envelope (any other type: the compiler says when it is not one).
fn envelope_view(ty: &Type) -> EnvelopeView {
    match shared_reference(ty) {
        Some(ty) if named(ty, "Origin") => EnvelopeView::Origin,
        Some(ty) if named(ty, "Source") => EnvelopeView::Source,
        _ => EnvelopeView::Envelope,
    }
}

/// Whether `ty` is a plain path whose last segment is `name` (`Tx<'_>`, `factum::Origin<'_>`).
fn named(ty: &Type, name: &str) -> bool {
    matches!(ty, Type::Path(path)
        if path.qself.is_none()
            && path.path.segments.last().is_some_and(|last| last.ident == name))
}

/// Checks a `#[flush]` or `#[reset]` method (`marker`): `usage` shows the right signature.
fn flush_fn(cx: &Ctxt, sig: &Signature, marker: &str, usage: &str) -> Option<FlushFn> {
    let mut ok = true;
    if sig.asyncness.is_none() {
        cx.error_spanned_by(sig.fn_token, format!("`{marker}` is async: `{usage}`"));
        ok = false;
    }
    if !sig.generics.params.is_empty() {
        cx.error_spanned_by(
            &sig.generics,
            format!("`{marker}` takes no generic parameters"),
        );
        ok = false;
    }
    if !matches!(reference_receiver(sig), Some((true, _))) {
        cx.error_spanned_by(
            receiver_or_name(sig),
            format!("`{marker}` takes `&mut self`: `{usage}`"),
        );
        ok = false;
    }
    if matches!(sig.output, ReturnType::Default) {
        cx.error_spanned_by(
            &sig.ident,
            format!("`{marker}` returns `Result<(), Error>`: `{usage}`"),
        );
        ok = false;
    }
    let typed = typed_inputs(sig);
    let [connection] = typed.as_slice() else {
        cx.error_spanned_by(
            &sig.ident,
            format!("`{marker}` takes the transaction: `{usage}`"),
        );
        return None;
    };
    let Type::Reference(reference) = &*connection.ty else {
        cx.error_spanned_by(
            &connection.ty,
            format!("the transaction is taken by mutable reference: `{usage}`"),
        );
        return None;
    };
    if reference.mutability.is_none() {
        cx.error_spanned_by(
            &connection.ty,
            format!("the transaction is taken by mutable reference: `{usage}`"),
        );
        return None;
    }
    ok.then(|| FlushFn {
        method: sig.ident.clone(),
        connection: (*reference.elem).clone(),
    })
}

/// Checks `#[discard] fn discard(&mut self)`.
fn discard_signature(cx: &Ctxt, sig: &Signature) -> bool {
    const USAGE: &str = "#[discard] fn discard(&mut self)";
    let mut ok = true;
    if let Some(asyncness) = sig.asyncness {
        cx.error_spanned_by(
            asyncness,
            format!("`#[discard]` only clears memory, it is not async: `{USAGE}`"),
        );
        ok = false;
    }
    if !matches!(reference_receiver(sig), Some((true, _))) {
        cx.error_spanned_by(
            receiver_or_name(sig),
            format!("`#[discard]` takes `&mut self`: `{USAGE}`"),
        );
        ok = false;
    }
    if !sig.generics.params.is_empty() || !typed_inputs(sig).is_empty() {
        cx.error_spanned_by(
            &sig.ident,
            format!("`#[discard]` takes only `&mut self`: `{USAGE}`"),
        );
        ok = false;
    }
    if !matches!(sig.output, ReturnType::Default) {
        cx.error_spanned_by(
            &sig.output,
            format!("`#[discard]` returns nothing: `{USAGE}`"),
        );
        ok = false;
    }
    ok
}

/// The rules that compare the handlers.
fn whole(cx: &Ctxt, input: &Projection) {
    let mut handled: Vec<(String, &Ident)> = Vec::new();
    for handler in &input.handlers {
        let key = tokens_key(&handler.event);
        if let Some((_, first)) = handled.iter().find(|(k, _)| *k == key) {
            cx.error_spanned_by(
                &handler.event,
                format!("`{key}` already has a handler (`{first}`): merge them into one"),
            );
        } else {
            handled.push((key, &handler.method));
        }
    }
    let mut connections = input
        .handlers
        .iter()
        .filter_map(|h| h.connection.as_ref())
        .chain(input.flush.as_ref().map(|f| &f.connection))
        .chain(input.reset.as_ref().map(|r| &r.connection));
    if let Some(first) = connections.next() {
        let expected = Connection::key(first);
        for connection in connections {
            if Connection::key(connection) != expected {
                cx.error_spanned_by(
                    connection,
                    format!(
                        "every handler of a projection writes through the same connection type: `{}`",
                        type_text(first)
                    ),
                );
            }
        }
    }
}

/// A type as the user would write it (`Tx<'_>`, not `Tx < '_ >`), for messages.
fn type_text(ty: &Type) -> String {
    tokens_key(ty)
        .replace(" < ", "<")
        .replace("< ", "<")
        .replace(" >", ">")
        .replace(" :: ", "::")
        .replace("& ", "&")
}
