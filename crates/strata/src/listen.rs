//! The API's listening socket: where it comes from (the socket systemd
//! passes, or `STRATA_LISTEN` bound with SO_REUSEPORT) and how it closes
//! without resetting connections that already reached it.
//! Never reads or writes HTTP: that is `app::serve`'s job.
//!
//! Zero-downtime restarts rest on one rule: a connection the kernel has
//! completed must be answered by some process. A proxy in front (nginx) has
//! usually sent its request on such a connection already, and it does not
//! retry a POST that was sent, so a reset there is a failed request.
//! - Socket activation (`strata@.socket`): systemd owns the socket. When a
//!   process exits, connections wait in the socket's queue for the next one.
//! - SO_REUSEPORT: the new process binds the same port while the old one
//!   drains; the kernel spreads new connections over both. The old process's
//!   queue dies with its socket, so [`Draining`] empties it before closing.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
#[cfg(unix)]
use std::os::fd::{BorrowedFd, FromRawFd, RawFd};
#[cfg(unix)]
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context};
#[cfg(unix)]
use socket2::SockRef;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::config::Config;

/// The first descriptor a service manager passes (`SD_LISTEN_FDS_START`).
#[cfg(unix)]
const LISTEN_FDS_START: RawFd = 3;

/// Connections the kernel may queue before the server accepts them; the
/// same as tokio's and Rust's standard library's default.
const BACKLOG: i32 = 1024;

/// The listening socket `strata serve` uses: the one systemd passed when the
/// process was socket-activated, otherwise `config.listen` bound here.
pub fn listener(config: &Config) -> anyhow::Result<TcpListener> {
    let listener = match activated_socket()? {
        Some(socket) => {
            tracing::info!(
                "using the socket passed by the service manager (socket activation); STRATA_LISTEN and STRATA_REUSEPORT do not apply"
            );
            socket
        }
        None => {
            let socket = bind(config.listen, config.reuseport)?;
            tracing::info!(
                listen = %config.listen,
                reuseport = config.reuseport,
                "bound the listen address (STRATA_LISTEN)"
            );
            socket
        }
    };
    listener
        .set_nonblocking(true)
        .context("making the listening socket non-blocking")?;
    TcpListener::from_std(listener).context("registering the listening socket")
}

/// The socket systemd passed, per sd_listen_fds(3): only when `LISTEN_PID`
/// is this process (a child of a socket-activated process inherits the
/// variables but not the right to fd 3) and `LISTEN_FDS` is at least 1.
///
/// The variables are read here rather than in [`Config`] because they are
/// the service manager's protocol, not settings anyone writes. They are not
/// unset afterwards: `remove_var` is unsound once threads run (the runtime's
/// are), and the `LISTEN_PID` check already keeps children away from fd 3.
#[cfg(unix)]
fn activated_socket() -> anyhow::Result<Option<std::net::TcpListener>> {
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        .is_some_and(|pid| pid == std::process::id());
    if !for_us {
        return Ok(None);
    }
    let count = std::env::var("LISTEN_FDS").unwrap_or_default();
    let count: u32 = match count.trim().parse() {
        Ok(n) if n >= 1 => n,
        _ => return Ok(None),
    };
    if count > 1 {
        tracing::warn!(
            fds = count,
            "the service manager passed several sockets; only the first (fd 3) is used"
        );
    }
    // Inspect fd 3 before owning it: when it is not the passed socket (a
    // wrong unit file), it is something else of this process's, such as the
    // runtime's epoll descriptor, and must not be closed.
    // SAFETY: LISTEN_PID is ours, so the service manager passed fd 3 at
    // exec and it is open; nothing closes it during this borrow (the process
    // is still starting). A borrow never closes it.
    let fd = unsafe { BorrowedFd::borrow_raw(LISTEN_FDS_START) };
    let probe = SockRef::from(&fd);
    let listening_tcp = probe.r#type().is_ok_and(|t| t == Type::STREAM)
        && probe.is_listener().unwrap_or(false)
        && probe.local_addr().is_ok_and(|a| a.is_ipv4() || a.is_ipv6());
    if !listening_tcp {
        bail!(
            "LISTEN_FDS is set for this process but fd 3 is not a listening TCP socket; \
             check the .socket unit (ListenStream= takes an address such as 127.0.0.1:8081)"
        );
    }
    static TAKEN: AtomicBool = AtomicBool::new(false);
    if TAKEN.swap(true, Ordering::AcqRel) {
        bail!("the socket passed by the service manager was already taken");
    }
    // SAFETY: fd 3 is a listening socket that the service manager passed to
    // this process (LISTEN_PID is ours) for it to own; TAKEN makes this the
    // only owner.
    let socket = unsafe { Socket::from_raw_fd(LISTEN_FDS_START) };
    // Processes this one might start must not inherit (and hold open) it.
    socket
        .set_cloexec(true)
        .context("marking the passed socket close-on-exec")?;
    Ok(Some(socket.into()))
}

/// Socket activation is systemd's, so Unix only.
#[cfg(not(unix))]
fn activated_socket() -> anyhow::Result<Option<std::net::TcpListener>> {
    Ok(None)
}

/// Binds `addr` with SO_REUSEADDR (restart while old connections linger in
/// TIME_WAIT) and, when `reuseport`, SO_REUSEPORT (listen beside a process
/// that still drains the same port).
fn bind(addr: SocketAddr, reuseport: bool) -> anyhow::Result<std::net::TcpListener> {
    let context = || format!("listening on {addr} (STRATA_LISTEN)");
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .with_context(context)?;
    // On Windows SO_REUSEADDR would let another socket take the port.
    #[cfg(unix)]
    socket.set_reuse_address(true).with_context(context)?;
    #[cfg(unix)]
    if reuseport {
        socket
            .set_reuse_port(true)
            .with_context(|| format!("setting SO_REUSEPORT on {addr} (STRATA_REUSEPORT)"))?;
    }
    if let Err(e) = socket.bind(&addr.into()) {
        if e.kind() == io::ErrorKind::AddrInUse {
            let hint = if reuseport {
                "another process holds the port without SO_REUSEPORT, or runs as another user \
                 (sharing a port needs SO_REUSEPORT on every socket, all of one user)"
            } else {
                "another process listens there; STRATA_REUSEPORT=true lets a new instance \
                 share the port with one that is draining"
            };
            return Err(anyhow::Error::new(e).context(format!("{}: {hint}", context())));
        }
        return Err(anyhow::Error::new(e).context(context()));
    }
    socket.listen(BACKLOG).with_context(context)?;
    Ok(socket.into())
}

/// The listener `app::serve` accepts from. Once `close` turns true it
/// accepts every connection already queued on the socket, hands those out,
/// and closes the socket; from then on it accepts nothing. Connections
/// handed out are served like any other (while draining, each gets one
/// response that closes it).
pub struct Draining {
    listener: Option<TcpListener>,
    addr: SocketAddr,
    close: watch::Receiver<bool>,
    queued: VecDeque<(TcpStream, SocketAddr)>,
}

impl Draining {
    pub fn new(listener: TcpListener, close: watch::Receiver<bool>) -> io::Result<Draining> {
        Ok(Draining {
            addr: listener.local_addr()?,
            listener: Some(listener),
            close,
            queued: VecDeque::new(),
        })
    }

    /// Takes what the kernel has queued, then closes the socket (systemd's
    /// copy of an activated socket stays open, queueing for the next
    /// process). Accepting through the standard library's call, not tokio's:
    /// tokio only tries once its reactor has seen the socket become readable,
    /// which may lag the kernel by a scheduling delay, and every connection
    /// left behind would be reset.
    fn close_now(&mut self) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        let listener = match listener.into_std() {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "could not take the queued connections before closing the listener");
                return;
            }
        };
        for _ in 0..BACKLOG {
            match listener.accept() {
                Ok((stream, peer)) => {
                    match stream
                        .set_nonblocking(true)
                        .and_then(|()| TcpStream::from_std(stream))
                    {
                        Ok(stream) => self.queued.push_back((stream, peer)),
                        Err(e) => {
                            tracing::warn!(error = %e, "dropped a queued connection while closing")
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed while closing the listener");
                    break;
                }
            }
        }
        tracing::info!(
            queued = self.queued.len(),
            "listener closed; serving the connections it had queued"
        );
    }
}

/// What woke [`Draining::accept`].
enum Woken {
    Close,
    Accepted(io::Result<(TcpStream, SocketAddr)>),
}

impl axum::serve::Listener for Draining {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            if let Some(connection) = self.queued.pop_front() {
                return connection;
            }
            let Some(listener) = &self.listener else {
                // Closed: `app::serve` stops the accept loop itself.
                return std::future::pending().await;
            };
            let close = &mut self.close;
            // Closing first: once told, accept nothing through the reactor.
            let woken = tokio::select! {
                biased;
                _ = close.wait_for(|close| *close) => Woken::Close,
                accepted = listener.accept() => Woken::Accepted(accepted),
            };
            match woken {
                Woken::Close => self.close_now(),
                Woken::Accepted(Ok(connection)) => return connection,
                Woken::Accepted(Err(e)) if is_connection_error(&e) => {}
                Woken::Accepted(Err(e)) => {
                    // Most likely out of file descriptors: give in-flight
                    // requests a moment to release some (as hyper and axum do).
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// An error about one connection (the peer gave up), not the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}
