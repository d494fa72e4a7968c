//! What a macro emits when the input has mistakes: the compile errors, the user's item (so that
//! it still exists), and stub implementations where they are safe, so that one mistake does not
//! cascade into errors at every use of the type.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};

use crate::aggregate::{aggregate_impl, handler_impls};
use crate::ast::EventInput;
use crate::valid::{self, Aggregate};
use crate::{event as event_struct, event_set};

pub fn event(input: &EventInput, errors: &syn::Error) -> TokenStream {
    let errors = errors.to_compile_error();
    let item = match input {
        EventInput::Struct(event) if valid::struct_expandable(event) => {
            event_struct::expand_with(event, false)
        }
        EventInput::Set(set) if valid::set_expandable(set) => event_set::expand(set),
        EventInput::Struct(event) => {
            let item = &event.item;
            quote!(#item)
        }
        EventInput::Set(set) => {
            let item = &set.item;
            quote!(#item)
        }
        EventInput::Other(tokens) => tokens.clone(),
    };
    quote! {
        #errors
        #item
    }
}

pub fn aggregate(input: Result<&Aggregate, &TokenStream>, errors: &syn::Error) -> TokenStream {
    let errors = errors.to_compile_error();
    let input = match input {
        Ok(input) => input,
        Err(tokens) => return quote!(#errors #tokens),
    };
    let item = &input.item;
    let stubs = match &input.args.events {
        Some(events) if input.well_formed => {
            let aggregate = aggregate_impl(input, events, false);
            let handlers = handler_impls(input, events, true);
            quote! {
                const _: () = {
                    #aggregate
                    #(#handlers)*
                };
            }
        }
        _ => TokenStream::new(),
    };
    quote! {
        #errors
        #item
        #stubs
    }
}

/// `#[apply]` or `#[command]` outside an `#[aggregate]` impl block.
pub fn stray_marker(marker: &str, item: TokenStream) -> TokenStream {
    let message = if marker == "handle" {
        "`#[handle]` only marks a method of a `#[projection]` or `#[saga]` impl block; put `#[projection]` or `#[saga]` on the impl block".to_owned()
    } else if matches!(marker, "flush" | "discard") {
        format!(
            "`#[{marker}]` only marks a method of a `#[projection]` impl block; put `#[projection]` on the impl block"
        )
    } else if matches!(marker, "start" | "timeout" | "rejected") {
        format!(
            "`#[{marker}]` only marks a method of a `#[saga]` impl block; put `#[saga]` on the impl block"
        )
    } else {
        format!(
            "`#[{marker}]` only marks a method of an `#[aggregate(events = ...)]` impl block; put `#[aggregate]` on the impl block"
        )
    };
    let error = syn::Error::new(proc_macro2::Span::call_site(), message).to_compile_error();
    quote! {
        #error
        #item
    }
}

/// The errors, and the item as written (without our markers), for macros whose mistakes leave
/// nothing safe to stub.
pub fn item_as_written<T: ToTokens>(item: &T, errors: &syn::Error) -> TokenStream {
    let errors = errors.to_compile_error();
    quote! {
        #errors
        #item
    }
}
