//! The AsyncAPI 3.0 document: a channel per aggregate (stream category), a message per event
//! type and version (payload: that version's JSON Schema, draft-07; headers: the envelope), and
//! an operation per aggregate appending to its streams.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{Catalog, CatalogEvent};

/// The schema format of payloads: JSON Schema draft-07, which every AsyncAPI tool must accept.
pub const PAYLOAD_FORMAT: &str = "application/schema+json;version=draft-07";

/// The AsyncAPI component name of one event version.
pub fn message_name(event: &CatalogEvent) -> String {
    format!("{}.v{}", event.schema.name, event.schema.version)
}

pub fn document(catalog: &Catalog) -> Value {
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    let mut schemas = Schemas::default();
    schemas.insert_named("EventEnvelope", envelope_headers());

    for (aggregate, entry) in &catalog.aggregates {
        let mut channel_messages = Map::new();
        let mut operation_messages = Vec::new();
        for event in &entry.events {
            let name = message_name(event);
            channel_messages.insert(
                name.clone(),
                json!({ "$ref": format!("#/components/messages/{name}") }),
            );
            if event.current {
                operation_messages
                    .push(json!({ "$ref": format!("#/channels/{aggregate}/messages/{name}") }));
            }
            messages.insert(name, message(event, &mut schemas));
        }
        channels.insert(
            (*aggregate).to_owned(),
            json!({
                "address": aggregate,
                "title": format!("{aggregate} streams"),
                "description": format!(
                    "The event streams of `{aggregate}` aggregates: one stream per aggregate, its events in version order, each with the envelope as headers. Older event versions are listed too: stored events keep their version and are read as the current one through upcasters."
                ),
                "messages": channel_messages,
            }),
        );
        let commands = entry.commands.join(", ");
        operations.insert(
            format!("{aggregate}.append"),
            json!({
                "action": "send",
                "channel": { "$ref": format!("#/channels/{aggregate}") },
                "title": format!("Append to {aggregate} streams"),
                "summary": if commands.is_empty() {
                    format!("`{aggregate}` appends the current versions of its events")
                } else {
                    format!("`{aggregate}` handles {commands} and appends the current versions of its events")
                },
                "messages": operation_messages,
            }),
        );
    }

    for consumer in &catalog.consumers {
        for (aggregate, entry) in &catalog.aggregates {
            let received: Vec<Value> = entry
                .events
                .iter()
                .filter(|e| e.current && consumer.event_types.contains(&e.schema.name))
                .map(|e| json!({ "$ref": format!("#/channels/{aggregate}/messages/{}", message_name(e)) }))
                .collect();
            if received.is_empty() {
                continue;
            }
            operations.insert(
                format!("{}.{}.v{}.{aggregate}", consumer.kind, consumer.name, consumer.version),
                json!({
                    "action": "receive",
                    "channel": { "$ref": format!("#/channels/{aggregate}") },
                    "title": format!("{} `{}` v{}", consumer.kind, consumer.name, consumer.version),
                    "summary": if consumer.sends.is_empty() {
                        format!(
                            "The {} `{}` (version {}) reads these events of `{aggregate}` streams from the global feed.",
                            consumer.kind, consumer.name, consumer.version
                        )
                    } else {
                        format!(
                            "The {} `{}` (version {}) reads these events of `{aggregate}` streams from the global feed, and sends {}.",
                            consumer.kind, consumer.name, consumer.version, consumer.sends.join(", ")
                        )
                    },
                    "messages": received,
                }),
            );
        }
    }

    let mut info = json!({ "title": catalog.title, "version": catalog.version });
    if let Some(description) = &catalog.description {
        info["description"] = json!(description);
    }
    json!({
        "asyncapi": "3.0.0",
        "info": info,
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": schemas.into_map(),
            "correlationIds": {
                "correlationId": {
                    "description": "Shared by every command and event of one business flow.",
                    "location": "$message.header#/correlationId",
                },
            },
        },
    })
}

fn message(event: &CatalogEvent, schemas: &mut Schemas) -> Value {
    let schema = &event.schema;
    let mut payload = schema.schema.clone();
    // Definitions move to the document's components, so that references resolve there.
    let definitions = payload
        .as_object_mut()
        .and_then(|root| {
            root.remove("$schema");
            root.remove("definitions")
        })
        .and_then(|definitions| match definitions {
            Value::Object(map) => Some(map),
            _ => None,
        })
        .unwrap_or_default();
    // A definition keeps its name unless another event already put a different definition under
    // it (say, an older version's shape of a nested type): then it is qualified by the message.
    let plain: BTreeMap<String, String> = definitions
        .keys()
        .map(|name| {
            (
                format!("#/definitions/{name}"),
                format!("#/components/schemas/{name}"),
            )
        })
        .collect();
    let mut renames = BTreeMap::new();
    for (name, definition) in &definitions {
        let candidate = rename_references(definition.clone(), &plain);
        let component = schemas.name_for(name, &candidate, &message_name(event));
        renames.insert(
            format!("#/definitions/{name}"),
            format!("#/components/schemas/{component}"),
        );
    }
    for (name, definition) in definitions {
        if let Some(component) = renames
            .get(&format!("#/definitions/{name}"))
            .and_then(|target| target.strip_prefix("#/components/schemas/"))
        {
            schemas.insert_named(component, rename_references(definition, &renames));
        }
    }
    let mut payload = rename_references(payload, &renames);
    if let Some(root) = payload.as_object_mut() {
        root.insert(
            "$schema".to_owned(),
            json!("http://json-schema.org/draft-07/schema#"),
        );
    }
    let summary = if event.current {
        format!("Version {} (current) of `{}`.", schema.version, schema.name)
    } else {
        format!(
            "Version {} of `{}`, read as the current version through upcasters.",
            schema.version, schema.name
        )
    };
    json!({
        "name": schema.name,
        "title": format!("{} v{}", schema.name, schema.version),
        "summary": summary,
        "contentType": "application/json",
        "headers": { "$ref": "#/components/schemas/EventEnvelope" },
        "payload": { "schemaFormat": PAYLOAD_FORMAT, "schema": payload },
        "correlationId": { "$ref": "#/components/correlationIds/correlationId" },
        "x-factum-schema-version": schema.version,
        "x-factum-current": event.current,
        "x-factum-rust-type": schema.rust_type,
    })
}

/// The headers every stored event carries: its envelope, as serialized by
/// [`Envelope`](crate::Envelope) (without the event itself).
pub fn envelope_headers() -> Value {
    let uuid = json!({ "type": "string", "format": "uuid" });
    let position = json!({ "type": "integer", "minimum": 0 });
    json!({
        "type": "object",
        "description": "The envelope of a stored event.",
        "required": [
            "eventId", "eventType", "schemaVersion", "streamId", "aggregateType", "streamVersion",
            "globalPosition", "tx", "recordedAt", "correlationId", "causationId", "metadata",
        ],
        "properties": {
            "eventId": { "description": "Unique id of the event (UUIDv7).", "type": "string", "format": "uuid" },
            "eventType": { "description": "The event's stable type name.", "type": "string" },
            "schemaVersion": { "description": "The schema version of the payload.", "type": "integer", "minimum": 1 },
            "streamId": { "description": "The stream (aggregate instance).", "type": "string" },
            "aggregateType": { "description": "The aggregate type owning the stream.", "type": "string" },
            "streamVersion": { "description": "Position in the stream, from 1.", "type": "integer", "minimum": 1 },
            "globalPosition": position.clone(),
            "tx": { "description": "Commit-order key: the feed is ordered by (tx, globalPosition).", "type": "integer", "minimum": 0 },
            "recordedAt": { "description": "When the store recorded the event.", "type": "string", "format": "date-time" },
            "correlationId": uuid.clone(),
            "causationId": uuid,
            "actor": { "description": "Who issued the command.", "type": ["string", "null"] },
            "metadata": { "description": "Free-form metadata.", "type": "object" },
        },
    })
}

/// `components.schemas`, keeping one entry per distinct definition.
#[derive(Default)]
struct Schemas {
    entries: BTreeMap<String, Value>,
}

impl Schemas {
    fn insert_named(&mut self, name: &str, schema: Value) {
        self.entries.insert(name.to_owned(), schema);
    }

    /// The name to keep `schema` under: `name`, unless a different schema already has it.
    fn name_for(&self, name: &str, schema: &Value, message: &str) -> String {
        match self.entries.get(name) {
            Some(existing) if existing != schema => format!("{message}.{name}"),
            _ => name.to_owned(),
        }
    }

    fn into_map(self) -> Map<String, Value> {
        self.entries.into_iter().collect()
    }
}

fn rename_references(value: Value, renames: &BTreeMap<String, String>) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| {
                    let value = match (key.as_str(), &value) {
                        ("$ref", Value::String(target)) => renames
                            .get(target)
                            .map_or(value, |renamed| Value::String(renamed.clone())),
                        _ => rename_references(value, renames),
                    };
                    (key, value)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| rename_references(v, renames))
                .collect(),
        ),
        other => other,
    }
}
