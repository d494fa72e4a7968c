//! The statements a projection runner runs, whatever the store: their parameters and columns
//! are the contract each store's SQL fulfils (`postgres.rs`, `sqlite.rs`). They run through
//! [`Tx`](crate::store::Tx) on the `Any` driver: parameters and columns are integers (`i64`,
//! or `i32` where named), booleans and text; lists go as JSON text, timestamps come back as
//! RFC 3339 text, event ids as text.
//!
//! Every statement is given the projection's name as `$1` and its version as `$2` (whether it
//! uses them or not: unused parameters are allowed on both stores); positions are
//! `(tx, position)` pairs (SQLite has no `tx`: its positions are in commit order, and it gives
//! the position for both).

use std::sync::Arc;

/// A projection runner's SQL, qualified for one store (built once per runner).
#[derive(Debug)]
pub(crate) struct ProjectionSql {
    /// Creates the checkpoint at the start when missing.
    pub ensure_checkpoint: Arc<str>,
    /// `$3` statement timeout and `$4` idle-in-transaction timeout (milliseconds, as text: the
    /// transaction's limits, where the store has them): the checkpoint, locked for the
    /// transaction, and whether any stream is parked: `tx, position, any parked (i32 0/1),
    /// lease token (nullable text)`.
    pub lock_checkpoint: Arc<str>,
    /// [`lock_checkpoint`](Self::lock_checkpoint) (its columns the checkpoint as it was) that
    /// also moves the checkpoint to `$5` tx, `$6` position when that is past it, in the same
    /// round trip: a batch's transaction saves its checkpoint as it begins, and rolls the move
    /// back with everything else when it fails. A store whose statements cost no round trip
    /// (SQLite) has none: the runner locks, and saves at the end.
    pub advance_checkpoint: Option<Arc<str>>,
    /// `$3` stream ids (JSON): those of them that are parked (a JSON array).
    pub parked_among: Arc<str>,
    /// `$3` token: the lease's holder writes its token into the (existing) checkpoint row,
    /// waiting for a batch in flight.
    pub claim_lease: Arc<str>,
    /// `$3` tx, `$4` position.
    pub save_checkpoint: Arc<str>,
    /// `tx, position`, unlocked.
    pub read_checkpoint: Arc<str>,
    /// `$3` tx, `$4` position, `$5` event types (JSON), `$6` the store's
    /// [`event_scope`](crate::store::sql::Backend::event_scope): `head tx, head position,
    /// events after the checkpoint, the oldest one's recorded time, parked streams, parked
    /// events`.
    pub status: Arc<str>,
    /// `$3` dead letters (JSON array of objects with `stream_id`, `stream_version`,
    /// `event_id`, `event_type`, `tx`, `position`, `error`, `attempts`); those already there
    /// are kept as they are.
    pub park: Arc<str>,
    /// The parked streams, oldest first: `stream_id, first version, events, its error, its
    /// attempts, parked at`.
    pub list_parked: Arc<str>,
    /// `$3` stream: the version of its first parked event.
    pub first_parked: Arc<str>,
    /// `$3` stream, `$4` version: removes a dead letter.
    pub unpark: Arc<str>,
    /// `$3` stream, `$4` version, `$5` error: a retry failed again.
    pub record_failure: Arc<str>,
    /// `$3` stream, `$4` version: marks a dead letter skipped (kept for the record).
    pub skip: Arc<str>,
    /// `$3` event ids (JSON): decides to perform their side effects (`pending`, performed after
    /// the commit); returns the ids not decided before (or skipped by another version's
    /// replay).
    pub claim_side_effects: Arc<str>,
    /// `$3` event ids (JSON): records side effects skipped by a replay.
    pub skip_side_effects: Arc<str>,
    /// The event ids (text) of the side effects this version decided and has not yet
    /// performed.
    pub pending_effects: Arc<str>,
    /// The retired versions (other than this one) holding side effects they decided and never
    /// performed: `version`.
    pub retired_effects: Arc<str>,
    /// `$3` version: its pending side effects become this version's.
    pub adopt_effects: Arc<str>,
    /// `$3` event id, `$4` whether it failed for good (`i32` 0/1), `$5` its error (nullable
    /// text): the side effect is done, or can never be.
    pub effect_done: Arc<str>,
    /// `$3` event id, `$4` error: an attempt to perform the side effect failed.
    pub effect_failed: Arc<str>,
    /// `$3` stream ids (JSON): `stream_id, applied_version` of their inline marks.
    pub inline_marks: Arc<str>,
    /// `$3` stream: `tx, position` of the checkpoint (share-locked), the stream's inline mark
    /// (or null) and whether any stream is parked (`i32` 0/1; which ones: `parked_among`).
    pub inline_standing: Arc<str>,
    /// `$3` stream, `$4` version: moves the stream's inline mark up to the version.
    pub inline_mark: Arc<str>,
    /// Serializes changes to the projection's versions for the transaction.
    pub lock_versions: Arc<str>,
    /// The projection's versions: `version, state`.
    pub versions: Arc<str>,
    /// `$3` state, `$4` whether it is active (`i32` 0/1): registers a version.
    pub register_version: Arc<str>,
    /// The version's state.
    pub version_state: Arc<str>,
    /// Retires the active version, if this version is building.
    pub retire_active: Arc<str>,
    /// Activates this version, if it is building.
    pub activate: Arc<str>,
    /// `$1` projection: the active version.
    pub active_version: Arc<str>,
    /// Forget the version's progress (checkpoint, dead letters, inline marks): a rebuild.
    pub clear: [Arc<str>; 3],
}

/// The streams `parked_among` returned (a JSON array, or nothing) for projection `P`.
///
/// # Errors
/// [`Error::Corrupt`](crate::Error::Corrupt) when the list does not read.
pub(super) fn parked_streams<P: super::Projection>(
    parked: Option<String>,
) -> Result<Vec<String>, crate::Error> {
    let Some(parked) = parked else {
        return Ok(Vec::new());
    };
    serde_json::from_str(&parked).map_err(|e| crate::Error::Corrupt {
        reason: format!("the parked streams of `{}` do not read: {e}", P::NAME),
    })
}

/// A runner statement, ready to run.
pub(super) type Statement = sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>;

/// The statement `sql` of projection `P`, with the name its bookkeeping is kept under
/// ([`Backend::bookkeeping_name`](crate::store::sql::Backend::bookkeeping_name) of its name)
/// and its version bound as `$1` and `$2`.
pub(super) fn statement<P: super::Projection>(
    sql: &Arc<str>,
    name: std::borrow::Cow<'static, str>,
) -> Statement {
    let query = sqlx::query(sqlx::AssertSqlSafe(Arc::clone(sql)));
    match name {
        std::borrow::Cow::Borrowed(name) => query.bind(name),
        std::borrow::Cow::Owned(name) => query.bind(name),
    }
    .bind(i64::from(P::VERSION))
}
