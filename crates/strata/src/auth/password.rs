//! Password hashing with argon2id (the `argon2` crate's defaults, OWASP's
//! recommended parameters). Hashing is deliberately slow and memory-hard, so
//! callers on the async runtime go through a few dedicated threads.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use std::sync::{mpsc, Arc, Mutex, OnceLock};

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

type Job = Box<dyn FnOnce() + Send>;

/// Argon2 runs on a small fixed set of threads, one per core, fed by a
/// queue. Each computation holds 19 MiB; on tokio's blocking pool a login
/// burst spread them over dozens of threads whose allocator arenas kept
/// the memory (the load tool measured 460 MiB of RSS after 32 logins). A
/// fixed set reuses the same few buffers, and a burst queues instead of
/// competing for the cores the API needs.
fn hashing_queue() -> &'static Mutex<mpsc::Sender<Job>> {
    static QUEUE: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || loop {
                    // The lock is held only to take the next job.
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
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
        Mutex::new(tx)
    })
}

/// Runs `work` on a hashing thread and waits for its result.
async fn on_hashing_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(work());
    });
    hashing_queue()
        .lock()
        .map_err(|_| anyhow::anyhow!("the password hashing queue is poisoned"))?
        .send(job)
        .map_err(|_| anyhow::anyhow!("no password hashing thread is running"))?;
    Ok(rx.await?)
}

/// [`hash`] off the async runtime.
pub async fn hash_blocking(password: String) -> anyhow::Result<String> {
    on_hashing_thread(move || hash(&password)).await?
}

/// [`verify`] off the async runtime.
pub async fn verify_blocking(password: String, stored: String) -> bool {
    on_hashing_thread(move || verify(&password, &stored))
        .await
        .unwrap_or(false)
}
