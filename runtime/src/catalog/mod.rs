//! The event catalog: a JSON Schema for every version of every event, an AsyncAPI 3.1 document,
//! and a Markdown page with a flow diagram, all generated from the compiled Rust types.
//!
//! The written catalog is also a lock: once a version of an event is published (its schema file
//! committed), a later build whose schema for that version changed incompatibly is refused, with
//! what changed and what to do (add a version and an upcaster). Compatible changes (a new
//! optional field) update the lock.
//!
//! A crate emits its catalog from a build script that has the domain crate as a build
//! dependency:
//!
//! ```rust,ignore
//! // build.rs, with `[build-dependencies] bank = { path = "../bank" }` and `factum`
//! use factum::catalog::Catalog;
//!
//! fn main() {
//!     Catalog::new("Bank", env!("CARGO_PKG_VERSION"))
//!         .aggregate::<bank::BankAccount>()
//!         .emit_from_build_script("../../schemas");
//! }
//! ```

mod asyncapi;
mod compat;
mod contract;
mod html;
mod json;
mod markdown;
mod wiring;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use self::compat::{Change, Severity};
pub use self::contract::{
    ConsumerContract, ContractBreak, ContractRead, FieldType, JsonKind, published_schemas,
};
pub use self::html::example_payload;
pub use self::wiring::{Broker, Destination, Protocol, RelayRoute, Service};
use crate::aggregate::Aggregate;
use crate::event::{EventSchema, EventSet};

/// The event catalog of one or more aggregates.
#[derive(Debug, Clone)]
pub struct Catalog {
    title: String,
    version: String,
    description: Option<String>,
    aggregates: BTreeMap<&'static str, AggregateEntry>,
    /// Consumers of events (projections): name, version, and the event types they read.
    consumers: Vec<Consumer>,
    /// The brokers the relays publish to.
    brokers: Vec<Broker>,
    /// The relays, whose subjects and routing keys are channels.
    relays: Vec<RelayRoute>,
    /// The services of other processes consuming relayed events.
    services: Vec<Service>,
}

/// A projection or a saga in the catalog.
#[derive(Debug, Clone)]
struct Consumer {
    kind: &'static str,
    name: &'static str,
    version: u32,
    event_types: Vec<&'static str>,
    /// The commands it sends (sagas).
    sends: Vec<&'static str>,
}

/// One aggregate of the catalog: a stream category, with its commands and events.
#[derive(Debug, Clone)]
struct AggregateEntry {
    commands: Vec<&'static str>,
    /// Every version of every event, current versions flagged.
    events: Vec<CatalogEvent>,
}

/// One version of one event in the catalog.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CatalogEvent {
    /// The schema and identity of this version.
    pub schema: EventSchema,
    /// Whether this is the version the code writes (the others are read through upcasters).
    pub current: bool,
}

impl CatalogEvent {
    /// The file of this version's schema, relative to the catalog directory.
    #[must_use]
    pub fn file(&self) -> PathBuf {
        schema_file(self.schema.name, self.schema.version)
    }
}

fn schema_file(name: &str, version: u32) -> PathBuf {
    PathBuf::from("events").join(format!("{name}.v{version}.schema.json"))
}

impl Catalog {
    /// The catalog file of the AsyncAPI document.
    pub const ASYNCAPI_FILE: &'static str = "asyncapi.json";
    /// The catalog file of the Markdown page.
    pub const MARKDOWN_FILE: &'static str = "catalog.md";

    /// An empty catalog of an application (`title`, `version` go to the AsyncAPI `info`).
    #[must_use]
    pub fn new(title: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            version: version.into(),
            description: None,
            aggregates: BTreeMap::new(),
            consumers: Vec::new(),
            brokers: Vec::new(),
            relays: Vec::new(),
            services: Vec::new(),
        }
    }

    /// Adds a broker (an AsyncAPI server) that relays publish to.
    #[must_use]
    pub fn broker(mut self, broker: Broker) -> Self {
        self.brokers.push(broker);
        self
    }

    /// Adds a relay: a channel per event type it publishes, addressed by its real subject or
    /// routing key, and an operation sending to each.
    #[must_use]
    pub fn relay(mut self, relay: RelayRoute) -> Self {
        self.relays.push(relay);
        self
    }

    /// Adds a service of another process consuming a relay's events: an operation receiving
    /// from each channel of an event type it reads.
    #[must_use]
    pub fn service(mut self, service: Service) -> Self {
        self.services.push(service);
        self
    }

    /// What the declared wiring gets wrong: a relay on an undeclared broker or publishing to
    /// a destination its broker's protocol has not, a service of an undeclared relay or reading
    /// an event type no relay of it publishes.
    fn wiring_errors(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for relay in &self.relays {
            match self.brokers.iter().find(|b| b.name == relay.broker) {
                None => errors.push(format!(
                    "relay `{}` publishes to broker `{}`, which the catalog does not declare: add `.broker(Broker::nats(..))` or `Broker::amqp`",
                    relay.name, relay.broker
                )),
                Some(broker) => {
                    let fits = matches!(
                        (&relay.destination, broker.protocol),
                        (Destination::JetStream { .. }, Protocol::Nats)
                            | (Destination::Exchange { .. }, Protocol::Amqp)
                    );
                    if !fits {
                        errors.push(format!(
                            "relay `{}` is declared for another protocol than broker `{}` ({})",
                            relay.name,
                            broker.name,
                            broker.protocol.asyncapi()
                        ));
                    }
                }
            }
        }
        for service in &self.services {
            let Some(relay) = self.relays.iter().find(|r| r.name == service.relay) else {
                errors.push(format!(
                    "service `{}` reads relay `{}`, which the catalog does not declare",
                    service.name, service.relay
                ));
                continue;
            };
            for event_type in &service.event_types {
                let published = self.aggregates.iter().any(|(aggregate, entry)| {
                    relay.publishes(aggregate)
                        && entry.events.iter().any(|e| e.schema.name == event_type)
                });
                if !published {
                    errors.push(format!(
                        "service `{}` reads `{event_type}`, which relay `{}` does not publish (no aggregate of the catalog it relays has it)",
                        service.name, relay.name
                    ));
                }
            }
        }
        errors
    }

    /// A description of the application.
    #[must_use]
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Adds an aggregate: its commands, and every version of every event of its set.
    #[must_use]
    pub fn aggregate<A: Aggregate>(mut self) -> Self {
        let mut schemas = Vec::new();
        A::Event::event_schemas(&mut schemas);
        let current = A::Event::EVENTS;
        let mut events: Vec<CatalogEvent> = schemas
            .into_iter()
            .map(|schema| CatalogEvent {
                current: current
                    .iter()
                    .any(|e| e.name == schema.name && e.version == schema.version),
                schema,
            })
            .collect();
        events.sort_by(|a, b| {
            (a.schema.name, a.schema.version).cmp(&(b.schema.name, b.schema.version))
        });
        events.dedup_by(|a, b| {
            a.schema.name == b.schema.name && a.schema.version == b.schema.version
        });
        self.aggregates.insert(
            A::TYPE,
            AggregateEntry {
                commands: A::COMMANDS.to_vec(),
                events,
            },
        );
        self
    }

    /// Adds a projection: an operation receiving its events, and arrows in the flow diagram.
    #[must_use]
    pub fn projection<P: crate::projection::Projection>(mut self) -> Self {
        self.consumers.push(Consumer {
            kind: "projection",
            name: P::NAME,
            version: P::VERSION,
            event_types: P::EVENT_TYPES.to_vec(),
            sends: Vec::new(),
        });
        self.consumers.sort_by_key(|c| (c.kind, c.name, c.version));
        self
    }

    /// Adds a saga: operations receiving its events, and arrows from them to the saga and from
    /// the saga to the commands it sends in the flow diagram.
    #[must_use]
    pub fn saga<S: crate::saga::Saga>(mut self) -> Self {
        self.consumers.push(Consumer {
            kind: "saga",
            name: S::NAME,
            version: 1,
            event_types: S::EVENT_TYPES.to_vec(),
            sends: S::COMMANDS.to_vec(),
        });
        self.consumers.sort_by_key(|c| (c.kind, c.name, c.version));
        self
    }

    /// Every event version of the catalog, by aggregate, then name, then version.
    pub fn events(&self) -> impl Iterator<Item = (&'static str, &CatalogEvent)> {
        self.aggregates
            .iter()
            .flat_map(|(aggregate, entry)| entry.events.iter().map(move |e| (*aggregate, e)))
    }

    /// The AsyncAPI 3.1 document.
    #[must_use]
    pub fn asyncapi(&self) -> serde_json::Value {
        asyncapi::document(self)
    }

    /// The Markdown page (events, versions, and a Mermaid flow diagram).
    #[must_use]
    pub fn markdown(&self) -> String {
        markdown::page(self)
    }

    /// Every file of the catalog, by path relative to the catalog directory, with its content:
    /// deterministic (sorted keys, no timestamps), so identical code gives identical bytes.
    #[must_use]
    pub fn files(&self) -> BTreeMap<PathBuf, String> {
        let mut files = BTreeMap::new();
        for (_, event) in self.events() {
            files.insert(event.file(), json::canonical(&event.schema.schema));
        }
        files.insert(
            PathBuf::from(Self::ASYNCAPI_FILE),
            json::canonical(&self.asyncapi()),
        );
        files.insert(PathBuf::from(Self::MARKDOWN_FILE), self.markdown());
        files.extend(html::files(self));
        files
    }

    /// The directory of the static HTML site among the catalog files (`site/index.html`, a page
    /// per event).
    pub const SITE_DIR: &'static str = html::DIR;

    /// Compares the code's schemas with the published ones in `dir` (the lock).
    ///
    /// # Errors
    /// [`CatalogError::Wiring`] when the declared relays, brokers and services do not fit;
    /// [`CatalogError::Breaking`] listing every incompatible change to a published version;
    /// [`CatalogError::Io`] or [`CatalogError::InvalidLock`] when the lock cannot be read.
    pub fn check(&self, dir: impl AsRef<Path>) -> Result<Vec<Change>, CatalogError> {
        let wiring = self.wiring_errors();
        if !wiring.is_empty() {
            return Err(CatalogError::Wiring(wiring));
        }
        let dir = dir.as_ref();
        let mut changes = Vec::new();
        for (_, event) in self.events() {
            let path = dir.join(event.file());
            let published = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    changes.push(Change::new(
                        event.schema.name,
                        event.schema.version,
                        Severity::Added,
                        "new version, not yet published",
                    ));
                    continue;
                }
                Err(source) => return Err(CatalogError::Io { path, source }),
            };
            let published: serde_json::Value =
                serde_json::from_str(&published).map_err(|source| CatalogError::InvalidLock {
                    path: path.clone(),
                    source,
                })?;
            changes.extend(compat::compare(
                event.schema.name,
                event.schema.version,
                &published,
                &event.schema.schema,
            ));
        }
        let breaking: Vec<Change> = changes
            .iter()
            .filter(|c| c.severity == Severity::Breaking)
            .cloned()
            .collect();
        if breaking.is_empty() {
            Ok(changes)
        } else {
            Err(CatalogError::Breaking(BreakingChanges(breaking)))
        }
    }

    /// Checks the lock in `dir`, then writes the catalog there (only files whose content
    /// changed, so that an unchanged catalog leaves the directory untouched).
    ///
    /// # Errors
    /// As [`Catalog::check`] (nothing is written then), or [`CatalogError::Io`].
    pub fn write_to(&self, dir: impl AsRef<Path>) -> Result<Vec<Change>, CatalogError> {
        let dir = dir.as_ref();
        let changes = self.check(dir)?;
        for (relative, content) in self.files() {
            let path = dir.join(relative);
            if std::fs::read_to_string(&path).is_ok_and(|existing| existing == content) {
                continue;
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|source| CatalogError::Io {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            std::fs::write(&path, content).map_err(|source| CatalogError::Io { path, source })?;
        }
        Ok(changes)
    }

    /// For a build script: writes the catalog to `dir` (relative to the crate's manifest
    /// directory), or fails the build with the breaking changes and what to do.
    pub fn emit_from_build_script(&self, dir: impl AsRef<Path>) {
        let base = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(PathBuf::new, PathBuf::from);
        let dir = base.join(dir);
        println!("cargo::rerun-if-changed={}", dir.display());
        match self.write_to(&dir) {
            Ok(changes) => {
                for change in changes
                    .iter()
                    .filter(|c| c.severity == Severity::Compatible)
                {
                    println!("cargo::warning=event catalog updated: {change}");
                }
            }
            Err(error) => {
                for line in error.to_string().lines() {
                    println!("cargo::error={line}");
                }
            }
        }
    }

    /// Checks consumers' contract files (see [`ConsumerContract`]) against this catalog.
    ///
    /// # Errors
    /// [`CatalogError::ContractsBroken`] with every break, [`CatalogError::Io`] or
    /// [`CatalogError::Contract`] when a file cannot be read as a contract.
    pub fn check_contracts(
        &self,
        files: impl IntoIterator<Item = impl AsRef<Path>>,
    ) -> Result<(), CatalogError> {
        let mut breaks = Vec::new();
        for file in files {
            breaks.extend(self.contract_breaks(&ConsumerContract::read(file)?));
        }
        if breaks.is_empty() {
            Ok(())
        } else {
            Err(CatalogError::ContractsBroken(breaks))
        }
    }

    /// For a build script: [`Catalog::check_contracts`] of files relative to the crate's
    /// manifest directory, failing the build with every break (and rebuilding when a file
    /// changes).
    pub fn check_contracts_from_build_script(
        &self,
        files: impl IntoIterator<Item = impl AsRef<Path>>,
    ) {
        let base = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(PathBuf::new, PathBuf::from);
        let files: Vec<PathBuf> = files.into_iter().map(|f| base.join(f)).collect();
        for file in &files {
            println!("cargo::rerun-if-changed={}", file.display());
        }
        if let Err(error) = self.check_contracts(&files) {
            for line in error.to_string().lines() {
                println!("cargo::error={line}");
            }
        }
    }
}

/// What can go wrong with the catalog.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// Published event versions changed incompatibly.
    #[error("{0}")]
    Breaking(BreakingChanges),

    /// A published schema is not valid JSON.
    #[error("the published schema {} is not valid JSON: {source}", path.display())]
    InvalidLock {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },

    /// The declared brokers, relays and services do not fit together.
    #[error("the catalog's wiring is inconsistent:\n  - {}", .0.join("\n  - "))]
    Wiring(Vec<String>),

    /// The catalog breaks consumers' contracts: each break names the consumer, the event, the
    /// version and the field.
    #[error("the catalog breaks consumers' contracts:\n  - {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  - "))]
    ContractsBroken(Vec<ContractBreak>),

    /// A consumer contract file is not one (the message says where and what to write).
    #[error("{0}")]
    Contract(String),

    /// A catalog file could not be read or written.
    #[error("cannot read or write {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Incompatible changes to published event versions.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakingChanges(pub Vec<Change>);

impl fmt::Display for BreakingChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "published event versions changed incompatibly (the catalog's schemas are a lock):"
        )?;
        for change in &self.0 {
            writeln!(f, "  - {change}")?;
        }
        let mut versions: Vec<(&str, u32)> = self
            .0
            .iter()
            .map(|c| (c.event.as_str(), c.version))
            .collect();
        versions.dedup();
        for (event, version) in versions {
            writeln!(
                f,
                "  to change `{event}`, keep version {version} as it was (as a type tagged #[event(name = \"{event}\", version = {version})]), add version {} with the change, and an #[upcast] from {version} to {}",
                version + 1,
                version + 1
            )?;
        }
        Ok(())
    }
}
