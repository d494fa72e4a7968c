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
    pub generics: syn::Generics,
    /// The stable name (default: the Rust name).
    pub name: String,
}

/// Whether the attribute is on a function: then it is the marker of a handler method, outside
/// the impl block that would consume it.
pub fn on_a_function(input: &TokenStream) -> bool {
    match syn::parse2::<syn::Item>(input.clone()) {
        Ok(item) => matches!(item, syn::Item::Fn(_)),
        // A method with a receiver, outside an impl block.
        Err(_) => input.clone().into_iter().any(|t| t.to_string() == "fn"),
    }
}

impl MessageInput {
    /// The message; the input as it is when it is no struct or enum. Call [`on_a_function`]
    /// first: a function is reported as a misplaced handler marker instead.
    pub fn from_syn(
        cx: &Ctxt,
        kind: MessageKind,
        args: TokenStream,
        input: TokenStream,
    ) -> Result<Self, TokenStream> {
        let marker = kind.marker();
        let item = match syn::parse2::<syn::Item>(input.clone()) {
            Ok(item) => item,
            Err(error) => {
                cx.syn_error(error);
                return Err(input);
            }
        };
        let (ident, generics) = match &item {
            syn::Item::Struct(item) => (item.ident.clone(), item.generics.clone()),
            syn::Item::Enum(item) => (item.ident.clone(), item.generics.clone()),
            other => {
                cx.error_spanned_by(
                    item_keyword(other),
                    format!("#[{marker}] goes on a struct or an enum (the message), or marks a handler method"),
                );
                return Err(input);
            }
        };
        let name = attr::message_args(cx, args, marker)
            .as_ref()
            .map_or_else(|| ident.to_string(), LitStr::value);
        Ok(Self {
            kind,
            item,
            ident,
            generics,
            name,
        })
    }
}
