//! Expansion of `#[event]` on a struct: serde and schemars derives routed through the runtime,
//! and the `Event` implementation.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};

use crate::ast::EventStruct;

pub fn expand(event: &EventStruct) -> TokenStream {
    expand_with(event, true)
}

/// The expansion; without `chain` (after an error), no upcaster is required for a version above
/// 1, so that the mistake is reported alone.
pub fn expand_with(event: &EventStruct, chain: bool) -> TokenStream {
    let item = &event.item;
    let ident = &item.ident;
    let name = &event.name;
    let version = event.version;
    let upcasting = if chain {
        upcasting(event)
    } else {
        TokenStream::new()
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
        impl ::factum::__private::Event for #ident {
            const NAME: &'static str = #name;
            const VERSION: u32 = #version;
            #upcasting
        }
    }
}

/// For a version above 1: older stored versions are read through the upcaster from the
/// previous version, which must exist (the error points at `version = N`).
fn upcasting(event: &EventStruct) -> TokenStream {
    let Some((version, literal)) = &event.version_literal else {
        return TokenStream::new();
    };
    if *version <= 1 {
        return TokenStream::new();
    }
    let previous = version - 1;
    // Both uses name the chain the same way, at the same tokens: a missing upcaster is one error.
    let chain = quote_spanned! {literal.span()=> <Self as ::factum::__private::Chain<#previous>> };
    let through = quote! { #chain::decode_older(version, payload, out) };
    let older = quote! { #chain::older_schemas(out); };
    quote! {
        fn schema_versions(out: &mut ::std::vec::Vec<::factum::__private::EventSchema>) {
            out.push(::factum::__private::EventSchema::of::<Self>());
            #older
        }

        fn decode_stored(
            version: u32,
            payload: &str,
            out: &mut dyn ::core::ops::FnMut(Self),
        ) -> ::core::result::Result<(), ::factum::__private::DecodeError> {
            if version < #version {
                return #through;
            }
            out(::factum::__private::decode_event::<Self>(version, payload)?);
            ::core::result::Result::Ok(())
        }
    }
}
