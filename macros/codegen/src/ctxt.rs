//! Collects every error of one macro invocation, so the user sees them all at once.

use std::cell::{Cell, RefCell};
use std::fmt::Display;
use std::thread;

use proc_macro2::TokenStream;
use quote::ToTokens;

/// The error collector of one macro invocation.
///
/// It must be consumed by [`Ctxt::check`]: dropping it unchecked is a bug in the macro (its
/// errors would be lost, and the user would get a wrong expansion instead of them), so `Drop`
/// panics then, as serde_derive's `Ctxt` does.
pub struct Ctxt {
    /// `None` once checked.
    errors: RefCell<Option<Vec<(Place, syn::Error)>>>,
    /// What the errors recorded now are about.
    place: Cell<Place>,
}

/// What an error is about. Parsing (`ast`) and validation (`valid`) each walk an impl block from
/// the top, so [`Ctxt::check`] orders the errors by place, keeping the order of those about the
/// same place: the user reads them in the order of the code, whichever pass found them.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    /// The attribute's arguments and the item's header.
    #[default]
    Head,
    /// The item of an impl block at this index (a method: its markers, then its signature).
    Member(usize),
    /// Rules about the item as a whole, reported after those about its members.
    Whole,
}

impl Ctxt {
    pub fn new() -> Self {
        Self {
            errors: RefCell::new(Some(Vec::new())),
            place: Cell::new(Place::Head),
        }
    }

    /// Runs `f`, recording the errors it reports as being about `place`.
    pub fn about<R>(&self, place: Place, f: impl FnOnce() -> R) -> R {
        let outer = self.place.replace(place);
        let result = f();
        self.place.set(outer);
        result
    }

    /// Records an error spanning `tokens` (the user's tokens that are wrong).
    pub fn error_spanned_by<T: ToTokens, M: Display>(&self, tokens: T, message: M) {
        self.push(syn::Error::new_spanned(tokens.into_token_stream(), message));
    }

    /// Records an error at a span (the attribute itself, when nothing better exists).
    pub fn error_at<M: Display>(&self, span: proc_macro2::Span, message: M) {
        self.push(syn::Error::new(span, message));
    }

    /// Records an error returned by syn.
    pub fn syn_error(&self, error: syn::Error) {
        self.push(error);
    }

    fn push(&self, error: syn::Error) {
        // Always `Some`: `check` consumes the context.
        if let Some(errors) = self.errors.borrow_mut().as_mut() {
            errors.push((self.place.get(), error));
        }
    }

    /// All errors combined into one, in the order of the places they are about, or `Ok` when
    /// there were none.
    pub fn check(self) -> Result<(), syn::Error> {
        let mut errors = self.errors.borrow_mut().take().unwrap_or_default();
        // Stable: errors about one place keep the order they were found in.
        errors.sort_by_key(|(place, _)| *place);
        let mut errors = errors.into_iter().map(|(_, error)| error);
        let Some(mut combined) = errors.next() else {
            return Ok(());
        };
        for error in errors {
            combined.combine(error);
        }
        Err(combined)
    }
}

impl Drop for Ctxt {
    fn drop(&mut self) {
        // Not while unwinding from another panic: that would abort and hide the first one.
        if !thread::panicking() && self.errors.get_mut().is_some() {
            panic!("forgot to check for errors: call `Ctxt::check`");
        }
    }
}

/// Tokens of a type or path as a string, to compare what the user wrote.
pub fn tokens_key<T: ToTokens>(tokens: &T) -> String {
    let stream: TokenStream = tokens.to_token_stream();
    stream.to_string()
}

#[cfg(test)]
mod tests {
    use super::{Ctxt, Place};

    #[test]
    #[should_panic(expected = "forgot to check for errors")]
    fn dropping_an_unchecked_context_panics() {
        let cx = Ctxt::new();
        cx.error_at(proc_macro2::Span::call_site(), "lost");
        drop(cx);
    }

    #[test]
    #[should_panic(expected = "forgot to check for errors")]
    fn dropping_an_unchecked_context_without_errors_panics_too() {
        // Whether there were errors is only known by checking.
        drop(Ctxt::new());
    }

    #[test]
    fn checking_a_context_without_errors_is_ok() {
        assert!(Ctxt::new().check().is_ok());
    }

    #[test]
    fn checking_reports_every_error_once() {
        let cx = Ctxt::new();
        cx.error_at(proc_macro2::Span::call_site(), "first");
        cx.error_at(proc_macro2::Span::call_site(), "second");
        let errors = cx.check().expect_err("two errors were recorded");
        let messages: Vec<String> = errors.into_iter().map(|e| e.to_string()).collect();
        assert_eq!(messages, ["first", "second"]);
    }

    #[test]
    fn errors_come_out_in_the_order_of_their_places() {
        let cx = Ctxt::new();
        let at = proc_macro2::Span::call_site();
        // A first pass over two members and the whole item, then a second one.
        for pass in ["parsed", "judged"] {
            cx.error_at(at, format!("head {pass}"));
            for member in 0..2 {
                cx.about(Place::Member(member), || {
                    cx.error_at(at, format!("member {member} {pass}"));
                });
            }
            cx.about(Place::Whole, || cx.error_at(at, format!("whole {pass}")));
        }
        let errors = cx.check().expect_err("errors were recorded");
        let messages: Vec<String> = errors.into_iter().map(|e| e.to_string()).collect();
        assert_eq!(
            messages,
            [
                "head parsed",
                "head judged",
                "member 0 parsed",
                "member 0 judged",
                "member 1 parsed",
                "member 1 judged",
                "whole parsed",
                "whole judged",
            ]
        );
    }
}
