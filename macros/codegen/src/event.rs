//! Expansion of `#[event]` on a struct: serde and schemars derives routed through the runtime,
//! and the `Event` implementation.

use proc_macro2::TokenStream;
use quote::quote;

use crate::ast::EventStruct;

pub fn expand(event: &EventStruct) -> TokenStream {
    let item = &event.item;
    let ident = &item.ident;
    let name = &event.name;
    let version = event.version;
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
        impl ::factum::__private::Event for #ident {
            const NAME: &'static str = #name;
            const VERSION: u32 = #version;
        }
    }
}
