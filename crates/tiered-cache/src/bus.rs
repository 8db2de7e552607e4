//! The invalidation bus: one task per cache holding a pub/sub subscription on its own
//! connection, applying other instances' invalidations and deletions to this instance.
//! Never serves or fills anything; when it loses the subscription it only says so (to the
//! generation mirror), and the mirror stops trusting what it knew.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::sync::{oneshot, Notify};

use crate::key::L1KeyRef;
use crate::Inner;

/// A bus message, borrowed from its payload.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message<'a> {
    /// `i <generation> <position> <instance> <label len> <label><namespace>`; the first three
    /// fields are written by the invalidation script, the rest by [`invalidation_tail`].
    Invalidated {
        generation: u64,
        position: u64,
        instance: u64,
        label: &'a str,
        ns: &'a str,
    },
    /// `d <generation> <instance> <namespace len> <namespace><params>`: one key was deleted or
    /// overwritten; drop it from L1.
    Dropped {
        generation: u64,
        instance: u64,
        ns: &'a str,
        params: &'a str,
    },
}

/// What the invalidation script appends after `i <generation> <position> `.
pub(crate) fn invalidation_tail(instance: u64, label: &str, ns: &str) -> String {
    format!("{instance} {} {label}{ns}", label.len())
}

pub(crate) fn dropped(generation: u64, instance: u64, ns: &str, params: &str) -> String {
    format!("d {generation} {instance} {} {ns}{params}", ns.len())
}

pub(crate) fn parse(payload: &str) -> Option<Message<'_>> {
    let (kind, rest) = payload.split_once(' ')?;
    // Numbers first, then one remainder holding the length-prefixed strings (which may
    // themselves contain spaces).
    let numbers = match kind {
        "i" => 4,
        "d" => 3,
        _ => return None,
    };
    let mut fields = rest.splitn(numbers + 1, ' ');
    let mut num = || fields.next()?.parse::<u64>().ok();
    let n: [u64; 4] = [
        num()?,
        num()?,
        num()?,
        if numbers == 4 { num()? } else { 0 },
    ];
    let rest = fields.next()?;
    let split = |len: u64| {
        let len = usize::try_from(len).ok()?;
        Some((rest.get(..len)?, rest.get(len..)?))
    };
    match kind {
        "i" => {
            let (label, ns) = split(n[3])?;
            Some(Message::Invalidated {
                generation: n[0],
                position: n[1],
                instance: n[2],
                label,
                ns,
            })
        }
        _ => {
            let (ns, params) = split(n[2])?;
            Some(Message::Dropped {
                generation: n[0],
                instance: n[1],
                ns,
                params,
            })
        }
    }
}

/// Callers of [`TieredCache::sync`](crate::TieredCache::sync) waiting for the next barrier: a
/// PING on the subscription connection, whose reply Redis sends after every message published
/// before it. One barrier serves every caller that arrived before it was sent.
#[derive(Default)]
pub(crate) struct Barrier {
    waiters: std::sync::Mutex<Vec<oneshot::Sender<()>>>,
    wake: Notify,
}

impl Barrier {
    /// Joins the next barrier; the receiver fires once it has passed (or errs if the bus is lost).
    pub(crate) fn join(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        self.wake.notify_one();
        rx
    }

    fn take(&self) -> Vec<oneshot::Sender<()>> {
        std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Starts the bus. `ready` fires after the first subscription attempt, successful or not.
pub(crate) fn spawn(
    inner: Arc<Inner>,
    ping_interval: Duration,
    stop: oneshot::Receiver<()>,
    ready: oneshot::Sender<()>,
) {
    tokio::spawn(run(inner, ping_interval, stop, ready));
}

enum Ended {
    Stopped,
    Lost,
}

async fn run(
    inner: Arc<Inner>,
    ping_interval: Duration,
    mut stop: oneshot::Receiver<()>,
    ready: oneshot::Sender<()>,
) {
    let Some(l2) = inner.l2.as_ref() else { return };
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(50);
    loop {
        let connect = async {
            let mut pubsub = l2.client().get_async_pubsub().await?;
            pubsub.subscribe(l2.channel()).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let ended = match tokio::time::timeout(l2.connect_timeout(), connect).await {
            Ok(Ok(pubsub)) => {
                backoff = Duration::from_millis(50);
                // Only now, with the SUBSCRIBE confirmed, may generations be trusted again:
                // any bump from here on reaches us.
                inner.gens.bus_up();
                inner.stats.bus(true);
                tracing::info!(channel = l2.channel(), "invalidation bus subscribed");
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
                // Invalidations made while Redis was unreachable reach the others now.
                inner.replay_pending().await;
                listen(&inner, pubsub, ping_interval, &mut stop).await
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "invalidation bus cannot subscribe");
                Ended::Lost
            }
            Err(_) => {
                tracing::debug!("invalidation bus subscription timed out");
                Ended::Lost
            }
        };
        if let Some(r) = ready.take() {
            let _ = r.send(());
        }
        match ended {
            Ended::Stopped => return,
            Ended::Lost => {
                if inner.stats.bus_connected() {
                    tracing::warn!("invalidation bus lost; generations will be re-read from Redis");
                }
                // From here on nothing learned can be trusted beyond one request: a bump may
                // be published while we are not listening.
                inner.gens.bus_down();
                inner.stats.bus(false);
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

async fn listen(
    inner: &Inner,
    pubsub: redis::aio::PubSub,
    ping_interval: Duration,
    stop: &mut oneshot::Receiver<()>,
) -> Ended {
    let (mut sink, mut stream) = pubsub.split();
    let mut tick = tokio::time::interval(ping_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A ping must fail for real, not because a loaded machine was slow to schedule us.
    let ping_timeout = ping_interval.max(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut *stop => return Ended::Stopped,
            msg = stream.next() => match msg {
                Some(msg) => apply(inner, msg.get_payload_bytes()),
                None => return Ended::Lost,
            },
            _ = inner.barrier.wake.notified() => {
                // Taken before the PING is sent: every one of them asked before it, so every
                // message published before they asked arrives ahead of its reply.
                let waiters = inner.barrier.take();
                if waiters.is_empty() {
                    continue;
                }
                let pong = tokio::time::timeout(ping_timeout, sink.ping::<redis::Value>()).await;
                if !matches!(pong, Ok(Ok(_))) {
                    return Ended::Lost; // Dropping the waiters releases them.
                }
                // The client has queued those messages before handing over the reply: apply them
                // before releasing anyone.
                loop {
                    match stream.next().now_or_never() {
                        Some(Some(msg)) => apply(inner, msg.get_payload_bytes()),
                        Some(None) => return Ended::Lost,
                        None => break,
                    }
                }
                for waiter in waiters {
                    let _ = waiter.send(());
                }
            }
            _ = tick.tick() => {
                // A half-open TCP connection delivers nothing and reports nothing; only a
                // round trip shows it is gone.
                let pong = tokio::time::timeout(ping_timeout, sink.ping::<redis::Value>()).await;
                if !matches!(pong, Ok(Ok(_))) {
                    return Ended::Lost;
                }
                inner.replay_pending().await;
            }
        }
    }
}

fn apply(inner: &Inner, payload: &[u8]) {
    let Some(msg) = std::str::from_utf8(payload).ok().and_then(parse) else {
        tracing::debug!("ignoring malformed invalidation bus message");
        return;
    };
    match msg {
        Message::Invalidated {
            generation,
            position,
            instance,
            label,
            ns,
        } => {
            // Our own bumps were applied before `invalidate` returned; applying them again
            // is harmless, counting them again is not.
            if instance != inner.instance {
                inner.stats.invalidation(label);
            }
            let settle = Some(inner.policy(label).settle).filter(|w| !w.is_zero());
            inner
                .gens
                .observe(ns, generation, position, inner.gens.epoch(), None, settle);
        }
        Message::Dropped {
            generation,
            instance,
            ns,
            params,
        } => {
            if instance != inner.instance {
                inner.fences.record(ns, params);
                inner
                    .l1
                    .remove(&L1KeyRef::from_parts(ns, generation, params));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_with_awkward_names() {
        let tail = invalidation_tail(7, "a b", "acme: x y");
        let payload = format!("i 12 34 {tail}");
        assert_eq!(
            parse(&payload),
            Some(Message::Invalidated {
                generation: 12,
                position: 34,
                instance: 7,
                label: "a b",
                ns: "acme: x y",
            })
        );
        let payload = dropped(5, 9, "ns 1", "p a r");
        assert_eq!(
            parse(&payload),
            Some(Message::Dropped {
                generation: 5,
                instance: 9,
                ns: "ns 1",
                params: "p a r",
            })
        );
        assert_eq!(parse("i 1 2"), None);
        assert_eq!(parse("d 1 2 99 short"), None);
        assert_eq!(parse("x"), None);
    }
}
