//! The AsyncAPI 3.1 document: a channel per aggregate (stream category), a message per event
//! type and version (payload: that version's schema as an AsyncAPI Schema object of the
//! components, `MoneyWithdrawnV1` ... `MoneyWithdrawn`; headers: the envelope), and
//! an operation per aggregate appending to its streams. With declared brokers and relays: a
//! server per broker, a channel per relayed event type addressed by its real subject or routing
//! key (with AMQP bindings), the relay's send operations and the consuming services' receive
//! operations.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::wiring::{Destination, Protocol, RelayRoute};
use super::{Catalog, CatalogEvent};
use crate::relay::headers;

/// The AsyncAPI component name of one event version.
pub fn message_name(event: &CatalogEvent) -> String {
    format!("{}.v{}", event.schema.name, event.schema.version)
}

/// The name of one event version's payload schema among the components: the event's name for
/// the current version (`MoneyWithdrawn`), with its version for older ones (`MoneyWithdrawnV1`).
pub fn payload_name(event: &CatalogEvent) -> String {
    if event.current {
        event.schema.name.to_owned()
    } else {
        format!("{}V{}", event.schema.name, event.schema.version)
    }
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
                // Every version: stored events keep theirs, read through upcasters.
                .filter(|e| consumer.event_types.contains(&e.schema.name))
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
                            "The {} `{}` (version {}) reads these events of `{aggregate}` streams from the global feed (every stored version, older ones through upcasters).",
                            consumer.kind, consumer.name, consumer.version
                        )
                    } else {
                        format!(
                            "The {} `{}` (version {}) reads these events of `{aggregate}` streams from the global feed (every stored version, older ones through upcasters), and sends {}.",
                            consumer.kind, consumer.name, consumer.version, consumer.sends.join(", ")
                        )
                    },
                    "messages": received,
                }),
            );
        }
    }

    let servers = wire(
        catalog,
        &mut channels,
        &mut operations,
        &mut messages,
        &mut schemas,
    );

    let mut info = json!({ "title": catalog.title, "version": catalog.version });
    if let Some(description) = &catalog.description {
        info["description"] = json!(description);
    }
    let mut document = json!({
        "asyncapi": "3.1.0",
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
    });
    if let Some(servers) = servers {
        document["servers"] = Value::Object(servers);
        document["components"]["correlationIds"]["relayedCorrelationId"] = json!({
            "description": "Shared by every command and event of one business flow.",
            "location": format!("$message.header#/{}", headers::CORRELATION_ID),
        });
    }
    document
}

/// The AMQP bindings' version (AsyncAPI bindings 0.3.0).
const AMQP_BINDING: &str = "0.3.0";

/// Adds the brokers, relays and services: returns the servers, when any broker is declared
/// (then the store's channels are on a server of their own: the event store).
fn wire(
    catalog: &Catalog,
    channels: &mut Map<String, Value>,
    operations: &mut Map<String, Value>,
    messages: &mut Map<String, Value>,
    schemas: &mut Schemas,
) -> Option<Map<String, Value>> {
    if catalog.brokers.is_empty() {
        return None;
    }
    let mut servers = Map::new();
    servers.insert(
        "store".to_owned(),
        json!({
            "host": "localhost:5432",
            "protocol": "postgresql",
            "title": "The event store",
            "description": "Factum's event store (PostgreSQL): the aggregates' streams and the global feed, which projections, sagas and relays read. Not a broker: the channels on it are stream categories.",
        }),
    );
    for channel in channels.values_mut() {
        channel["servers"] = json!([{ "$ref": "#/servers/store" }]);
    }
    for broker in &catalog.brokers {
        let mut server = json!({
            "host": broker.host,
            "protocol": broker.protocol.asyncapi(),
        });
        match broker.protocol {
            Protocol::Amqp => {
                server["protocolVersion"] = json!("0.9.1");
                server["pathname"] = json!("/");
            }
            Protocol::Nats => {}
        }
        if let Some(description) = &broker.description {
            server["description"] = json!(description);
        }
        servers.insert(broker.name.clone(), server);
    }
    schemas.insert_named("RelayHeaders", relay_headers());

    for relay in &catalog.relays {
        let Some(broker) = catalog.brokers.iter().find(|b| b.name == relay.broker) else {
            continue;
        };
        for (aggregate, entry) in &catalog.aggregates {
            if !relay.publishes(aggregate) {
                continue;
            }
            let mut by_type: BTreeMap<&str, Vec<&CatalogEvent>> = BTreeMap::new();
            for event in &entry.events {
                by_type.entry(event.schema.name).or_default().push(event);
            }
            for (event_type, versions) in by_type {
                let id = relay_channel(relay, aggregate, event_type);
                let mut channel_messages = Map::new();
                for event in &versions {
                    let name = message_name(event);
                    let relayed = format!("{name}.relayed");
                    if !messages.contains_key(&relayed) {
                        let payload = sealed_payload(messages, schemas, &name);
                        messages.insert(relayed.clone(), relayed_message(event, payload));
                    }
                    channel_messages.insert(
                        name,
                        json!({ "$ref": format!("#/components/messages/{relayed}") }),
                    );
                }
                let address = relay.address(aggregate, event_type);
                let mut channel = json!({
                    "address": address,
                    "title": format!("{event_type} of {aggregate}, relayed by `{}`", relay.name),
                    "description": relay_description(relay, aggregate, event_type),
                    "servers": [{ "$ref": format!("#/servers/{}", broker.name) }],
                    "messages": channel_messages,
                });
                if let Destination::Exchange { name, vhost } = &relay.destination {
                    channel["bindings"] = json!({
                        "amqp": {
                            "is": "routingKey",
                            "exchange": {
                                "name": name,
                                "type": "topic",
                                "durable": true,
                                "autoDelete": false,
                                "vhost": vhost,
                            },
                            "bindingVersion": AMQP_BINDING,
                        },
                    });
                }
                let references: Vec<Value> = channel_messages_refs(&id, &channel);
                let mut send = json!({
                    "action": "send",
                    "channel": { "$ref": format!("#/channels/{id}") },
                    "title": format!("Relay `{}` publishes {event_type}", relay.name),
                    "summary": format!(
                        "The relay `{}` publishes every stored `{event_type}` of `{aggregate}` streams in feed order, with its stored payload and schema version.",
                        relay.name
                    ),
                    "messages": references.clone(),
                });
                match &relay.destination {
                    Destination::Exchange { .. } => {
                        send["bindings"] = json!({
                            "amqp": {
                                "deliveryMode": 2,
                                "mandatory": false,
                                "timestamp": true,
                                "bindingVersion": AMQP_BINDING,
                            },
                        });
                    }
                    Destination::JetStream { stream } => {
                        send["x-factum-jetstream"] = json!({
                            "stream": stream,
                            "deduplication": "Nats-Msg-Id is the event id",
                        });
                    }
                }
                operations.insert(
                    format!("{}.publish.{aggregate}.{event_type}", relay.name),
                    send,
                );
                for service in &catalog.services {
                    if service.relay != relay.name
                        || !service.event_types.iter().any(|t| t == event_type)
                    {
                        continue;
                    }
                    let mut receive = json!({
                        "action": "receive",
                        "channel": { "$ref": format!("#/channels/{id}") },
                        "title": format!("Service `{}` receives {event_type}", service.name),
                        "summary": format!(
                            "The service `{}` applies each `{event_type}` once (by stream version), decoding older versions through its upcasters.",
                            service.name
                        ),
                        "messages": references.clone(),
                    });
                    if matches!(relay.destination, Destination::Exchange { .. }) {
                        receive["bindings"] =
                            json!({ "amqp": { "ack": true, "bindingVersion": AMQP_BINDING } });
                    }
                    operations.insert(
                        format!(
                            "{}.receive.{}.{aggregate}.{event_type}",
                            service.name, relay.name
                        ),
                        receive,
                    );
                }
                channels.insert(id, channel);
            }
        }
    }
    Some(servers)
}

/// The channel id of a relay's channel for one event type.
fn relay_channel(relay: &RelayRoute, aggregate: &str, event_type: &str) -> String {
    format!("{}.{aggregate}.{event_type}", relay.name)
}

fn relay_description(relay: &RelayRoute, aggregate: &str, event_type: &str) -> String {
    let destination = match &relay.destination {
        Destination::JetStream { stream } => format!(
            "the subject of JetStream stream `{stream}`; each message's `Nats-Msg-Id` is the event id, which JetStream de-duplicates"
        ),
        Destination::Exchange { name, .. } => format!(
            "the routing key on topic exchange `{name}`; the AMQP `message_id` is the event id, delivered at least once"
        ),
    };
    format!(
        "Every stored `{event_type}` of `{aggregate}` streams, in feed order (each stream's events in version order): {destination}. The body is the stored payload of the version its `{}` header names.",
        headers::SCHEMA_VERSION
    )
}

fn channel_messages_refs(id: &str, channel: &Value) -> Vec<Value> {
    channel["messages"]
        .as_object()
        .map(|messages| {
            messages
                .keys()
                .map(|name| json!({ "$ref": format!("#/channels/{id}/messages/{name}") }))
                .collect()
        })
        .unwrap_or_default()
}

/// The schema of a version's payload as relays publish it when it carries personal data: its
/// `#[pii]` properties (`x-pii`) sealed into one `$pii` property, as stored
/// ([`PersonalData::Sealed`](crate::relay::PersonalData::Sealed), the relays' default); its
/// component's name. `None` when it carries none (the store's payload schema is the relayed
/// one).
fn sealed_payload(
    messages: &Map<String, Value>,
    schemas: &mut Schemas,
    message: &str,
) -> Option<String> {
    let component = messages
        .get(message)?
        .pointer("/payload/$ref")?
        .as_str()?
        .strip_prefix("#/components/schemas/")?
        .to_owned();
    let mut payload = schemas.entries.get(&component)?.clone();
    let properties = payload.get_mut("properties")?.as_object_mut()?;
    let sealed: Vec<String> = properties
        .iter()
        .filter(|(_, property)| property.get("x-pii") == Some(&Value::Bool(true)))
        .map(|(name, _)| name.clone())
        .collect();
    if sealed.is_empty() {
        return None;
    }
    for name in &sealed {
        properties.remove(name);
    }
    properties.insert(
        SEALED_FIELD.to_owned(),
        json!({ "$ref": format!("#/components/schemas/{SEALED_SCHEMA}") }),
    );
    let mut required: Vec<Value> = payload
        .get("required")
        .and_then(Value::as_array)
        .map(|required| {
            required
                .iter()
                .filter(|name| !sealed.iter().any(|s| name.as_str() == Some(s)))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    required.push(json!(SEALED_FIELD));
    let name = format!("{component}Sealed");
    if let Some(root) = payload.as_object_mut() {
        root.insert("required".to_owned(), Value::Array(required));
        root.insert("title".to_owned(), json!(name));
        root.insert("$id".to_owned(), json!(format!("#{name}")));
        root.insert(
            "description".to_owned(),
            json!(format!(
                "`{component}` as relays publish it: its personal data ({}) sealed into `{SEALED_FIELD}`, as stored. A consumer given the data keys' store opens it (`Consumer::data_keys`); without them, or once the data subject is forgotten, the fields read as their replacements.",
                sealed.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
            )),
        );
    }
    schemas.insert_named(SEALED_SCHEMA, sealed_schema());
    schemas.insert_named(&name, payload);
    Some(name)
}

/// The property a payload's sealed personal data is kept in (`crate::pii`).
const SEALED_FIELD: &str = "$pii";
/// The component describing it.
const SEALED_SCHEMA: &str = "SealedPersonalData";

/// What a sealed `$pii` property holds.
fn sealed_schema() -> Value {
    let erased = json!({ "description": "The sealed fields' replacements, read once the key is deleted.", "type": "object" });
    json!({
        "title": SEALED_SCHEMA,
        "description": "Personal data sealed with AES-256-GCM under its data subject's key (Factum's crypto-shredding): the key's id, the sealed fields, and what they read as once the key is deleted. Stores write the first form; the second is what they wrote before, still read.",
        "oneOf": [
            {
                "type": "array",
                "items": [
                    { "description": "The data key's id (16 bytes), nonce, ciphertext and tag, base64.", "type": "string", "contentEncoding": "base64" },
                    erased,
                ],
                "additionalItems": false,
                "minItems": 2,
            },
            {
                "type": "object",
                "required": ["key", "data", "erased"],
                "additionalProperties": false,
                "properties": {
                    "key": { "description": "The data key's id.", "type": "string", "format": "uuid" },
                    "data": { "description": "Nonce, ciphertext and tag, base64.", "type": "string", "contentEncoding": "base64" },
                    "erased": erased,
                },
            },
        ],
    })
}

/// A version of an event as a relay publishes it: the stored payload (the same schema as the
/// store's message, or `sealed`, the component of its sealed form when it carries personal
/// data), the envelope in the broker's headers.
fn relayed_message(event: &CatalogEvent, sealed: Option<String>) -> Value {
    let schema = &event.schema;
    let name = message_name(event);
    let payload = match sealed {
        Some(component) => format!("#/components/schemas/{component}"),
        None => format!("#/components/messages/{name}/payload"),
    };
    json!({
        "name": schema.name,
        "title": format!("{} v{} (relayed)", schema.name, schema.version),
        "summary": format!("Version {} of `{}` as a relay publishes it.", schema.version, schema.name),
        "contentType": "application/json",
        "headers": { "$ref": "#/components/schemas/RelayHeaders" },
        "payload": { "$ref": payload },
        "correlationId": { "$ref": "#/components/correlationIds/relayedCorrelationId" },
        "bindings": {
            "amqp": { "messageType": schema.name, "bindingVersion": AMQP_BINDING },
        },
        "x-factum-schema-version": schema.version,
    })
}

/// The headers a relay sets on every message (`factum::relay::headers`).
fn relay_headers() -> Value {
    let text = |description: &str| json!({ "type": "string", "description": description });
    let uuid = |description: &str| json!({ "type": "string", "format": "uuid", "description": description });
    let number = |description: &str| json!({ "type": "string", "pattern": "^[0-9]+$", "description": description });
    json!({
        "type": "object",
        "description": "The envelope of the relayed event, as broker headers (text values).",
        "required": [
            headers::EVENT_ID, headers::EVENT_TYPE, headers::SCHEMA_VERSION, headers::STREAM_ID,
            headers::STREAM_VERSION, headers::AGGREGATE_TYPE, headers::CORRELATION_ID,
            headers::CAUSATION_ID, headers::RECORDED_AT, headers::FEED_POSITION, headers::RELAY,
        ],
        "properties": {
            headers::EVENT_ID: uuid("Unique id of the event (UUIDv7)."),
            headers::EVENT_TYPE: text("The event's stable type name."),
            headers::SCHEMA_VERSION: number("The schema version of the body."),
            headers::STREAM_ID: text("The stream (aggregate instance)."),
            headers::STREAM_VERSION: number("The event's version in its stream, from 1."),
            headers::AGGREGATE_TYPE: text("The aggregate type owning the stream."),
            headers::CORRELATION_ID: uuid("Shared by every command and event of one flow."),
            headers::CAUSATION_ID: uuid("What caused the event."),
            headers::RECORDED_AT: { "type": "string", "format": "date-time", "description": "When the store recorded the event (RFC 3339)." },
            headers::ACTOR: text("Who issued the command, when known."),
            headers::TENANT: text("The tenant the event belongs to, when the store keeps tenants."),
            headers::FEED_POSITION: { "type": "string", "pattern": "^[0-9]+:[0-9]+$", "description": "The event's place in the global feed, `<tx>:<position>`." },
            headers::RELAY: text("The relay that published it."),
            headers::TRACEPARENT: { "type": "string", "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$", "description": "The W3C trace context of the command that appended the event, when it was traced: the message's creation context." },
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
    // The payload is an AsyncAPI Schema object of the document's components (a superset of
    // draft-07, which AsyncAPI tools read, model generators included), named after the event:
    // `MoneyWithdrawn` for the current version, `MoneyWithdrawnV1` for older ones.
    let mut payload = rename_references(payload, &renames);
    let component = schemas.name_for(&payload_name(event), &payload, &message_name(event));
    // Titled by its component name, with a plain-name `$id` (it does not move the base of the
    // references inside): the payload is `asyncapi.json#MoneyWithdrawnV1` wherever the catalog
    // is published.
    if let Some(root) = payload.as_object_mut() {
        root.insert("title".to_owned(), json!(component));
        root.insert("$id".to_owned(), json!(format!("#{component}")));
    }
    schemas.insert_named(&component, payload);
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
        "payload": { "$ref": format!("#/components/schemas/{component}") },
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
