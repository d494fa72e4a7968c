//! Whether the code's schema of a published event version can still read every event that the
//! published schema describes.
//!
//! Breaking: a field removed (or renamed), a type changed or narrowed, a new required field, an
//! optional field made required, an enum value no longer accepted. Compatible: a new optional
//! field, a required field made optional, a type widened (integer to number, `u32` to `u64`,
//! null now accepted), a new enum value. Annotations (titles, descriptions, examples, defaults)
//! are ignored.

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use serde_json::{Map, Value};

/// How a change affects events already stored at a published version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Severity {
    /// Stored events may no longer decode, or decode into something else.
    Breaking,
    /// Stored events still decode.
    Compatible,
    /// The version is not published yet.
    Added,
}

/// One difference between a published schema and the code's.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Change {
    /// The event's stored type name.
    pub event: String,
    /// The version.
    pub version: u32,
    /// How it affects stored events.
    pub severity: Severity,
    /// What changed.
    pub what: String,
}

impl Change {
    pub(super) fn new(
        event: &str,
        version: u32,
        severity: Severity,
        what: impl Into<String>,
    ) -> Self {
        Self {
            event: event.to_owned(),
            version,
            severity,
            what: what.into(),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Breaking => "breaking",
            Severity::Compatible => "compatible",
            Severity::Added => "added",
        };
        write!(
            f,
            "`{}` version {}: {} ({severity})",
            self.event, self.version, self.what
        )
    }
}

/// The changes from `published` to `current`, schemas of `event` at `version`.
pub fn compare(event: &str, version: u32, published: &Value, current: &Value) -> Vec<Change> {
    let mut walk = Walk {
        published_root: published,
        current_root: current,
        found: Vec::new(),
        visited: HashSet::new(),
    };
    walk.schema("the event", published, current);
    walk.found
        .into_iter()
        .map(|(severity, what)| Change::new(event, version, severity, what))
        .collect()
}

struct Walk<'a> {
    published_root: &'a Value,
    current_root: &'a Value,
    found: Vec<(Severity, String)>,
    /// `$ref` pairs already compared (recursive types).
    visited: HashSet<(String, String)>,
}

impl<'a> Walk<'a> {
    fn breaking(&mut self, what: String) {
        self.found.push((Severity::Breaking, what));
    }

    fn compatible(&mut self, what: String) {
        self.found.push((Severity::Compatible, what));
    }

    fn schema(&mut self, at: &str, published: &'a Value, current: &'a Value) {
        let (published, current) = (single_all_of(published), single_all_of(current));
        let (published, current) = match (reference(published), reference(current)) {
            (Some(p), Some(c)) => {
                if !self.visited.insert((p.to_owned(), c.to_owned())) {
                    return;
                }
                (
                    resolve(self.published_root, p),
                    resolve(self.current_root, c),
                )
            }
            (Some(p), None) => (resolve(self.published_root, p), Some(current)),
            (None, Some(c)) => (Some(published), resolve(self.current_root, c)),
            (None, None) => (Some(published), Some(current)),
        };
        let (Some(published), Some(current)) = (published, current) else {
            return;
        };
        if published == current {
            return;
        }
        // A nullable schema (`anyOf: [T, null]`, or `type: [T, "null"]`) compares T with T.
        let (published_null, published) = split_null(published);
        let (current_null, current) = split_null(current);
        match (published_null, current_null) {
            (true, false) => {
                self.breaking(format!("{at} no longer accepts null (it was optional)"))
            }
            (false, true) => self.compatible(format!("{at} now accepts null")),
            _ => {}
        }
        let (Some(published), Some(current)) = (published, current) else {
            return;
        };
        if let (Some(p), Some(c)) = (alternatives(published), alternatives(current)) {
            self.alternatives(at, p, c);
            return;
        }
        self.values(at, published, current);
        let (published_types, current_types) = (types(published), types(current));
        for lost in published_types
            .iter()
            .filter(|t| !accepts(&current_types, t))
        {
            let now = current_types
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(" or ");
            self.breaking(format!("{at} changed type from {lost} to {now}"));
        }
        if published_types.contains("integer") && current_types.contains("integer") {
            self.format(at, published, current);
        }
        if published_types.contains("object") && current_types.contains("object") {
            self.object(at, published, current);
        }
        if let (Some(p), Some(c)) = (published.get("items"), current.get("items")) {
            self.schema(&format!("{at}[]"), p, c);
        }
    }

    fn object(&mut self, at: &str, published: &'a Value, current: &'a Value) {
        let published_properties = properties(published);
        let current_properties = properties(current);
        let (published_required, current_required) = (required(published), required(current));
        let field = |name: &str| {
            if at == "the event" {
                format!("field `{name}`")
            } else {
                format!("{at}.`{name}`")
            }
        };
        for (name, published_field) in published_properties.into_iter().flatten() {
            match current_properties.and_then(|properties| properties.get(name)) {
                None => self.breaking(format!("{} was removed (or renamed)", field(name))),
                Some(current_field) => {
                    match (
                        published_required.contains(name.as_str()),
                        current_required.contains(name.as_str()),
                    ) {
                        (false, true) => self.breaking(format!("{} became required", field(name))),
                        (true, false) => {
                            self.compatible(format!("{} became optional", field(name)))
                        }
                        _ => {}
                    }
                    self.schema(&field(name), published_field, current_field);
                }
            }
        }
        for name in current_properties.into_iter().flat_map(Map::keys) {
            if published_properties.is_some_and(|properties| properties.contains_key(name)) {
                continue;
            }
            if current_required.contains(name.as_str()) {
                self.breaking(format!("{} was added as required", field(name)));
            } else {
                self.compatible(format!("{} was added (optional)", field(name)));
            }
        }
        if let (Some(p), Some(c)) = (
            published.get("additionalProperties"),
            current.get("additionalProperties"),
        ) && p.is_object()
            && c.is_object()
        {
            self.schema(&format!("{at}{{*}}"), p, c);
        }
    }

    /// Enums (`enum`, `const`): every published value must still be accepted.
    fn values(&mut self, at: &str, published: &Value, current: &Value) {
        let (Some(published), current) = (allowed_values(published), allowed_values(current))
        else {
            return;
        };
        let Some(current) = current else {
            return;
        };
        for value in published.iter().filter(|v| !current.contains(v)) {
            self.breaking(format!("{at} no longer accepts the value {value}"));
        }
        for value in current.iter().filter(|v| !published.contains(v)) {
            self.compatible(format!("{at} accepts a new value {value}"));
        }
    }

    /// `oneOf`/`anyOf` (enums with data, documented enum values): every published alternative
    /// must match a current one with no breaking change.
    fn alternatives(&mut self, at: &str, published: &'a [Value], current: &'a [Value]) {
        for (index, old) in published.iter().enumerate() {
            let mut best: Option<Vec<(Severity, String)>> = None;
            for new in current {
                let mut trial = Walk {
                    published_root: self.published_root,
                    current_root: self.current_root,
                    found: Vec::new(),
                    visited: self.visited.clone(),
                };
                trial.schema(at, old, new);
                let breaks = trial.found.iter().any(|(s, _)| *s == Severity::Breaking);
                if !breaks {
                    best = Some(trial.found);
                    break;
                }
            }
            match best {
                Some(found) => self.found.extend(found),
                None => {
                    let label = old
                        .get("const")
                        .or_else(|| old.get("enum").and_then(|e| e.get(0)))
                        .map_or_else(
                            || {
                                required(old)
                                    .iter()
                                    .next()
                                    .map_or_else(|| format!("#{index}"), |name| format!("`{name}`"))
                            },
                            ToString::to_string,
                        );
                    self.breaking(format!("{at} no longer accepts its variant {label}"));
                }
            }
        }
        if current.len() > published.len() {
            self.compatible(format!("{at} accepts new variants"));
        }
    }

    fn format(&mut self, at: &str, published: &Value, current: &Value) {
        let (p, c) = (
            published.get("format").and_then(Value::as_str),
            current.get("format").and_then(Value::as_str),
        );
        match (p.and_then(integer_range), c.and_then(integer_range)) {
            (Some((p_min, p_max)), Some((c_min, c_max))) if c_min > p_min || c_max < p_max => {
                self.breaking(format!(
                    "{at} narrowed from {} to {}",
                    p.unwrap_or_default(),
                    c.unwrap_or_default()
                ));
            }
            (Some(_), Some(_)) => {}
            // No format any more: any integer is accepted.
            (Some(_), None) if c.is_none() => {}
            _ if p != c => self.breaking(format!(
                "{at} changed format from {} to {}",
                p.unwrap_or("none"),
                c.unwrap_or("none")
            )),
            _ => {}
        }
    }
}

/// schemars wraps a reference that carries a description as `allOf: [{"$ref": ...}]`.
pub(super) fn single_all_of(schema: &Value) -> &Value {
    match schema
        .get("allOf")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        Some([only]) => single_all_of(only),
        _ => schema,
    }
}

pub(super) fn reference(schema: &Value) -> Option<&str> {
    schema.get("$ref").and_then(Value::as_str)
}

/// Resolves a local `#/definitions/...` (or `#/$defs/...`) reference.
pub(super) fn resolve<'v>(root: &'v Value, reference: &str) -> Option<&'v Value> {
    let pointer = reference.strip_prefix('#')?;
    root.pointer(pointer)
}

pub(super) fn properties(schema: &Value) -> Option<&Map<String, Value>> {
    schema.get("properties").and_then(Value::as_object)
}

pub(super) fn required(schema: &Value) -> BTreeSet<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn alternatives(schema: &Value) -> Option<&[Value]> {
    schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
}

/// Separates "or null" from a schema: `anyOf [T, null]` gives T; `type [T, null]` gives the
/// schema with the null type removed.
pub(super) fn split_null(schema: &Value) -> (bool, Option<&Value>) {
    if let Some(options) = schema.get("anyOf").and_then(Value::as_array)
        && options.len() == 2
        && let Some(null) = options.iter().position(is_null_schema)
    {
        return (true, options.get(1 - null));
    }
    match schema.get("type") {
        Some(Value::Array(types)) if types.iter().any(|t| t == "null") => (true, Some(schema)),
        _ => (is_null_schema(schema), Some(schema)),
    }
}

fn is_null_schema(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("null")
}

/// The JSON types a schema accepts, without `null` (handled apart).
pub(super) fn types(schema: &Value) -> BTreeSet<String> {
    match schema.get("type") {
        Some(Value::String(t)) if t != "null" => BTreeSet::from([t.clone()]),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .map(str::to_owned)
            .collect(),
        _ => BTreeSet::new(),
    }
}

/// Whether types `current` accept values of type `published` (a number accepts integers).
fn accepts(current: &BTreeSet<String>, published: &str) -> bool {
    current.is_empty()
        || current.contains(published)
        || (published == "integer" && current.contains("number"))
}

fn allowed_values(schema: &Value) -> Option<Vec<&Value>> {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return Some(values.iter().collect());
    }
    schema.get("const").map(|value| vec![value])
}

/// The range of a schemars integer format.
fn integer_range(format: &str) -> Option<(i128, i128)> {
    Some(match format {
        "uint8" => (0, i128::from(u8::MAX)),
        "uint16" => (0, i128::from(u16::MAX)),
        "uint32" | "uint" => (0, i128::from(u32::MAX)),
        "uint64" => (0, i128::from(u64::MAX)),
        "uint128" => (0, i128::MAX),
        "int8" => (i128::from(i8::MIN), i128::from(i8::MAX)),
        "int16" => (i128::from(i16::MIN), i128::from(i16::MAX)),
        "int32" | "int" => (i128::from(i32::MIN), i128::from(i32::MAX)),
        "int64" => (i128::from(i64::MIN), i128::from(i64::MAX)),
        "int128" => (i128::MIN, i128::MAX),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn changes(published: Value, current: Value) -> Vec<(Severity, String)> {
        compare("Ev", 1, &published, &current)
            .into_iter()
            .map(|c| (c.severity, c.what))
            .collect()
    }

    fn object(properties: Value, required: &[&str]) -> Value {
        json!({ "type": "object", "properties": properties, "required": required })
    }

    #[test]
    fn identical_and_annotation_only_changes_are_no_change() {
        let a = object(
            json!({ "n": { "type": "integer", "format": "uint64", "minimum": 0 } }),
            &["n"],
        );
        assert!(changes(a.clone(), a.clone()).is_empty());
        let mut described = a.clone();
        described["description"] = json!("a doc comment");
        described["title"] = json!("Ev");
        assert!(
            changes(a, described)
                .iter()
                .all(|(s, _)| *s != Severity::Breaking)
        );
    }

    #[test]
    fn a_new_optional_field_is_compatible_and_a_new_required_one_breaking() {
        let old = object(json!({ "n": { "type": "integer" } }), &["n"]);
        let optional = object(
            json!({ "n": { "type": "integer" }, "tag": { "type": ["string", "null"] } }),
            &["n"],
        );
        assert_eq!(
            changes(old.clone(), optional),
            [(
                Severity::Compatible,
                "field `tag` was added (optional)".to_owned()
            )]
        );
        let required = object(
            json!({ "n": { "type": "integer" }, "tag": { "type": "string" } }),
            &["n", "tag"],
        );
        assert_eq!(
            changes(old, required),
            [(
                Severity::Breaking,
                "field `tag` was added as required".to_owned()
            )]
        );
    }

    #[test]
    fn removed_renamed_retyped_and_narrowed_fields_are_breaking() {
        let old = object(
            json!({ "amount": { "type": "integer", "format": "uint64" }, "note": { "type": "string" } }),
            &["amount", "note"],
        );
        let renamed = object(
            json!({ "cents": { "type": "integer", "format": "uint64" }, "note": { "type": "string" } }),
            &["cents", "note"],
        );
        let found = changes(old.clone(), renamed);
        assert!(found.contains(&(
            Severity::Breaking,
            "field `amount` was removed (or renamed)".to_owned()
        )));
        assert!(found.contains(&(
            Severity::Breaking,
            "field `cents` was added as required".to_owned()
        )));

        let retyped = object(
            json!({ "amount": { "type": "string" }, "note": { "type": "string" } }),
            &["amount", "note"],
        );
        assert_eq!(
            changes(old.clone(), retyped),
            [(
                Severity::Breaking,
                "field `amount` changed type from integer to string".to_owned()
            )]
        );
        let narrowed = object(
            json!({ "amount": { "type": "integer", "format": "uint32" }, "note": { "type": "string" } }),
            &["amount", "note"],
        );
        assert_eq!(
            changes(old, narrowed),
            [(
                Severity::Breaking,
                "field `amount` narrowed from uint64 to uint32".to_owned()
            )]
        );
    }

    #[test]
    fn optionality_changes() {
        let optional = object(json!({ "note": { "type": ["string", "null"] } }), &[]);
        let required = object(json!({ "note": { "type": "string" } }), &["note"]);
        let to_required = changes(optional.clone(), required.clone());
        assert!(
            to_required
                .iter()
                .any(|(s, w)| *s == Severity::Breaking && w.contains("became required"))
        );
        let to_optional = changes(required, optional);
        assert!(to_optional.iter().all(|(s, _)| *s == Severity::Compatible));
    }

    #[test]
    fn widening_is_compatible() {
        let old = object(
            json!({ "n": { "type": "integer", "format": "uint32" } }),
            &["n"],
        );
        let wider = object(
            json!({ "n": { "type": "integer", "format": "uint64" } }),
            &["n"],
        );
        assert!(changes(old.clone(), wider).is_empty());
        let number = object(
            json!({ "n": { "type": "number", "format": "double" } }),
            &["n"],
        );
        assert!(
            changes(old, number)
                .iter()
                .all(|(s, _)| *s != Severity::Breaking)
        );
    }

    #[test]
    fn enum_values_and_nested_types_through_references() {
        let old = json!({
            "type": "object",
            "properties": { "channel": { "$ref": "#/definitions/Channel" } },
            "required": ["channel"],
            "definitions": { "Channel": { "type": "string", "enum": ["teller", "atm"] } }
        });
        let mut more = old.clone();
        more["definitions"]["Channel"]["enum"] = json!(["teller", "atm", "online"]);
        assert_eq!(
            changes(old.clone(), more),
            [(
                Severity::Compatible,
                "field `channel` accepts a new value \"online\"".to_owned()
            )]
        );
        let mut fewer = old.clone();
        fewer["definitions"]["Channel"]["enum"] = json!(["teller"]);
        assert_eq!(
            changes(old, fewer),
            [(
                Severity::Breaking,
                "field `channel` no longer accepts the value \"atm\"".to_owned()
            )]
        );
    }
}
