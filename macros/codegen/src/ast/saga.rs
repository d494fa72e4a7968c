//! `#[saga]` on an impl block: handlers for events (`#[start]`, `#[handle]`), timeouts
//! (`#[timeout]`) and refused commands (`#[rejected]`).

use proc_macro2::TokenStream;
use syn::{Ident, ImplItem, ItemImpl};

use super::{MarkedFn, Marker, impl_block, impl_name, take_marker};
use crate::attr::{self, HandlerArgs, SagaArgs};
use crate::ctxt::{Ctxt, Place};

/// What `#[saga]` was put on: an impl block.
pub struct SagaInput {
    /// The impl block, with the markers removed.
    pub item: ItemImpl,
    pub args: SagaArgs,
    /// The saga's name: given, or the type's.
    pub name: Option<String>,
    /// The marked methods, in order.
    pub methods: Vec<MarkedFn<SagaMethod>>,
}

/// What a method of a saga is.
#[derive(Clone, PartialEq, Eq)]
pub enum SagaMethod {
    /// `#[start(by = field)]`, `#[handle(by = field)]` or `#[handle(by = field, end)]`.
    Event {
        role: SagaRole,
        /// The event's field holding the instance id (`None`: not given).
        by: Option<Ident>,
    },
    /// `#[timeout]`.
    Timeout,
    /// `#[rejected]`.
    Rejected,
}

/// What an event handler does to its instance.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SagaRole {
    Start,
    Handle,
    End,
}

impl SagaInput {
    pub fn from_syn(cx: &Ctxt, args: TokenStream, input: TokenStream) -> Result<Self, TokenStream> {
        let args = attr::saga_args(cx, args);
        let mut item = impl_block(
            cx,
            input,
            "#[saga] goes on an inherent `impl` block of the saga's state type, like `#[saga(name = \"order_fulfillment\")] impl OrderFulfillment { ... }`",
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
                        Marker::Start,
                        Marker::Handle,
                        Marker::Timeout,
                        Marker::Rejected,
                    ],
                    "a method has one role in a saga: `#[start]`, `#[handle]`, `#[timeout]` or `#[rejected]`",
                )?;
                let role = match marker {
                    Marker::Start => {
                        let HandlerArgs { by, .. } =
                            attr::saga_handler_args(cx, &meta, "start", SagaRole::Start.usage());
                        SagaMethod::Event {
                            role: SagaRole::Start,
                            by,
                        }
                    }
                    Marker::Handle => {
                        let HandlerArgs { by, end } =
                            attr::saga_handler_args(cx, &meta, "handle", SagaRole::Handle.usage());
                        let role = match end {
                            Some(_) => SagaRole::End,
                            None => SagaRole::Handle,
                        };
                        SagaMethod::Event { role, by }
                    }
                    Marker::Timeout => SagaMethod::Timeout,
                    Marker::Rejected => SagaMethod::Rejected,
                    _ => return None,
                };
                Some((role, meta))
            });
            let Some((role, meta)) = marked else {
                continue;
            };
            method.attrs.push(
                syn::parse_quote!(#[allow(clippy::unused_self, clippy::needless_pass_by_ref_mut)]),
            );
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

impl SagaRole {
    /// How the marker of an event handler in this role is written.
    pub fn usage(self) -> &'static str {
        match self {
            Self::Start => "#[start(by = order_id)]",
            Self::Handle | Self::End => "#[handle(by = order_id)]",
        }
    }
}
