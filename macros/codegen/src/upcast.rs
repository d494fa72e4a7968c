//! Expansion of `#[upcast]`: the `UpcastFrom` implementation linking two versions of an event,
//! and compile-time checks that they are consecutive versions of the same event.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned as _;

use crate::valid::Upcast;

pub fn expand(upcast: &Upcast) -> TokenStream {
    let item = &upcast.item;
    let function = &item.sig.ident;
    let (from, to) = (&upcast.from, &upcast.to);
    let same_name = format!(
        "upcaster `{function}` must turn a version of an event into a version of the same event: give both types the same `#[event(name = \"...\")]`"
    );
    let next_version = format!(
        "upcaster `{function}` must turn a version of an event into the very next version: chain one upcaster per version"
    );
    let impl_block = quote_spanned! {to.span()=>
        #[automatically_derived]
        impl ::factum::__private::UpcastFrom<{ <#from as ::factum::__private::Event>::VERSION }> for #to {
            type Previous = #from;

            #[inline]
            fn upcast(previous: #from, out: &mut dyn ::core::ops::FnMut(#to)) {
                ::factum::__private::UpcastOutput::<#to>::emit(#function(previous), out);
            }
        }
    };
    let checks = quote_spanned! {to.span()=>
        const _: () = ::core::assert!(
            ::factum::__private::str_eq(
                <#from as ::factum::__private::Event>::NAME,
                <#to as ::factum::__private::Event>::NAME,
            ),
            #same_name,
        );
        const _: () = ::core::assert!(
            <#to as ::factum::__private::Event>::VERSION
                == <#from as ::factum::__private::Event>::VERSION + 1,
            #next_version,
        );
    };
    quote! {
        #[allow(clippy::needless_pass_by_value)]
        #item

        const _: () = {
            #impl_block
            #checks
        };
    }
}
