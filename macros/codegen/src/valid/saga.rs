//! Judging `#[saga]`: the signatures of its handlers, and the rules of the whole block (a
//! `#[start]` handler, one handler per event or timeout, one `#[rejected]`, each command listed
//! once).

use syn::{Ident, ItemImpl, ReturnType, Signature, Type};

use super::{
    ImplRules, impl_header, is_unit, receiver_or_name, reference_receiver, shared_reference,
    typed_inputs,
};
use crate::ast::{SagaInput, SagaMethod, SagaRole};
use crate::ctxt::{Ctxt, Place, tokens_key};

/// A saga as judged.
pub struct Saga {
    /// The impl block, with the markers removed.
    pub item: ItemImpl,
    /// The saga's name (empty when none could be derived, which is reported).
    pub name: String,
    /// The commands it sends, as listed.
    pub commands: Vec<Type>,
    /// The event handlers whose signatures are right.
    pub handlers: Vec<SagaHandler>,
    /// The timeout handlers whose signatures are right.
    pub timeouts: Vec<MessageHandler>,
    /// The `#[rejected]` method, when its signature is right.
    pub rejected: Option<Ident>,
    /// Whether traits can be implemented for the impl block's type (inherent, not generic, a
    /// plain path): only then does the fallback emit stubs.
    pub well_formed: bool,
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

pub fn saga(cx: &Ctxt, input: SagaInput) -> Saga {
    let SagaInput {
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
            kind: "saga",
            not_generic: "sagas cannot be generic: their instances are kept under one name",
            name_of: "a saga name",
        },
    );
    let mut handlers = Vec::new();
    let mut timeouts = Vec::new();
    let mut rejected: Option<Ident> = None;
    for method in &methods {
        let sig = &method.sig;
        cx.about(Place::Member(method.index), || match &method.role {
            SagaMethod::Event { role, by } => {
                let Some(by) = by else {
                    cx.error_spanned_by(
                        &method.meta,
                        format!(
                            "name the event's field that holds the saga instance's id: `{}`",
                            role.usage()
                        ),
                    );
                    return;
                };
                if let Some((method, event)) = handler_signature(cx, sig, "event") {
                    handlers.push(SagaHandler {
                        method,
                        event,
                        by: by.clone(),
                        role: *role,
                    });
                }
            }
            SagaMethod::Timeout => {
                if let Some((method, message)) = handler_signature(cx, sig, "timeout") {
                    timeouts.push(MessageHandler { method, message });
                }
            }
            SagaMethod::Rejected => {
                if let Some(first) = &rejected {
                    cx.error_spanned_by(
                        &sig.ident,
                        format!(
                            "a saga has one `#[rejected]` method, and `{first}` is it: merge them"
                        ),
                    );
                } else if handler_signature(cx, sig, "rejection").is_some() {
                    rejected = Some(sig.ident.clone());
                }
            }
        });
    }
    let starts = methods.iter().any(|method| {
        matches!(
            method.role,
            SagaMethod::Event {
                role: SagaRole::Start,
                ..
            }
        )
    });
    if !starts {
        cx.about(Place::Whole, || {
            cx.error_spanned_by(
                &item.self_ty,
                "a saga starts somewhere: mark the handler of the event that starts an instance `#[start(by = order_id)] fn on_placed(&mut self, event: &OrderPlaced, context: &mut SagaContext<Self>)`",
            );
        });
    }
    let saga = Saga {
        item,
        name: name.unwrap_or_default(),
        commands: args.commands,
        handlers,
        timeouts,
        rejected,
        well_formed,
    };
    cx.about(Place::Whole, || whole(cx, &saga));
    saga
}

/// Checks `fn method(&mut self, message: &Message, context: &mut SagaContext<Self>)` (no
/// `async`, returns nothing) and returns the method and the message type.
fn handler_signature(cx: &Ctxt, sig: &Signature, what: &str) -> Option<(Ident, Type)> {
    const USAGE_EVENT: &str = "#[handle(by = order_id)] fn on_event(&mut self, event: &EventType, context: &mut SagaContext<Self>)";
    const USAGE_TIMEOUT: &str = "#[timeout] fn on_timeout(&mut self, timeout: &PaymentTimedOut, context: &mut SagaContext<Self>)";
    const USAGE_REJECTED: &str = "#[rejected] fn on_rejected(&mut self, rejection: &Rejection, context: &mut SagaContext<Self>)";
    let usage = match what {
        "timeout" => USAGE_TIMEOUT,
        "rejection" => USAGE_REJECTED,
        _ => USAGE_EVENT,
    };
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
    if !matches!(reference_receiver(sig), Some((true, _))) {
        cx.error_spanned_by(
            receiver_or_name(sig),
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

/// The rules that compare the handlers, and the commands listed.
fn whole(cx: &Ctxt, input: &Saga) {
    let mut handled: Vec<(String, &Ident)> = Vec::new();
    let events = input.handlers.iter().map(|h| (&h.event, &h.method));
    let timeouts = input.timeouts.iter().map(|t| (&t.message, &t.method));
    for (ty, method) in events.chain(timeouts) {
        let key = tokens_key(ty);
        if let Some((_, first)) = handled.iter().find(|(k, _)| *k == key) {
            cx.error_spanned_by(
                ty,
                format!("`{key}` already has a handler (`{first}`): merge them into one"),
            );
        } else {
            handled.push((key, method));
        }
    }
    let mut commands: Vec<String> = Vec::new();
    for command in &input.commands {
        let key = tokens_key(command);
        if commands.contains(&key) {
            cx.error_spanned_by(command, format!("`{key}` is listed twice"));
        } else {
            commands.push(key);
        }
    }
}
