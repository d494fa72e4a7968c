//! `#[command]` and `#[timeout]` on a type: a message with a stable name and a JSON form.

use proc_macro2::TokenStream;
use syn::{Ident, LitStr};

use super::item_keyword;
use crate::attr;
use crate::ctxt::Ctxt;

/// Which message.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A command (sent by sagas, delivered by the command bus).
    Command,
    /// A saga timeout.
    Timeout,
}

impl MessageKind {
    /// The attribute's name.
    pub fn marker(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::Timeout => "timeout",
        }
    }
}

/// A struct or enum annotated `#[command]` or `#[timeout]`.
pub struct MessageInput {
    pub kind: MessageKind,
    pub item: syn::Item,
    pub ident: Ident,
    /// The stable name (default: the Rust name).
    pub name: String,
}

impl MessageInput {
    /// `None` when the attribute is on a function (a misplaced handler marker, reported by the
    /// caller as such).
    pub fn from_syn(
        cx: &Ctxt,
        kind: MessageKind,
        args: TokenStream,
        input: TokenStream,
    ) -> Option<Result<Self, TokenStream>> {
        let marker = kind.marker();
        let item = match syn::parse2::<syn::Item>(input.clone()) {
            Ok(item) => item,
            // A method with a receiver, outside an impl block.
            Err(_) if input.clone().into_iter().any(|t| t.to_string() == "fn") => return None,
            Err(error) => {
                cx.syn_error(error);
                return Some(Err(input));
            }
        };
        let (ident, generics) = match &item {
            syn::Item::Struct(item) => (item.ident.clone(), &item.generics),
            syn::Item::Enum(item) => (item.ident.clone(), &item.generics),
            syn::Item::Fn(_) => return None,
            other => {
                cx.error_spanned_by(
                    item_keyword(other),
                    format!("#[{marker}] goes on a struct or an enum (the message), or marks a handler method"),
                );
                return Some(Err(input));
            }
        };
        if !generics.params.is_empty() {
            cx.error_spanned_by(
                generics,
                format!("a {marker} cannot be generic: it is stored by name"),
            );
        }
        let name = attr::message_args(cx, args, marker)
            .as_ref()
            .map_or_else(|| ident.to_string(), LitStr::value);
        Some(Ok(Self {
            kind,
            item,
            ident,
            name,
        }))
    }
}
