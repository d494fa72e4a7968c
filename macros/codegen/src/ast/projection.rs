//! `#[projection]` on an inherent impl block: `#[handle]` methods, optionally the `#[flush]`
//! and `#[discard]` methods of a projection that buffers its writes, and the `#[reset]` method
//! that clears its read model.

use proc_macro2::TokenStream;
use syn::{ImplItem, ItemImpl};

use super::{MarkedFn, Marker, impl_block, impl_name, take_marker};
use crate::attr::{self, ProjectionArgs};
use crate::ctxt::{Ctxt, Place};

/// What `#[projection]` was put on: an impl block.
pub struct ProjectionInput {
    /// The impl block, with the markers removed.
    pub item: ItemImpl,
    pub args: ProjectionArgs,
    /// The projection's name: given, or the type's.
    pub name: Option<String>,
    /// The marked methods, in order.
    pub methods: Vec<MarkedFn<ProjectionMethod>>,
}

/// What a method of a projection is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ProjectionMethod {
    /// `#[handle]`, or `#[handle(side_effects)]` for a handler that acts outside the database.
    Handle { side_effects: bool },
    /// `#[flush]`: writes what the handlers buffered.
    Flush,
    /// `#[discard]`: drops what the handlers buffered.
    Discard,
    /// `#[reset]`: clears the read model, for rebuilds.
    Reset,
}

impl ProjectionInput {
    pub fn from_syn(cx: &Ctxt, args: TokenStream, input: TokenStream) -> Result<Self, TokenStream> {
        let args = attr::projection_args(cx, args);
        let mut item = impl_block(
            cx,
            input,
            "#[projection] goes on an inherent `impl` block of the projection's type, like `#[projection(name = \"balances\")] impl Balances { ... }`",
        )?;
        let name = impl_name(args.name.as_ref(), &item);
        let mut methods = Vec::new();
        for (index, impl_item) in item.items.iter_mut().enumerate() {
            let ImplItem::Fn(method) = impl_item else {
                continue;
            };
            let marked = cx.about(Place::Member(index), || {
                let (marker, meta) = take_marker(
                    cx,
                    method,
                    &[
                        Marker::Handle,
                        Marker::Flush,
                        Marker::Discard,
                        Marker::Reset,
                    ],
                    "a method has one role in a projection: `#[handle]`, `#[flush]`, `#[discard]` or `#[reset]`",
                )?;
                let role = match marker {
                    Marker::Handle => ProjectionMethod::Handle {
                        side_effects: attr::projection_handler_args(cx, &meta),
                    },
                    Marker::Flush => ProjectionMethod::Flush,
                    Marker::Discard => ProjectionMethod::Discard,
                    Marker::Reset => ProjectionMethod::Reset,
                    _ => return None,
                };
                Some((role, meta))
            });
            let Some((role, meta)) = marked else {
                continue;
            };
            method
                .attrs
                .push(syn::parse_quote!(#[allow(clippy::unused_async, clippy::unused_self)]));
            methods.push(MarkedFn {
                index,
                role,
                meta,
                sig: method.sig.clone(),
            });
        }
        Ok(Self {
            item,
            args,
            name,
            methods,
        })
    }
}
