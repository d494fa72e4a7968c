//! Commands as messages, and the context a command runs in: ids that flow into every event it
//! produces.

use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use std::borrow::Cow;

use crate::envelope::{Envelope, Metadata, NewEvent};
use crate::error::{Error, Result};
use crate::event::EventSet;

/// Who and what a command comes from. Every event the command produces gets
/// `correlation_id = context.correlation_id`, `causation_id = context.command_id`, and the
/// context's actor and metadata.
///
/// ```
/// use factum::CommandContext;
///
/// let request = uuid::Uuid::now_v7();
/// let context = CommandContext::new().correlation_id(request).actor("alice");
/// assert_eq!(context.correlation_id, request);
/// assert_ne!(context.command_id, request);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CommandContext {
    /// The command's own id: the causation id of the events it produces.
    pub command_id: Uuid,
    /// The id of the business flow the command belongs to.
    pub correlation_id: Uuid,
    /// Who issued the command.
    pub actor: Option<String>,
    /// Metadata copied onto every event.
    pub metadata: Metadata,
    /// The tenant the command is for, if the application keeps tenants: a repository whose
    /// store is another tenant's (or none's) refuses it ([`crate::Error::TenantMismatch`]).
    pub tenant: Option<String>,
}

impl CommandContext {
    /// A command that starts a new flow: a fresh UUIDv7 command id, which is also the
    /// correlation id.
    #[must_use]
    pub fn new() -> Self {
        let command_id = Uuid::now_v7();
        Self {
            command_id,
            correlation_id: command_id,
            actor: None,
            metadata: Metadata::new(),
            tenant: None,
        }
    }

    /// A command issued in reaction to a stored event (by a saga or a policy): it joins the
    /// event's flow (same correlation id, actor and tenant).
    #[must_use]
    pub fn caused_by<E>(event: &Envelope<E>) -> Self {
        Self {
            command_id: Uuid::now_v7(),
            correlation_id: event.correlation_id,
            actor: event.actor.clone(),
            metadata: Metadata::new(),
            tenant: event.tenant.clone(),
        }
    }

    /// Sets the command id (for example a deterministic one, to make a retried command
    /// recognisable).
    #[must_use]
    pub fn command_id(mut self, command_id: Uuid) -> Self {
        self.command_id = command_id;
        self
    }

    /// Sets the correlation id (for example the id of the incoming request).
    #[must_use]
    pub fn correlation_id(mut self, correlation_id: Uuid) -> Self {
        self.correlation_id = correlation_id;
        self
    }

    /// Sets the actor.
    #[must_use]
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Sets the tenant the command is for (checked against the repository's store).
    #[must_use]
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Adds one metadata entry.
    #[must_use]
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

impl CommandContext {
    /// The id of the `index`-th event of this command when it is executed at most once
    /// (`Repository::execute_once`): derived from the command id (UUIDv5 in the command id's
    /// namespace), so that a redelivered command's events are recognised as already stored.
    #[must_use]
    pub fn event_id(&self, index: usize) -> Uuid {
        Uuid::new_v5(&self.command_id, &(index as u64).to_be_bytes())
    }
}

/// A command that travels as a message (sent by a saga, delivered by the command bus): a stable
/// name and a JSON form. `#[command]` on a struct or enum implements it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a command message",
    label = "not a command message",
    note = "annotate the type with `#[factum::command]`"
)]
pub trait Command: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The command's stable name, stored in the outbox.
    const NAME: &'static str;
}

impl Default for CommandContext {
    fn default() -> Self {
        Self::new()
    }
}

/// Events made by a command: defined here, beside the context they take their ids from (the
/// envelope module does not know commands).
impl NewEvent {
    /// Encodes an event of a set, taking ids, actor and metadata from the command context.
    ///
    /// # Errors
    /// [`Error::Encode`] when the event does not serialize.
    pub fn from_event<S: EventSet>(event: &S, context: &CommandContext) -> Result<Self> {
        let payload = event.encode().map_err(|cause| Error::Encode {
            event_type: event.event_type(),
            cause,
        })?;
        let mut metadata = context.metadata.clone();
        crate::trace::stamp(&mut metadata);
        Ok(Self {
            event_id: Uuid::now_v7(),
            event_type: Cow::Borrowed(event.event_type()),
            schema_version: event.schema_version(),
            payload,
            correlation_id: context.correlation_id,
            causation_id: context.command_id,
            actor: context.actor.clone(),
            metadata,
            once: false,
            pii: event.pii(),
            max_size: S::EVENTS
                .iter()
                .find(|descriptor| descriptor.name == event.event_type())
                .and_then(|descriptor| descriptor.max_size),
            sealed: None,
        })
    }
}
