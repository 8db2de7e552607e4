//! Password hashing with argon2id (the `argon2` crate's defaults, OWASP's
//! recommended parameters). Hashing is deliberately slow and memory-hard, so
//! logins verify on a few dedicated threads ([`Verifier`]), and the rare
//! one-off hash (startup, the CLI) runs on tokio's blocking pool.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// The PHC string of a password's argon2id hash.
pub fn hash(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a password failed: {e}"))
}

/// Whether the password matches the stored hash. A malformed hash never
/// matches.
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// [`hash`] off the async runtime, for one-off hashes (the dummy hash at
/// startup, `strata user create`, `strata seed`).
pub async fn hash_blocking(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || hash(&password)).await?
}

type Job = Box<dyn FnOnce() + Send>;

/// Verifications that may wait per hashing thread before a login is turned
/// away. One takes about 16 ms on the machine of bench/RESULTS.md's login
/// storms, so a full queue is half a second of work there (more on slower
/// machines): a client waits about that long at most, or is told at
/// once to come back (503 + `Retry-After`) instead of timing out.
pub const WAITING_PER_THREAD: usize = 32;

/// Password checks asked of the [`Verifier`], by `outcome`: `checked`,
/// `turned_away` (the queue was full: the login answered 503) and
/// `skipped` (its login had gone before a thread took it).
pub const CHECKS: &str = "strata_password_checks_total";
/// Password checks queued or running, read when `/metrics` is scraped.
pub const WAITING: &str = "strata_password_checks_waiting";

/// The threads logins verify passwords on: one per core, fed by a bounded
/// queue.
///
/// Each verification holds 19 MiB; on tokio's blocking pool a login burst
/// spread them over dozens of threads whose allocator arenas kept the
/// memory (the load tool measured 460 MiB of RSS after 32 logins). A fixed
/// set reuses the same few buffers, and a burst queues instead of competing
/// for the cores the API needs. The queue is bounded, so a login storm is
/// answered 503 past it rather than queued without limit, and a login whose
/// client has gone (hung up, or timed out) is skipped, not computed.
pub struct Verifier {
    queue: mpsc::Sender<Job>,
    /// Verifications queued or running.
    waiting: Arc<AtomicUsize>,
    limit: usize,
    /// Verifications skipped because their login had gone.
    skipped: Arc<AtomicU64>,
}

/// Why a password could not be verified now: the queue is full, or no
/// hashing thread is running.
#[derive(Debug, thiserror::Error)]
#[error("too many logins at once")]
pub struct Busy;

/// Hashing threads: one per core.
fn hashing_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

impl Verifier {
    /// Verifications that may be queued or running at once before a login
    /// is turned away: [`WAITING_PER_THREAD`] per hashing thread.
    pub fn capacity() -> usize {
        hashing_threads() * WAITING_PER_THREAD
    }

    /// Starts one hashing thread per core.
    pub fn start() -> Verifier {
        let (queue, jobs) = mpsc::channel::<Job>();
        let jobs = Arc::new(Mutex::new(jobs));
        for i in 0..hashing_threads() {
            let jobs = Arc::clone(&jobs);
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || loop {
                    // The lock is held only to take the next job; the
                    // threads end when the verifier (the sender) is dropped.
                    let job = match jobs.lock() {
                        Ok(jobs) => jobs.recv(),
                        Err(poisoned) => poisoned.into_inner().recv(),
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        Verifier {
            queue,
            waiting: Arc::new(AtomicUsize::new(0)),
            limit: Verifier::capacity(),
            skipped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Whether `password` matches `stored`, computed on a hashing thread;
    /// [`Busy`] at once when [`WAITING_PER_THREAD`] verifications per thread
    /// are already waiting.
    pub async fn verify(&self, password: String, stored: String) -> Result<bool, Busy> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!(CHECKS, "outcome" => "turned_away").increment(1);
            return Err(Busy);
        }
        let waiting = Arc::clone(&self.waiting);
        let skipped = Arc::clone(&self.skipped);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // Nobody waits for the answer any more: skip the 19 MiB and the
            // tens of milliseconds. The count drops before the answer is
            // sent, so a waiter that has its answer is no longer counted.
            if tx.is_closed() {
                skipped.fetch_add(1, Ordering::Relaxed);
                waiting.fetch_sub(1, Ordering::AcqRel);
                metrics::counter!(CHECKS, "outcome" => "skipped").increment(1);
            } else {
                let matches = verify(&password, &stored);
                waiting.fetch_sub(1, Ordering::AcqRel);
                metrics::counter!(CHECKS, "outcome" => "checked").increment(1);
                let _ = tx.send(matches);
            }
        });
        if self.queue.send(job).is_err() {
            // No thread runs: the job (and its count) came back unrun.
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy);
        }
        rx.await.map_err(|_| Busy)
    }

    /// Verifications queued or running now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Verifications skipped so far because nobody waited for them.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_on_its_threads_and_turns_away_past_its_queue() {
        let verifier = Verifier::start();
        let stored = hash("correct horse").expect("hash");
        assert_eq!(
            verifier
                .verify("correct horse".into(), stored.clone())
                .await
                .ok(),
            Some(true)
        );
        assert_eq!(
            verifier.verify("wrong".into(), stored.clone()).await.ok(),
            Some(false)
        );
        assert_eq!(
            verifier
                .verify("correct horse".into(), "not a hash".into())
                .await
                .ok(),
            Some(false),
            "a malformed hash never matches"
        );

        // Far more at once than the queue holds: the excess is turned away
        // at once, the rest is answered, and the count comes back to zero.
        let storm = verifier.limit + 40;
        let answers = futures_util::future::join_all(
            (0..storm).map(|_| verifier.verify("correct horse".into(), stored.clone())),
        )
        .await;
        let busy = answers.iter().filter(|a| a.is_err()).count();
        assert!(busy >= 40, "{busy} of {storm} turned away");
        assert!(
            answers.iter().filter_map(|a| a.as_ref().ok()).all(|ok| *ok),
            "every verification that ran matched"
        );
        assert_eq!(verifier.waiting(), 0);
    }

    #[tokio::test]
    async fn a_verification_nobody_waits_for_is_skipped() {
        let verifier = Verifier::start();
        let stored = hash("correct horse").expect("hash");
        // Fill the queue, then give up on every waiter.
        let gave_up = futures_util::future::join_all((0..verifier.limit).map(|_| {
            tokio::time::timeout(
                std::time::Duration::from_millis(1),
                verifier.verify("correct horse".into(), stored.clone()),
            )
        }))
        .await;
        assert!(gave_up.iter().all(|r| r.is_err()), "all timed out");
        while verifier.waiting() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // Only the few that had started before their waiters gave up (one
        // per thread, more on a machine slow enough to stall the timers)
        // were computed.
        assert!(
            verifier.skipped() as usize >= verifier.limit / 2,
            "{} of {} skipped",
            verifier.skipped(),
            verifier.limit
        );
        assert_eq!(
            verifier.verify("correct horse".into(), stored).await.ok(),
            Some(true)
        );
    }
}
