//! `#[upcast]` on a function turning one version of an event into the next.

use proc_macro2::TokenStream;

use super::first_token;
use crate::ctxt::Ctxt;

/// How an upcaster is written.
pub const UPCAST_USAGE: &str = "#[upcast] fn upcast(old: EventV1) -> EventV2";

/// What `#[upcast]` was put on: a function.
pub struct UpcastInput {
    pub item: syn::ItemFn,
}

impl UpcastInput {
    pub fn from_syn(cx: &Ctxt, args: TokenStream, input: TokenStream) -> Result<Self, TokenStream> {
        if !args.is_empty() {
            cx.error_spanned_by(&args, "`#[upcast]` takes no arguments");
        }
        match syn::parse2::<syn::ItemFn>(input.clone()) {
            Ok(item) => Ok(Self { item }),
            Err(_) => {
                cx.error_spanned_by(
                    first_token(&input),
                    format!("#[upcast] goes on a function turning one version of an event into the next: `{UPCAST_USAGE}`"),
                );
                Err(input)
            }
        }
    }
}
