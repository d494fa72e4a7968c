//! Expansion of `#[event]` on an enum: the `EventSet` implementation (encode, decode by type
//! name), the apply `match`, conversions from each event, and the compile-time check that no two
//! events of the set share a type name.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned as _;

use crate::ast::EventSetEnum;

pub fn expand(set: &EventSetEnum) -> TokenStream {
    let item = &set.item;
    let ident = &item.ident;
    let set_name = ident.to_string();
    let variants: Vec<_> = set.variants.iter().map(|v| &v.ident).collect();
    let types: Vec<_> = set.variants.iter().map(|v| &v.ty).collect();

    let descriptors = types.iter().map(|ty| {
        quote_spanned! {ty.span()=> ::factum::__private::EventDescriptor::of::<#ty>() }
    });
    let decode_arms = set.variants.iter().map(|v| {
        let (variant, ty) = (&v.ident, &v.ty);
        quote! {
            if event_type == <#ty as ::factum::__private::Event>::NAME {
                return <#ty as ::factum::__private::Event>::decode_stored(
                    schema_version,
                    payload,
                    &mut |event| out(Self::#variant(event)),
                );
            }
        }
    });
    let conversions = set.variants.iter().map(|v| {
        let (variant, ty) = (&v.ident, &v.ty);
        quote! {
            #[automatically_derived]
            impl ::core::convert::From<#ty> for #ident {
                #[inline]
                fn from(event: #ty) -> Self {
                    #ident::#variant(event)
                }
            }

            #[automatically_derived]
            impl ::factum::__private::IntoEvents<#ident> for #ty {
                #[inline]
                fn into_events(self, out: &mut ::std::vec::Vec<#ident>) {
                    out.push(#ident::#variant(self));
                }
            }

            #[automatically_derived]
            impl ::factum::__private::EventOf<#ident> for #ty {}
        }
    });
    let distinct_names = distinct_names(set);

    quote! {
        #item

        const _: () = {
            #[automatically_derived]
            impl ::factum::__private::EventSet for #ident {
                const NAME: &'static str = #set_name;

                const EVENTS: &'static [::factum::__private::EventDescriptor] = &[#(#descriptors),*];

                fn event_schemas(out: &mut ::std::vec::Vec<::factum::__private::EventSchema>) {
                    #(<#types as ::factum::__private::Event>::schema_versions(out);)*
                }

                fn event_type(&self) -> &'static str {
                    match self {
                        #(Self::#variants(_) => <#types as ::factum::__private::Event>::NAME,)*
                    }
                }

                fn schema_version(&self) -> u32 {
                    match self {
                        #(Self::#variants(_) => <#types as ::factum::__private::Event>::VERSION,)*
                    }
                }

                fn pii(&self) -> ::core::option::Option<&'static ::factum::__private::PiiSpec> {
                    match self {
                        #(Self::#variants(_) => <#types as ::factum::__private::Event>::PII,)*
                    }
                }

                fn encode(
                    &self,
                ) -> ::core::result::Result<::factum::__private::Payload, ::factum::__private::serde_json::Error> {
                    match self {
                        #(Self::#variants(event) => ::factum::__private::encode_event(event),)*
                    }
                }

                fn decode(
                    event_type: &str,
                    schema_version: u32,
                    payload: &str,
                    out: &mut dyn ::core::ops::FnMut(Self),
                ) -> ::core::result::Result<(), ::factum::__private::DecodeError> {
                    #(#decode_arms)*
                    ::core::result::Result::Err(::factum::__private::DecodeError::UnknownType {
                        event_type: ::std::borrow::ToOwned::to_owned(event_type),
                        set: #set_name,
                    })
                }
            }

            #[automatically_derived]
            impl<__FactumAggregate> ::factum::__private::ApplyTo<__FactumAggregate> for #ident
            where
                #(__FactumAggregate: ::factum::__private::Apply<#types>,)*
            {
                #[inline]
                fn apply_to(&self, aggregate: &mut __FactumAggregate) {
                    match self {
                        #(Self::#variants(event) => {
                            <__FactumAggregate as ::factum::__private::Apply<#types>>::apply(aggregate, event);
                        })*
                    }
                }
            }

            #[automatically_derived]
            impl ::factum::__private::IntoEvents<#ident> for #ident {
                #[inline]
                fn into_events(self, out: &mut ::std::vec::Vec<#ident>) {
                    out.push(self);
                }
            }

            #(#conversions)*

            #(#distinct_names)*
        };
    }
}

/// For each pair of events, a constant that fails to compile when both have the same type name
/// (the names may be overridden, so this is checked on the resolved `Event::NAME`s).
fn distinct_names(set: &EventSetEnum) -> Vec<TokenStream> {
    let mut checks = Vec::new();
    for (i, later) in set.variants.iter().enumerate() {
        for earlier in &set.variants[..i] {
            let (a, b) = (&earlier.ty, &later.ty);
            let message = format!(
                "events `{}` and `{}` of `{}` have the same type name: a stored event must name one event; rename one with `#[event(name = \"...\")]`",
                earlier.ident, later.ident, set.item.ident,
            );
            checks.push(quote_spanned! {b.span()=>
                const _: () = if ::factum::__private::str_eq(
                    <#a as ::factum::__private::Event>::NAME,
                    <#b as ::factum::__private::Event>::NAME,
                ) {
                    ::core::panic!(#message)
                };
            });
        }
    }
    checks
}
