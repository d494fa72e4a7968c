//! Expansion of `#[projection]`: the `Projection` implementation, whose event types are the
//! handlers' (so the store filters the feed) and whose dispatch decodes (and upcasts) each stored
//! event into the handler's type; where it runs (`RunsOn`: every store when the handlers take
//! `Tx`, that store when they take a store's connection); `Reset` from a `#[reset]` method.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned as _;

use crate::valid::{Connection, EnvelopeView, HandlerFn, Projection};

/// Binds `connection` to what the handlers take, from the runtime's `tx`: the transaction
/// itself, or the store's connection (an error naming both stores when it runs on another).
fn bind_connection(connection: &Connection) -> TokenStream {
    match connection {
        Connection::Tx => quote! {
            let connection = tx;
        },
        Connection::Store(ty) => quote! {
            let ::core::option::Option::Some(connection) =
                <#ty as ::factum::__private::StoreConnection>::of(&mut *tx)
            else {
                return ::core::result::Result::Err(::factum::__private::HandlerError::wrong_store(
                    <#ty as ::factum::__private::StoreConnection>::KIND,
                    tx,
                ));
            };
        },
    }
}

/// `STORE` and the `RunsOn` implementations of a projection writing through `connection`.
pub fn stores(self_ty: &syn::Type, connection: &Connection) -> (TokenStream, TokenStream) {
    match connection {
        Connection::Tx => (
            TokenStream::new(),
            quote! {
                #[automatically_derived]
                impl<__S: ::factum::__private::Store> ::factum::__private::RunsOn<__S> for #self_ty {}
            },
        ),
        Connection::Store(ty) => (
            quote! {
                const STORE: ::core::option::Option<::factum::__private::StoreKind> =
                    ::core::option::Option::Some(
                        <#ty as ::factum::__private::StoreConnection>::KIND,
                    );
            },
            quote! {
                #[automatically_derived]
                impl ::factum::__private::RunsOn<
                    <#ty as ::factum::__private::StoreConnection>::Store,
                > for #self_ty {}
            },
        ),
    }
}

/// What a handler is handed as its envelope: the stored event, its origin or its source.
fn envelope_argument(handler: &HandlerFn) -> TokenStream {
    match handler.view {
        EnvelopeView::Source => quote!(&::factum::__private::RecordedEvent::source(stored)),
        EnvelopeView::Origin => quote!(&::factum::__private::RecordedEvent::origin(stored)),
        EnvelopeView::Envelope => quote!(stored),
    }
}

pub fn expand(input: &Projection) -> TokenStream {
    let item = &input.item;
    let Some(connection) = &input.connection else {
        return quote!(#item);
    };
    let self_ty = &item.self_ty;
    let (name, version) = (&input.name, input.version);
    let events: Vec<_> = input.handlers.iter().map(|h| &h.event).collect();
    let bind = bind_connection(connection);
    let decode = |event: &syn::Type| {
        quote! {
            let mut decoded = ::factum::__private::Decoded::default();
            <#event as ::factum::__private::Event>::decode_stored(
                stored.schema_version,
                stored.event.as_str(),
                &mut |item| decoded.push(item),
            )
            .map_err(|cause| ::factum::__private::HandlerError::decode(stored, cause))?;
        }
    };
    // Side-effect handlers are not called in the batch (the runner records the decision with
    // the checkpoint) but by `perform`, after the commit.
    let arms = input.handlers.iter().filter(|h| !h.side_effects).map(|handler| {
        let (method, event) = (&handler.method, &handler.event);
        let span = handler
            .connection
            .as_ref()
            .map_or_else(|| method.span(), |connection| connection.span());
        let envelope = envelope_argument(handler);
        let call = quote_spanned! {span=>
            Self::#method(self, item, #envelope, &mut *connection).await
        };
        let decode = decode(event);
        quote! {
            if event_type == <#event as ::factum::__private::Event>::NAME {
                #decode
                #bind
                for item in decoded.iter() {
                    #call.map_err(|cause| ::factum::__private::HandlerError::handler(stored, cause))?;
                }
                return ::core::result::Result::Ok(());
            }
        }
    });
    let effect_arms: Vec<_> = input
        .handlers
        .iter()
        .filter(|h| h.side_effects)
        .map(|handler| {
            let (method, event) = (&handler.method, &handler.event);
            let envelope = envelope_argument(handler);
            let call = quote_spanned! {method.span()=>
                Self::#method(self, item, #envelope).await
            };
            let decode = decode(event);
            quote! {
                if event_type == <#event as ::factum::__private::Event>::NAME {
                    #decode
                    for item in decoded.iter() {
                        #call.map_err(|cause| ::factum::__private::HandlerError::handler(stored, cause))?;
                    }
                    return ::core::result::Result::Ok(());
                }
            }
        })
        .collect();
    let perform = (!effect_arms.is_empty()).then(|| {
        quote! {
            fn perform<'a>(
                &'a mut self,
                stored: &'a ::factum::__private::RecordedEvent,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<(), ::factum::__private::HandlerError>,
            > + ::core::marker::Send + 'a {
                async move {
                    let event_type = stored.event_type.as_str();
                    #(#effect_arms)*
                    ::core::result::Result::Ok(())
                }
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
                tx: &'a mut ::factum::__private::Tx<'_>,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<(), ::factum::__private::HandlerError>,
            > + ::core::marker::Send + 'a {
                async move {
                    #bind
                    #call.map_err(::factum::__private::HandlerError::flush)
                }
            }
        }
    });
    let reset = input.reset.as_ref().map(|reset| {
        let method = &reset.method;
        let call = quote_spanned! {reset.connection.span()=>
            Self::#method(self, &mut *connection).await
        };
        quote! {
            #[automatically_derived]
            impl ::factum::__private::Reset for #self_ty {
                fn reset<'a>(
                    &'a mut self,
                    tx: &'a mut ::factum::__private::Tx<'_>,
                ) -> impl ::core::future::Future<
                    Output = ::core::result::Result<(), ::factum::__private::HandlerError>,
                > + ::core::marker::Send + 'a {
                    async move {
                        #bind
                        #call.map_err(::factum::__private::HandlerError::flush)
                    }
                }
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
    // The runner reads only the columns of what the handlers take: the most any one takes.
    let envelope_fields = match input.handlers.iter().map(|h| h.view).max() {
        Some(EnvelopeView::Source) | None => Some(quote!(Source)),
        Some(EnvelopeView::Origin) => Some(quote!(Origin)),
        Some(EnvelopeView::Envelope) => None,
    }
    .map(|fields| {
        quote! {
            const ENVELOPE: ::factum::__private::EnvelopeFields =
                ::factum::__private::EnvelopeFields::#fields;
        }
    });
    let (store, runs_on) = stores(self_ty, connection);
    quote! {
        #item

        const _: () = {
            #[automatically_derived]
            impl ::factum::__private::Projection for #self_ty {
                const NAME: &'static str = #name;
                const VERSION: u32 = #version;
                const EVENT_TYPES: &'static [&'static str] =
                    &[#(<#events as ::factum::__private::Event>::NAME),*];
                #store
                #side_effects
                #inline
                #envelope_fields

                fn handle<'a>(
                    &'a mut self,
                    stored: &'a ::factum::__private::RecordedEvent,
                    tx: &'a mut ::factum::__private::Tx<'_>,
                ) -> impl ::core::future::Future<
                    Output = ::core::result::Result<(), ::factum::__private::HandlerError>,
                > + ::core::marker::Send + 'a {
                    async move {
                        let event_type = stored.event_type.as_str();
                        #(#arms)*
                        let _ = tx;
                        ::core::result::Result::Ok(())
                    }
                }

                #perform
                #flush
                #discard
            }

            #runs_on
            #reset
            #inline_marker
        };
    }
}
