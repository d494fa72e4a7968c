//! Judging `#[upcast]`: a pure function from one version of an event to the next.

use proc_macro2::TokenStream;
use quote::ToTokens as _;
use syn::{FnArg, ReturnType, Type};

use crate::ast::{UPCAST_USAGE, UpcastInput};
use crate::ctxt::Ctxt;

/// `#[upcast] fn name(old: From) -> To` (or `Option<To>`, `Vec<To>`), as judged.
pub struct Upcast {
    pub item: syn::ItemFn,
    /// The older version's type.
    pub from: Type,
    /// The newer version's type.
    pub to: Type,
}

/// The upcaster, when both versions can be read from its signature; otherwise the function as
/// written (every mistake is recorded either way).
pub fn upcast(cx: &Ctxt, input: UpcastInput) -> Result<Upcast, TokenStream> {
    let UpcastInput { item } = input;
    let sig = &item.sig;
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        cx.error_spanned_by(&sig.generics, "upcasters take no generic parameters");
    }
    if let Some(asyncness) = &sig.asyncness {
        cx.error_spanned_by(
            asyncness,
            "upcasters cannot be async: they are pure functions of the old event, with no I/O",
        );
    }
    let from = match sig.inputs.iter().collect::<Vec<_>>().as_slice() {
        [FnArg::Typed(arg)] => match &*arg.ty {
            Type::Reference(reference) => {
                cx.error_spanned_by(reference, "upcasters take the old event by value");
                None
            }
            ty => Some(ty.clone()),
        },
        [FnArg::Receiver(receiver)] => {
            cx.error_spanned_by(
                receiver,
                format!("upcasters are free functions: `{UPCAST_USAGE}`"),
            );
            None
        }
        [] => {
            cx.error_spanned_by(
                &sig.ident,
                format!("an upcaster takes the old event: `{UPCAST_USAGE}`"),
            );
            None
        }
        [_, extra @ ..] => {
            for arg in extra {
                cx.error_spanned_by(
                    arg,
                    format!(
                        "an upcaster takes exactly one argument, the old event: `{UPCAST_USAGE}`"
                    ),
                );
            }
            None
        }
    };
    let to = match &sig.output {
        ReturnType::Type(_, ty) => upcast_target(ty).or_else(|| {
            cx.error_spanned_by(ty, "an upcaster returns the next version of the event, `Option` of it (to drop the old event) or `Vec` of it (to split it)");
            None
        }),
        ReturnType::Default => {
            cx.error_spanned_by(
                &sig.ident,
                format!("an upcaster returns the next version: `{UPCAST_USAGE}`"),
            );
            None
        }
    };
    match (from, to) {
        (Some(from), Some(to)) => Ok(Upcast { item, from, to }),
        _ => Err(item.into_token_stream()),
    }
}

/// `To` out of `To`, `Option<To>` or `Vec<To>`.
fn upcast_target(ty: &Type) -> Option<Type> {
    let Type::Path(path) = ty else {
        return None;
    };
    let last = path.path.segments.last()?;
    if last.ident != "Option" && last.ident != "Vec" {
        return Some(ty.clone());
    }
    let syn::PathArguments::AngleBracketed(arguments) = &last.arguments else {
        return None;
    };
    match arguments.args.iter().collect::<Vec<_>>().as_slice() {
        [syn::GenericArgument::Type(inner)] => Some(inner.clone()),
        _ => None,
    }
}
