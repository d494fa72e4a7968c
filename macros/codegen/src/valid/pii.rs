//! Judging an event's `#[pii]` fields: one data subject, named fields of the payload, and a
//! replacement for each field that cannot become `None`.

use quote::ToTokens;

use crate::ast::{EventStruct, JsonNameProblem, PiiField};
use crate::ctxt::Ctxt;

pub fn pii_fields(cx: &Ctxt, event: &EventStruct) {
    let mut subject: Option<&PiiField> = None;
    for field in &event.pii {
        let Some(ident) = &field.ident else {
            cx.error_spanned_by(
                &field.marker,
                "personal data must be in a named field: `#[pii]` goes on a field of an event with named fields",
            );
            continue;
        };
        match &field.json_name {
            Ok(_) => {}
            Err(JsonNameProblem::NotAField(path)) => cx.error_spanned_by(
                path,
                format!(
                    "field `{ident}` is marked `#[pii]`, so it must be a field of the stored payload of its own: remove this serde attribute"
                ),
            ),
            Err(JsonNameProblem::RenameAll(meta)) => cx.error_spanned_by(
                meta,
                "Factum cannot tell the JSON names of `#[pii]` fields under this `rename_all`: use one of serde's rules (`camelCase`, ...) for both directions, or `#[serde(rename = \"...\")]` on the field",
            ),
        }
        if let Some(subject_key) = &field.args.subject {
            if let Some(replacement) = &field.args.replacement {
                cx.error_spanned_by(
                    replacement,
                    "the data subject's field stays readable (it names whose data is forgotten): it takes no replacement",
                );
            }
            match subject {
                Some(first) => cx.error_spanned_by(
                    subject_key,
                    format!(
                        "the data subject is already named by field `{}`: an event has one data subject (record the other subject's data in an event of its own)",
                        first.ident.as_ref().map(ToString::to_string).unwrap_or_default(),
                    ),
                ),
                None => subject = Some(field),
            }
        } else if field.args.replacement.is_none() && !field.is_option() {
            cx.error_spanned_by(
                ident,
                format!(
                    "field `{ident}` of type `{}` needs what readers see once its subject is forgotten: `#[pii(replacement = ...)]` (an `Option` field becomes `None` by itself)",
                    field.ty.to_token_stream().to_string().replace(' ', ""),
                ),
            );
        }
    }
    if subject.is_none() {
        for field in &event.pii {
            let Some(name) = &field.ident else {
                continue;
            };
            cx.error_spanned_by(
                &field.marker,
                format!(
                    "field `{name}` holds personal data, but the event names no data subject: mark the field holding the subject's id with `#[pii(subject)]`"
                ),
            );
        }
    }
}
