//! A Redis read model fed by a Factum consumer, each event once: a [`Model`] says which Redis
//! writes an event makes; [`RedisReadModel`] runs a batch's writes in one Lua script, together
//! with the once-only bookkeeping (the newest stream version applied of each stream, the
//! consumer's position), so Redis applies all of it or nothing, and a message delivered again
//! changes nothing.

use factum::consumer::{Target, TargetError};
use factum::{EventSet, RecordedEvent};
use redis::aio::ConnectionManager;

/// Applies a batch. Per event: its stream, version, whether it continues the event before (one
/// stored event upcast into several), how many writes, then each write as its command (HSET,
/// HDEL, SADD, SREM, RPUSH), its argument count and arguments. An event is applied only when its
/// version is above the newest applied of its stream. Then the position and the counter.
const APPLY: &str = r"
local versions, position_key, applied_key = KEYS[1], KEYS[2], KEYS[3]
local allowed = { HSET = true, HDEL = true, SADD = true, SREM = true, RPUSH = true }
local applied = 0
local previous = false
local i = 2
while i <= #ARGV do
  local stream, version, continued = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local writes = tonumber(ARGV[i + 3])
  i = i + 4
  local new
  if continued == '1' then
    new = previous
  else
    new = version > tonumber(redis.call('HGET', versions, stream) or '0')
    if new then
      redis.call('HSET', versions, stream, version)
      applied = applied + 1
    end
  end
  previous = new
  for _ = 1, writes do
    local command, count = ARGV[i], tonumber(ARGV[i + 1])
    if not allowed[command] then
      return redis.error_reply('a read model may not run ' .. command)
    end
    if new then
      redis.call(command, unpack(ARGV, i + 2, i + 1 + count))
    end
    i = i + 2 + count
  end
end
if ARGV[1] ~= '' then
  local current = tonumber(redis.call('GET', position_key) or '0')
  if tonumber(ARGV[1]) > current then
    redis.call('SET', position_key, ARGV[1])
  end
end
redis.call('INCRBY', applied_key, applied)
return applied
";

/// One Redis write of a read model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    command: &'static str,
    args: Vec<String>,
}

impl Write {
    /// `HSET key field value [field value ...]`.
    #[must_use]
    pub fn hset(key: String, fields: &[(&str, &str)]) -> Self {
        let mut args = vec![key];
        for (field, value) in fields {
            args.push((*field).to_owned());
            args.push((*value).to_owned());
        }
        Self {
            command: "HSET",
            args,
        }
    }

    /// `SADD key member`.
    #[must_use]
    pub fn sadd(key: String, member: &str) -> Self {
        Self {
            command: "SADD",
            args: vec![key, member.to_owned()],
        }
    }

    /// `SREM key member`.
    #[must_use]
    pub fn srem(key: String, member: &str) -> Self {
        Self {
            command: "SREM",
            args: vec![key, member.to_owned()],
        }
    }

    /// `RPUSH key value`.
    #[must_use]
    pub fn rpush(key: String, value: String) -> Self {
        Self {
            command: "RPUSH",
            args: vec![key, value],
        }
    }
}

/// What a read model writes for each event it reads.
pub trait Model: Send + Sync + 'static {
    /// The events it reads (its own `#[event]` types, of the producer's names); others are
    /// passed over.
    type Events: EventSet;

    /// The writes for `event` (from the stored event `envelope`), under the key prefix `prefix`.
    fn writes(&self, prefix: &str, event: Self::Events, envelope: &RecordedEvent) -> Vec<Write>;
}

/// A read model `M` in Redis under a key prefix, with its bookkeeping beside it:
/// `<prefix>versions`, `<prefix>position`, `<prefix>applied`.
#[derive(Clone)]
pub struct RedisReadModel<M> {
    redis: ConnectionManager,
    prefix: String,
    model: M,
    script: redis::Script,
}

impl<M> std::fmt::Debug for RedisReadModel<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisReadModel")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl<M: Model> RedisReadModel<M> {
    /// `model` under `prefix` on the Redis server `url`.
    ///
    /// # Errors
    /// When Redis cannot be reached.
    pub async fn connect(url: &str, prefix: &str, model: M) -> redis::RedisResult<Self> {
        let redis = redis::Client::open(url)?.get_connection_manager().await?;
        Ok(Self {
            redis,
            prefix: prefix.to_owned(),
            model,
            script: redis::Script::new(APPLY),
        })
    }

    /// The key `name` under the prefix.
    #[must_use]
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A connection for queries.
    #[must_use]
    pub fn connection(&self) -> ConnectionManager {
        self.redis.clone()
    }

    /// Events applied, over every run.
    ///
    /// # Errors
    /// A Redis error.
    pub async fn applied(&self) -> redis::RedisResult<u64> {
        let applied: Option<u64> = redis::cmd("GET")
            .arg(self.key("applied"))
            .query_async(&mut self.connection())
            .await?;
        Ok(applied.unwrap_or(0))
    }

    /// Deletes every key under the prefix.
    ///
    /// # Errors
    /// A Redis error.
    pub async fn delete(&self) -> redis::RedisResult<()> {
        let mut redis = self.connection();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query_async(&mut redis)
            .await?;
        if !keys.is_empty() {
            redis::cmd("DEL")
                .arg(keys)
                .query_async::<()>(&mut redis)
                .await?;
        }
        Ok(())
    }
}

/// A Redis failure: retried when the server may come back, else the read model cannot work.
fn redis_error(error: redis::RedisError) -> TargetError {
    let transient = error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error();
    if transient {
        TargetError::Transient(Box::new(error))
    } else {
        TargetError::Invalid(Box::new(error))
    }
}

impl<M: Model> Target for RedisReadModel<M> {
    async fn position(&mut self) -> Result<Option<u64>, TargetError> {
        redis::cmd("GET")
            .arg(self.key("position"))
            .query_async(&mut self.redis)
            .await
            .map_err(redis_error)
    }

    async fn apply(
        &mut self,
        events: &[RecordedEvent],
        position: Option<u64>,
    ) -> Result<u64, TargetError> {
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(self.key("versions"))
            .key(self.key("position"))
            .key(self.key("applied"))
            .arg(position.map(|p| p.to_string()).unwrap_or_default());
        for envelope in events {
            if !M::Events::EVENTS
                .iter()
                .any(|e| e.name == envelope.event_type)
            {
                continue;
            }
            let decoded = envelope
                .decode_events::<M::Events>()
                .map_err(|error| TargetError::of(envelope, error))?;
            for (index, event) in decoded.into_iter().enumerate() {
                let writes = self.model.writes(&self.prefix, event, envelope);
                invocation
                    .arg(&envelope.stream_id)
                    .arg(envelope.stream_version)
                    .arg(if index == 0 { "0" } else { "1" })
                    .arg(writes.len());
                for write in writes {
                    invocation
                        .arg(write.command)
                        .arg(write.args.len())
                        .arg(write.args);
                }
            }
        }
        invocation
            .invoke_async(&mut self.redis)
            .await
            .map_err(redis_error)
    }
}
