//! Judging what `ast` read: the headers of impl blocks, the signatures of marked methods, and the
//! rules that look at a whole item (one handler per event, one connection type, ...). Every
//! mistake is recorded in the `Ctxt`, at the user's tokens. For the impl-block macros, judging
//! also says what the input means: the handlers whose signatures are right, with the types read
//! from them, which expansion (or, after mistakes, the fallback's stubs) works from.

use proc_macro2::TokenStream;
use syn::{FnArg, ItemImpl, Signature, Type};

use crate::ast::{MessageInput, type_ident};
use crate::ctxt::Ctxt;

mod aggregate;
mod event;
mod pii;
mod projection;
mod saga;
mod tense;
mod upcast;

pub use aggregate::{Aggregate, aggregate};
pub use event::{event, set_expandable, struct_expandable};
pub use projection::{Connection, EnvelopeView, HandlerFn, Projection, projection};
pub use saga::{Saga, saga};
pub use upcast::{Upcast, upcast};

/// `#[command]` or `#[timeout]` on a type.
pub fn message(cx: &Ctxt, input: &MessageInput) {
    if !input.generics.params.is_empty() {
        cx.error_spanned_by(
            &input.generics,
            format!(
                "a {} cannot be generic: it is stored by name",
                input.kind.marker()
            ),
        );
    }
}

/// What an impl-block attribute says about the block it goes on.
struct ImplRules {
    /// "aggregate", "projection", "saga": in the attribute and messages.
    kind: &'static str,
    /// The message when the impl block is generic.
    not_generic: &'static str,
    /// What cannot be derived when the type is no plain path ("a projection name").
    name_of: &'static str,
}

/// Judges the header of the impl block an attribute goes on: inherent, not generic, and named
/// (in the attribute, or by its type). Returns whether traits can be implemented for its type
/// (inherent, not generic, a plain path): only then may the fallback emit stubs.
fn impl_header(cx: &Ctxt, item: &ItemImpl, name: Option<&str>, rules: &ImplRules) -> bool {
    let kind = rules.kind;
    let mut well_formed = true;
    if let Some((path, for_token)) = &item.trait_ {
        cx.error_spanned_by(
            quote::quote!(#path #for_token),
            format!("#[{kind}] goes on an inherent `impl` block, not on a trait implementation"),
        );
        well_formed = false;
    }
    if has_generics(&item.generics) {
        cx.error_spanned_by(&item.generics, rules.not_generic);
        well_formed = false;
    }
    if name.is_none() {
        cx.error_spanned_by(
            &item.self_ty,
            format!(
                "cannot derive {} from this type: name it with `#[{kind}(name = \"...\")]`",
                rules.name_of
            ),
        );
    }
    well_formed && type_ident(&item.self_ty).is_some()
}

fn has_generics(generics: &syn::Generics) -> bool {
    !generics.params.is_empty() || generics.where_clause.is_some()
}

/// The receiver, when it is a plain reference (`&self` / `&mut self`): its mutability.
fn reference_receiver(sig: &Signature) -> Option<(bool, &syn::Receiver)> {
    let receiver = sig.receiver()?;
    match &receiver.kind {
        syn::ReceiverKind::Reference(_, _, mutability) => Some((mutability.is_some(), receiver)),
        _ => None,
    }
}

/// Where to report a bad receiver: the receiver, or the method's name when there is none.
fn receiver_or_name(sig: &Signature) -> TokenStream {
    use quote::ToTokens as _;
    match sig.receiver() {
        Some(receiver) => receiver.to_token_stream(),
        None => sig.ident.to_token_stream(),
    }
}

/// The referent of `&T` (not `&mut T`).
fn shared_reference(ty: &Type) -> Option<&Type> {
    match ty {
        Type::Reference(reference) if reference.mutability.is_none() => Some(&reference.elem),
        Type::Group(group) => shared_reference(&group.elem),
        _ => None,
    }
}

/// The arguments after the receiver.
fn typed_inputs(sig: &Signature) -> Vec<&syn::PatType> {
    sig.inputs
        .iter()
        .filter_map(|arg| match arg {
            FnArg::Typed(typed) => Some(typed),
            FnArg::Receiver(_) => None,
        })
        .collect()
}

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(tuple) if tuple.elems.is_empty())
}
