//! What a macro emits when the input has mistakes: the compile errors, the user's item (so that
//! it still exists), and stub implementations where they are safe, so that one mistake does not
//! cascade into errors at every use of the type.
//!
//! A stub must never be the source of an error itself: it is emitted only for an impl block whose
//! type can carry it (inherent, not generic, a plain path), uses only the handlers judged right,
//! and implements each trait once even where the user repeated something. What a trait requires
//! of the types it names (of the type itself: `Default` for an aggregate, `Send` for a
//! projection, `Default`, `Serialize` and `Deserialize` for a saga; of a command a saga lists:
//! `Command`) the stub requires too, as the expansion does once the mistake is fixed: a type
//! lacking it is a mistake of its own, reported once.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned as _;

use crate::aggregate::{aggregate_impl, handler_impls};
use crate::ast::EventInput;
use crate::ctxt::tokens_key;
use crate::valid::{self, Aggregate, Connection, Projection, Saga};
use crate::{event as event_struct, event_set};

/// `#[event]` with mistakes: the errors, and the event expanded with its defaults when its shape
/// allows it (so that its uses do not fail too), else the item as written.
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

/// `#[aggregate]` with mistakes: the errors, the impl block, and stub `Aggregate` and `Handle`
/// implementations (an `apply` that does nothing, the command handlers judged right).
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

/// `#[projection]` with mistakes: the errors, the impl block, and a stub `Projection`
/// implementation (with `InlineProjection` when it is declared `inline`) that handles nothing, so
/// that uses of the type as a projection do not fail too.
///
/// The stub runs where the first handler judged right (else the `#[flush]` or `#[reset]`) says
/// the projection runs (`Tx`: every store; a store's connection: that store). When none is
/// right (every handler is malformed, or there is none), it runs on every store (`Tx`): that
/// cannot mismatch wherever the projection is run, so its uses stay quiet until it is fixed.
pub fn projection(input: Result<&Projection, &TokenStream>, errors: &syn::Error) -> TokenStream {
    let errors = errors.to_compile_error();
    let input = match input {
        Ok(input) => input,
        Err(tokens) => return quote!(#errors #tokens),
    };
    let item = &input.item;
    let stub = input.well_formed.then(|| {
        let connection = input.connection.as_ref().unwrap_or(&Connection::Tx);
        projection_stub(input, connection)
    });
    quote! {
        #errors
        #item
        #stub
    }
}

fn projection_stub(input: &Projection, connection: &Connection) -> TokenStream {
    let self_ty = &input.item.self_ty;
    let (name, version) = (&input.name, input.version);
    let inline = input.inline.then(|| {
        quote!(
            const INLINE: bool = true;
        )
    });
    let inline_marker = input.inline.then(|| {
        quote! {
            #[automatically_derived]
            impl ::factum::__private::InlineProjection for #self_ty {}
        }
    });
    let reset = input.reset.is_some().then(|| {
        quote! {
            #[automatically_derived]
            impl ::factum::__private::Reset for #self_ty {
                fn reset<'a>(
                    &'a mut self,
                    _: &'a mut ::factum::__private::Tx<'_>,
                ) -> impl ::core::future::Future<
                    Output = ::core::result::Result<(), ::factum::__private::HandlerError>,
                > + ::core::marker::Send + 'a {
                    ::core::future::ready(::core::result::Result::Ok(()))
                }
            }
        }
    });
    let (store, runs_on) = crate::projection::stores(self_ty, connection);
    quote! {
        const _: () = {
            #[automatically_derived]
            impl ::factum::__private::Projection for #self_ty {
                const NAME: &'static str = #name;
                const VERSION: u32 = #version;
                const EVENT_TYPES: &'static [&'static str] = &[];
                #store
                #inline

                fn handle<'a>(
                    &'a mut self,
                    _: &'a ::factum::__private::RecordedEvent,
                    _: &'a mut ::factum::__private::Tx<'_>,
                ) -> impl ::core::future::Future<
                    Output = ::core::result::Result<(), ::factum::__private::HandlerError>,
                > + ::core::marker::Send + 'a {
                    ::core::future::ready(::core::result::Result::Ok(()))
                }
            }

            #runs_on
            #reset
            #inline_marker
        };
    }
}

/// `#[saga]` with mistakes: the errors, the impl block, and a stub `Saga` implementation that
/// handles nothing, with the `Sends` implementations of the commands listed and the `Schedules`
/// implementations of the timeouts whose handlers were judged right (each once), so that uses of
/// the type as a saga, and its handlers' `send` and `schedule` calls, do not fail too.
pub fn saga(input: Result<&Saga, &TokenStream>, errors: &syn::Error) -> TokenStream {
    let errors = errors.to_compile_error();
    let input = match input {
        Ok(input) => input,
        Err(tokens) => return quote!(#errors #tokens),
    };
    let item = &input.item;
    let stubs = input.well_formed.then(|| saga_stubs(input));
    quote! {
        #errors
        #item
        #stubs
    }
}

fn saga_stubs(input: &Saga) -> TokenStream {
    let self_ty = &input.item.self_ty;
    let name = &input.name;
    let sends = each_once(&input.commands).into_iter().map(|command| {
        quote_spanned! {command.span()=>
            #[automatically_derived]
            impl ::factum::__private::Sends<#command> for #self_ty {}
        }
    });
    let timeouts: Vec<_> = input.timeouts.iter().map(|t| t.message.clone()).collect();
    let schedules = each_once(&timeouts).into_iter().map(|timeout| {
        quote_spanned! {timeout.span()=>
            #[automatically_derived]
            impl ::factum::__private::Schedules<#timeout> for #self_ty {}
        }
    });
    quote! {
        const _: () = {
            #[automatically_derived]
            impl ::factum::__private::Saga for #self_ty {
                const NAME: &'static str = #name;
                const EVENT_TYPES: &'static [&'static str] = &[];

                fn associate(
                    _: &::factum::__private::RecordedEvent,
                ) -> ::core::result::Result<
                    ::core::option::Option<::factum::__private::Association>,
                    ::factum::__private::HandlerError,
                > {
                    ::core::result::Result::Ok(::core::option::Option::None)
                }

                fn handle(
                    &mut self,
                    _: &::factum::__private::RecordedEvent,
                    _: &mut ::factum::__private::SagaContext<Self>,
                ) -> ::core::result::Result<(), ::factum::__private::HandlerError> {
                    ::core::result::Result::Ok(())
                }

                fn timeout(
                    &mut self,
                    _: &::factum::__private::FiredTimeout,
                    _: &mut ::factum::__private::SagaContext<Self>,
                ) -> ::core::result::Result<(), ::factum::__private::HandlerError> {
                    ::core::result::Result::Ok(())
                }
            }

            #(#sends)*
            #(#schedules)*
        };
    }
}

/// The types, each once (as written first), so that no stub is implemented twice.
fn each_once(types: &[syn::Type]) -> Vec<&syn::Type> {
    let mut seen = Vec::new();
    types
        .iter()
        .filter(|ty| {
            let key = tokens_key(ty);
            let first = !seen.contains(&key);
            seen.push(key);
            first
        })
        .collect()
}

/// A marker of a method (`#[apply]`, `#[handle]`, `#[start]`, ...) outside the impl block whose
/// attribute consumes it.
pub fn stray_marker(marker: &str, item: TokenStream) -> TokenStream {
    let message = if marker == "handle" {
        "`#[handle]` only marks a method of a `#[projection]` or `#[saga]` impl block; put `#[projection]` or `#[saga]` on the impl block".to_owned()
    } else if matches!(marker, "flush" | "discard" | "reset") {
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
