//! `#[aggregate]` on an inherent impl block: `#[apply]` and `#[command]` methods.

use proc_macro2::TokenStream;
use syn::{ImplItem, ItemImpl};

use super::{MarkedFn, Marker, impl_block, impl_name, take_marker};
use crate::attr::{self, AggregateArgs};
use crate::ctxt::{Ctxt, Place};

/// What `#[aggregate]` was put on: an impl block.
pub struct AggregateInput {
    /// The impl block, with our `#[apply]` and `#[command]` markers removed.
    pub item: ItemImpl,
    pub args: AggregateArgs,
    /// The aggregate type name: given, or the type's.
    pub name: Option<String>,
    /// The marked methods, in order.
    pub methods: Vec<MarkedFn<AggregateMethod>>,
}

/// What a method of an aggregate is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum AggregateMethod {
    /// `#[apply]`: changes the state.
    Apply,
    /// `#[command]`: decides events.
    Command,
}

impl AggregateInput {
    pub fn from_syn(cx: &Ctxt, args: TokenStream, input: TokenStream) -> Result<Self, TokenStream> {
        let args = attr::aggregate_args(cx, args);
        let mut item = impl_block(
            cx,
            input,
            "#[aggregate] goes on an inherent `impl` block of the aggregate's state type, like `#[aggregate(events = AccountEvent)] impl BankAccount { ... }`",
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
                    &[Marker::Apply, Marker::Command],
                    "a method is either `#[apply]` (changes state) or `#[command]` (decides events), not both",
                )?;
                let role = match marker {
                    Marker::Apply => AggregateMethod::Apply,
                    Marker::Command => AggregateMethod::Command,
                    _ => return None,
                };
                Some((role, meta))
            });
            let Some((role, meta)) = marked else {
                continue;
            };
            // The framework imposes these signatures (`&self`, the message by reference, a
            // `Result`), so lints against them would only be noise in the user's crate.
            method.attrs.push(syn::parse_quote!(#[allow(
                clippy::trivially_copy_pass_by_ref,
                clippy::unused_self,
                clippy::unnecessary_wraps
            )]));
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
