//! Consumer contracts: what another service (another team) relies on in the events it reads —
//! the events, the versions it can read, and the fields it uses with their types — committed as
//! a small JSON file, and checked against the producer's catalog so that a producer change that
//! would break a consumer fails the producer's CI (and the consumer's), not production.
//!
//! ```json
//! {
//!   "consumer": "shipping-service",
//!   "reads": [
//!     { "event": "OrderPlaced", "versions": [1],
//!       "fields": { "order_id": "string", "lines[].sku": "string", "note": "string?" } }
//!   ]
//! }
//! ```
//!
//! A field is a path (`customer.email`, `lines[].sku`: `[]` steps into an array's items) and
//! the JSON type the consumer reads it as (`string`, `integer`, `number`, `boolean`, `object`,
//! `array`, or `any` for presence alone); a trailing `?` says the consumer copes with its
//! absence (or `null`).
//!
//! The contract breaks when an event it reads is no longer in the catalog; when the producer
//! writes a version the consumer does not read (it must add an upcaster, or read it); or when,
//! in a version it reads, a field it relies on is gone, has another type, or may be absent while
//! the consumer needs it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::compat::{properties, reference, required, resolve, single_all_of, split_null, types};
use super::{Catalog, CatalogError};
use crate::event::{Event, EventSchema};

/// What one consumer reads: its name and, per event, the versions and fields it relies on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerContract {
    /// The consumer (a service, a team), named in every break.
    pub consumer: String,
    /// The events it reads.
    pub reads: Vec<ContractRead>,
}

/// One event a consumer reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractRead {
    /// The event's stored type name.
    pub event: String,
    /// The versions the consumer can read (directly, or through its own upcasters).
    pub versions: Vec<u32>,
    /// The fields it relies on: path → the JSON type it reads (`"string"`, `"integer?"`, ...).
    #[serde(default)]
    pub fields: BTreeMap<String, FieldType>,
}

/// The JSON type a consumer reads a field as, and whether it copes with the field's absence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FieldType {
    /// `string`, `integer`, `number`, `boolean`, `object`, `array`, or `any`.
    pub kind: JsonKind,
    /// `?`: the field may be absent or `null`.
    pub optional: bool,
}

/// A JSON type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonKind {
    /// A string.
    String,
    /// An integer.
    Integer,
    /// A number (an integer is one too).
    Number,
    /// `true` or `false`.
    Boolean,
    /// An object.
    Object,
    /// An array.
    Array,
    /// Anything: only its presence matters.
    Any,
}

impl JsonKind {
    const ALL: [(&'static str, Self); 7] = [
        ("string", Self::String),
        ("integer", Self::Integer),
        ("number", Self::Number),
        ("boolean", Self::Boolean),
        ("object", Self::Object),
        ("array", Self::Array),
        ("any", Self::Any),
    ];

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, kind)| *kind == self)
            .map_or("any", |(name, _)| name)
    }

    /// Whether a value of schema types `offered` (without `null`; empty: any) always reads as
    /// this kind.
    fn reads(self, offered: &std::collections::BTreeSet<String>) -> bool {
        match self {
            Self::Any => true,
            _ if offered.is_empty() => false,
            Self::Number => offered.iter().all(|t| t == "number" || t == "integer"),
            kind => offered.iter().all(|t| t == kind.name()),
        }
    }
}

impl TryFrom<String> for FieldType {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let (name, optional) = match text.strip_suffix('?') {
            Some(name) => (name, true),
            None => (text.as_str(), false),
        };
        JsonKind::ALL
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, kind)| Self {
                kind: *kind,
                optional,
            })
            .ok_or_else(|| {
                format!(
                    "`{text}` is not a field type: use string, integer, number, boolean, object, array or any, with `?` when the field may be absent"
                )
            })
    }
}

impl From<FieldType> for String {
    fn from(field: FieldType) -> Self {
        format!(
            "{}{}",
            field.kind.name(),
            if field.optional { "?" } else { "" }
        )
    }
}

/// A way a producer's catalog breaks a consumer's contract.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ContractBreak {
    /// The consumer.
    pub consumer: String,
    /// The event.
    pub event: String,
    /// The version concerned, when one is.
    pub version: Option<u32>,
    /// The field concerned, when one is.
    pub field: Option<String>,
    /// What breaks, and what to do.
    pub what: String,
}

impl fmt::Display for ContractBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "consumer `{}`: `{}`", self.consumer, self.event)?;
        if let Some(version) = self.version {
            write!(f, " v{version}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ", field `{field}`")?;
        }
        write!(f, ": {}", self.what)
    }
}

impl ConsumerContract {
    /// A contract of `consumer` reading nothing yet.
    #[must_use]
    pub fn new(consumer: impl Into<String>) -> Self {
        Self {
            consumer: consumer.into(),
            reads: Vec::new(),
        }
    }

    /// Adds the event `E` as the consumer's own `#[event]` type declares it (the consumer's
    /// copy of the producer's event, holding the fields it uses): its name, its version, and
    /// each of its fields with its JSON type (optional when the type allows absence). Several
    /// versions of one event merge into one entry.
    #[must_use]
    pub fn reads<E: Event>(mut self) -> Self {
        let schema = EventSchema::of::<E>();
        let fields = top_level_fields(&schema.schema);
        match self.reads.iter_mut().find(|read| read.event == schema.name) {
            Some(read) => {
                if !read.versions.contains(&schema.version) {
                    read.versions.push(schema.version);
                    read.versions.sort_unstable();
                }
                for (path, field) in fields {
                    read.fields.entry(path).or_insert(field);
                }
            }
            None => self.reads.push(ContractRead {
                event: schema.name.to_owned(),
                versions: vec![schema.version],
                fields,
            }),
        }
        self
    }

    /// Reads a contract file.
    ///
    /// # Errors
    /// [`CatalogError::Io`] when the file cannot be read, [`CatalogError::Contract`] when it is
    /// not a contract (the message says where).
    pub fn read(path: impl AsRef<Path>) -> Result<Self, CatalogError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Io {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|error| {
            CatalogError::Contract(format!(
                "{} is not a consumer contract: {error}",
                path.display()
            ))
        })
    }

    /// The contract as the JSON file to commit.
    #[must_use]
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// How the event versions `schemas` (a producer's catalog: name, version, schema) break
    /// this contract; empty when they do not.
    #[must_use]
    pub fn breaks<'a>(
        &self,
        schemas: impl IntoIterator<Item = (&'a str, u32, &'a Value)>,
    ) -> Vec<ContractBreak> {
        let mut by_event: BTreeMap<&str, BTreeMap<u32, &Value>> = BTreeMap::new();
        for (name, version, schema) in schemas {
            by_event.entry(name).or_default().insert(version, schema);
        }
        let mut found = Vec::new();
        for read in &self.reads {
            let broken = |version: Option<u32>, field: Option<&str>, what: String| ContractBreak {
                consumer: self.consumer.clone(),
                event: read.event.clone(),
                version,
                field: field.map(str::to_owned),
                what,
            };
            let Some(versions) = by_event.get(read.event.as_str()) else {
                found.push(broken(
                    None,
                    None,
                    "the producer no longer produces this event (it is not in its catalog)"
                        .to_owned(),
                ));
                continue;
            };
            if let Some((&latest, _)) = versions.last_key_value()
                && !read.versions.contains(&latest)
            {
                found.push(broken(
                    Some(latest),
                    None,
                    format!(
                        "the producer writes version {latest}, which the consumer does not read (it reads {}): read it, or upcast it to one it reads",
                        list(&read.versions)
                    ),
                ));
            }
            for version in &read.versions {
                let Some(schema) = versions.get(version) else {
                    continue;
                };
                for (path, expected) in &read.fields {
                    if let Err(what) = field_meets(schema, path, *expected) {
                        found.push(broken(Some(*version), Some(path), what));
                    }
                }
            }
        }
        found
    }
}

impl Catalog {
    /// How this catalog (the producer's code) breaks `contract`; empty when it does not.
    #[must_use]
    pub fn contract_breaks(&self, contract: &ConsumerContract) -> Vec<ContractBreak> {
        contract.breaks(self.event_versions())
    }

    /// Every event version of the catalog as a contract is checked against: name, version,
    /// schema.
    pub(crate) fn event_versions(&self) -> impl Iterator<Item = (&str, u32, &Value)> {
        self.events().map(|(_, event)| {
            (
                event.schema.name,
                event.schema.version,
                &event.schema.schema,
            )
        })
    }
}

/// The event versions of a written catalog directory (`events/<Name>.v<N>.schema.json`), for a
/// consumer checking its contract against a producer's published catalog.
///
/// # Errors
/// [`CatalogError::Io`] when a file cannot be read; [`CatalogError::Contract`] when one is not
/// JSON.
pub fn published_schemas(dir: impl AsRef<Path>) -> Result<Vec<(String, u32, Value)>, CatalogError> {
    let events = dir.as_ref().join("events");
    let entries = std::fs::read_dir(&events).map_err(|source| CatalogError::Io {
        path: events.clone(),
        source,
    })?;
    let mut found = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| CatalogError::Io {
                path: events.clone(),
                source,
            })?
            .path();
        let Some((name, version)) = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(".schema.json"))
            .and_then(|stem| stem.rsplit_once(".v"))
            .and_then(|(name, version)| Some((name.to_owned(), version.parse::<u32>().ok()?)))
        else {
            continue;
        };
        let text = std::fs::read_to_string(&path).map_err(|source| CatalogError::Io {
            path: path.clone(),
            source,
        })?;
        let schema = serde_json::from_str(&text).map_err(|error| {
            CatalogError::Contract(format!("{} is not JSON: {error}", path.display()))
        })?;
        found.push((name, version, schema));
    }
    found.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    Ok(found)
}

fn list(versions: &[u32]) -> String {
    if versions.is_empty() {
        return "none".to_owned();
    }
    versions
        .iter()
        .map(|v| format!("v{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether the field at `path` of `root` (an event version's schema) reads as `expected`; else
/// what is wrong.
fn field_meets(root: &Value, path: &str, expected: FieldType) -> Result<(), String> {
    let mut schema = deref(root, root);
    let mut may_be_absent = false;
    for step in path.split('.') {
        let (name, into_items) = match step.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (step, false),
        };
        let object = schema;
        let Some(property) = properties(object).and_then(|props| props.get(name)) else {
            return Err(format!(
                "`{name}` is not in the producer's schema (removed or renamed)"
            ));
        };
        if !required(object).contains(name) {
            may_be_absent = true;
        }
        let (nullable, value) = non_null(root, property);
        may_be_absent |= nullable;
        schema = value;
        if into_items {
            let offered = types(schema);
            if !offered.contains("array") {
                return Err(format!(
                    "`{name}` is not an array in the producer's schema ({})",
                    describe(&offered)
                ));
            }
            let Some(items) = schema.get("items") else {
                return Err(format!("`{name}`'s items have no schema"));
            };
            let (nullable, value) = non_null(root, items);
            may_be_absent |= nullable;
            schema = value;
        }
    }
    if may_be_absent && !expected.optional {
        return Err(
            "the producer's schema lets it be absent or null, and the consumer needs it (read it as optional, with `?`, or the producer makes it required)"
                .to_owned(),
        );
    }
    let offered = types(schema);
    if !expected.kind.reads(&offered) {
        return Err(format!(
            "the producer's schema has it as {}, the consumer reads it as {}",
            describe(&offered),
            expected.kind.name()
        ));
    }
    Ok(())
}

/// Whether `schema` accepts `null`, and the schema of its other values (dereferenced).
fn non_null<'v>(root: &'v Value, schema: &'v Value) -> (bool, &'v Value) {
    let (nullable, inner) = split_null(deref(root, schema));
    (nullable, deref(root, inner.unwrap_or(schema)))
}

/// `schema` with its single-`allOf` wrappers and local `$ref`s followed.
fn deref<'v>(root: &'v Value, schema: &'v Value) -> &'v Value {
    let mut schema = single_all_of(schema);
    for _ in 0..32 {
        match reference(schema).and_then(|r| resolve(root, r)) {
            Some(target) => schema = single_all_of(target),
            None => break,
        }
    }
    schema
}

fn describe(types: &std::collections::BTreeSet<String>) -> String {
    if types.is_empty() {
        "untyped".to_owned()
    } else {
        types.iter().cloned().collect::<Vec<_>>().join(" or ")
    }
}

/// The top-level fields of an event schema as a consumer's contract states them.
fn top_level_fields(root: &Value) -> BTreeMap<String, FieldType> {
    let object = deref(root, root);
    let required = required(object);
    let Some(properties) = properties(object) else {
        return BTreeMap::new();
    };
    properties
        .iter()
        .map(|(name, property)| {
            let (nullable, schema) = non_null(root, property);
            // The one JSON type the field has; `any` for none or several.
            let offered = types(schema);
            let kind = match offered.iter().collect::<Vec<_>>().as_slice() {
                [only] => JsonKind::ALL
                    .iter()
                    .find(|(name, _)| name == only)
                    .map_or(JsonKind::Any, |(_, kind)| *kind),
                _ => JsonKind::Any,
            };
            (
                name.clone(),
                FieldType {
                    kind,
                    optional: nullable || !required.contains(name.as_str()),
                },
            )
        })
        .collect()
}
