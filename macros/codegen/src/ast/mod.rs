//! Our own syntax tree of the annotated items. It keeps the original syn nodes for spans, and is
//! built even when something is wrong (with defaults), so that validation can report every
//! mistake and the fallback can still emit the user's item.

use proc_macro2::TokenStream;
use syn::{
    Fields, FnArg, Ident, ImplItem, ImplItemFn, ItemEnum, ItemImpl, ItemStruct, LitStr, ReturnType,
    Type,
};

use crate::attr::{self, AggregateArgs, EventArgs};
use crate::ctxt::Ctxt;
use crate::symbol::{
    APPLY, COMMAND, DISCARD, FLUSH, HANDLE, REJECTED, SIDE_EFFECTS, START, TIMEOUT,
};

mod message;
mod saga;

pub use message::{MessageInput, MessageKind, on_a_function};
pub use saga::{SagaInput, SagaRole};

/// What `#[event]` was put on.
pub enum EventInput {
    /// One event.
    Struct(EventStruct),
    /// An event set.
    Set(EventSetEnum),
    /// Anything else (already reported); emitted unchanged.
    Other(TokenStream),
}

pub struct EventStruct {
    pub item: ItemStruct,
    /// The stored type name.
    pub name: String,
    pub version: u32,
    /// The version as written, for spans (`None`: the default, 1).
    pub version_literal: Option<(u32, syn::LitInt)>,
}

pub struct EventSetEnum {
    pub item: ItemEnum,
    pub args: EventArgs,
    /// The variants that hold exactly one event.
    pub variants: Vec<SetVariant>,
}

pub struct SetVariant {
    pub ident: Ident,
    pub ty: Type,
}

impl EventInput {
    pub fn from_syn(cx: &Ctxt, args: TokenStream, input: TokenStream) -> Self {
        let args = attr::event_args(cx, args, "#[event]");
        match syn::parse2::<syn::Item>(input.clone()) {
            Ok(syn::Item::Struct(item)) => {
                let name = args
                    .name
                    .as_ref()
                    .map_or_else(|| item.ident.to_string(), LitStr::value);
                let version = args.version.as_ref().map_or(1, |(version, _)| *version);
                Self::Struct(EventStruct {
                    item,
                    name,
                    version,
                    version_literal: args.version.clone(),
                })
            }
            Ok(syn::Item::Enum(item)) => {
                let variants = item
                    .variants
                    .iter()
                    .filter_map(|variant| match &variant.fields {
                        Fields::Unnamed(fields) if fields.unnamed.len() == 1 => Some(SetVariant {
                            ident: variant.ident.clone(),
                            ty: fields.unnamed[0].ty.clone(),
                        }),
                        _ => None,
                    })
                    .collect();
                Self::Set(EventSetEnum {
                    item,
                    args,
                    variants,
                })
            }
            Ok(other) => {
                cx.error_spanned_by(
                    item_keyword(&other),
                    "#[event] goes on a struct (one event) or on an enum whose variants each hold one event (an event set)",
                );
                Self::Other(input)
            }
            Err(error) => {
                cx.syn_error(error);
                Self::Other(input)
            }
        }
    }
}

/// The leading keyword of an item, to point at (`fn`, `union`, ...).
fn item_keyword(item: &syn::Item) -> TokenStream {
    use quote::ToTokens as _;
    match item {
        syn::Item::Fn(f) => f.sig.fn_token.to_token_stream(),
        syn::Item::Union(u) => u.union_token.to_token_stream(),
        syn::Item::Type(t) => t.type_token.to_token_stream(),
        syn::Item::Trait(t) => t.trait_token.to_token_stream(),
        other => other.to_token_stream(),
    }
}

/// What `#[aggregate]` was put on: an inherent impl block.
pub struct AggregateInput {
    /// The impl block, with our `#[apply]` and `#[command]` markers removed.
    pub item: ItemImpl,
    pub args: AggregateArgs,
    /// The aggregate type name.
    pub name: String,
    pub applies: Vec<ApplyFn>,
    pub commands: Vec<CommandFn>,
    /// Whether the impl block itself is usable (parsed, inherent, not generic).
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Marker {
    Apply,
    Command,
    Handle,
    Flush,
    Discard,
    Start,
    Timeout,
    Rejected,
}

impl Marker {
    fn key(self) -> &'static str {
        match self {
            Self::Apply => APPLY,
            Self::Command => COMMAND,
            Self::Handle => HANDLE,
            Self::Flush => FLUSH,
            Self::Discard => DISCARD,
            Self::Start => START,
            Self::Timeout => TIMEOUT,
            Self::Rejected => REJECTED,
        }
    }
}

impl AggregateInput {
    pub fn from_syn(cx: &Ctxt, args: TokenStream, input: TokenStream) -> Result<Self, TokenStream> {
        let args = attr::aggregate_args(cx, args);
        let mut item = match syn::parse2::<ItemImpl>(input.clone()) {
            Ok(item) => item,
            Err(_) => {
                cx.error_spanned_by(
                    first_token(&input),
                    "#[aggregate] goes on an inherent `impl` block of the aggregate's state type, like `#[aggregate(events = AccountEvent)] impl BankAccount { ... }`",
                );
                return Err(input);
            }
        };
        let mut well_formed = true;
        if let Some((path, for_token)) = &item.trait_ {
            cx.error_spanned_by(
                quote::quote!(#path #for_token),
                "#[aggregate] goes on an inherent `impl` block, not on a trait implementation",
            );
            well_formed = false;
        }
        if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
            cx.error_spanned_by(&item.generics, "aggregates cannot be generic: the stored aggregate type name must denote one Rust type");
            well_formed = false;
        }
        let name = match (&args.name, type_ident(&item.self_ty)) {
            (Some(lit), _) => lit.value(),
            (None, Some(ident)) => ident.to_string(),
            (None, None) => {
                cx.error_spanned_by(&item.self_ty, "cannot derive an aggregate type name from this type: name it with `#[aggregate(name = \"...\")]`");
                String::new()
            }
        };

        let mut applies = Vec::new();
        let mut commands = Vec::new();
        for impl_item in &mut item.items {
            let ImplItem::Fn(method) = impl_item else {
                continue;
            };
            let marker = take_marker(
                cx,
                method,
                &[Marker::Apply, Marker::Command],
                "a method is either `#[apply]` (changes state) or `#[command]` (decides events), not both",
            );
            if marker.is_some() {
                // The framework imposes these signatures (`&self`, the message by reference, a
                // `Result`), so lints against them would only be noise in the user's crate.
                method.attrs.push(syn::parse_quote!(#[allow(
                    clippy::trivially_copy_pass_by_ref,
                    clippy::unused_self,
                    clippy::unnecessary_wraps
                )]));
            }
            match marker {
                Some((Marker::Apply, _)) => applies.extend(ApplyFn::from_method(cx, method)),
                Some((Marker::Command, _)) => {
                    commands.extend(CommandFn::from_method(cx, method));
                }
                _ => {}
            }
        }
        Ok(Self {
            item,
            args,
            name,
            applies,
            commands,
            well_formed,
        })
    }
}

fn first_token(input: &TokenStream) -> TokenStream {
    input.clone().into_iter().take(1).collect()
}

/// The last identifier of a plain path type (`BankAccount`, `crate::bank::BankAccount`).
fn type_ident(ty: &Type) -> Option<&Ident> {
    match ty {
        Type::Path(path) if path.qself.is_none() => path.path.segments.last().map(|s| &s.ident),
        Type::Group(group) => type_ident(&group.elem),
        Type::Paren(paren) => type_ident(&paren.elem),
        _ => None,
    }
}

/// Removes our markers (those of `allowed`) from a method and returns the one it had; `roles`
/// explains, when a method has two, that it can have only one.
fn take_marker(
    cx: &Ctxt,
    method: &mut ImplItemFn,
    allowed: &[Marker],
    roles: &str,
) -> Option<(Marker, syn::Meta)> {
    let mut found = None;
    let mut kept = Vec::with_capacity(method.attrs.len());
    for attr in std::mem::take(&mut method.attrs) {
        let Some(marker) = allowed
            .iter()
            .copied()
            .find(|m| attr.path().is_ident(m.key()))
        else {
            kept.push(attr);
            continue;
        };
        if !matches!(marker, Marker::Handle | Marker::Start)
            && !matches!(attr.meta, syn::Meta::Path(_))
        {
            cx.error_spanned_by(
                &attr.meta,
                format!("`#[{}]` takes no arguments", marker.key()),
            );
        }
        if found.is_some() {
            cx.error_spanned_by(&attr, roles);
        } else {
            found = Some((marker, attr.meta));
        }
    }
    method.attrs = kept;
    found
}

/// The options of `#[handle]`: none, or `side_effects` (the handler acts outside the database:
/// skipped while a new version replays the history, and run at most once per event).
fn handle_side_effects(cx: &Ctxt, meta: &syn::Meta) -> bool {
    const HELP: &str = "`#[handle]` takes one option, `#[handle(side_effects)]`, for handlers that act outside the database (email, HTTP)";
    match meta {
        syn::Meta::Path(_) => false,
        syn::Meta::List(list) => match syn::parse2::<Ident>(list.tokens.clone()) {
            Ok(ident) if ident == SIDE_EFFECTS => true,
            _ => {
                cx.error_spanned_by(&list.tokens, HELP);
                false
            }
        },
        syn::Meta::NameValue(_) => {
            cx.error_spanned_by(meta, HELP);
            false
        }
    }
}

/// Checks what apply and command functions share: no generics, not async, not const/unsafe,
/// and exactly one argument after the receiver. Returns that argument's type.
fn single_argument<'a>(
    cx: &Ctxt,
    method: &'a ImplItemFn,
    kind: &str,
    usage: &str,
) -> Option<&'a Type> {
    let sig = &method.sig;
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
    let typed: Vec<&syn::PatType> = sig
        .inputs
        .iter()
        .filter_map(|arg| match arg {
            FnArg::Typed(typed) => Some(typed),
            FnArg::Receiver(_) => None,
        })
        .collect();
    match typed.as_slice() {
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

/// The receiver, when it is a plain reference (`&self` / `&mut self`): its mutability.
fn reference_receiver(method: &ImplItemFn) -> Option<(bool, &syn::Receiver)> {
    let receiver = method.sig.receiver()?;
    match &receiver.kind {
        syn::ReceiverKind::Reference(_, _, mutability) => Some((mutability.is_some(), receiver)),
        _ => None,
    }
}

/// The referent of `&T` (not `&mut T`).
fn shared_reference(ty: &Type) -> Option<&Type> {
    match ty {
        Type::Reference(reference) if reference.mutability.is_none() => Some(&reference.elem),
        Type::Group(group) => shared_reference(&group.elem),
        _ => None,
    }
}

impl ApplyFn {
    const USAGE: &'static str = "fn on_event(&mut self, event: &EventType)";

    fn from_method(cx: &Ctxt, method: &ImplItemFn) -> Option<Self> {
        let mut ok = true;
        match reference_receiver(method) {
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
                    receiver_or_name(method),
                    format!(
                        "apply functions take `&mut self` and the event by reference: `{}`",
                        Self::USAGE
                    ),
                );
                ok = false;
            }
        }
        if let ReturnType::Type(arrow, ty) = &method.sig.output
            && !is_unit(ty)
        {
            {
                cx.error_spanned_by(quote::quote!(#arrow #ty), "apply functions return nothing: they only change the state and cannot fail; checks belong in command handlers");
                ok = false;
            }
        }
        let argument = single_argument(cx, method, "apply", Self::USAGE)?;
        let Some(event) = shared_reference(argument) else {
            cx.error_spanned_by(
                argument,
                format!(
                    "apply functions take the event by shared reference: `{}`",
                    Self::USAGE
                ),
            );
            return None;
        };
        ok.then(|| Self {
            method: method.sig.ident.clone(),
            event: event.clone(),
        })
    }
}

impl CommandFn {
    const USAGE: &'static str = "fn handle(&self, command: &CommandType) -> Result<Events, Error>";

    fn from_method(cx: &Ctxt, method: &ImplItemFn) -> Option<Self> {
        let mut ok = true;
        match reference_receiver(method) {
            Some((false, _)) => {}
            Some((true, receiver)) => {
                cx.error_spanned_by(receiver, "command handlers decide, they do not change the state: take `&self` (the events they return are applied for you)");
                ok = false;
            }
            None => {
                cx.error_spanned_by(
                    receiver_or_name(method),
                    format!(
                        "command handlers take `&self` and the command by reference: `{}`",
                        Self::USAGE
                    ),
                );
                ok = false;
            }
        }
        let output = match &method.sig.output {
            ReturnType::Type(_, ty) => Some((**ty).clone()),
            ReturnType::Default => {
                cx.error_spanned_by(
                    &method.sig,
                    format!(
                        "command handlers return `Result<events, error>`: `{}`",
                        Self::USAGE
                    ),
                );
                ok = false;
                None
            }
        };
        let argument = single_argument(cx, method, "command", Self::USAGE)?;
        let Some(command) = shared_reference(argument) else {
            cx.error_spanned_by(
                argument,
                format!(
                    "command handlers take the command by shared reference: `{}`",
                    Self::USAGE
                ),
            );
            return None;
        };
        let output = output?;
        ok.then(|| Self {
            method: method.sig.ident.clone(),
            command: command.clone(),
            output,
        })
    }
}

/// Where to report a bad receiver: the receiver, or the method's name when there is none.
fn receiver_or_name(method: &ImplItemFn) -> TokenStream {
    use quote::ToTokens as _;
    match method.sig.receiver() {
        Some(receiver) => receiver.to_token_stream(),
        None => method.sig.ident.to_token_stream(),
    }
}

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(tuple) if tuple.elems.is_empty())
}

/// `#[upcast] fn name(old: From) -> To` (or `Option<To>`, `Vec<To>`).
pub struct UpcastFn {
    pub item: syn::ItemFn,
    /// The older version's type.
    pub from: Type,
    /// The newer version's type.
    pub to: Type,
}

impl UpcastFn {
    const USAGE: &'static str = "#[upcast] fn upcast(old: EventV1) -> EventV2";

    pub fn from_syn(cx: &Ctxt, args: TokenStream, input: TokenStream) -> Result<Self, TokenStream> {
        if !args.is_empty() {
            cx.error_spanned_by(&args, "`#[upcast]` takes no arguments");
        }
        let item = match syn::parse2::<syn::ItemFn>(input.clone()) {
            Ok(item) => item,
            Err(_) => {
                cx.error_spanned_by(
                    first_token(&input),
                    format!("#[upcast] goes on a function turning one version of an event into the next: `{}`", Self::USAGE),
                );
                return Err(input);
            }
        };
        let sig = &item.sig;
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            cx.error_spanned_by(&sig.generics, "upcasters take no generic parameters");
        }
        if let Some(asyncness) = &sig.asyncness {
            cx.error_spanned_by(
                asyncness,
                "upcasters cannot be async: they are pure functions of the old event, with no I/O",
            );
        }
        let from = match sig.inputs.iter().collect::<Vec<_>>().as_slice() {
            [FnArg::Typed(arg)] => match &*arg.ty {
                Type::Reference(reference) => {
                    cx.error_spanned_by(reference, "upcasters take the old event by value");
                    None
                }
                ty => Some(ty.clone()),
            },
            [FnArg::Receiver(receiver)] => {
                cx.error_spanned_by(
                    receiver,
                    format!("upcasters are free functions: `{}`", Self::USAGE),
                );
                None
            }
            [] => {
                cx.error_spanned_by(
                    &sig.ident,
                    format!("an upcaster takes the old event: `{}`", Self::USAGE),
                );
                None
            }
            [_, extra @ ..] => {
                for arg in extra {
                    cx.error_spanned_by(
                        arg,
                        format!(
                            "an upcaster takes exactly one argument, the old event: `{}`",
                            Self::USAGE
                        ),
                    );
                }
                None
            }
        };
        let to = match &sig.output {
            ReturnType::Type(_, ty) => upcast_target(ty).or_else(|| {
                cx.error_spanned_by(ty, "an upcaster returns the next version of the event, `Option` of it (to drop the old event) or `Vec` of it (to split it)");
                None
            }),
            ReturnType::Default => {
                cx.error_spanned_by(&sig.ident, format!("an upcaster returns the next version: `{}`", Self::USAGE));
                None
            }
        };
        match (from, to) {
            (Some(from), Some(to)) => Ok(Self { item, from, to }),
            _ => Err(input),
        }
    }
}

/// `To` out of `To`, `Option<To>` or `Vec<To>`.
fn upcast_target(ty: &Type) -> Option<Type> {
    let Type::Path(path) = ty else {
        return None;
    };
    let last = path.path.segments.last()?;
    if last.ident != "Option" && last.ident != "Vec" {
        return Some(ty.clone());
    }
    let syn::PathArguments::AngleBracketed(arguments) = &last.arguments else {
        return None;
    };
    match arguments.args.iter().collect::<Vec<_>>().as_slice() {
        [syn::GenericArgument::Type(inner)] => Some(inner.clone()),
        _ => None,
    }
}

/// What `#[projection]` was put on: an inherent impl block with `#[handle]` methods, and
/// optionally the `#[flush]` and `#[discard]` methods of a projection that buffers its writes.
pub struct ProjectionInput {
    /// The impl block, with the markers removed.
    pub item: ItemImpl,
    /// The projection's name.
    pub name: String,
    pub version: u32,
    pub handlers: Vec<HandlerFn>,
    pub flush: Option<FlushFn>,
    /// The `#[discard]` method.
    pub discard: Option<Ident>,
    /// The connection type of the handlers (the first one's, else the flush's).
    pub connection: Option<Type>,
    /// `inline`: it may also run in the append's transaction.
    pub inline: bool,
}

/// `#[handle] async fn method(&mut self, event: &Event, envelope: &Envelope, tx: &mut Conn)`.
pub struct HandlerFn {
    pub method: Ident,
    pub event: Type,
    pub connection: Type,
    /// `#[handle(side_effects)]`.
    pub side_effects: bool,
}

/// `#[flush] async fn method(&mut self, tx: &mut Conn) -> Result<(), E>`.
pub struct FlushFn {
    pub method: Ident,
    pub connection: Type,
}

/// What `#[projection]` and `#[saga]` say about the impl block they go on.
struct NamedImpl {
    /// "projection", "saga": in the attribute and messages.
    kind: &'static str,
    /// The message when the input is not an impl block.
    goes_on: &'static str,
    /// The message when the impl block is generic.
    not_generic: &'static str,
}

/// Parses the inherent, non-generic impl block a named attribute goes on, and its name (given,
/// or the type's). Mistakes are recorded; only an input that is no impl block is returned as is.
fn named_impl(
    cx: &Ctxt,
    input: TokenStream,
    name: Option<&LitStr>,
    what: &NamedImpl,
) -> Result<(ItemImpl, String), TokenStream> {
    let kind = what.kind;
    let item = match syn::parse2::<ItemImpl>(input.clone()) {
        Ok(item) => item,
        Err(_) => {
            cx.error_spanned_by(first_token(&input), what.goes_on);
            return Err(input);
        }
    };
    if let Some((path, for_token)) = &item.trait_ {
        cx.error_spanned_by(
            quote::quote!(#path #for_token),
            format!("#[{kind}] goes on an inherent `impl` block, not on a trait implementation"),
        );
    }
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        cx.error_spanned_by(&item.generics, what.not_generic);
    }
    let name = match (name, type_ident(&item.self_ty)) {
        (Some(lit), _) => lit.value(),
        (None, Some(ident)) => ident.to_string(),
        (None, None) => {
            cx.error_spanned_by(
                &item.self_ty,
                format!("cannot derive a {kind} name from this type: name it with `#[{kind}(name = \"...\")]`"),
            );
            String::new()
        }
    };
    Ok((item, name))
}

impl ProjectionInput {
    const USAGE: &'static str = "#[handle] async fn on_event(&mut self, event: &EventType, envelope: &Envelope, tx: &mut PgConnection) -> Result<(), Error>";

    pub fn from_syn(cx: &Ctxt, args: TokenStream, input: TokenStream) -> Result<Self, TokenStream> {
        let args = attr::projection_args(cx, args);
        let (mut item, name) = named_impl(
            cx,
            input,
            args.name.as_ref(),
            &NamedImpl {
                kind: "projection",
                goes_on: "#[projection] goes on an inherent `impl` block of the projection's type, like `#[projection(name = \"balances\")] impl Balances { ... }`",
                not_generic: "projections cannot be generic: a checkpoint is kept under one name",
            },
        )?;
        let version = args.version.as_ref().map_or(1, |(version, _)| *version);
        let mut handlers = Vec::new();
        let mut marked = 0;
        let mut flush: Option<FlushFn> = None;
        let mut discard: Option<Ident> = None;
        // The first method marked `#[flush]` / `#[discard]`, valid or not.
        let (mut flush_marked, mut discard_marked): (Option<Ident>, Option<Ident>) = (None, None);
        for impl_item in &mut item.items {
            let ImplItem::Fn(method) = impl_item else {
                continue;
            };
            let Some((marker, meta)) = take_marker(
                cx,
                method,
                &[Marker::Handle, Marker::Flush, Marker::Discard],
                "a method has one role in a projection: `#[handle]`, `#[flush]` or `#[discard]`",
            ) else {
                continue;
            };
            method
                .attrs
                .push(syn::parse_quote!(#[allow(clippy::unused_async, clippy::unused_self)]));
            let ident = &method.sig.ident;
            match marker {
                Marker::Handle => {
                    marked += 1;
                    let side_effects = handle_side_effects(cx, &meta);
                    handlers.extend(HandlerFn::from_method(cx, method).map(|handler| HandlerFn {
                        side_effects,
                        ..handler
                    }));
                }
                Marker::Flush => {
                    if let Some(first) = &flush_marked {
                        cx.error_spanned_by(
                            ident,
                            format!("a projection has one `#[flush]` method, and `{first}` is it: merge them"),
                        );
                    } else {
                        flush_marked = Some(ident.clone());
                        flush = FlushFn::from_method(cx, method);
                    }
                }
                Marker::Discard => {
                    if let Some(first) = &discard_marked {
                        cx.error_spanned_by(
                            ident,
                            format!("a projection has one `#[discard]` method, and `{first}` is it: merge them"),
                        );
                    } else {
                        discard_marked = Some(ident.clone());
                        if discard_signature(cx, method) {
                            discard = Some(ident.clone());
                        }
                    }
                }
                Marker::Apply
                | Marker::Command
                | Marker::Start
                | Marker::Timeout
                | Marker::Rejected => {}
            }
        }
        if let (Some(flush), None) = (&flush_marked, &discard_marked) {
            cx.error_spanned_by(
                flush,
                "a projection that buffers writes until `#[flush]` says how to drop a rolled-back batch's buffer: add `#[discard] fn discard(&mut self)` (called before every batch)",
            );
        }
        if marked == 0 {
            cx.error_spanned_by(
                &item.self_ty,
                format!(
                    "a projection handles at least one event: mark a method `{}`",
                    Self::USAGE
                ),
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
        let connection = handlers
            .first()
            .map(|h: &HandlerFn| h.connection.clone())
            .or_else(|| flush.as_ref().map(|f| f.connection.clone()));
        Ok(Self {
            item,
            name,
            version,
            handlers,
            flush,
            discard,
            connection,
            inline: args.inline.is_some(),
        })
    }
}

impl FlushFn {
    const USAGE: &'static str =
        "#[flush] async fn flush(&mut self, tx: &mut PgConnection) -> Result<(), Error>";

    fn from_method(cx: &Ctxt, method: &ImplItemFn) -> Option<Self> {
        let usage = Self::USAGE;
        let sig = &method.sig;
        let mut ok = true;
        if sig.asyncness.is_none() {
            cx.error_spanned_by(sig.fn_token, format!("`#[flush]` is async: `{usage}`"));
            ok = false;
        }
        if !sig.generics.params.is_empty() {
            cx.error_spanned_by(&sig.generics, "`#[flush]` takes no generic parameters");
            ok = false;
        }
        if !matches!(reference_receiver(method), Some((true, _))) {
            cx.error_spanned_by(
                receiver_or_name(method),
                format!("`#[flush]` takes `&mut self`: `{usage}`"),
            );
            ok = false;
        }
        if matches!(sig.output, ReturnType::Default) {
            cx.error_spanned_by(
                &sig.ident,
                format!("`#[flush]` returns `Result<(), Error>`: `{usage}`"),
            );
            ok = false;
        }
        let typed: Vec<&syn::PatType> = typed_inputs(sig);
        let [connection] = typed.as_slice() else {
            cx.error_spanned_by(
                &sig.ident,
                format!("`#[flush]` takes the batch's transaction: `{usage}`"),
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
        ok.then(|| Self {
            method: sig.ident.clone(),
            connection: (*reference.elem).clone(),
        })
    }
}

/// Checks `#[discard] fn discard(&mut self)`.
fn discard_signature(cx: &Ctxt, method: &ImplItemFn) -> bool {
    const USAGE: &str = "#[discard] fn discard(&mut self)";
    let sig = &method.sig;
    let mut ok = true;
    if let Some(asyncness) = sig.asyncness {
        cx.error_spanned_by(
            asyncness,
            format!("`#[discard]` only clears memory, it is not async: `{USAGE}`"),
        );
        ok = false;
    }
    if !matches!(reference_receiver(method), Some((true, _))) {
        cx.error_spanned_by(
            receiver_or_name(method),
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

fn typed_inputs(sig: &syn::Signature) -> Vec<&syn::PatType> {
    sig.inputs
        .iter()
        .filter_map(|arg| match arg {
            FnArg::Typed(typed) => Some(typed),
            FnArg::Receiver(_) => None,
        })
        .collect()
}

impl HandlerFn {
    fn from_method(cx: &Ctxt, method: &ImplItemFn) -> Option<Self> {
        let usage = ProjectionInput::USAGE;
        let sig = &method.sig;
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
        if !matches!(reference_receiver(method), Some((true, _))) {
            cx.error_spanned_by(
                receiver_or_name(method),
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
        let [event, _envelope, connection] = typed.as_slice() else {
            cx.error_spanned_by(&sig.ident, format!("projection handlers take the event, its envelope and the transaction: `{usage}`"));
            return None;
        };
        let Some(event) = shared_reference(&event.ty) else {
            cx.error_spanned_by(
                &event.ty,
                format!("the event is taken by shared reference: `{usage}`"),
            );
            return None;
        };
        let connection = match &*connection.ty {
            Type::Reference(reference) if reference.mutability.is_some() => {
                (*reference.elem).clone()
            }
            other => {
                cx.error_spanned_by(
                    other,
                    format!("the transaction is taken by mutable reference: `{usage}`"),
                );
                return None;
            }
        };
        ok.then(|| Self {
            method: sig.ident.clone(),
            event: event.clone(),
            connection,
            side_effects: false,
        })
    }
}
