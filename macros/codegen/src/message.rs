//! Expansion of `#[command]` and `#[timeout]` on a type: serde and schemars derives routed
//! through the runtime, and the `Command` or `Timeout` implementation.

use proc_macro2::TokenStream;
use quote::quote;

use crate::ast::{MessageInput, MessageKind};

pub fn expand(message: &MessageInput) -> TokenStream {
    let MessageInput {
        kind,
        item,
        ident,
        name,
        ..
    } = message;
    let message_trait = match kind {
        MessageKind::Command => quote!(::factum::__private::Command),
        MessageKind::Timeout => quote!(::factum::__private::Timeout),
    };
    quote! {
        #[derive(
            ::factum::__private::serde::Serialize,
            ::factum::__private::serde::Deserialize,
            ::factum::__private::schemars::JsonSchema,
        )]
        #[serde(crate = "::factum::__private::serde")]
        #[schemars(crate = "::factum::__private::schemars")]
        #item

        #[automatically_derived]
        impl #message_trait for #ident {
            const NAME: &'static str = #name;
        }
    }
}
