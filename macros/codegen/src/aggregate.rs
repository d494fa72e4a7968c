//! Expansion of `#[aggregate]`: the `Aggregate` implementation whose `apply` is the event set's
//! `match`, one `Apply` implementation per `#[apply]` function (and per ignored event), one
//! `Handle` implementation per `#[command]` function, and membership checks for apply functions.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::Type;
use syn::spanned::Spanned as _;

use crate::ctxt::tokens_key;
use crate::valid::Aggregate;

pub fn expand(input: &Aggregate) -> TokenStream {
    let item = &input.item;
    let Some(events) = &input.args.events else {
        return quote!(#item);
    };
    let self_ty = &item.self_ty;
    let aggregate = aggregate_impl(input, events, true);

    let applies = input.applies.iter().map(|apply| {
        let (method, event) = (&apply.method, &apply.event);
        quote! {
            #[automatically_derived]
            impl ::factum::__private::Apply<#event> for #self_ty {
                #[inline]
                fn apply(&mut self, event: &#event) {
                    Self::#method(self, event);
                }
            }
        }
    });
    let ignored = input.args.ignore.iter().map(|event| {
        quote! {
            #[automatically_derived]
            impl ::factum::__private::Apply<#event> for #self_ty {
                #[inline]
                fn apply(&mut self, _: &#event) {}
            }
        }
    });
    let membership = input
        .applies
        .iter()
        .map(|apply| &apply.event)
        .chain(&input.args.ignore)
        .map(|event| {
            quote_spanned! {event.span()=>
                const _: () = ::factum::__private::assert_event_of::<#events, #event>();
            }
        });
    let handlers = handler_impls(input, events, false);

    quote! {
        #item

        const _: () = {
            #aggregate
            #(#applies)*
            #(#ignored)*
            #(#handlers)*
            #(#membership)*
        };
    }
}

/// The `Aggregate` implementation. Without `dispatch` (after an error), `apply` does nothing, so
/// that the error does not cascade into "no apply function" errors.
pub fn aggregate_impl(input: &Aggregate, events: &Type, dispatch: bool) -> TokenStream {
    let self_ty = &input.item.self_ty;
    let name = &input.name;
    let state_version = input.args.state_version.as_ref().map_or(1, |(v, _)| *v);
    let commands = input
        .commands
        .iter()
        .map(|command| command_name(&command.command));
    let body = if dispatch {
        quote_spanned! {events.span()=>
            <#events as ::factum::__private::ApplyTo<Self>>::apply_to(event, self);
        }
    } else {
        quote!(let _ = event;)
    };
    quote! {
        #[automatically_derived]
        impl ::factum::__private::Aggregate for #self_ty {
            const TYPE: &'static str = #name;
            const STATE_VERSION: u32 = #state_version;
            const COMMANDS: &'static [&'static str] = &[#(#commands),*];
            type Event = #events;

            #[inline]
            fn apply(&mut self, event: &#events) {
                #body
            }
        }
    }
}

/// One `Handle` implementation per command handler; with `first_only` (after an error), only the
/// first handler of each command type, so that duplicates do not add conflicting implementations.
pub fn handler_impls<'a>(
    input: &'a Aggregate,
    events: &'a Type,
    first_only: bool,
) -> impl Iterator<Item = TokenStream> + 'a {
    let self_ty = &input.item.self_ty;
    let mut seen = Vec::new();
    let commands = input.commands.iter().filter(move |command| {
        let key = tokens_key(&command.command);
        if seen.contains(&key) {
            return !first_only;
        }
        seen.push(key);
        true
    });
    commands.map(move |command| {
        let (method, cmd, output) = (&command.method, &command.command, &command.output);
        // Spanned at the user's return type, so that a wrong one is reported once, there.
        quote_spanned! {output.span()=>
            #[automatically_derived]
            impl ::factum::__private::Handle<#cmd> for #self_ty {
                type Error = <#output as ::factum::__private::HandlerOutput<#events>>::Error;

                #[inline]
                fn handle(
                    &self,
                    command: &#cmd,
                ) -> ::core::result::Result<::std::vec::Vec<#events>, Self::Error> {
                    <#output as ::factum::__private::HandlerOutput<#events>>::into_result(
                        Self::#method(self, command),
                    )
                }
            }
        }
    })
}

/// A command's name for the catalog: the last segment of its type path.
fn command_name(ty: &Type) -> String {
    match ty {
        Type::Path(path) => path.path.segments.last().map_or_else(
            || crate::ctxt::tokens_key(ty),
            |segment| segment.ident.to_string(),
        ),
        other => crate::ctxt::tokens_key(other),
    }
}
