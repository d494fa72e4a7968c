//! Rules that look at a whole annotated item: what parsing alone cannot tell.

use syn::{Fields, Meta};

use crate::ast::{AggregateInput, EventInput, EventSetEnum, EventStruct};
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
    if !event.item.generics.params.is_empty() || event.item.generics.where_clause.is_some() {
        cx.error_spanned_by(
            &event.item.generics,
            "events cannot be generic: a stored type name must denote one Rust type",
        );
    }
    for attr in &event.item.attrs {
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
        for path in paths {
            let Some(last) = path.segments.last() else {
                continue;
            };
            let name = last.ident.to_string();
            if GENERATED_DERIVES.contains(&name.as_str()) {
                cx.error_spanned_by(
                    &path,
                    format!("#[event] already derives `{name}`: remove it from this derive"),
                );
            }
        }
    }
}

fn event_set(cx: &Ctxt, set: &EventSetEnum) {
    for key in &set.args.keys {
        cx.error_spanned_by(
            key,
            "an event set takes no options: `name` and `version` belong on each event struct",
        );
    }
    let item = &set.item;
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
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

pub fn aggregate(cx: &Ctxt, input: &AggregateInput) {
    if input.args.events.is_none() {
        cx.error_at(
            proc_macro2::Span::call_site(),
            "missing `events = ...`: name the aggregate's event set, like `#[aggregate(events = AccountEvent)]`",
        );
    }
    let mut applied: Vec<(String, &syn::Ident)> = Vec::new();
    for apply in &input.applies {
        let key = tokens_key(&apply.event);
        if let Some((_, first)) = applied.iter().find(|(k, _)| *k == key) {
            cx.error_spanned_by(
                &apply.event,
                format!("`{key}` already has an apply function (`{first}`): merge them into one"),
            );
        } else {
            applied.push((key, &apply.method));
        }
    }
    let mut ignored: Vec<String> = Vec::new();
    for ty in &input.args.ignore {
        let key = tokens_key(ty);
        if let Some((_, method)) = applied.iter().find(|(k, _)| *k == key) {
            cx.error_spanned_by(
                ty,
                format!(
                    "`{key}` is ignored but has an apply function (`{method}`): keep one of the two"
                ),
            );
        }
        if ignored.contains(&key) {
            cx.error_spanned_by(ty, format!("`{key}` is listed twice in `ignore`"));
        }
        ignored.push(key);
    }
    let mut handled: Vec<(String, &syn::Ident)> = Vec::new();
    for command in &input.commands {
        let key = tokens_key(&command.command);
        if let Some((_, first)) = handled.iter().find(|(k, _)| *k == key) {
            cx.error_spanned_by(
                &command.command,
                format!(
                    "`{key}` already has a command handler (`{first}`): a command has one handler"
                ),
            );
        } else {
            handled.push((key, &command.method));
        }
    }
}
