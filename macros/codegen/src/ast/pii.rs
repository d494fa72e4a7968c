//! `#[pii]` on the fields of an event struct: which fields hold personal data, and which names
//! its subject. The attributes are taken off the fields (they are ours, not the compiler's).

use syn::punctuated::Punctuated;
use syn::{Attribute, Expr, Fields, Ident, ItemStruct, Meta, Token, Type};

use crate::attr::{self, PiiArgs};
use crate::ctxt::Ctxt;
use crate::symbol::PII;

/// One field marked `#[pii]` or `#[pii(subject)]`.
pub struct PiiField {
    /// The `pii` of the attribute, for spans.
    pub marker: syn::Path,
    /// The field (`None`: a tuple struct's field).
    pub ident: Option<Ident>,
    pub ty: Type,
    /// Its name in the JSON payload (serde's `rename` and `rename_all` applied), or what keeps
    /// it from having one of its own.
    pub json_name: Result<String, JsonNameProblem>,
    pub args: PiiArgs,
}

impl PiiField {
    /// Whether the field's type is written as an `Option` (which reads as `None` once its
    /// subject is forgotten).
    pub fn is_option(&self) -> bool {
        fn option(ty: &Type) -> bool {
            match ty {
                Type::Path(path) => path
                    .path
                    .segments
                    .last()
                    .is_some_and(|segment| segment.ident == "Option"),
                Type::Group(group) => option(&group.elem),
                _ => false,
            }
        }
        option(&self.ty)
    }
}

/// Why a marked field has no JSON name of its own.
pub enum JsonNameProblem {
    /// `#[serde(flatten)]`, `skip` or `skip_serializing`: the attribute, for spans.
    NotAField(syn::Path),
    /// A `rename_all` Factum does not know, or one per direction.
    RenameAll(Box<Meta>),
}

/// Takes the `#[pii]` attributes off the struct's fields, reading them.
pub fn take(cx: &Ctxt, item: &mut ItemStruct) -> Vec<PiiField> {
    let rename_all = serde_metas(&item.attrs)
        .into_iter()
        .find(|meta| meta.path().is_ident("rename_all"));
    let fields = match &mut item.fields {
        Fields::Named(named) => named.named.iter_mut().collect::<Vec<_>>(),
        Fields::Unnamed(unnamed) => unnamed.unnamed.iter_mut().collect(),
        Fields::Unit => Vec::new(),
    };
    let mut found = Vec::new();
    for field in fields {
        let (ours, theirs): (Vec<Attribute>, Vec<Attribute>) = std::mem::take(&mut field.attrs)
            .into_iter()
            .partition(|attr| attr.path().is_ident(PII));
        field.attrs = theirs;
        for attr in ours {
            let Some(args) = attr::pii_args(cx, &attr.meta) else {
                continue;
            };
            found.push(PiiField {
                marker: attr.path().clone(),
                ident: field.ident.clone(),
                ty: field.ty.clone(),
                json_name: json_name(field.ident.as_ref(), &field.attrs, rename_all.as_ref()),
                args,
            });
        }
    }
    found
}

/// The arguments of every `#[serde(...)]` attribute.
fn serde_metas(attrs: &[Attribute]) -> Vec<Meta> {
    attrs
        .iter()
        .filter(|attr| attr.path().is_ident("serde"))
        .filter_map(|attr| {
            attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
                .ok()
        })
        .flatten()
        .collect()
}

fn json_name(
    ident: Option<&Ident>,
    attrs: &[Attribute],
    rename_all: Option<&Meta>,
) -> Result<String, JsonNameProblem> {
    let mut rename = None;
    for meta in serde_metas(attrs) {
        let path = meta.path();
        if ["flatten", "skip", "skip_serializing"]
            .iter()
            .any(|key| path.is_ident(key))
        {
            return Err(JsonNameProblem::NotAField(path.clone()));
        }
        if path.is_ident("rename") {
            rename = string_value(&meta);
        }
    }
    let Some(ident) = ident else {
        return Ok(String::new());
    };
    if let Some(rename) = rename {
        return Ok(rename);
    }
    let name = ident.to_string();
    let name = name.strip_prefix("r#").unwrap_or(&name);
    match rename_all {
        None => Ok(name.to_owned()),
        Some(meta) => string_value(meta)
            .and_then(|rule| renamed(name, &rule))
            .ok_or_else(|| JsonNameProblem::RenameAll(Box::new(meta.clone()))),
    }
}

fn string_value(meta: &Meta) -> Option<String> {
    match meta {
        Meta::NameValue(syn::MetaNameValue {
            value:
                Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(lit),
                    ..
                }),
            ..
        }) => Some(lit.value()),
        _ => None,
    }
}

/// A snake_case field name under serde's `rename_all` rule.
fn renamed(name: &str, rule: &str) -> Option<String> {
    let capitalized = |word: &str| {
        let mut chars = word.chars();
        chars.next().map_or_else(String::new, |first| {
            first.to_uppercase().chain(chars).collect()
        })
    };
    let words = name.split('_');
    Some(match rule {
        "lowercase" | "snake_case" => name.to_owned(),
        "UPPERCASE" | "SCREAMING_SNAKE_CASE" => name.to_uppercase(),
        "PascalCase" => words.map(capitalized).collect(),
        "camelCase" => {
            let pascal: String = words.map(capitalized).collect();
            let mut chars = pascal.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_lowercase().chain(chars).collect()
            })
        }
        "kebab-case" => name.replace('_', "-"),
        "SCREAMING-KEBAB-CASE" => name.replace('_', "-").to_uppercase(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::renamed;

    #[test]
    fn field_names_follow_serdes_rules() {
        let cases = [
            ("lowercase", "email_address"),
            ("UPPERCASE", "EMAIL_ADDRESS"),
            ("PascalCase", "EmailAddress"),
            ("camelCase", "emailAddress"),
            ("snake_case", "email_address"),
            ("SCREAMING_SNAKE_CASE", "EMAIL_ADDRESS"),
            ("kebab-case", "email-address"),
            ("SCREAMING-KEBAB-CASE", "EMAIL-ADDRESS"),
        ];
        for (rule, expected) in cases {
            assert_eq!(
                renamed("email_address", rule).as_deref(),
                Some(expected),
                "{rule}"
            );
        }
        assert_eq!(renamed("email", "Title Case"), None);
    }
}
