//! Expansion of `#[projection]`: the `Projection` implementation, whose event types are the
//! handlers' (so the store filters the feed) and whose dispatch decodes (and upcasts) each stored
//! event into the handler's type.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned as _;

use crate::valid::Projection;

pub fn expand(input: &Projection) -> TokenStream {
    let item = &input.item;
    let Some(connection) = &input.connection else {
        return quote!(#item);
    };
    let self_ty = &item.self_ty;
    let (name, version) = (&input.name, input.version);
    let events: Vec<_> = input.handlers.iter().map(|h| &h.event).collect();
    let arms = input.handlers.iter().map(|handler| {
        let (method, event) = (&handler.method, &handler.event);
        let call = quote_spanned! {handler.connection.span()=>
            Self::#method(self, item, stored, &mut *connection).await
        };
        quote! {
            if event_type == <#event as ::factum::__private::Event>::NAME {
                let mut decoded = ::std::vec::Vec::with_capacity(1);
                <#event as ::factum::__private::Event>::decode_stored(
                    stored.schema_version,
                    stored.event.as_str(),
                    &mut |item| decoded.push(item),
                )
                .map_err(|cause| ::factum::__private::HandlerError::decode(stored, cause))?;
                for item in &decoded {
                    #call.map_err(|cause| ::factum::__private::HandlerError::handler(stored, cause))?;
                }
                return ::core::result::Result::Ok(());
            }
        }
    });
    let flush = input.flush.as_ref().map(|flush| {
        let method = &flush.method;
        let call = quote_spanned! {flush.connection.span()=>
            Self::#method(self, &mut *connection).await
        };
        quote! {
            fn flush<'a>(
                &'a mut self,
                connection: &'a mut #connection,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<(), ::factum::__private::HandlerError>,
            > + ::core::marker::Send + 'a {
                async move { #call.map_err(::factum::__private::HandlerError::flush) }
            }
        }
    });
    let side_effects: Vec<_> = input
        .handlers
        .iter()
        .filter(|h| h.side_effects)
        .map(|h| &h.event)
        .collect();
    let side_effects = (!side_effects.is_empty()).then(|| {
        quote! {
            const SIDE_EFFECTS: &'static [&'static str] =
                &[#(<#side_effects as ::factum::__private::Event>::NAME),*];
        }
    });
    let discard = input.discard.as_ref().map(|method| {
        quote! {
            fn discard(&mut self) {
                Self::#method(self);
            }
        }
    });
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
    quote! {
        #item

        const _: () = {
            #[automatically_derived]
            impl ::factum::__private::Projection for #self_ty {
                const NAME: &'static str = #name;
                const VERSION: u32 = #version;
                const EVENT_TYPES: &'static [&'static str] =
                    &[#(<#events as ::factum::__private::Event>::NAME),*];
                type Connection = #connection;
                #side_effects
                #inline

                fn handle<'a>(
                    &'a mut self,
                    stored: &'a ::factum::__private::RecordedEvent,
                    connection: &'a mut #connection,
                ) -> impl ::core::future::Future<
                    Output = ::core::result::Result<(), ::factum::__private::HandlerError>,
                > + ::core::marker::Send + 'a {
                    async move {
                        let event_type = stored.event_type.as_str();
                        #(#arms)*
                        ::core::result::Result::Ok(())
                    }
                }

                #flush
                #discard
            }

            #inline_marker
        };
    }
}
