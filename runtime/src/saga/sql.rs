//! The statements a saga runner runs, whatever the store: their parameters and columns are the
//! contract each store's SQL fulfils (`postgres.rs`, `sqlite.rs`). They run through
//! [`Tx`](crate::store::Tx) on the `Any` driver: ids and times go as text (times as RFC 3339),
//! lists and records as JSON text, flags as integers 0/1.

use std::sync::Arc;

/// A saga runner's SQL, qualified for one store (built once per runner).
#[derive(Debug)]
pub(crate) struct SagaSql {
    /// `$1` saga, `$2` instance: `state, status, correlation_id`, the row locked for the
    /// transaction; the status is `erased` for an instance erased with a data subject.
    pub lock_instance: Arc<str>,
    /// The same, unlocked.
    pub read_instance: Arc<str>,
    /// `$1` saga, `$2` instance, `$3` state (JSON), `$4` status, `$5` correlation id.
    pub save_instance: Arc<str>,
    /// `$1` saga, `$2` instance, `$3` correlation id, `$4` causation id, `$5` commands (JSON
    /// array of objects with `command_id`, `command_type`, `stream_id`, `payload`), queued in
    /// array order, `$6` the trace context they were queued in (nullable text); a command id
    /// already there is kept as it is.
    pub enqueue: Arc<str>,
    /// `$1` saga: signals the saga's dispatchers in other processes when the transaction
    /// commits (none on a store with one process per database file).
    pub signal: Option<Arc<str>>,
    /// The channel of `signal`, to listen on.
    pub channel: Option<String>,
    /// `$1` saga, `$2` instance, `$3` timeout types (JSON), `$4` all of them (0/1): cancels the
    /// instance's pending timeouts.
    pub cancel_timeouts: Arc<str>,
    /// `$1` saga, `$2` instance, `$3` deadlines (JSON array of objects with `timeout_id`,
    /// `timeout_type`, `payload`, `due_at`); an id already there is kept as it is.
    pub schedule: Arc<str>,
    /// `$1` saga, `$2` limit: the first pending commands, in order: `command_id, saga_id,
    /// command_type, stream_id, payload, correlation_id, causation_id, traceparent` (the last
    /// nullable).
    pub pending: Arc<str>,
    /// `$1` command id, `$2` status, `$3` error: records a delivery.
    pub mark_command: Arc<str>,
    /// `$1` saga, `$2` now, `$3` limit: `timeout_id, saga_id` of the timeouts due, oldest first.
    pub due: Arc<str>,
    /// `$1` timeout id: `timeout_type, payload, due_at` of a pending timeout, locked.
    pub lock_timeout: Arc<str>,
    /// `$1` timeout id, `$2` status, `$3` error.
    pub mark_timeout: Arc<str>,
    /// `$1` saga: active and completed instances, pending, rejected and failed commands,
    /// pending timeouts, erased instances.
    pub counts: Arc<str>,
    /// `$1` saga, `$2` instance, `$3` data key id: records that the instance handled personal
    /// data sealed under the key (once).
    pub record_data_key: Arc<str>,
    /// `$1` data key id: whether the key still exists (a count, 0 or 1), locked against its
    /// deletion until the transaction ends.
    pub data_key_present: Arc<str>,
    /// `$1` data key id: erases the copies of the data sealed under the key, the instances
    /// recorded with it among them (see [`crate::store::erasure`]), in order.
    pub erase: Vec<Arc<str>>,
}
