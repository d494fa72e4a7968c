//! `#[event]` on a struct (one event) or on an enum of events (an event set).

use proc_macro2::TokenStream;
use syn::{Fields, Ident, ItemEnum, ItemStruct, LitStr, Type};

use super::item_keyword;
use crate::attr::{self, EventArgs};
use crate::ctxt::Ctxt;

/// What `#[event]` was put on.
pub enum EventInput {
    /// One event.
    Struct(EventStruct),
    /// An event set.
    Set(EventSetEnum),
    /// Anything else (already reported); emitted unchanged.
    Other(TokenStream),
}

pub struct EventStruct {
    pub item: ItemStruct,
    /// The stored type name.
    pub name: String,
    /// The name as written, when given (for spans).
    pub name_literal: Option<LitStr>,
    /// `any_name`: the name is not checked.
    pub any_name: bool,
    pub version: u32,
    /// The version as written, for spans (`None`: the default, 1).
    pub version_literal: Option<(u32, syn::LitInt)>,
    /// The fields marked `#[pii]` (the markers taken off `item`).
    pub pii: Vec<super::PiiField>,
    /// `max_size = N`: the largest payload an append accepts, in bytes of JSON.
    pub max_size: Option<usize>,
}

pub struct EventSetEnum {
    pub item: ItemEnum,
    pub args: EventArgs,
    /// The variants that hold exactly one event.
    pub variants: Vec<SetVariant>,
}

pub struct SetVariant {
    pub ident: Ident,
    pub ty: Type,
}

impl EventInput {
    pub fn from_syn(cx: &Ctxt, args: TokenStream, input: TokenStream) -> Self {
        let args = attr::event_args(cx, args, "#[event]");
        match syn::parse2::<syn::Item>(input.clone()) {
            Ok(syn::Item::Struct(mut item)) => {
                let pii = super::pii::take(cx, &mut item);
                let name = args
                    .name
                    .as_ref()
                    .map_or_else(|| item.ident.to_string(), LitStr::value);
                let version = args.version.as_ref().map_or(1, |(version, _)| *version);
                Self::Struct(EventStruct {
                    item,
                    name,
                    name_literal: args.name.clone(),
                    any_name: args.any_name.is_some(),
                    version,
                    version_literal: args.version.clone(),
                    pii,
                    max_size: args.max_size.as_ref().map(|(bytes, _)| *bytes),
                })
            }
            Ok(syn::Item::Enum(item)) => {
                let variants = item
                    .variants
                    .iter()
                    .filter_map(|variant| match &variant.fields {
                        Fields::Unnamed(fields) if fields.unnamed.len() == 1 => Some(SetVariant {
                            ident: variant.ident.clone(),
                            ty: fields.unnamed[0].ty.clone(),
                        }),
                        _ => None,
                    })
                    .collect();
                Self::Set(EventSetEnum {
                    item,
                    args,
                    variants,
                })
            }
            Ok(other) => {
                cx.error_spanned_by(
                    item_keyword(&other),
                    "#[event] goes on a struct (one event) or on an enum whose variants each hold one event (an event set)",
                );
                Self::Other(input)
            }
            Err(error) => {
                cx.syn_error(error);
                Self::Other(input)
            }
        }
    }
}
