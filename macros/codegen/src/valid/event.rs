//! Judging `#[event]` on a struct or an enum.

use syn::{Fields, Meta};

use super::has_generics;
use crate::ast::{EventInput, EventSetEnum, EventStruct};
use crate::ctxt::{Ctxt, tokens_key};

/// The derives `#[event]` adds itself.
const GENERATED_DERIVES: [&str; 3] = ["Serialize", "Deserialize", "JsonSchema"];

pub fn event(cx: &Ctxt, input: &EventInput) {
    match input {
        EventInput::Struct(event) => event_struct(cx, event),
        EventInput::Set(set) => event_set(cx, set),
        EventInput::Other(_) => {}
    }
}

fn event_struct(cx: &Ctxt, event: &EventStruct) {
    super::pii::pii_fields(cx, event);
    if !event.any_name && !super::tense::is_past_tense(&event.name) {
        let message = format!(
            "`{}` does not read as a fact that happened: name events in the past tense, like `{}` (or add `any_name` to `#[event(...)]` where this check gets your language wrong)",
            event.name,
            super::tense::suggestion(&event.name),
        );
        match &event.name_literal {
            Some(literal) => cx.error_spanned_by(literal, message),
            None => cx.error_spanned_by(&event.item.ident, message),
        }
    }
    if has_generics(&event.item.generics) {
        cx.error_spanned_by(
            &event.item.generics,
            "events cannot be generic: a stored type name must denote one Rust type",
        );
    }
    for path in derives_we_add(&event.item.attrs) {
        let name = path
            .segments
            .last()
            .map(|segment| segment.ident.to_string())
            .unwrap_or_default();
        cx.error_spanned_by(
            &path,
            format!("#[event] already derives `{name}`: remove it from this derive"),
        );
    }
}

/// The user's derives of traits `#[event]` derives itself.
fn derives_we_add(attrs: &[syn::Attribute]) -> Vec<syn::Path> {
    let mut found = Vec::new();
    for attr in attrs {
        if !attr.path().is_ident("derive") {
            continue;
        }
        let Meta::List(list) = &attr.meta else {
            continue;
        };
        let Ok(paths) = list.parse_args_with(
            syn::punctuated::Punctuated::<syn::Path, syn::Token![,]>::parse_terminated,
        ) else {
            continue;
        };
        found.extend(paths.into_iter().filter(|path| {
            path.segments
                .last()
                .is_some_and(|last| GENERATED_DERIVES.iter().any(|d| last.ident == d))
        }));
    }
    found
}

/// Whether the struct can be expanded despite errors in the attribute's arguments (the
/// fallback then expands it with defaults, so uses of the event do not fail too).
pub fn struct_expandable(event: &EventStruct) -> bool {
    !has_generics(&event.item.generics) && derives_we_add(&event.item.attrs).is_empty()
}

/// Whether the set can be expanded despite errors in the attribute's arguments.
pub fn set_expandable(set: &EventSetEnum) -> bool {
    let item = &set.item;
    let mut keys: Vec<String> = set.variants.iter().map(|v| tokens_key(&v.ty)).collect();
    keys.sort();
    keys.dedup();
    !has_generics(&item.generics)
        && !item.variants.is_empty()
        && set.variants.len() == item.variants.len()
        && keys.len() == set.variants.len()
        && item.variants.iter().all(|v| v.discriminant.is_none())
}

fn event_set(cx: &Ctxt, set: &EventSetEnum) {
    for key in &set.args.keys {
        cx.error_spanned_by(
            key,
            "an event set takes no options: `name`, `version` and `max_size` belong on each event struct",
        );
    }
    let item = &set.item;
    if has_generics(&item.generics) {
        cx.error_spanned_by(&item.generics, "event sets cannot be generic");
    }
    if item.variants.is_empty() {
        cx.error_spanned_by(
            &item.ident,
            "an event set needs at least one event: add variants like `Opened(AccountOpened)`",
        );
    }
    for variant in &item.variants {
        let one_field = matches!(&variant.fields, Fields::Unnamed(f) if f.unnamed.len() == 1);
        if !one_field {
            let ident = &variant.ident;
            cx.error_spanned_by(
                variant,
                format!(
                    "each variant of an event set holds exactly one event struct, like `{ident}({ident})`; declare the event as its own `#[event]` struct"
                ),
            );
        }
        if let Some((eq, discriminant)) = &variant.discriminant {
            cx.error_spanned_by(
                quote::quote!(#eq #discriminant),
                "event set variants cannot have discriminants",
            );
        }
    }
    let mut seen: Vec<(String, &syn::Ident)> = Vec::new();
    for variant in &set.variants {
        let key = tokens_key(&variant.ty);
        if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
            cx.error_spanned_by(
                &variant.ty,
                format!("`{key}` is already in this event set (variant `{first}`): each event appears once"),
            );
        } else {
            seen.push((key, &variant.ident));
        }
    }
}
