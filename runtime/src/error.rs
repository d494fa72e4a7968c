//! Errors: one variant per thing a caller can act on.

use uuid::Uuid;

use crate::position::ExpectedVersion;

/// `Result` with Factum's store [`Error`] as the default error.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// What can go wrong when storing or reading events.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream was not at the expected version: another writer got there first.
    #[error(
        "concurrency conflict on stream `{stream_id}`: expected {expected}, but the stream is at version {actual}; reload it and retry the command"
    )]
    Conflict {
        /// The stream appended to.
        stream_id: String,
        /// What the append expected.
        expected: ExpectedVersion,
        /// The stream's version when the append was refused (0: no stream).
        actual: u64,
    },

    /// The stream exists and belongs to another aggregate type.
    #[error(
        "stream `{stream_id}` belongs to aggregate type `{existing}`, not `{requested}`: stream ids are shared by all aggregate types, so give each type ids of its own (for example with a prefix)"
    )]
    AggregateTypeMismatch {
        /// The stream.
        stream_id: String,
        /// The aggregate type the stream was created with.
        existing: String,
        /// The aggregate type of the refused append or load.
        requested: String,
    },

    /// An append inside a transaction that wrote before it, to a stream whose last event was
    /// committed by a newer transaction: storing it would let the global feed deliver the
    /// stream out of order. Roll back and retry the transaction (and append before other writes).
    #[error(
        "stream `{stream_id}` was last appended to by a transaction newer than this one; roll back and retry, appending before the transaction's other writes"
    )]
    StaleTransaction {
        /// The stream.
        stream_id: String,
    },

    /// An event id of the append is already stored somewhere else.
    ///
    /// Re-appending the very same events at the very same positions is an idempotent success;
    /// anything else that reuses a stored event id is refused, so no event is stored twice.
    #[error(
        "event id {event_id} is already stored as version {stream_version} of stream `{stream_id}`; an append may only be retried with the same events at the same positions, new events need new ids"
    )]
    DuplicateEventId {
        /// The reused id.
        event_id: Uuid,
        /// Where it is stored.
        stream_id: String,
        /// Its version there.
        stream_version: u64,
    },

    /// A stored event could not be decoded into its Rust type. Nothing was skipped: the read
    /// stops here.
    #[error("cannot decode version {stream_version} of stream `{stream_id}`: {cause}")]
    Decode {
        /// The stream of the event.
        stream_id: String,
        /// The event's version in its stream.
        stream_version: u64,
        /// What is wrong with it.
        #[source]
        cause: DecodeError,
    },

    /// An event could not be serialized to JSON.
    #[error("cannot serialize event `{event_type}` to JSON: {cause}")]
    Encode {
        /// The event's type name.
        event_type: &'static str,
        /// The serializer's error.
        #[source]
        cause: serde_json::Error,
    },

    /// The append was malformed (for example the same event id twice in one append), or a
    /// snapshot of the stream cannot be stored as it is (a state version above `i32::MAX` on
    /// PostgreSQL).
    #[error("invalid append to stream `{stream_id}`: {reason}")]
    InvalidAppend {
        /// The stream appended to.
        stream_id: String,
        /// What is wrong.
        reason: String,
    },

    /// The stream id cannot be stored: empty, longer than
    /// [`MAX_STREAM_ID_BYTES`](crate::store::MAX_STREAM_ID_BYTES), or holding a NUL or another
    /// control character. Nothing of the append was written. Retrying cannot help.
    #[error(
        "invalid stream id {}{}: {problem}; give the stream a non-empty id of printable characters within the limit",
        shown(stream_id),
        event_type.as_deref().map(|t| format!(" (appending `{t}`)")).unwrap_or_default()
    )]
    InvalidStreamId {
        /// The refused id.
        stream_id: String,
        /// The type of the append's first event (`None`: an empty append).
        event_type: Option<String>,
        /// What is wrong with it.
        problem: StreamIdProblem,
    },

    /// An event's payload or metadata, serialized, is larger than the store's limit
    /// ([`Limits`](crate::store::Limits)). Nothing of the append was written. Retrying cannot
    /// help.
    #[error(
        "event `{event_type}` for stream {} has {bytes} bytes of {part}, above the store's limit of {limit}: keep large data outside the event (store a reference to it), or raise the limit with the store's `with_limits`",
        shown(stream_id)
    )]
    EventTooLarge {
        /// The stream appended to.
        stream_id: String,
        /// The event's type name.
        event_type: String,
        /// Which part is too large.
        part: EventPart,
        /// Its size, in bytes of JSON.
        bytes: usize,
        /// The store's limit for that part.
        limit: usize,
    },

    /// An event's payload is larger than its type declares (`#[event(max_size = N)]`). Nothing
    /// of the append was written. Retrying cannot help.
    #[error(
        "event `{event_type}` for stream {} has {bytes} bytes of payload, above the {max_size} its type declares (`#[event(max_size = {max_size})]`): keep large data outside the event (store a reference to it), or raise the declared size",
        shown(stream_id)
    )]
    EventAboveDeclaredSize {
        /// The stream appended to.
        stream_id: String,
        /// The event's type name.
        event_type: String,
        /// The payload's size, in bytes of JSON.
        bytes: usize,
        /// The size its type declares.
        max_size: usize,
    },

    /// The stored state of a saga instance does not decode into the saga's type (changed by
    /// hand, or by a build whose state type differs). The instance is parked: its events wait
    /// in the saga's dead-letter queue and its timeouts stay pending, while other instances
    /// go on. Repair the state (or deploy a type that reads it), then retry the parked stream.
    #[error(
        "the state of saga `{saga}` instance `{saga_id}` does not decode: {cause}; repair the row in the `sagas` table (or deploy a state type that reads it), then retry the saga's parked streams"
    )]
    SagaState {
        /// The saga.
        saga: &'static str,
        /// The instance.
        saga_id: String,
        /// The deserializer's error.
        #[source]
        cause: serde_json::Error,
    },

    /// The database has no event store in this schema yet.
    #[error(
        "the event store schema `{schema}` is not set up in this database: run the store's `migrate()` once (it is safe to run at every start)"
    )]
    NotMigrated {
        /// The schema.
        schema: String,
    },

    /// The database's event store schema does not match this build.
    #[error("the event store schema `{schema}` cannot be used by this build: {reason}")]
    IncompatibleSchema {
        /// The schema.
        schema: String,
        /// What does not match.
        reason: String,
    },

    /// The PostgreSQL store's events were written on another cluster: it was restored from a
    /// dump into this cluster, or copied here by logical replication. Feed positions are the
    /// old cluster's transaction ids, and this cluster's are smaller, so reading the feed or
    /// appending now would let readers skip events; both are refused until the store adopts
    /// this cluster (`PostgresStore::adopt_cluster`, or `factum adopt-cluster`). Permanent:
    /// retrying does not help.
    #[error(
        "the event store `{schema}` was moved to another PostgreSQL cluster (recorded cluster {}, this cluster {}): its feed positions are the old cluster's transaction ids, so reading the feed and appending are refused rather than skipping events; stop the appending applications, run `factum adopt-cluster --database-url <url>` (or `PostgresStore::adopt_cluster()`) once, and restart",
        cluster_name(.recorded),
        cluster_name(.current)
    )]
    ClusterChanged {
        /// The store's schema.
        schema: String,
        /// The cluster (`system_identifier`) the store recorded, if any.
        recorded: Option<u64>,
        /// The cluster it is on.
        current: Option<u64>,
    },

    /// An import was refused before anything was written: the target store already holds
    /// events (an import fills an empty store, so that ids, versions and feed order are the
    /// exported ones).
    #[error(
        "the store {location} already holds events: import into an empty store (a new schema or file), then point the application at it"
    )]
    ImportTargetNotEmpty {
        /// The store (schema or file).
        location: String,
    },

    /// A line of an export does not hold an event that can be imported: nothing was imported.
    #[error(
        "line {line} of the export cannot be imported ({reason}); nothing was imported: fix or re-export the file"
    )]
    InvalidImport {
        /// The line, from 1.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },

    /// More commands wait for one stream in this process than its repository allows
    /// ([`Repository::serialize_streams`](crate::Repository::serialize_streams)): transient,
    /// retry later (or raise the limit), rather than waiting without bound.
    #[error(
        "{limit} commands already wait for stream {stream}: retry later, or raise Repository::serialize_streams' limit",
        stream = shown(stream_id)
    )]
    StreamBusy {
        /// The stream.
        stream_id: String,
        /// The limit.
        limit: usize,
        /// Marks it transient.
        #[source]
        cause: crate::failure::Transient,
    },

    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// An append (or an import) through a store that reads every tenant's events
    /// ([`PostgresStore::across_tenants`](crate::store::PostgresStore::across_tenants),
    /// `SqliteStore::across_tenants`): events are appended for one tenant.
    #[error(
        "stream {stream}: a store across tenants appends nothing; append through the tenant's store (`store.for_tenant(\"...\")`)",
        stream = shown(stream_id)
    )]
    TenantRequired {
        /// The stream.
        stream_id: String,
    },

    /// A command for one tenant executed through a repository whose store is another
    /// tenant's, or keeps no tenants apart.
    #[error(
        "the command is for tenant {requested:?}, and the repository's store is {}: execute it through a repository on the tenant's store (`store.for_tenant({requested:?})`)",
        store.as_deref().map_or("no tenant's".to_owned(), |store| format!("tenant {store:?}'s"))
    )]
    TenantMismatch {
        /// The command context's tenant.
        requested: String,
        /// The store's tenant.
        store: Option<String>,
    },

    /// An append to a stream that belongs to another tenant (stream ids are unique across
    /// tenants; this tenant cannot see the stream's events).
    #[error(
        "stream {stream} belongs to another tenant: stream ids are unique across tenants, so name this tenant's streams apart (e.g. with its name as a prefix)",
        stream = shown(stream_id)
    )]
    StreamOfAnotherTenant {
        /// The stream.
        stream_id: String,
    },

    /// An inline projection failed in the append's transaction: the append was rolled back,
    /// nothing of it is stored.
    #[error(
        "inline projection `{projection}` failed, so the append was rolled back (nothing is stored): {cause}"
    )]
    InlineProjection {
        /// The projection.
        projection: &'static str,
        /// Why it failed.
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The store holds data no valid write can have produced (a negative version, metadata
    /// that is not a JSON object, a malformed id): written by another tool, or damaged. Nothing
    /// was skipped: the read stops here.
    #[error(
        "the event store holds corrupt data: {reason}; inspect and repair the row (it was not written by this build's append path)"
    )]
    Corrupt {
        /// What is wrong, and where.
        reason: String,
    },

    /// Personal data could not be sealed or opened: no key provider, a bad data subject, a
    /// key that does not unwrap, a sealed field that does not decrypt (see [`crate::pii`]).
    #[error(transparent)]
    Pii(#[from] crate::pii::PiiError),

    /// The cold tier failed: an archive file could not be written or read (see
    /// [`crate::archive`]). Nothing was lost or skipped.
    #[cfg(feature = "archive")]
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),

    /// The store does not support this operation.
    #[error("this event store does not support {0}")]
    Unsupported(&'static str),

    /// The database failed: unreachable, restarting, a statement refused... The sqlx error is
    /// kept: [`Error::is_transient`] says whether waiting and retrying may help.
    #[cfg(feature = "sql")]
    #[error("the database failed: {0}")]
    Database(#[source] sqlx::Error),

    /// The storage backend failed.
    #[error("the event store failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A cluster's identifier for a message.
fn cluster_name(id: &Option<u64>) -> String {
    id.map_or_else(|| "unknown".to_owned(), |id| id.to_string())
}

impl Error {
    /// Whether this is a concurrency [`Error::Conflict`], which a retry after a reload may cure.
    #[must_use]
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. } | Self::StaleTransaction { .. })
    }

    /// Whether waiting and retrying the same work may succeed: the database is unreachable,
    /// restarting, failing over (read-only) or out of connections; a deadlock, serialization
    /// failure or statement timeout; or a cause marked [`Transient`](crate::Transient).
    /// Runners retry these for as long as they last (outages) or within a budget; everything
    /// else is permanent for the work at hand.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        self.class().retryable()
    }

    /// What this failure calls for.
    pub(crate) fn class(&self) -> crate::failure::Class {
        crate::failure::classify(self)
    }
}

/// A stream id shown in a message: quoted, with control characters escaped, and cut after
/// 100 characters.
fn shown(stream_id: &str) -> String {
    let mut shown: String = stream_id.chars().take(100).collect::<String>();
    if shown.len() < stream_id.len() {
        shown.push_str("...");
    }
    format!("{shown:?}")
}

/// What is wrong with a stream id ([`Error::InvalidStreamId`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamIdProblem {
    /// It is empty.
    #[error("it is empty")]
    Empty,
    /// It is longer than the limit.
    #[error("it has {bytes} bytes, above the limit of {limit}")]
    TooLong {
        /// Its length in bytes (UTF-8).
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// It holds a NUL or another control character (PostgreSQL cannot store NUL in text, and
    /// control characters make ids that look alike and break logs).
    #[error("it holds the control character {character:?} at byte {at}")]
    ControlCharacter {
        /// The character.
        character: char,
        /// Its byte offset.
        at: usize,
    },
}

/// Which part of an event is too large ([`Error::EventTooLarge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventPart {
    /// The payload (the event's JSON).
    Payload,
    /// The metadata (as JSON).
    Metadata,
}

impl std::fmt::Display for EventPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Payload => "payload",
            Self::Metadata => "metadata",
        })
    }
}

/// Why a stored `(type name, version, JSON)` triple did not decode into a Rust event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The type name is not one of the set's events.
    #[error(
        "unknown event type `{event_type}` for `{set}`: add the event to the set (or an upcaster if it was renamed)"
    )]
    UnknownType {
        /// The stored type name.
        event_type: String,
        /// The event set decoded into.
        set: &'static str,
    },

    /// The schema version is not the one this build knows.
    #[error(
        "event `{event_type}` is stored at schema version {found}, but this build knows version {expected}: add an upcaster from version {found}, or run the build that wrote it"
    )]
    UnknownVersion {
        /// The stored type name.
        event_type: String,
        /// The stored version.
        found: u32,
        /// The version of the Rust type.
        expected: u32,
    },

    /// The JSON does not match the Rust type.
    #[error("event `{event_type}` v{version} does not match its Rust type: {cause}")]
    Payload {
        /// The stored type name.
        event_type: String,
        /// The stored version.
        version: u32,
        /// The deserializer's error.
        #[source]
        cause: serde_json::Error,
    },

    /// A column of the stored envelope (the metadata, say) does not read as what the store
    /// writes: the row was written by another tool, bypassing the store's checks.
    #[error(
        "column `{column}` of the stored event does not read: {reason}; the row was not written by this build's append path, so a projection parks its stream (skip it for the record)"
    )]
    Column {
        /// The column.
        column: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl DecodeError {
    /// A stored envelope column of the event that does not read as what the store writes.
    pub(crate) fn column(column: &'static str, reason: impl Into<String>) -> Self {
        Self::Column {
            column,
            reason: reason.into(),
        }
    }
}

/// What can go wrong when executing a command: the domain said no, the stream kept changing, or
/// the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecuteError<E> {
    /// The aggregate's command handler refused the command.
    #[error("command rejected: {0}")]
    Rejected(#[source] E),

    /// Every attempt met a concurrent change of the stream.
    #[error("stream `{stream_id}` kept changing concurrently; gave up after {attempts} attempts")]
    Conflict {
        /// The stream.
        stream_id: String,
        /// How many times the command was tried.
        attempts: u32,
        /// The last conflict.
        #[source]
        cause: Error,
    },

    /// The store failed (or held an event that does not decode).
    #[error(transparent)]
    Store(#[from] Error),
}

impl<E> ExecuteError<E> {
    /// The domain error, when the command was rejected.
    pub fn rejected(&self) -> Option<&E> {
        match self {
            Self::Rejected(error) => Some(error),
            _ => None,
        }
    }
}
