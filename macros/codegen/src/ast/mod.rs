//! Our own syntax tree of the annotated items: what the user wrote, read from syn, keeping the
//! original syn nodes for spans. It is built even when something is wrong, so that validation
//! (`valid`) can report every mistake and the fallback can still emit the user's item. Reading
//! reports only what makes the input unreadable: an item of the wrong kind, and mistakes in our
//! attributes and markers (through `attr`); judging what was read is `valid`'s.

use proc_macro2::TokenStream;
use syn::{Ident, ImplItemFn, ItemImpl, LitStr, Type};

use crate::ctxt::Ctxt;
use crate::symbol::{APPLY, COMMAND, DISCARD, FLUSH, HANDLE, REJECTED, RESET, START, TIMEOUT};

mod aggregate;
mod event;
mod message;
mod pii;
mod projection;
mod saga;
mod upcast;

pub use aggregate::{AggregateInput, AggregateMethod};
pub use event::{EventInput, EventSetEnum, EventStruct};
pub use message::{MessageInput, MessageKind, on_a_function};
pub use pii::{JsonNameProblem, PiiField};
pub use projection::{ProjectionInput, ProjectionMethod};
pub use saga::{SagaInput, SagaMethod, SagaRole};
pub use upcast::{UPCAST_USAGE, UpcastInput};

/// A method of an impl block that carries one of our markers, with the markers taken off.
pub struct MarkedFn<R> {
    /// Its index among the impl block's items: errors about it are reported in that order.
    pub index: usize,
    /// What its marker makes of it, with the marker's options.
    pub role: R,
    /// The marker as written.
    pub meta: syn::Meta,
    /// The method's signature as written.
    pub sig: syn::Signature,
}

/// The markers our impl-block attributes consume.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Marker {
    Apply,
    Command,
    Handle,
    Flush,
    Discard,
    Reset,
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
            Self::Reset => RESET,
            Self::Start => START,
            Self::Timeout => TIMEOUT,
            Self::Rejected => REJECTED,
        }
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

/// Parses the impl block an attribute goes on. An input that is no impl block is reported
/// (`goes_on` says where the attribute goes) and returned as is.
fn impl_block(cx: &Ctxt, input: TokenStream, goes_on: &str) -> Result<ItemImpl, TokenStream> {
    syn::parse2::<ItemImpl>(input.clone()).map_err(|_| {
        cx.error_spanned_by(first_token(&input), goes_on);
        input
    })
}

/// The name given in the attribute, else the impl block's type's (`None`: neither).
fn impl_name(given: Option<&LitStr>, item: &ItemImpl) -> Option<String> {
    given
        .map(LitStr::value)
        .or_else(|| type_ident(&item.self_ty).map(ToString::to_string))
}

fn first_token(input: &TokenStream) -> TokenStream {
    input.clone().into_iter().take(1).collect()
}

/// The last identifier of a plain path type (`BankAccount`, `crate::bank::BankAccount`).
pub fn type_ident(ty: &Type) -> Option<&Ident> {
    match ty {
        Type::Path(path) if path.qself.is_none() => path.path.segments.last().map(|s| &s.ident),
        Type::Group(group) => type_ident(&group.elem),
        Type::Paren(paren) => type_ident(&paren.elem),
        _ => None,
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
