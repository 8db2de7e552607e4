//! The invalidation bus: one task per cache holding a pub/sub subscription on its own
//! connection, applying other instances' invalidations and deletions to this instance, and
//! acknowledging the barriers they publish ([`TieredCache::sync_peers`](crate::TieredCache::sync_peers)).
//! Never serves or fills anything; when it loses the subscription it only says so (to the
//! generation mirror), and the mirror stops trusting what it knew.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::oneshot;

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
    /// `b <instance> <nonce>`: `instance` asks every listener to acknowledge, once it has
    /// applied every message before this one, on `instance`'s acknowledgement channel.
    Barrier { instance: u64, nonce: u64 },
    /// `a <nonce> <instance>` (on this instance's acknowledgement channel only): `instance` has
    /// applied everything this instance published before its barrier `nonce`.
    Acked { nonce: u64, instance: u64 },
    /// `c <instance> <seq> <nonce> <payload>`: record `seq` of `instance` for the [`Feed`]
    /// (crate::Feed), and a barrier: acknowledge it, once applied, like `b`.
    Change {
        instance: u64,
        seq: u64,
        nonce: u64,
        payload: &'a str,
    },
    /// `h <instance> <seq>`: `instance` has numbered its records up to `seq`.
    Heartbeat { instance: u64, seq: u64 },
    /// `l <instance> <seq>`: `instance` stops, having numbered its records up to `seq`.
    Left { instance: u64, seq: u64 },
}

pub(crate) fn change(instance: u64, seq: u64, nonce: u64, payload: &str) -> String {
    format!("c {instance} {seq} {nonce} {payload}")
}

fn heartbeat(instance: u64, seq: u64) -> String {
    format!("h {instance} {seq}")
}

fn left(instance: u64, seq: u64) -> String {
    format!("l {instance} {seq}")
}

/// What the invalidation script appends after `i <generation> <position> `.
pub(crate) fn invalidation_tail(instance: u64, label: &str, ns: &str) -> String {
    format!("{instance} {} {label}{ns}", label.len())
}

pub(crate) fn dropped(generation: u64, instance: u64, ns: &str, params: &str) -> String {
    format!("d {generation} {instance} {} {ns}{params}", ns.len())
}

pub(crate) fn barrier(instance: u64, nonce: u64) -> String {
    format!("b {instance} {nonce}")
}

fn acked(nonce: u64, instance: u64) -> String {
    format!("a {nonce} {instance}")
}

/// The channel on which `instance` hears the acknowledgements of its barriers.
pub(crate) fn ack_channel(channel: &str, instance: u64) -> String {
    format!("{channel}:acks:{instance}")
}

pub(crate) fn parse(payload: &str) -> Option<Message<'_>> {
    let (kind, rest) = payload.split_once(' ')?;
    // Numbers first, then (for `i` and `d`) one remainder holding the length-prefixed strings
    // (which may themselves contain spaces).
    let (numbers, strings) = match kind {
        "i" => (4, true),
        "d" | "c" => (3, true),
        "b" | "a" | "h" | "l" => (2, false),
        _ => return None,
    };
    let mut fields = rest.splitn(numbers + usize::from(strings), ' ');
    let mut n = [0u64; 4];
    for slot in n.iter_mut().take(numbers) {
        *slot = fields.next()?.parse().ok()?;
    }
    if !strings {
        return match (kind, fields.next()) {
            ("b", None) => Some(Message::Barrier {
                instance: n[0],
                nonce: n[1],
            }),
            ("a", None) => Some(Message::Acked {
                nonce: n[0],
                instance: n[1],
            }),
            ("h", None) => Some(Message::Heartbeat {
                instance: n[0],
                seq: n[1],
            }),
            ("l", None) => Some(Message::Left {
                instance: n[0],
                seq: n[1],
            }),
            _ => None,
        };
    }
    let rest = fields.next()?;
    if kind == "c" {
        return Some(Message::Change {
            instance: n[0],
            seq: n[1],
            nonce: n[2],
            payload: rest,
        });
    }
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

/// The barriers this instance has published and not every listener has acknowledged yet.
#[derive(Default)]
pub(crate) struct Acks {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Open>>,
}

struct Open {
    /// Who acknowledged (by instance: a message delivered twice counts once).
    acked: HashSet<u64>,
    /// How many listeners Redis delivered the barrier to, once the PUBLISH has answered.
    listeners: Option<usize>,
    done: Option<oneshot::Sender<()>>,
}

impl Open {
    fn settle(&mut self) {
        if self.listeners.is_some_and(|n| self.acked.len() >= n) {
            if let Some(done) = self.done.take() {
                let _ = done.send(());
            }
        }
    }
}

impl Acks {
    /// A new barrier's nonce, and what fires once every listener has acknowledged it.
    pub(crate) fn open(&self) -> (u64, oneshot::Receiver<()>) {
        let nonce = self.next.fetch_add(1, Ordering::Relaxed);
        let (done, rx) = oneshot::channel();
        let open = Open {
            acked: HashSet::new(),
            listeners: None,
            done: Some(done),
        };
        self.lock().insert(nonce, open);
        (nonce, rx)
    }

    /// Redis delivered barrier `nonce` to `listeners` subscribers (this instance's bus among them
    /// while it is subscribed). Acknowledgements may have arrived already.
    pub(crate) fn expect(&self, nonce: u64, listeners: usize) {
        if let Some(open) = self.lock().get_mut(&nonce) {
            open.listeners = Some(listeners);
            open.settle();
        }
    }

    fn ack(&self, nonce: u64, instance: u64) {
        if let Some(open) = self.lock().get_mut(&nonce) {
            open.acked.insert(instance);
            open.settle();
        }
    }

    /// Forgets barrier `nonce` (passed or given up); later acknowledgements are ignored.
    pub(crate) fn close(&self, nonce: u64) -> usize {
        self.lock()
            .remove(&nonce)
            .map_or(0, |open| open.acked.len())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Open>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
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
            pubsub
                .subscribe(&[
                    l2.channel().to_owned(),
                    ack_channel(l2.channel(), inner.instance),
                ])
                .await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let ended = match tokio::time::timeout(l2.connect_timeout(), connect).await {
            Ok(Ok(pubsub)) => {
                backoff = Duration::from_millis(50);
                // Only now, with the SUBSCRIBE confirmed, may generations be trusted again:
                // any bump from here on reaches us.
                inner.gens.bus_up();
                inner.bus_state(true);
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
            Ended::Stopped => {
                // Peers that heard our records forget us without suspecting a loss.
                let message = left(inner.instance, inner.publishers.last_seq());
                let _ = tokio::time::timeout(
                    l2.connect_timeout(),
                    l2.publish(&inner.stats, l2.channel(), &message),
                )
                .await;
                return;
            }
            Ended::Lost => {
                if inner.stats.bus_connected() {
                    tracing::warn!("invalidation bus lost; generations will be re-read from Redis");
                }
                // From here on nothing learned can be trusted beyond one request: a bump may
                // be published while we are not listening.
                inner.gens.bus_down();
                inner.bus_state(false);
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
    inner: &Arc<Inner>,
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
            _ = tick.tick() => {
                // A half-open TCP connection delivers nothing and reports nothing; only a
                // round trip shows it is gone.
                let pong = tokio::time::timeout(ping_timeout, sink.ping::<redis::Value>()).await;
                if !matches!(pong, Ok(Ok(_))) {
                    return Ended::Lost;
                }
                inner.replay_pending().await;
                if let Some(feed) = inner.feed.get() {
                    if inner.publishers.check(std::time::Instant::now()) {
                        tracing::info!("a change record may have been lost on the bus; the feed starts again");
                        feed.gap();
                    }
                    let inner = inner.clone();
                    tokio::spawn(async move {
                        if let Some(l2) = &inner.l2 {
                            let message = heartbeat(inner.instance, inner.publishers.last_seq());
                            l2.publish(&inner.stats, l2.channel(), &message).await;
                        }
                    });
                }
            }
        }
    }
}

fn apply(inner: &Arc<Inner>, payload: &[u8]) {
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
        // Every message published before the barrier has been applied above (the bus is one
        // task, and Redis delivers a channel's messages in order): say so.
        Message::Barrier { instance, nonce } if instance == inner.instance => {
            inner.acks.ack(nonce, instance);
        }
        Message::Barrier { instance, nonce } => acknowledge(inner, instance, nonce),
        Message::Acked { nonce, instance } => inner.acks.ack(nonce, instance),
        Message::Change {
            instance, nonce, ..
        } if instance == inner.instance => {
            // Applied by the publisher itself before it published.
            inner.acks.ack(nonce, instance);
        }
        Message::Change {
            instance,
            seq,
            nonce,
            payload,
        } => {
            inner
                .publishers
                .record(instance, seq, std::time::Instant::now());
            if let Some(feed) = inner.feed.get() {
                feed.record(payload);
            }
            acknowledge(inner, instance, nonce);
        }
        Message::Heartbeat { instance, .. } | Message::Left { instance, .. }
            if instance == inner.instance => {}
        Message::Heartbeat { instance, seq } => {
            inner
                .publishers
                .heartbeat(instance, seq, std::time::Instant::now());
        }
        Message::Left { instance, seq } => {
            if !inner.publishers.left(instance, seq) {
                if let Some(feed) = inner.feed.get() {
                    feed.gap();
                }
            }
        }
    }
}

/// Tells `instance` that everything it published before its barrier `nonce` is applied here.
fn acknowledge(inner: &Arc<Inner>, instance: u64, nonce: u64) {
    let inner = inner.clone();
    tokio::spawn(async move {
        if let Some(l2) = &inner.l2 {
            let channel = ack_channel(l2.channel(), instance);
            let message = acked(nonce, inner.instance);
            l2.publish(&inner.stats, &channel, &message).await;
        }
    });
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
        assert_eq!(
            parse(&barrier(3, 8)),
            Some(Message::Barrier {
                instance: 3,
                nonce: 8
            })
        );
        assert_eq!(
            parse(&acked(8, 4)),
            Some(Message::Acked {
                nonce: 8,
                instance: 4
            })
        );
        assert_eq!(
            parse(&change(3, 4, 5, "{\"a\": 1} x")),
            Some(Message::Change {
                instance: 3,
                seq: 4,
                nonce: 5,
                payload: "{\"a\": 1} x"
            })
        );
        assert_eq!(
            parse(&heartbeat(3, 9)),
            Some(Message::Heartbeat {
                instance: 3,
                seq: 9
            })
        );
        assert_eq!(
            parse(&left(3, 9)),
            Some(Message::Left {
                instance: 3,
                seq: 9
            })
        );
        assert_eq!(parse("c 1 2"), None);
        assert_eq!(parse("b 1 2 3"), None);
        assert_eq!(parse("a 1"), None);
        assert_eq!(parse("i 1 2"), None);
        assert_eq!(parse("d 1 2 99 short"), None);
        assert_eq!(parse("x"), None);
    }
}
