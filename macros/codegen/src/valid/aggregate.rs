//! Judging `#[aggregate]`: the signatures of `#[apply]` and `#[command]` methods, and the rules
//! of the whole block (the event set named, one apply function per event, one handler per
//! command).

use quote::quote;
use syn::{Ident, ItemImpl, ReturnType, Signature, Type};

use super::{
    ImplRules, impl_header, is_unit, receiver_or_name, reference_receiver, shared_reference,
    typed_inputs,
};
use crate::ast::{AggregateInput, AggregateMethod};
use crate::attr::AggregateArgs;
use crate::ctxt::{Ctxt, Place, tokens_key};

/// An aggregate as judged.
pub struct Aggregate {
    /// The impl block, with our markers removed.
    pub item: ItemImpl,
    pub args: AggregateArgs,
    /// The aggregate type name (empty when none could be derived, which is reported).
    pub name: String,
    /// The apply functions whose signatures are right.
    pub applies: Vec<ApplyFn>,
    /// The command handlers whose signatures are right.
    pub commands: Vec<CommandFn>,
    /// Whether traits can be implemented for the impl block's type (inherent, not generic, a
    /// plain path): only then does the fallback emit stubs.
    pub well_formed: bool,
}

/// `#[apply] fn method(&mut self, event: &Event)`.
pub struct ApplyFn {
    pub method: Ident,
    /// The event type (without the reference).
    pub event: Type,
}

/// `#[command] fn method(&self, command: &Command) -> Output`.
pub struct CommandFn {
    pub method: Ident,
    /// The command type (without the reference).
    pub command: Type,
    pub output: Type,
}

pub fn aggregate(cx: &Ctxt, input: AggregateInput) -> Aggregate {
    let AggregateInput {
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
            kind: "aggregate",
            not_generic: "aggregates cannot be generic: the stored aggregate type name must denote one Rust type",
            name_of: "an aggregate type name",
        },
    );
    let mut applies = Vec::new();
    let mut commands = Vec::new();
    for method in &methods {
        cx.about(Place::Member(method.index), || match method.role {
            AggregateMethod::Apply => applies.extend(apply_fn(cx, &method.sig)),
            AggregateMethod::Command => commands.extend(command_fn(cx, &method.sig)),
        });
    }
    let aggregate = Aggregate {
        item,
        args,
        name: name.unwrap_or_default(),
        applies,
        commands,
        well_formed,
    };
    cx.about(Place::Whole, || whole(cx, &aggregate));
    aggregate
}

const APPLY_USAGE: &str = "fn on_event(&mut self, event: &EventType)";

fn apply_fn(cx: &Ctxt, sig: &Signature) -> Option<ApplyFn> {
    let mut ok = true;
    match reference_receiver(sig) {
        Some((true, _)) => {}
        Some((false, receiver)) => {
            cx.error_spanned_by(
                receiver,
                "apply functions change the state: take `&mut self`",
            );
            ok = false;
        }
        None => {
            cx.error_spanned_by(
                receiver_or_name(sig),
                format!(
                    "apply functions take `&mut self` and the event by reference: `{APPLY_USAGE}`"
                ),
            );
            ok = false;
        }
    }
    if let ReturnType::Type(arrow, ty) = &sig.output
        && !is_unit(ty)
    {
        cx.error_spanned_by(quote!(#arrow #ty), "apply functions return nothing: they only change the state and cannot fail; checks belong in command handlers");
        ok = false;
    }
    let argument = single_argument(cx, sig, "apply", APPLY_USAGE)?;
    let Some(event) = shared_reference(argument) else {
        cx.error_spanned_by(
            argument,
            format!("apply functions take the event by shared reference: `{APPLY_USAGE}`"),
        );
        return None;
    };
    ok.then(|| ApplyFn {
        method: sig.ident.clone(),
        event: event.clone(),
    })
}

const COMMAND_USAGE: &str = "fn handle(&self, command: &CommandType) -> Result<Events, Error>";

fn command_fn(cx: &Ctxt, sig: &Signature) -> Option<CommandFn> {
    let mut ok = true;
    match reference_receiver(sig) {
        Some((false, _)) => {}
        Some((true, receiver)) => {
            cx.error_spanned_by(receiver, "command handlers decide, they do not change the state: take `&self` (the events they return are applied for you)");
            ok = false;
        }
        None => {
            cx.error_spanned_by(
                receiver_or_name(sig),
                format!(
                    "command handlers take `&self` and the command by reference: `{COMMAND_USAGE}`"
                ),
            );
            ok = false;
        }
    }
    let output = match &sig.output {
        ReturnType::Type(_, ty) => Some((**ty).clone()),
        ReturnType::Default => {
            cx.error_spanned_by(
                sig,
                format!("command handlers return `Result<events, error>`: `{COMMAND_USAGE}`"),
            );
            ok = false;
            None
        }
    };
    let argument = single_argument(cx, sig, "command", COMMAND_USAGE)?;
    let Some(command) = shared_reference(argument) else {
        cx.error_spanned_by(
            argument,
            format!("command handlers take the command by shared reference: `{COMMAND_USAGE}`"),
        );
        return None;
    };
    let output = output?;
    ok.then(|| CommandFn {
        method: sig.ident.clone(),
        command: command.clone(),
        output,
    })
}

/// Checks what apply and command functions share: no generics, not async, not const/unsafe,
/// and exactly one argument after the receiver. Returns that argument's type.
fn single_argument<'a>(cx: &Ctxt, sig: &'a Signature, kind: &str, usage: &str) -> Option<&'a Type> {
    let mut ok = true;
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        cx.error_spanned_by(
            &sig.generics,
            format!("{kind} functions take no generic parameters"),
        );
        ok = false;
    }
    if let Some(asyncness) = &sig.asyncness {
        cx.error_spanned_by(
            asyncness,
            format!("{kind} functions cannot be async: aggregates are pure, they do no I/O"),
        );
        ok = false;
    }
    if let Some(constness) = &sig.constness {
        cx.error_spanned_by(constness, format!("{kind} functions cannot be const"));
        ok = false;
    }
    if let syn::Safety::Unsafe(token) = &sig.safety {
        cx.error_spanned_by(token, format!("{kind} functions cannot be unsafe"));
        ok = false;
    }
    match typed_inputs(sig).as_slice() {
        [one] if ok => Some(&one.ty),
        [_] => None,
        [] => {
            cx.error_spanned_by(
                &sig.ident,
                format!("this {kind} function needs one argument: `{usage}`"),
            );
            None
        }
        [_, extra @ ..] => {
            for arg in extra {
                cx.error_spanned_by(
                    arg,
                    format!(
                        "{kind} functions take exactly one argument after the receiver: `{usage}`"
                    ),
                );
            }
            None
        }
    }
}

/// The rules of the whole block.
fn whole(cx: &Ctxt, input: &Aggregate) {
    if input.args.events.is_none() {
        cx.error_at(
            proc_macro2::Span::call_site(),
            "missing `events = ...`: name the aggregate's event set, like `#[aggregate(events = AccountEvent)]`",
        );
    }
    let mut applied: Vec<(String, &Ident)> = Vec::new();
    for apply in &input.applies {
        let key = tokens_key(&apply.event);
        if let Some((_, first)) = applied.iter().find(|(k, _)| *k == key) {
            cx.error_spanned_by(
                &apply.event,
                format!("`{key}` already has an apply function (`{first}`): merge them into one"),
            );
        } else {
            applied.push((key, &apply.method));
        }
    }
    let mut ignored: Vec<String> = Vec::new();
    for ty in &input.args.ignore {
        let key = tokens_key(ty);
        if ignored.contains(&key) {
            cx.error_spanned_by(ty, format!("`{key}` is listed twice in `ignore`"));
            continue;
        }
        if let Some((_, method)) = applied.iter().find(|(k, _)| *k == key) {
            cx.error_spanned_by(
                ty,
                format!(
                    "`{key}` is ignored but has an apply function (`{method}`): keep one of the two"
                ),
            );
        }
        ignored.push(key);
    }
    let mut handled: Vec<(String, &Ident)> = Vec::new();
    for command in &input.commands {
        let key = tokens_key(&command.command);
        if let Some((_, first)) = handled.iter().find(|(k, _)| *k == key) {
            cx.error_spanned_by(
                &command.command,
                format!(
                    "`{key}` already has a command handler (`{first}`): a command has one handler"
                ),
            );
        } else {
            handled.push((key, &command.method));
        }
    }
}
