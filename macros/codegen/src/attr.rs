//! Parsing of our attributes' arguments (`#[event(...)]`, `#[aggregate(...)]`, ...) and of the
//! options of the markers on methods (`#[handle(side_effects)]`, `#[start(by = field)]`).
//!
//! Every key may appear once; unknown keys, duplicate keys and bad values are recorded in the
//! [`Ctxt`] at the user's tokens, and parsing goes on so that all mistakes are reported at once.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, Lit, LitInt, LitStr, Token, Type};

use crate::ctxt::Ctxt;
use crate::symbol::{
    ANY_NAME, BY, COMMANDS, END, EVENTS, IGNORE, INLINE, MAX_SIZE, NAME, REPLACEMENT, SIDE_EFFECTS,
    STATE_VERSION, SUBJECT, VERSION,
};

/// A key that may be set at most once.
pub struct Attr<T> {
    key: &'static str,
    value: Option<T>,
}

impl<T> Attr<T> {
    fn none(key: &'static str) -> Self {
        Self { key, value: None }
    }

    fn set<K: ToTokens>(&mut self, cx: &Ctxt, key_tokens: K, value: T) {
        if self.value.is_some() {
            cx.error_spanned_by(
                key_tokens,
                format!("duplicate key `{}`: give it once", self.key),
            );
        } else {
            self.value = Some(value);
        }
    }

    fn get(self) -> Option<T> {
        self.value
    }
}

/// The arguments of `#[event(...)]`.
#[derive(Default)]
pub struct EventArgs {
    /// The stored type name (default: the Rust name).
    pub name: Option<LitStr>,
    /// The schema version (default: 1), with its literal for spans.
    pub version: Option<(u32, LitInt)>,
    /// `any_name`: the name is not checked to be a past-tense fact; the key, for spans.
    pub any_name: Option<syn::Path>,
    /// `max_size = N`: the largest payload an append accepts, in bytes of JSON, with its
    /// literal for spans.
    pub max_size: Option<(usize, LitInt)>,
    /// Every key given, for "an event set takes no options".
    pub keys: Vec<syn::Path>,
}

/// The arguments of `#[aggregate(...)]`.
#[derive(Default)]
pub struct AggregateArgs {
    /// The event set.
    pub events: Option<Type>,
    /// The aggregate type name (default: the Rust name).
    pub name: Option<LitStr>,
    /// Events of the set that change no state.
    pub ignore: Vec<Type>,
    /// The schema version of the state, for snapshots (default: 1).
    pub state_version: Option<(u32, LitInt)>,
}

/// The arguments of `#[event(...)]`, also used by `#[projection(...)]` (`attribute` names it in
/// messages).
pub fn event_args(cx: &Ctxt, args: TokenStream, attribute: &str) -> EventArgs {
    let mut name = Attr::none(NAME);
    let mut version = Attr::none(VERSION);
    let mut any_name = Attr::none(ANY_NAME);
    let mut max_size = Attr::none(MAX_SIZE);
    let mut keys = Vec::new();
    let parser = syn::meta::parser(|meta| {
        keys.push(meta.path.clone());
        if meta.path.is_ident(NAME) {
            if let Some(lit) = type_name(cx, &meta, "name = \"MoneyDeposited\"")? {
                name.set(cx, &meta.path, lit);
            }
        } else if meta.path.is_ident(VERSION) {
            if let Some(parsed) = version_value(cx, &meta, VERSION, "event versions")? {
                version.set(cx, &meta.path, parsed);
            }
        } else if meta.path.is_ident(ANY_NAME) {
            if meta.input.is_empty() || meta.input.peek(Token![,]) {
                any_name.set(cx, &meta.path, meta.path.clone());
            } else {
                cx.error_spanned_by(
                    &meta.path,
                    "`any_name` takes no value: `#[event(version = 1, any_name)]`",
                );
                // Meant to opt out: the name is not judged on top.
                any_name.set(cx, &meta.path, meta.path.clone());
                skip_value(&meta)?;
            }
        } else if meta.path.is_ident(MAX_SIZE) {
            if let Some(parsed) = size_value(cx, &meta)? {
                max_size.set(cx, &meta.path, parsed);
            }
        } else {
            unknown_key(
                cx,
                &meta,
                attribute,
                "`name`, `version`, `any_name` or `max_size`",
            )?;
        }
        Ok(())
    });
    if let Err(error) = parser.parse2(args) {
        cx.syn_error(error);
    }
    EventArgs {
        name: name.get(),
        version: version.get(),
        any_name: any_name.get(),
        max_size: max_size.get(),
        keys,
    }
}

/// The arguments of `#[pii(...)]` on an event's field.
#[derive(Default)]
pub struct PiiArgs {
    /// `subject`: the field names the data subject; the key, for spans.
    pub subject: Option<syn::Path>,
    /// `replacement = expr`: what readers see once the subject is forgotten.
    pub replacement: Option<Expr>,
}

/// `#[pii]`, `#[pii(subject)]` or `#[pii(replacement = expr)]`; `None` when unreadable
/// (reported).
pub fn pii_args(cx: &Ctxt, meta: &syn::Meta) -> Option<PiiArgs> {
    const USAGE: &str = "`#[pii]`, `#[pii(subject)]` or `#[pii(replacement = ...)]`";
    let list = match meta {
        syn::Meta::Path(_) => return Some(PiiArgs::default()),
        syn::Meta::List(list) => list,
        syn::Meta::NameValue(_) => {
            cx.error_spanned_by(meta, format!("expected {USAGE}"));
            return None;
        }
    };
    let mut subject = Attr::none(SUBJECT);
    let mut replacement = Attr::none(REPLACEMENT);
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident(SUBJECT) {
            if meta.input.is_empty() || meta.input.peek(Token![,]) {
                subject.set(cx, &meta.path, meta.path.clone());
            } else {
                cx.error_spanned_by(&meta.path, "`subject` takes no value: `#[pii(subject)]`");
                skip_value(&meta)?;
            }
        } else if meta.path.is_ident(REPLACEMENT) {
            if meta.input.peek(Token![=]) {
                replacement.set(cx, &meta.path, ungrouped(meta.value()?.parse()?));
            } else {
                expected(cx, &meta, "replacement = \"[erased]\".to_owned()")?;
            }
        } else {
            unknown_key(cx, &meta, "#[pii(...)]", "`subject` or `replacement`")?;
        }
        Ok(())
    });
    if let Err(error) = parser.parse2(list.tokens.clone()) {
        cx.syn_error(error);
        return None;
    }
    Some(PiiArgs {
        subject: subject.get(),
        replacement: replacement.get(),
    })
}

/// The arguments of `#[projection(...)]`.
pub struct ProjectionArgs {
    /// The projection's name (default: the Rust name).
    pub name: Option<LitStr>,
    /// Its version (default: 1).
    pub version: Option<(u32, LitInt)>,
    /// `inline`: it may also run in the append's transaction; the key's tokens, for spans.
    pub inline: Option<syn::Path>,
}

pub fn projection_args(cx: &Ctxt, args: TokenStream) -> ProjectionArgs {
    let mut name = Attr::none(NAME);
    let mut version = Attr::none(VERSION);
    let mut inline = Attr::none(INLINE);
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident(NAME) {
            if let Some(lit) = type_name(cx, &meta, "name = \"balances\"")? {
                name.set(cx, &meta.path, lit);
            }
        } else if meta.path.is_ident(VERSION) {
            if let Some(parsed) = version_value(cx, &meta, VERSION, "projection versions")? {
                version.set(cx, &meta.path, parsed);
            }
        } else if meta.path.is_ident(INLINE) {
            if meta.input.is_empty() || meta.input.peek(Token![,]) {
                inline.set(cx, &meta.path, meta.path.clone());
            } else {
                cx.error_spanned_by(
                    &meta.path,
                    "`inline` takes no value: `#[projection(name = \"balances\", inline)]`",
                );
                skip_value(&meta)?;
            }
        } else {
            unknown_key(cx, &meta, "#[projection]", "`name`, `version` or `inline`")?;
        }
        Ok(())
    });
    if let Err(error) = parser.parse2(args) {
        cx.syn_error(error);
    }
    ProjectionArgs {
        name: name.get(),
        version: version.get(),
        inline: inline.get(),
    }
}

/// The options of a projection's `#[handle]`: none, or `side_effects` (the handler acts outside
/// the database: skipped while a new version replays the history, and run at most once per
/// event).
pub fn projection_handler_args(cx: &Ctxt, meta: &syn::Meta) -> bool {
    const HELP: &str = "`#[handle]` takes one option, `#[handle(side_effects)]`, for handlers that act outside the database (email, HTTP)";
    match meta {
        syn::Meta::Path(_) => false,
        syn::Meta::List(list) => match syn::parse2::<syn::Ident>(list.tokens.clone()) {
            Ok(ident) if ident == SIDE_EFFECTS => true,
            _ => {
                cx.error_spanned_by(&list.tokens, HELP);
                false
            }
        },
        syn::Meta::NameValue(_) => {
            cx.error_spanned_by(meta, HELP);
            false
        }
    }
}

/// The arguments of `#[command(...)]` and `#[timeout(...)]`: an optional `name`.
pub fn message_args(cx: &Ctxt, args: TokenStream, marker: &str) -> Option<LitStr> {
    let mut name = Attr::none(NAME);
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident(NAME) {
            if let Some(lit) = type_name(cx, &meta, "name = \"ReserveInventory\"")? {
                name.set(cx, &meta.path, lit);
            }
        } else {
            unknown_key(cx, &meta, &format!("#[{marker}]"), "`name`")?;
        }
        Ok(())
    });
    if let Err(error) = parser.parse2(args) {
        cx.syn_error(error);
    }
    name.get()
}

/// The arguments of `#[saga(...)]`.
pub struct SagaArgs {
    /// The saga's name (default: the Rust name).
    pub name: Option<LitStr>,
    /// The commands it sends.
    pub commands: Vec<Type>,
}

pub fn saga_args(cx: &Ctxt, args: TokenStream) -> SagaArgs {
    let mut name = Attr::none(NAME);
    let mut commands = Attr::none(COMMANDS);
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident(NAME) {
            if let Some(lit) = type_name(cx, &meta, "name = \"order_fulfillment\"")? {
                name.set(cx, &meta.path, lit);
            }
        } else if meta.path.is_ident(COMMANDS) {
            if meta.input.peek(syn::token::Paren) {
                let content;
                syn::parenthesized!(content in meta.input);
                let types = Punctuated::<Type, Token![,]>::parse_terminated(&content)?;
                commands.set(cx, &meta.path, types.into_iter().collect::<Vec<_>>());
            } else {
                expected(cx, &meta, "commands(ReserveInventory, ProcessPayment)")?;
            }
        } else {
            unknown_key(cx, &meta, "#[saga]", "`name` or `commands`")?;
        }
        Ok(())
    });
    if let Err(error) = parser.parse2(args) {
        cx.syn_error(error);
    }
    SagaArgs {
        name: name.get(),
        commands: commands.get().unwrap_or_default(),
    }
}

/// The options of a saga handler marker: `by = field` and, on `#[handle]`, `end`.
pub struct HandlerArgs {
    /// The event's field holding the instance id.
    pub by: Option<syn::Ident>,
    /// `end`: the instance completes after the handler.
    pub end: Option<syn::Path>,
}

pub fn saga_handler_args(cx: &Ctxt, meta: &syn::Meta, marker: &str, usage: &str) -> HandlerArgs {
    let mut by = Attr::none(BY);
    let mut end = Attr::none(END);
    let syn::Meta::List(list) = meta else {
        if let syn::Meta::NameValue(_) = meta {
            cx.error_spanned_by(meta, format!("expected `{usage}`"));
        }
        return HandlerArgs {
            by: None,
            end: None,
        };
    };
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident(BY) {
            if meta.input.peek(Token![=]) {
                let field: syn::Ident = meta.value()?.parse()?;
                by.set(cx, &meta.path, field);
            } else {
                expected(cx, &meta, usage)?;
            }
        } else if meta.path.is_ident(END) && marker == "handle" {
            end.set(cx, &meta.path, meta.path.clone());
        } else {
            let known = if marker == "handle" {
                "`by = field` or `end`"
            } else {
                "`by = field`"
            };
            unknown_key(cx, &meta, &format!("#[{marker}]"), known)?;
        }
        Ok(())
    });
    if let Err(error) = parser.parse2(list.tokens.clone()) {
        cx.syn_error(error);
    }
    HandlerArgs {
        by: by.get(),
        end: end.get(),
    }
}

pub fn aggregate_args(cx: &Ctxt, args: TokenStream) -> AggregateArgs {
    let mut events = Attr::none(EVENTS);
    let mut name = Attr::none(NAME);
    let mut ignore = Attr::none(IGNORE);
    let mut state_version = Attr::none(STATE_VERSION);
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident(EVENTS) {
            if meta.input.peek(Token![=]) {
                let ty: Type = meta.value()?.parse()?;
                events.set(cx, &meta.path, ty);
            } else {
                expected(cx, &meta, "events = YourEventSet")?;
            }
        } else if meta.path.is_ident(NAME) {
            if let Some(lit) = type_name(cx, &meta, "name = \"BankAccount\"")? {
                name.set(cx, &meta.path, lit);
            }
        } else if meta.path.is_ident(IGNORE) {
            if meta.input.peek(syn::token::Paren) {
                let content;
                syn::parenthesized!(content in meta.input);
                let types = Punctuated::<Type, Token![,]>::parse_terminated(&content)?;
                ignore.set(cx, &meta.path, types.into_iter().collect::<Vec<_>>());
            } else {
                expected(cx, &meta, "ignore(EventA, EventB)")?;
            }
        } else if meta.path.is_ident(STATE_VERSION) {
            if let Some(parsed) = version_value(cx, &meta, STATE_VERSION, "state versions")? {
                state_version.set(cx, &meta.path, parsed);
            }
        } else {
            unknown_key(
                cx,
                &meta,
                "#[aggregate]",
                "`events`, `name`, `ignore` or `state_version`",
            )?;
        }
        Ok(())
    });
    if let Err(error) = parser.parse2(args) {
        cx.syn_error(error);
    }
    AggregateArgs {
        events: events.get(),
        name: name.get(),
        ignore: ignore.get().unwrap_or_default(),
        state_version: state_version.get(),
    }
}

fn unknown_key(cx: &Ctxt, meta: &ParseNestedMeta, attribute: &str, known: &str) -> syn::Result<()> {
    let key = meta.path.to_token_stream().to_string().replace(' ', "");
    cx.error_spanned_by(
        &meta.path,
        format!("unknown key `{key}` in {attribute}: expected {known}"),
    );
    skip_value(meta)
}

/// Records "expected `usage`" at the key and skips whatever value follows it.
fn expected(cx: &Ctxt, meta: &ParseNestedMeta, usage: &str) -> syn::Result<()> {
    cx.error_spanned_by(&meta.path, format!("expected `{usage}`"));
    skip_value(meta)
}

fn skip_value(meta: &ParseNestedMeta) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        let _content;
        syn::parenthesized!(_content in meta.input);
    }
    Ok(())
}

/// `key = "Name"`: a non-empty type name without whitespace.
/// A value as written: one a `macro_rules!` passed in (`version = $version`) comes in an
/// invisible group.
fn ungrouped(mut value: Expr) -> Expr {
    while let Expr::Group(group) = value {
        value = *group.expr;
    }
    value
}

fn type_name(cx: &Ctxt, meta: &ParseNestedMeta, usage: &str) -> syn::Result<Option<LitStr>> {
    if !meta.input.peek(Token![=]) {
        expected(cx, meta, usage)?;
        return Ok(None);
    }
    let value = ungrouped(meta.value()?.parse()?);
    let Expr::Lit(syn::ExprLit {
        lit: Lit::Str(lit), ..
    }) = value
    else {
        cx.error_spanned_by(&value, format!("expected a string, like `{usage}`"));
        return Ok(None);
    };
    let text = lit.value();
    if text.is_empty() {
        cx.error_spanned_by(&lit, "type names cannot be empty");
        return Ok(None);
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        cx.error_spanned_by(
            &lit,
            "type names cannot contain whitespace: they are stored and matched exactly",
        );
        return Ok(None);
    }
    Ok(Some(lit))
}

/// The integer literal of `key = N` (`usage` shows one), its type suffix none or `suffix`;
/// `None` with the error recorded at the user's tokens, `not_an_integer` saying what is wrong
/// with a value of another kind.
fn int_literal(
    cx: &Ctxt,
    meta: &ParseNestedMeta,
    usage: &str,
    suffix: &str,
    not_an_integer: impl FnOnce(&Expr) -> String,
) -> syn::Result<Option<LitInt>> {
    if !meta.input.peek(Token![=]) {
        expected(cx, meta, usage)?;
        return Ok(None);
    }
    let value = ungrouped(meta.value()?.parse()?);
    let Expr::Lit(syn::ExprLit {
        lit: Lit::Int(lit), ..
    }) = value
    else {
        cx.error_spanned_by(&value, not_an_integer(&value));
        return Ok(None);
    };
    if !lit.suffix().is_empty() && lit.suffix() != suffix {
        cx.error_spanned_by(
            &lit,
            format!("expected an integer without a type suffix, like `{usage}`"),
        );
        return Ok(None);
    }
    Ok(Some(lit))
}

/// The value of `max_size = N`: bytes, a positive integer literal (`4096`, `64_000`).
fn size_value(cx: &Ctxt, meta: &ParseNestedMeta) -> syn::Result<Option<(usize, LitInt)>> {
    let usage = "max_size = 4096";
    let Some(lit) = int_literal(cx, meta, usage, "usize", |_| {
        format!("expected the largest payload in bytes of JSON, an integer like `{usage}`")
    })?
    else {
        return Ok(None);
    };
    match lit.base10_parse::<u32>() {
        Ok(0) => {
            cx.error_spanned_by(
                &lit,
                "an event of 0 bytes cannot be stored: give the largest payload in bytes of JSON, like `max_size = 4096`",
            );
            Ok(None)
        }
        Ok(bytes) => Ok(Some((bytes as usize, lit))),
        Err(_) => {
            cx.error_spanned_by(
                &lit,
                format!(
                    "{} is too large: `max_size` is at most 4294967295 bytes (stores refuse payloads above 1 MiB unless their limits are raised)",
                    lit.base10_digits()
                ),
            );
            Ok(None)
        }
    }
}

/// `key = N` with N an integer from 1 to `u32::MAX`; `what` names the values in messages
/// ("event versions").
fn version_value(
    cx: &Ctxt,
    meta: &ParseNestedMeta,
    key: &str,
    what: &str,
) -> syn::Result<Option<(u32, LitInt)>> {
    let usage = format!("{key} = 2");
    let Some(lit) = int_literal(cx, meta, &usage, "u32", |value| match value {
        Expr::Unary(syn::ExprUnary {
            op: syn::UnOp::Neg(_),
            ..
        }) => format!("{what} start at 1, like `{key} = 1`"),
        _ => format!("expected an integer, like `{usage}`"),
    })?
    else {
        return Ok(None);
    };
    match lit.base10_parse::<u32>() {
        Ok(0) => {
            cx.error_spanned_by(&lit, format!("{what} start at 1, like `{key} = 1`"));
            Ok(None)
        }
        Ok(version) => Ok(Some((version, lit))),
        Err(_) => {
            cx.error_spanned_by(
                &lit,
                format!("{} is too large: {what} are `u32`", lit.base10_digits()),
            );
            Ok(None)
        }
    }
}
