//! `#[saga]` on an impl block: handlers for events (`#[start]`, `#[handle]`), timeouts
//! (`#[timeout]`) and refused commands (`#[rejected]`).

use proc_macro2::TokenStream;
use syn::{Ident, ImplItem, ImplItemFn, ItemImpl, ReturnType, Type};

use super::{
    Marker, NamedImpl, is_unit, named_impl, receiver_or_name, reference_receiver, shared_reference,
    take_marker, typed_inputs,
};
use crate::attr::{self, HandlerArgs};
use crate::ctxt::Ctxt;

/// What an event handler does to its instance.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SagaRole {
    Start,
    Handle,
    End,
}

/// An event handler: `#[start(by = field)]` or `#[handle(by = field)]`.
pub struct SagaHandler {
    pub method: Ident,
    /// The event type (without the reference).
    pub event: Type,
    /// The event's field holding the instance id.
    pub by: Ident,
    pub role: SagaRole,
}

/// A `#[timeout]` or `#[rejected]` handler.
pub struct MessageHandler {
    pub method: Ident,
    /// The message type (without the reference).
    pub message: Type,
}

pub struct SagaInput {
    /// The impl block, with the markers removed.
    pub item: ItemImpl,
    pub name: String,
    pub commands: Vec<Type>,
    pub handlers: Vec<SagaHandler>,
    pub timeouts: Vec<MessageHandler>,
    pub rejected: Option<Ident>,
}

const USAGE: &str = "#[handle(by = order_id)] fn on_event(&mut self, event: &EventType, context: &mut SagaContext<Self>)";

impl SagaInput {
    pub fn from_syn(cx: &Ctxt, args: TokenStream, input: TokenStream) -> Result<Self, TokenStream> {
        let args = attr::saga_args(cx, args);
        let (mut item, name) = named_impl(
            cx,
            input,
            args.name.as_ref(),
            &NamedImpl {
                kind: "saga",
                goes_on: "#[saga] goes on an inherent `impl` block of the saga's state type, like `#[saga(name = \"order_fulfillment\")] impl OrderFulfillment { ... }`",
                not_generic: "sagas cannot be generic: their instances are kept under one name",
            },
        )?;
        let mut handlers = Vec::new();
        let mut timeouts = Vec::new();
        let mut rejected: Option<Ident> = None;
        let mut starts = 0;
        for impl_item in &mut item.items {
            let ImplItem::Fn(method) = impl_item else {
                continue;
            };
            let Some((marker, meta)) = take_marker(
                cx,
                method,
                &[
                    Marker::Start,
                    Marker::Handle,
                    Marker::Timeout,
                    Marker::Rejected,
                ],
                "a method has one role in a saga: `#[start]`, `#[handle]`, `#[timeout]` or `#[rejected]`",
            ) else {
                continue;
            };
            method.attrs.push(
                syn::parse_quote!(#[allow(clippy::unused_self, clippy::needless_pass_by_ref_mut)]),
            );
            match marker {
                Marker::Start | Marker::Handle => {
                    let start = marker == Marker::Start;
                    starts += usize::from(start);
                    let (key, usage) = if start {
                        ("start", "#[start(by = order_id)]")
                    } else {
                        ("handle", "#[handle(by = order_id)]")
                    };
                    let HandlerArgs { by, end } = attr::saga_handler_args(cx, &meta, key, usage);
                    let Some(by) = by else {
                        cx.error_spanned_by(
                            &meta,
                            format!("name the event's field that holds the saga instance's id: `{usage}`"),
                        );
                        continue;
                    };
                    let role = match (start, end) {
                        (true, _) => SagaRole::Start,
                        (false, Some(_)) => SagaRole::End,
                        (false, None) => SagaRole::Handle,
                    };
                    if let Some((method, event)) = handler_signature(cx, method, "event") {
                        handlers.push(SagaHandler {
                            method,
                            event,
                            by,
                            role,
                        });
                    }
                }
                Marker::Timeout => {
                    if let Some((method, message)) = handler_signature(cx, method, "timeout") {
                        timeouts.push(MessageHandler { method, message });
                    }
                }
                Marker::Rejected => {
                    if let Some(first) = &rejected {
                        cx.error_spanned_by(
                            &method.sig.ident,
                            format!("a saga has one `#[rejected]` method, and `{first}` is it: merge them"),
                        );
                    } else if handler_signature(cx, method, "rejection").is_some() {
                        rejected = Some(method.sig.ident.clone());
                    }
                }
                Marker::Apply | Marker::Command | Marker::Flush | Marker::Discard => {}
            }
        }
        if starts == 0 {
            cx.error_spanned_by(
                &item.self_ty,
                "a saga starts somewhere: mark the handler of the event that starts an instance `#[start(by = order_id)] fn on_placed(&mut self, event: &OrderPlaced, context: &mut SagaContext<Self>)`",
            );
        }
        Ok(Self {
            item,
            name,
            commands: args.commands,
            handlers,
            timeouts,
            rejected,
        })
    }
}

/// Checks `fn method(&mut self, message: &Message, context: &mut SagaContext<Self>)` (no
/// `async`, returns nothing) and returns the method and the message type.
fn handler_signature(cx: &Ctxt, method: &ImplItemFn, what: &str) -> Option<(Ident, Type)> {
    const USAGE_TIMEOUT: &str = "#[timeout] fn on_timeout(&mut self, timeout: &PaymentTimedOut, context: &mut SagaContext<Self>)";
    const USAGE_REJECTED: &str = "#[rejected] fn on_rejected(&mut self, rejection: &Rejection, context: &mut SagaContext<Self>)";
    let usage = match what {
        "timeout" => USAGE_TIMEOUT,
        "rejection" => USAGE_REJECTED,
        _ => USAGE,
    };
    let sig = &method.sig;
    let mut ok = true;
    if let Some(asyncness) = sig.asyncness {
        cx.error_spanned_by(
            asyncness,
            format!("saga handlers do no I/O, so they are not async: they decide, and send commands through the context: `{usage}`"),
        );
        ok = false;
    }
    if !sig.generics.params.is_empty() {
        cx.error_spanned_by(&sig.generics, "saga handlers take no generic parameters");
        ok = false;
    }
    if !matches!(reference_receiver(method), Some((true, _))) {
        cx.error_spanned_by(
            receiver_or_name(method),
            format!("saga handlers take `&mut self` (the instance's state): `{usage}`"),
        );
        ok = false;
    }
    if let ReturnType::Type(_, ty) = &sig.output
        && !is_unit(ty)
    {
        cx.error_spanned_by(
            ty,
            format!(
                "saga handlers return nothing: what they decide goes through the context: `{usage}`"
            ),
        );
        ok = false;
    }
    let typed = typed_inputs(sig);
    let [message, context] = typed.as_slice() else {
        cx.error_spanned_by(
            &sig.ident,
            format!("saga handlers take the {what} and the context: `{usage}`"),
        );
        return None;
    };
    let Some(message) = shared_reference(&message.ty) else {
        cx.error_spanned_by(
            &message.ty,
            format!("the {what} is taken by shared reference: `{usage}`"),
        );
        return None;
    };
    if !matches!(&*context.ty, Type::Reference(reference) if reference.mutability.is_some()) {
        cx.error_spanned_by(
            &context.ty,
            format!("the context is taken by mutable reference: `{usage}`"),
        );
        return None;
    }
    ok.then(|| (sig.ident.clone(), message.clone()))
}
