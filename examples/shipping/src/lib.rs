//! The shipping service: another team's process, which learns of orders only through the
//! broker. The orders service's relay publishes its events to NATS JetStream
//! (`<prefix>.Order.OrderPlaced`, ...); this service reads them with a Factum
//! [`Consumer`](factum::consumer::Consumer) and keeps its own read model in Redis: the orders to
//! ship, with their addresses, and the cancelled ones.
//!
//! It declares only the events and fields it reads ([`OrderPlaced`], [`OrderCancelled`]:
//! a tolerant reader of the orders service's types of the same names), and its read model
//! applies each event once: the newest stream version applied of each order stream and the
//! consumer's position in the JetStream stream are written by the same Lua script as the read
//! model, atomically, so a message delivered again changes nothing.

use factum::consumer::{Target, TargetError};
use factum::{EventSet, RecordedEvent};
use redis::aio::ConnectionManager;

/// What the shipping service reads of `OrderPlaced`.
#[factum::event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderPlaced {
    pub order_id: String,
    pub customer: String,
    pub address: String,
}

/// What the shipping service reads of `OrderCancelled`.
#[factum::event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCancelled {
    pub order_id: String,
    pub reason: String,
}

/// The events the shipping service reads.
#[factum::event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderFeed {
    Placed(OrderPlaced),
    Cancelled(OrderCancelled),
}

/// Applies a batch: for each event (7 arguments: stream, version, whether it continues the
/// entry before (an event upcast into several), kind, order, and two fields), only when its
/// version is above the newest applied of its stream; then the position.
const APPLY: &str = r"
local versions, position_key, to_ship = KEYS[1], KEYS[2], KEYS[3]
local prefix = ARGV[2]
local applied = 0
local previous = false
for i = 3, #ARGV, 7 do
  local stream, version = ARGV[i], tonumber(ARGV[i + 1])
  local new
  if ARGV[i + 2] == '1' then
    new = previous
  else
    new = version > tonumber(redis.call('HGET', versions, stream) or '0')
    if new then applied = applied + 1 end
  end
  previous = new
  if new then
    redis.call('HSET', versions, stream, version)
    local kind, order = ARGV[i + 3], ARGV[i + 4]
    local key = prefix .. 'order:' .. order
    if kind == 'placed' then
      redis.call('HSET', key, 'status', 'to-ship', 'customer', ARGV[i + 5], 'address', ARGV[i + 6])
      redis.call('SADD', to_ship, order)
    elseif kind == 'cancelled' then
      redis.call('HSET', key, 'status', 'cancelled', 'reason', ARGV[i + 5])
      redis.call('SREM', to_ship, order)
    end
  end
end
if ARGV[1] ~= '' then
  local current = tonumber(redis.call('GET', position_key) or '0')
  if tonumber(ARGV[1]) > current then
    redis.call('SET', position_key, ARGV[1])
  end
end
redis.call('INCRBY', prefix .. 'applied', applied)
return applied
";

/// The shipping read model in Redis, under a key prefix (e.g. `shipping:`): `<prefix>order:<id>`
/// (a hash: status, customer, address or reason), `<prefix>to-ship` (the set of orders to
/// ship), and the once-only bookkeeping `<prefix>versions`, `<prefix>position`,
/// `<prefix>applied`.
#[derive(Clone)]
pub struct ShippingBoard {
    redis: ConnectionManager,
    prefix: String,
    script: redis::Script,
}

impl std::fmt::Debug for ShippingBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShippingBoard")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// One order as the shipping service knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipment {
    pub order_id: String,
    pub status: String,
    pub customer: Option<String>,
    pub address: Option<String>,
    pub reason: Option<String>,
}

impl ShippingBoard {
    /// The board under `prefix` on the Redis server `url`.
    ///
    /// # Errors
    /// When Redis cannot be reached.
    pub async fn connect(url: &str, prefix: &str) -> redis::RedisResult<Self> {
        let redis = redis::Client::open(url)?.get_connection_manager().await?;
        Ok(Self {
            redis,
            prefix: prefix.to_owned(),
            script: redis::Script::new(APPLY),
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The orders to ship, sorted.
    ///
    /// # Errors
    /// A Redis error.
    pub async fn to_ship(&self) -> redis::RedisResult<Vec<String>> {
        let mut orders: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.key("to-ship"))
            .query_async(&mut self.redis.clone())
            .await?;
        orders.sort();
        Ok(orders)
    }

    /// What the board knows of `order_id`.
    ///
    /// # Errors
    /// A Redis error.
    pub async fn shipment(&self, order_id: &str) -> redis::RedisResult<Option<Shipment>> {
        let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.key(&format!("order:{order_id}")))
            .query_async(&mut self.redis.clone())
            .await?;
        let Some(status) = fields.get("status").cloned() else {
            return Ok(None);
        };
        Ok(Some(Shipment {
            order_id: order_id.to_owned(),
            status,
            customer: fields.get("customer").cloned(),
            address: fields.get("address").cloned(),
            reason: fields.get("reason").cloned(),
        }))
    }

    /// Events applied, over every run.
    ///
    /// # Errors
    /// A Redis error.
    pub async fn applied(&self) -> redis::RedisResult<u64> {
        let applied: Option<u64> = redis::cmd("GET")
            .arg(self.key("applied"))
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(applied.unwrap_or(0))
    }

    /// Deletes every key of the board (its prefix).
    ///
    /// # Errors
    /// A Redis error.
    pub async fn delete(&self) -> redis::RedisResult<()> {
        let mut redis = self.redis.clone();
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

/// A Redis failure: retried when the server may come back, else the board cannot work.
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

impl Target for ShippingBoard {
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
            .key(self.key("to-ship"))
            .arg(position.map(|p| p.to_string()).unwrap_or_default())
            .arg(&self.prefix);
        for event in events {
            // Events the service does not read (OrderCompleted) are passed over.
            if !OrderFeed::EVENTS.iter().any(|e| e.name == event.event_type) {
                continue;
            }
            let decoded = event
                .decode_events::<OrderFeed>()
                .map_err(|error| TargetError::of(event, error))?;
            for (index, feed) in decoded.into_iter().enumerate() {
                let (kind, order, first, second) = match feed {
                    OrderFeed::Placed(placed) => {
                        ("placed", placed.order_id, placed.customer, placed.address)
                    }
                    OrderFeed::Cancelled(cancelled) => (
                        "cancelled",
                        cancelled.order_id,
                        cancelled.reason,
                        String::new(),
                    ),
                };
                invocation
                    .arg(&event.stream_id)
                    .arg(event.stream_version)
                    .arg(if index == 0 { "0" } else { "1" })
                    .arg(kind)
                    .arg(order)
                    .arg(first)
                    .arg(second);
            }
        }
        invocation
            .invoke_async(&mut self.redis)
            .await
            .map_err(redis_error)
    }
}
