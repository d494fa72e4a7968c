//! What the SQL stores ([`PostgresStore`](crate::store::PostgresStore),
//! [`SqliteStore`](crate::store::SqliteStore)) offer the runners built on them: transactions, a
//! lease per runner, typed reads inside a transaction, the hooks an append runs (inline
//! projections), and their SQL dialect. Projections and sagas are written once against
//! [`SqlStore`]; each store contributes only its SQL (in the `postgres` and `sqlite` modules of
//! `projection` and `saga`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::EventStore;
use super::tx::{StoreKind, Transaction, Tx};
use crate::envelope::{NewEvent, RecordedEvent};
use crate::error::{Error, Result};
use crate::position::{ExpectedVersion, FeedPosition};

/// A SQL event store that projection and saga runners run on: [`PostgresStore`] or
/// [`SqliteStore`]. Sealed: its methods are the runtime's.
///
/// [`PostgresStore`]: crate::store::PostgresStore
/// [`SqliteStore`]: crate::store::SqliteStore
pub trait SqlStore: EventStore + Clone + fmt::Debug + Send + Sync + 'static + Backend {
    /// Begins a write transaction (SQLite: `BEGIN IMMEDIATE`, holding the write lock until it
    /// ends), for queries through [`Tx`] and appends with the store's `append_in`; it wakes
    /// the store's live subscribers when it commits.
    ///
    /// # Errors
    /// [`Error::Database`] when the database cannot be reached.
    fn begin(&self) -> impl Future<Output = Result<Transaction>> + Send {
        self.begin_write()
    }

    /// Appends inside `transaction` (the store's own `append_in`): the events commit or roll
    /// back with its other writes; a [`Transaction`] wakes live subscribers when it commits.
    ///
    /// # Errors
    /// As [`EventStore::append`].
    fn append_in<'a, 'c: 'a>(
        &'a self,
        transaction: impl Into<Tx<'c>>,
        stream_id: &'a str,
        aggregate_type: &'a str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send + 'a {
        self.append_in_tx(
            transaction.into(),
            stream_id,
            aggregate_type,
            expected,
            events,
        )
    }

    /// Creates or upgrades the store's tables (the store's own `migrate`). Safe to run at
    /// every start.
    ///
    /// # Errors
    /// [`Error::IncompatibleSchema`] when the database was migrated by a newer build, or a
    /// database error.
    fn migrate(&self) -> impl Future<Output = Result<()>> + Send {
        self.migrate_tables()
    }

    /// This store (sharing its pool) sealing the `#[pii]` fields of the events it appends under
    /// data keys wrapped by `provider`, and opening them in everything it reads (the store's
    /// own `with_key_provider`; see [`crate::pii`]).
    #[must_use]
    fn with_key_provider(self, provider: impl crate::pii::KeyProvider) -> Self
    where
        Self: Sized,
    {
        self.with_provider(Arc::new(provider))
    }
}

/// A connection of a store's pool, outside any transaction: for the runners' reads.
#[derive(Debug)]
pub enum Connection {
    #[cfg(feature = "postgres")]
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
}

impl Connection {
    /// The connection, borrowed.
    pub fn tx(&mut self) -> Tx<'_> {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(connection) => Tx::from(&mut **connection),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(connection) => Tx::from(&mut **connection),
        }
    }
}

/// A boxed future, for the hooks' object safety.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Work done in an append's transaction once its events are inserted, before the commit: inline
/// projections. A failure rolls the append back.
pub trait AppendHook<S>: Send + Sync + 'static {
    /// Called with the events one append inserted (one stream, in version order).
    fn appended<'a>(
        &'a self,
        store: &'a S,
        tx: &'a mut Tx<'_>,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<()>>;
}

/// Which SQL a store speaks, for the runners' statements.
#[derive(Debug, Clone)]
pub enum Dialect {
    /// PostgreSQL, with the store's tables in this schema.
    #[cfg(feature = "postgres")]
    Postgres(Schema),
    /// SQLite (one database per file: no schema).
    #[cfg(feature = "sqlite")]
    Sqlite,
}

/// A validated schema name, and its quoted form for SQL text: schema names are interpolated into
/// SQL (identifiers cannot be bound), so only plain lowercase identifiers are accepted, once.
#[cfg(feature = "postgres")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    name: String,
    quoted: String,
}

#[cfg(feature = "postgres")]
impl Schema {
    /// # Errors
    /// [`Error::InvalidConfig`] naming what a schema name may hold.
    pub(crate) fn new(name: &str) -> Result<Self> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(Error::InvalidConfig(format!(
                "`{name}` is not a usable schema name: use 1 to 63 lowercase letters, digits and underscores, not starting with a digit"
            )));
        }
        Ok(Self {
            name: name.to_owned(),
            quoted: format!("\"{name}\""),
        })
    }

    /// The name, as given.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The name quoted as an SQL identifier.
    pub(crate) fn quoted(&self) -> &str {
        &self.quoted
    }

    /// The `LISTEN`/`NOTIFY` channel `{prefix}_{schema}`: channel names are identifiers of at
    /// most 63 bytes, so a long schema name is shortened, with a hash of the whole name keeping
    /// channels of different schemas apart.
    pub(crate) fn channel(&self, prefix: &str) -> String {
        let full = format!("{prefix}_{}", self.name);
        if full.len() <= 63 {
            return full;
        }
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let hash = self
            .name
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
            });
        // `{prefix}_{start}_{hash:016x}` in 63 bytes.
        let keep = 63_usize
            .saturating_sub(prefix.len() + 1 + 17)
            .min(self.name.len());
        // Schema names are ASCII (checked by `new`): any byte index is a char boundary.
        format!("{prefix}_{}_{hash:016x}", &self.name[..keep])
    }
}

#[cfg(feature = "postgres")]
impl Default for Schema {
    /// `factum`, the stores' default schema.
    fn default() -> Self {
        Self {
            name: "factum".to_owned(),
            quoted: "\"factum\"".to_owned(),
        }
    }
}

#[cfg(feature = "postgres")]
impl fmt::Display for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// What a lease is for: one runner of a projection version, one dispatcher of a saga.
#[derive(Debug, Clone, Copy)]
pub enum LeaseName<'a> {
    /// The runner of a projection version (sagas' event sides included).
    Projection { name: &'a str, version: u32 },
    /// The dispatcher of a saga's outbox.
    SagaDispatch { saga: &'a str },
    /// A relay to a message broker.
    Relay { name: &'a str },
}

/// A held lease: released by [`Lease::release`], or when dropped (and by the store when the
/// holder's process dies).
pub struct Lease {
    held: Held,
}

enum Held {
    /// A session advisory lock on a connection of its own: released when it closes.
    #[cfg(feature = "postgres")]
    Connection(sqlx::PgConnection),
    /// A transaction-scoped advisory lock: released when the transaction ends. Dropping it
    /// only queues the rollback until the pooled connection is used again, so it is ended
    /// explicitly.
    #[cfg(feature = "postgres")]
    Transaction(sqlx::Transaction<'static, sqlx::Postgres>),
    /// A lock released when dropped (SQLite's lock on a file beside the database).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    OnDrop(Box<dyn Send>),
}

impl Lease {
    #[cfg(feature = "postgres")]
    pub(crate) fn connection(connection: sqlx::PgConnection) -> Self {
        Self {
            held: Held::Connection(connection),
        }
    }

    #[cfg(feature = "postgres")]
    pub(crate) fn transaction(transaction: sqlx::Transaction<'static, sqlx::Postgres>) -> Self {
        Self {
            held: Held::Transaction(transaction),
        }
    }

    /// A lease released when `lock` is dropped.
    #[cfg(feature = "sqlite")]
    pub(crate) fn on_drop(lock: impl Send + 'static) -> Self {
        Self {
            held: Held::OnDrop(Box::new(lock)),
        }
    }

    /// Checks that the lease is still held: its connection answers (a lease whose session
    /// ended is gone, whatever this process believes).
    ///
    /// # Errors
    /// The connection's failure: the lease may be another runner's now.
    pub(crate) async fn check(&mut self) -> Result<()> {
        match &mut self.held {
            #[cfg(feature = "postgres")]
            Held::Connection(connection) => answered(sqlx::Connection::ping(connection)).await,
            #[cfg(feature = "postgres")]
            Held::Transaction(transaction) => {
                answered(async {
                    sqlx::query("SELECT 1")
                        .execute(&mut **transaction)
                        .await
                        .map(drop)
                })
                .await
            }
            Held::OnDrop(_) => Ok(()),
        }
    }

    /// Releases the lease now, so that the next holder (in this process or another) can take
    /// it at once. A failure to tell the database is logged: the lock then goes when the
    /// connection does.
    pub(crate) async fn release(self) {
        let released = async {
            match self.held {
                #[cfg(feature = "postgres")]
                Held::Connection(connection) => sqlx::Connection::close(connection).await,
                #[cfg(feature = "postgres")]
                Held::Transaction(transaction) => transaction.commit().await,
                Held::OnDrop(lock) => {
                    drop(lock);
                    Ok::<(), sqlx::Error>(())
                }
            }
        };
        // A connection to a server that went away may not answer: dropping it ends the
        // session all the same (the server releases the lock when it notices).
        match tokio::time::timeout(RELEASE_TIMEOUT, released).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "a lease was not released cleanly; it goes with its connection");
            }
            Err(_) => tracing::warn!("releasing a lease timed out; it goes with its connection"),
        }
    }
}

/// A lease connection's answer to `ping`, within [`RELEASE_TIMEOUT`].
#[cfg(feature = "postgres")]
async fn answered(ping: impl Future<Output = std::result::Result<(), sqlx::Error>>) -> Result<()> {
    match tokio::time::timeout(RELEASE_TIMEOUT, ping).await {
        Ok(answer) => answer.map_err(crate::error::Error::Database),
        Err(_) => Err(crate::error::Error::Database(sqlx::Error::Io(
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the lease's connection did not answer",
            ),
        ))),
    }
}

/// How long releasing (or checking) a lease may take before its connection is given up.
const RELEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease").finish_non_exhaustive()
    }
}

/// The stream events an inline projection has not applied yet: `stream_id`'s events with
/// versions strictly between `after` and `before`, of these types, after `checkpoint` in the
/// feed.
#[derive(Debug, Clone, Copy)]
pub struct Unapplied<'a> {
    pub stream_id: &'a str,
    pub after: u64,
    pub before: u64,
    pub event_types: &'a [&'static str],
    pub checkpoint: FeedPosition,
}

/// The runtime's side of [`SqlStore`].
#[doc(hidden)]
pub trait Backend {
    /// The store's kind.
    #[doc(hidden)]
    const KIND: StoreKind;

    /// Its SQL dialect.
    #[doc(hidden)]
    fn dialect(&self) -> Dialect;

    /// A write transaction (on SQLite: `BEGIN IMMEDIATE`, holding the write lock).
    #[doc(hidden)]
    fn begin_write(&self) -> impl Future<Output = Result<Transaction>> + Send;

    /// The store's `append_in`.
    #[doc(hidden)]
    fn append_in_tx<'a, 'c: 'a>(
        &'a self,
        tx: Tx<'c>,
        stream_id: &'a str,
        aggregate_type: &'a str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send + 'a;

    /// The store's `migrate`.
    #[doc(hidden)]
    fn migrate_tables(&self) -> impl Future<Output = Result<()>> + Send;

    /// A connection of the pool, outside any transaction, for reads.
    #[doc(hidden)]
    fn acquire(&self) -> impl Future<Output = Result<Connection>> + Send;

    /// A database error, typed (a missing table is [`Error::NotMigrated`]).
    #[doc(hidden)]
    fn fail(&self, error: sqlx::Error) -> Error;

    /// The key a runner named `name` (a projection, saga or consumer) keeps its bookkeeping
    /// rows under: its name, where the database keeps tenants' rows apart itself
    /// (PostgreSQL's row-level security); on SQLite, a tenant's runners' are
    /// `<tenant>/<name>` and those across tenants `*/<name>`, so that each tenancy's runners
    /// of one name keep their own checkpoints, dead letters and instances.
    #[doc(hidden)]
    fn bookkeeping_name<'a>(&self, name: &'a str) -> std::borrow::Cow<'a, str> {
        std::borrow::Cow::Borrowed(name)
    }

    /// The `tenant` value of the events this store sees (`None`: every tenant's), for
    /// runner statements that read events on a store that scopes its own statements (SQLite);
    /// where the database scopes them (PostgreSQL), `None`.
    #[doc(hidden)]
    fn event_scope(&self) -> Option<&str> {
        None
    }

    /// Reads what the store measures of itself and records it as metrics (PostgreSQL: the feed
    /// horizon's age); called by running runners every few seconds. Failures are only logged.
    #[doc(hidden)]
    fn measure(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Takes the lease unless another holder (in this process or another) has it.
    #[doc(hidden)]
    fn try_lease(&self, name: LeaseName<'_>) -> impl Future<Output = Result<Option<Lease>>> + Send;

    /// Reads stored events by id (text), in feed order: the events of side effects decided
    /// and not yet performed.
    #[doc(hidden)]
    fn events_by_id<'a>(
        &'a self,
        ids: &'a [String],
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send + 'a;

    /// The global feed as runners read it: an event whose stored envelope does not fully read
    /// (metadata that is no JSON object, written by another tool) is delivered with empty
    /// metadata and named in the batch's `undecodable`, so that the runner parks its stream
    /// instead of stopping.
    #[doc(hidden)]
    fn read_feed_parking(
        &self,
        query: &super::FeedQuery,
    ) -> impl Future<Output = Result<super::FeedBatch>> + Send;

    /// Takes back the envelopes of a batch of [`Backend::read_feed_parking`] its reader is
    /// done with, for later reads to fill again (a store that keeps none drops them).
    #[doc(hidden)]
    fn keep_spare_batch(&self, events: Vec<crate::envelope::RecordedEvent>) {
        drop(events);
    }

    /// Reads the events an inline application needs, inside its transaction.
    #[doc(hidden)]
    fn unapplied<'a>(
        &'a self,
        tx: &'a mut Tx<'_>,
        query: Unapplied<'a>,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send + 'a;

    /// The store's `with_key_provider`.
    #[doc(hidden)]
    #[must_use]
    fn with_provider(self, provider: Arc<dyn crate::pii::KeyProvider>) -> Self
    where
        Self: Sized;

    /// This store, running `hook` in every append's transaction too.
    #[doc(hidden)]
    fn with_hook(&self, hook: Arc<dyn AppendHook<Self>>) -> Self
    where
        Self: Sized;

    /// Runs until dropped, waking `wake` whenever another process signals `channel` (a saga's
    /// SQL signals it when it queues commands); `None` when the store has no such signals
    /// (SQLite: one process wakes itself).
    #[doc(hidden)]
    fn listen(
        &self,
        channel: String,
        wake: Arc<tokio::sync::Notify>,
    ) -> Option<BoxFuture<'static, ()>>;
}

/// The methods of [`Backend`] that are the store's own inherent methods (`append_in`,
/// `migrate`, `begin`), delegated the same way for every store.
macro_rules! inherent_backend_methods {
    ($store:ty) => {
        async fn append_in_tx<'a, 'c: 'a>(
            &'a self,
            tx: $crate::store::Tx<'c>,
            stream_id: &'a str,
            aggregate_type: &'a str,
            expected: $crate::position::ExpectedVersion,
            events: Vec<$crate::envelope::NewEvent>,
        ) -> $crate::error::Result<Vec<$crate::envelope::RecordedEvent>> {
            <$store>::append_in(self, tx, stream_id, aggregate_type, expected, events).await
        }

        async fn migrate_tables(&self) -> $crate::error::Result<()> {
            <$store>::migrate(self).await
        }

        fn with_provider(mut self, provider: std::sync::Arc<dyn $crate::pii::KeyProvider>) -> Self {
            self.keys = Some($crate::store::keys::Keyring::new(provider));
            self
        }

        async fn begin_write(&self) -> $crate::error::Result<$crate::store::Transaction> {
            <$store>::begin(self).await
        }

        async fn read_feed_parking(
            &self,
            query: &$crate::store::FeedQuery,
        ) -> $crate::error::Result<$crate::store::FeedBatch> {
            <$store>::read_feed_parking(self, query).await
        }
    };
}

pub(crate) use inherent_backend_methods;

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use super::Schema;

    #[test]
    fn channels_fit_in_an_identifier_and_stay_apart() {
        let short = Schema::new("billing").unwrap();
        assert_eq!(short.channel("factum_saga"), "factum_saga_billing");
        let long = "a".repeat(63);
        let other = format!("{}b", "a".repeat(62));
        let (long, other) = (Schema::new(&long).unwrap(), Schema::new(&other).unwrap());
        for prefix in ["factum", "factum_saga"] {
            let (one, two) = (long.channel(prefix), other.channel(prefix));
            assert!(one.len() <= 63 && two.len() <= 63, "{one} / {two}");
            assert!(one.starts_with(&format!("{prefix}_aaaa")));
            assert_ne!(
                one, two,
                "schemas sharing a long prefix get channels of their own"
            );
        }
    }
}

/// The personal-data methods of a SQL store (`with_key_provider`, `forget`), written once:
/// `$store => $forgets` names the store and its count of forgotten subjects.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
macro_rules! personal_data_methods {
    ($store:ident => $forgets:expr) => {
        /// This store (sharing its pool) sealing the `#[pii]` fields of the events it appends
        /// under data keys wrapped by `provider`, and opening them in everything it reads (see
        /// [`crate::pii`]). Without one, an event with personal data is refused.
        #[must_use]
        pub fn with_key_provider(self, provider: impl $crate::pii::KeyProvider) -> Self {
            $crate::store::sql::Backend::with_provider(self, std::sync::Arc::new(provider))
        }

        /// This store (sharing its pool) reading personal data sealed, as stored, and refusing
        /// appends of it: what an export of the stored form, and a relay publishing it, read
        /// through.
        #[cfg_attr(
            not(feature = "cli"),
            allow(
                dead_code,
                reason = "the CLI's export and PostgreSQL's relays read through it"
            )
        )]
        pub(crate) fn without_key_provider(mut self) -> Self {
            self.keys = None;
            self
        }

        /// Opens the sealed personal data of `events` read elsewhere (a relay's messages, an
        /// export) with this store's data keys and key provider: decrypted, or their
        /// replacements when the subject was forgotten (marked
        /// [`shredded`](crate::envelope::Envelope::shredded)). Events with nothing sealed, or
        /// already opened, are left as they are.
        ///
        /// # Errors
        /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) when the store has no key
        /// provider; a [`PiiError`](crate::pii::PiiError) when sealed data does not decrypt
        /// under its key (altered, or another key-encryption key); a database error.
        pub async fn open_personal_data(
            &self,
            events: &mut [$crate::envelope::RecordedEvent],
        ) -> $crate::error::Result<()> {
            match self.keys.as_ref() {
                Some(keys) => keys.open(self, events).await,
                None => Err($crate::store::keys::no_key_provider()),
            }
        }

        /// Forgets a data subject (crypto-shredding): deletes its data key and, in the same
        /// transaction, the copies of its data around the log (snapshots, the saga instances
        /// that handled it, their commands and timeouts, error texts), so that the `#[pii]` fields of its events read as their replacements from
        /// now on (here at once, in other processes within 30 s) and their envelopes are
        /// marked [`shredded`](crate::envelope::Envelope::shredded). The log itself is not
        /// changed. Needs no key provider. Whether the subject had a key.
        ///
        /// # Errors
        /// A database error.
        pub async fn forget(&self, subject: &str) -> $crate::error::Result<bool> {
            let $store = self;
            $crate::store::keys::forget(self.keys.as_ref(), self, $forgets, subject).await
        }
    };
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) use personal_data_methods;
