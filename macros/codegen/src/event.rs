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
    let max_size = event.max_size.map(|bytes| {
        quote! { const MAX_SIZE: ::core::option::Option<usize> = ::core::option::Option::Some(#bytes); }
    });
    // After an error (no `chain`), the event is expanded without its personal-data fields.
    let (upcasting, pii) = if chain {
        (upcasting(event), pii(event))
    } else {
        (TokenStream::new(), TokenStream::new())
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
            #max_size
            #pii
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

/// `Event::PII` from the `#[pii]` fields (nothing when there are none): the subject's JSON
/// name, and each personal-data field's JSON name with its replacement as JSON. Each type is
/// checked at the user's tokens: the subject's (a string, an integer or a UUID), and each
/// replacement against its field's type.
fn pii(event: &EventStruct) -> TokenStream {
    let Some(subject) = event.pii.iter().find(|field| field.args.subject.is_some()) else {
        return TokenStream::new();
    };
    let (Ok(subject_name), subject_ty) = (&subject.json_name, &subject.ty) else {
        return TokenStream::new();
    };
    let json = quote! { ::factum::__private::serde_json };
    let mut erased_fns = Vec::new();
    let mut fields = Vec::new();
    for (index, field) in event.pii.iter().enumerate() {
        let (None, Ok(name)) = (&field.args.subject, &field.json_name) else {
            continue;
        };
        let erased = quote::format_ident!("__factum_erased_{}", index);
        let ty = &field.ty;
        let value = match &field.args.replacement {
            Some(replacement) => quote_spanned! {syn::spanned::Spanned::span(replacement)=>
                let value: #ty = #replacement;
            },
            None => quote! { let value: #ty = ::core::option::Option::None; },
        };
        erased_fns.push(quote! {
            fn #erased() -> #json::Value {
                #value
                #json::to_value(&value).unwrap_or(#json::Value::Null)
            }
        });
        fields.push(quote! { ::factum::__private::PiiField::new(#name, #erased) });
    }
    let subject_check = quote_spanned! {syn::spanned::Spanned::span(subject_ty)=>
        const _: () = ::factum::__private::assert_pii_subject::<#subject_ty>();
    };
    quote! {
        const PII: ::core::option::Option<&'static ::factum::__private::PiiSpec> = {
            #subject_check
            #(#erased_fns)*
            const FIELDS: &[::factum::__private::PiiField] = &[#(#fields),*];
            const SPEC: ::factum::__private::PiiSpec =
                ::factum::__private::PiiSpec::new(#subject_name, FIELDS);
            ::core::option::Option::Some(&SPEC)
        };
    }
}
