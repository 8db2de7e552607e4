//! L2: every Redis command the cache sends, each behind the breaker and a deadline.
//! Never returns a Redis error: an unavailable Redis is `None` / `false`, counted and logged here.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::{Client, RedisResult, Script};

use crate::breaker::{Breaker, Permit};
use crate::stats::{BreakerState, Stats};

/// Reads a namespace's generation and invalidation position; a missing generation is created
/// from Redis' clock in microseconds. Redis loses keys on a restart without persistence or by
/// eviction; starting again from the clock puts the new generation above every one handed out
/// before (`old = old start + invalidations`, and a namespace does not see a million
/// invalidations a second), so entries of an old generation can never become reachable again.
/// Using Redis' clock, not the instances', keeps one clock for all instances.
const READ_GENERATION: &str = r"
local g = redis.call('HGET', KEYS[1], 'g')
if not g then
  local t = redis.call('TIME')
  g = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('HSET', KEYS[1], 'g', g)
end
return {g, redis.call('HGET', KEYS[1], 'p') or '0'}
";

/// Bumps a namespace's generation (unless ARGV[4] is `0`: a settling invalidation), raises its
/// position to ARGV[1] if higher, and publishes `i <generation> <position> ARGV[3]` on channel
/// ARGV[2], all atomically: subscribers see bumps in generation order, and no instance can read
/// the new generation or position before it is published.
/// Numbers stay strings (Lua's doubles would round generations and positions past 2^53).
const INVALIDATE: &str = r"
local function gt(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
if not redis.call('HGET', KEYS[1], 'g') then
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[1], 'g', t[1] .. string.format('%06d', tonumber(t[2])))
end
if ARGV[4] ~= '0' then redis.call('HINCRBY', KEYS[1], 'g', 1) end
local g = redis.call('HGET', KEYS[1], 'g')
local p = redis.call('HGET', KEYS[1], 'p') or '0'
if gt(ARGV[1], p) then
  p = ARGV[1]
  redis.call('HSET', KEYS[1], 'p', p)
end
redis.call('PUBLISH', ARGV[2], 'i ' .. g .. ' ' .. p .. ' ' .. ARGV[3])
return {g, p}
";

/// The lease check: stores the value only if the namespace's generation is still the one the
/// fill started under. Checking and writing in one script is what makes it atomic; both keys
/// share the namespace's hash tag, so this also works on Redis Cluster.
const STORE_IF_GENERATION: &str = r"
if redis.call('HGET', KEYS[1], 'g') == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// Whether a command may be sent a second time after a dropped connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    Once,
    Never,
}

/// The result of a generation-checked store.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stored {
    Yes,
    /// The generation moved: the value is from before an invalidation.
    Superseded,
    /// Redis did not answer; nothing is known.
    Unavailable,
}

pub(crate) struct L2 {
    conn: ConnectionManager,
    client: Client,
    breaker: Breaker,
    timeout: Duration,
    connect_timeout: Duration,
    channel: String,
    read_generation: Script,
    invalidate: Script,
    store: Script,
}

impl L2 {
    /// Never connects: the manager connects on first use, so an unreachable Redis at start is
    /// just an open breaker, not a failed start.
    pub(crate) fn new(
        client: Client,
        timeout: Duration,
        connect_timeout: Duration,
        breaker: Breaker,
        channel: String,
    ) -> RedisResult<Self> {
        // One quick retry, then fail: the breaker, not the manager, decides when to try again,
        // and a long reconnect backoff would keep failing calls after Redis is back.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(100));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Self {
            conn,
            client,
            breaker,
            timeout,
            connect_timeout,
            channel,
            read_generation: Script::new(READ_GENERATION),
            invalidate: Script::new(INVALIDATE),
            store: Script::new(STORE_IF_GENERATION),
        })
    }

    pub(crate) fn channel(&self) -> &str {
        &self.channel
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    pub(crate) fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// Runs one command if the breaker allows, within the deadline, and reports the outcome.
    ///
    /// A command in flight when the connection drops fails even though the manager reconnects
    /// at once (e.g. the first call after Redis restarted); `Retry::Once` sends it again on the
    /// new connection, within the same deadline. Only for commands that may run twice.
    async fn call<T, F, Fut>(
        &self,
        stats: &Stats,
        what: &'static str,
        retry: Retry,
        f: F,
    ) -> Option<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if self.breaker.permit() == Permit::Refused {
            stats.l2_skipped();
            return None;
        }
        let attempts = async {
            match f(self.conn.clone()).await {
                Err(e) if retry == Retry::Once && e.is_unrecoverable_error() => {
                    tracing::debug!(error = %e, command = what, "redis connection dropped, retrying once");
                    f(self.conn.clone()).await
                }
                result => result,
            }
        };
        let result = tokio::time::timeout(self.timeout, attempts).await;
        let change = match &result {
            Ok(Ok(_)) => self.breaker.success(),
            Ok(Err(e)) => {
                stats.l2_error(false);
                tracing::debug!(error = %e, command = what, "redis call failed");
                self.breaker.failure()
            }
            Err(_) => {
                stats.l2_error(true);
                tracing::debug!(command = what, "redis call timed out");
                self.breaker.failure()
            }
        };
        if let Some(state) = change {
            stats.breaker(state);
            match state {
                BreakerState::Open => {
                    tracing::warn!("redis unavailable, serving from L1 and fill (breaker open)")
                }
                _ => tracing::info!("redis answers again (breaker closed)"),
            }
        }
        result.ok()?.ok()
    }

    /// A stored value and the position it was read at. `Some(None)`: no such key (or one
    /// without the position header, which this cache never writes).
    pub(crate) async fn get(&self, stats: &Stats, key: &str) -> Option<Option<(u64, Bytes)>> {
        let v: Option<Bytes> = self
            .call(stats, "GET", Retry::Once, |mut c| async move {
                redis::cmd("GET").arg(key).query_async(&mut c).await
            })
            .await?;
        Some(v.and_then(|v| {
            let header = <[u8; 8]>::try_from(v.get(..8)?).ok()?;
            Some((u64::from_be_bytes(header), v.slice(8..)))
        }))
    }

    /// `(generation, position)` of a namespace.
    pub(crate) async fn read_generation(&self, stats: &Stats, gen_key: &str) -> Option<(u64, u64)> {
        let (g, p) = self
            .call(stats, "read generation", Retry::Once, |mut c| async move {
                let inv = self.read_generation.key(gen_key);
                inv.invoke_async::<(String, String)>(&mut c).await
            })
            .await?;
        parse_pair(&g, &p)
    }

    /// Bumps the generation (unless `settling`) and publishes
    /// `i <generation> <position> <message>`; returns the new `(generation, position)`.
    pub(crate) async fn invalidate(
        &self,
        stats: &Stats,
        gen_key: &str,
        position: u64,
        settling: bool,
        message: &str,
    ) -> Option<(u64, u64)> {
        // A bump is not retried: a second INCR would be a second invalidation (a failed one is
        // applied locally and replayed later instead). Raising a position twice is harmless.
        let retry = if settling { Retry::Once } else { Retry::Never };
        let (g, p) = self
            .call(stats, "invalidate", retry, |mut c| async move {
                let mut inv = self.invalidate.key(gen_key);
                inv.arg(position.to_string())
                    .arg(&self.channel)
                    .arg(message)
                    .arg(if settling { "0" } else { "1" });
                inv.invoke_async::<(String, String)>(&mut c).await
            })
            .await?;
        parse_pair(&g, &p)
    }

    pub(crate) async fn store_if_generation(
        &self,
        stats: &Stats,
        gen_key: &str,
        data_key: &str,
        generation: u64,
        (position, value): (u64, &[u8]),
        ttl: Duration,
    ) -> Stored {
        let value = with_position(position, value);
        let value = &value;
        let r = self
            // Setting the same value twice is harmless.
            .call(stats, "store", Retry::Once, |mut c| async move {
                let mut inv = self.store.key(gen_key);
                inv.key(data_key)
                    .arg(generation.to_string())
                    .arg(value)
                    .arg(ttl_millis(ttl));
                inv.invoke_async::<i64>(&mut c).await
            })
            .await;
        match r {
            Some(1) => Stored::Yes,
            Some(_) => Stored::Superseded,
            None => Stored::Unavailable,
        }
    }

    /// Writes the value and tells the other instances to drop their L1 copy (`message`).
    pub(crate) async fn set(
        &self,
        stats: &Stats,
        data_key: &str,
        (position, value): (u64, &[u8]),
        ttl: Duration,
        message: &str,
    ) -> bool {
        let value = with_position(position, value);
        let value = &value;
        // Twice is harmless: the same value, and "drop your L1 copy" twice.
        self.call(stats, "SET", Retry::Once, |mut c| async move {
            redis::pipe()
                .cmd("SET")
                .arg(data_key)
                .arg(value)
                .arg("PX")
                .arg(ttl_millis(ttl))
                .ignore()
                .cmd("PUBLISH")
                .arg(&self.channel)
                .arg(message)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
        .is_some()
    }

    /// Deletes the key and tells the other instances (`message` on the bus channel).
    pub(crate) async fn delete(&self, stats: &Stats, data_key: &str, message: &str) -> bool {
        self.call(stats, "DEL", Retry::Once, |mut c| async move {
            redis::pipe()
                .cmd("DEL")
                .arg(data_key)
                .ignore()
                .cmd("PUBLISH")
                .arg(&self.channel)
                .arg(message)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
        .is_some()
    }

    /// Publishes `message` on `channel`; the number of subscribers Redis delivered it to.
    /// Not retried: a message that may not have gone out is the caller's to give up on.
    pub(crate) async fn publish(
        &self,
        stats: &Stats,
        channel: &str,
        message: &str,
    ) -> Option<usize> {
        self.call(stats, "PUBLISH", Retry::Never, |mut c| async move {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(message)
                .query_async::<usize>(&mut c)
                .await
        })
        .await
    }

    /// Establishes the command connection (at most `within`), so the first calls do not pay
    /// for it. Failure is not reported: the breaker deals with an unreachable Redis.
    pub(crate) async fn ping_within(&self, within: Duration) {
        let mut c = self.conn.clone();
        let _ =
            tokio::time::timeout(within, redis::cmd("PING").query_async::<String>(&mut c)).await;
    }

    /// A PING outside the breaker (a health check must see Redis itself, not the breaker).
    pub(crate) async fn ping(&self) -> Option<Duration> {
        let start = Instant::now();
        let mut c = self.conn.clone();
        let r = tokio::time::timeout(
            self.timeout,
            redis::cmd("PING").query_async::<String>(&mut c),
        )
        .await;
        matches!(r, Ok(Ok(_))).then(|| start.elapsed())
    }
}

/// A value as stored: the position it was read at (8 bytes, big-endian), then its bytes.
fn with_position(position: u64, value: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(8 + value.len());
    stored.extend_from_slice(&position.to_be_bytes());
    stored.extend_from_slice(value);
    stored
}

fn ttl_millis(ttl: Duration) -> u64 {
    // PX 0 is an error; a sub-millisecond TTL is 1 ms.
    (ttl.as_millis().min(u64::MAX as u128) as u64).max(1)
}

fn parse_pair(g: &str, p: &str) -> Option<(u64, u64)> {
    let parsed = (g.parse().ok()?, p.parse().ok()?);
    Some(parsed)
}
