//! Expansion of `#[saga]`: the `Saga` implementation (which instance an event concerns, the
//! dispatch of events, timeouts and refused commands to the handlers), and the `Sends` and
//! `Schedules` implementations that let handlers send the declared commands and schedule the
//! handled timeouts.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned as _;

use crate::ast::SagaRole;
use crate::valid::Saga;

pub fn expand(input: &Saga) -> TokenStream {
    let item = &input.item;
    let self_ty = &item.self_ty;
    let name = &input.name;
    let events: Vec<_> = input.handlers.iter().map(|h| &h.event).collect();
    let commands = &input.commands;
    let timeouts: Vec<_> = input.timeouts.iter().map(|t| &t.message).collect();
    let associations = input.handlers.iter().map(|handler| {
        let event = &handler.event;
        let by = &handler.by;
        let key = quote_spanned! {by.span()=> ::std::string::ToString::to_string(&item.#by) };
        let role = match handler.role {
            SagaRole::Start => quote!(Start),
            SagaRole::Handle => quote!(Handle),
            SagaRole::End => quote!(End),
        };
        quote! {
            if event_type == <#event as ::factum::__private::Event>::NAME {
                let mut saga_id = ::core::option::Option::None;
                <#event as ::factum::__private::Event>::decode_stored(
                    stored.schema_version,
                    stored.event.as_str(),
                    &mut |item: #event| {
                        if saga_id.is_none() {
                            saga_id = ::core::option::Option::Some(#key);
                        }
                    },
                )
                .map_err(|cause| ::factum::__private::HandlerError::decode(stored, cause))?;
                return ::core::result::Result::Ok(saga_id.map(|saga_id| {
                    ::factum::__private::Association::new(
                        saga_id,
                        ::factum::__private::Role::#role,
                    )
                }));
            }
        }
    });
    let event_arms = input.handlers.iter().map(|handler| {
        let (method, event) = (&handler.method, &handler.event);
        quote! {
            if event_type == <#event as ::factum::__private::Event>::NAME {
                let mut decoded = ::factum::__private::Decoded::default();
                <#event as ::factum::__private::Event>::decode_stored(
                    stored.schema_version,
                    stored.event.as_str(),
                    &mut |item| decoded.push(item),
                )
                .map_err(|cause| ::factum::__private::HandlerError::decode(stored, cause))?;
                for item in decoded.iter() {
                    Self::#method(self, item, &mut *context);
                }
                return ::core::result::Result::Ok(());
            }
        }
    });
    let timeout_arms = input.timeouts.iter().map(|handler| {
        let (method, message) = (&handler.method, &handler.message);
        quote! {
            if timeout.timeout_type == <#message as ::factum::__private::Timeout>::NAME {
                let decoded = timeout.decode::<#message>()?;
                Self::#method(self, &decoded, context);
                return ::core::result::Result::Ok(());
            }
        }
    });
    let rejected = input.rejected.as_ref().map(|method| {
        quote! {
            fn rejected(
                &mut self,
                rejection: &::factum::__private::Rejection,
                context: &mut ::factum::__private::SagaContext<Self>,
            ) {
                Self::#method(self, rejection, context);
            }
        }
    });
    let sends = commands.iter().map(|command| {
        quote_spanned! {command.span()=>
            #[automatically_derived]
            impl ::factum::__private::Sends<#command> for #self_ty {}
        }
    });
    let schedules = timeouts.iter().map(|timeout| {
        quote_spanned! {timeout.span()=>
            #[automatically_derived]
            impl ::factum::__private::Schedules<#timeout> for #self_ty {}
        }
    });
    quote! {
        #item

        const _: () = {
            #[automatically_derived]
            impl ::factum::__private::Saga for #self_ty {
                const NAME: &'static str = #name;
                const EVENT_TYPES: &'static [&'static str] =
                    &[#(<#events as ::factum::__private::Event>::NAME),*];
                const COMMANDS: &'static [&'static str] =
                    &[#(<#commands as ::factum::__private::Command>::NAME),*];
                const TIMEOUTS: &'static [&'static str] =
                    &[#(<#timeouts as ::factum::__private::Timeout>::NAME),*];

                fn associate(
                    stored: &::factum::__private::RecordedEvent,
                ) -> ::core::result::Result<
                    ::core::option::Option<::factum::__private::Association>,
                    ::factum::__private::HandlerError,
                > {
                    let event_type = stored.event_type.as_str();
                    #(#associations)*
                    ::core::result::Result::Ok(::core::option::Option::None)
                }

                fn handle(
                    &mut self,
                    stored: &::factum::__private::RecordedEvent,
                    context: &mut ::factum::__private::SagaContext<Self>,
                ) -> ::core::result::Result<(), ::factum::__private::HandlerError> {
                    let event_type = stored.event_type.as_str();
                    #(#event_arms)*
                    ::core::result::Result::Ok(())
                }

                fn timeout(
                    &mut self,
                    timeout: &::factum::__private::FiredTimeout,
                    context: &mut ::factum::__private::SagaContext<Self>,
                ) -> ::core::result::Result<(), ::factum::__private::HandlerError> {
                    #(#timeout_arms)*
                    ::core::result::Result::Err(::factum::__private::HandlerError::unknown_timeout(timeout))
                }

                #rejected
            }

            #(#sends)*
            #(#schedules)*
        };
    }
}
