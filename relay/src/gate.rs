//! The door before authentication: how many connections may be open that have not yet shown a
//! credential, and for how long.
//!
//! Without it, one host that opens sockets and never finishes its HTTP request holds a
//! descriptor (and ~20 KiB) each for ever; at the descriptor limit no agent can connect and
//! `/health` stops answering. So:
//! - every accepted socket takes a [`Ticket`] from the [`Gate`], or is closed at once (over
//!   `max_unauthenticated_per_source` from its address, or over `max_unauthenticated` in all),
//!   counted in `/metrics` and logged with a rate-limited warning;
//! - a socket whose ticket is still held `header_timeout_s` after the accept is closed (its
//!   reads and writes fail from then on, so hyper drops it), whatever it is doing: sending
//!   headers slowly, idling between anonymous requests, or sitting on a 401;
//! - a handler that authenticates the connection (agent or backend credential) calls
//!   [`Admission::authenticated`]: the ticket is returned and the deadline is gone for good.
//!
//! The ticket is held by the socket's wrapper ([`Gated`]), so it also comes back when the socket
//! closes, however that happens.

use crate::metrics::{GateOutcome, Metrics};
use axum::serve::Listener;
use std::collections::HashMap;
use std::future::Future as _;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tracing::warn;

/// Limits from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct GateLimits {
    pub header_timeout: Duration,
    pub max_total: usize,
    pub max_per_source: usize,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

/// Counts unauthenticated connections, per source address and in total.
pub struct Gate {
    limits: GateLimits,
    counts: Mutex<Counts>,
    metrics: Arc<Metrics>,
    warn: RateLimited,
}

impl Gate {
    pub fn new(limits: GateLimits, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            limits,
            counts: Mutex::new(Counts::default()),
            metrics,
            warn: RateLimited::new(Duration::from_secs(10)),
        })
    }

    pub fn limits(&self) -> GateLimits {
        self.limits
    }

    /// A ticket for a socket just accepted from `ip`, or `None`: close it at once.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Ticket> {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let from_ip = c.per_source.get(&ip).copied().unwrap_or(0);
        let refused = if from_ip >= self.limits.max_per_source {
            Some(GateOutcome::OverSourceCap)
        } else if c.total >= self.limits.max_total {
            Some(GateOutcome::OverTotalCap)
        } else {
            None
        };
        if let Some(why) = refused {
            let total = c.total;
            drop(c);
            self.metrics.gate(why);
            if let Some(suppressed) = self.warn.allow() {
                warn!(
                    source = %ip,
                    from_source = from_ip,
                    unauthenticated = total,
                    reason = why.as_str(),
                    suppressed,
                    "too many unauthenticated connections: closed at once"
                );
            }
            return None;
        }
        c.total += 1;
        *c.per_source.entry(ip).or_insert(0) += 1;
        self.metrics.unauthenticated(1);
        Some(Ticket {
            gate: self.clone(),
            ip,
        })
    }

    fn release(&self, ip: IpAddr) {
        self.metrics.unauthenticated(-1);
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_source.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                c.per_source.remove(&ip);
            }
        }
    }

    /// Connections that have not authenticated yet (a gauge in `/metrics`).
    pub fn unauthenticated(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

/// One unauthenticated connection's place; returned on drop.
pub struct Ticket {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate.release(self.ip);
    }
}

struct AdmissionState {
    authenticated: AtomicBool,
    ticket: Mutex<Option<Ticket>>,
}

/// A connection's admission, shared by its socket and the handlers of its requests.
#[derive(Clone)]
pub struct Admission(Arc<AdmissionState>);

impl Admission {
    fn new(ticket: Ticket) -> Self {
        Self(Arc::new(AdmissionState {
            authenticated: AtomicBool::new(false),
            ticket: Mutex::new(Some(ticket)),
        }))
    }

    /// The connection showed a valid credential: it leaves the unauthenticated count and its
    /// header deadline no longer applies.
    pub fn authenticated(&self) {
        self.0.authenticated.store(true, Ordering::Release);
        let ticket = self
            .0
            .ticket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(ticket);
    }
}

/// The remote end as the listener reports it (and handlers see it, as axum `ConnectInfo`): its
/// address and its admission.
#[derive(Clone)]
pub struct Remote {
    pub addr: SocketAddr,
    pub admission: Admission,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, GatedListener>>
    for Remote
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, GatedListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A socket with a deadline that holds until the connection authenticates.
pub struct Gated<S> {
    inner: S,
    /// Until the connection authenticates (then let go: it is shared with the request handlers,
    /// and an agent's socket lives for hours).
    admission: Option<Admission>,
    deadline: Option<Pin<Box<Sleep>>>,
    expired: bool,
    metrics: Arc<Metrics>,
}

impl<S> Gated<S> {
    /// Wraps a socket just admitted with `ticket`; returns it with what the listener reports.
    pub fn new(inner: S, ticket: Ticket, addr: SocketAddr) -> (Self, Remote) {
        let timeout = ticket.gate.limits.header_timeout;
        let metrics = ticket.gate.metrics.clone();
        let admission = Admission::new(ticket);
        let remote = Remote {
            addr,
            admission: admission.clone(),
        };
        let gated = Self {
            inner,
            admission: Some(admission),
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            expired: false,
            metrics,
        };
        (gated, remote)
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Err once the deadline passed without authentication; registers the waker otherwise, so a
    /// socket waiting on a read is woken (and fails) when it passes.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.expired {
            return Err(timed_out());
        }
        let (Some(deadline), Some(admission)) = (&mut self.deadline, &self.admission) else {
            return Ok(());
        };
        if admission.0.authenticated.load(Ordering::Acquire) {
            // free the timer and the admission: an agent's connection lives for hours
            self.deadline = None;
            self.admission = None;
            return Ok(());
        }
        if deadline.as_mut().poll(cx).is_ready() {
            // the ticket goes now, not when hyper gets round to dropping the socket
            drop(
                admission
                    .0
                    .ticket
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take(),
            );
            self.expired = true;
            self.deadline = None;
            self.admission = None;
            self.metrics.gate(GateOutcome::HeaderTimeout);
            return Err(timed_out());
        }
        Ok(())
    }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "no credentials within the header timeout",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for Gated<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Gated<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts TCP through the gate (plain HTTP; [`crate::tls::TlsListener`] does the same before
/// its handshakes).
pub struct GatedListener {
    tcp: TcpListener,
    gate: Arc<Gate>,
}

impl GatedListener {
    pub fn new(tcp: TcpListener, gate: Arc<Gate>) -> Self {
        Self { tcp, gate }
    }
}

/// Accepts the next TCP connection the gate admits (others are closed at once).
pub async fn accept_admitted(
    tcp: &TcpListener,
    gate: &Arc<Gate>,
) -> (TcpStream, Ticket, SocketAddr) {
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(x) => x,
            Err(e) => {
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                ) {
                    // EMFILE and friends: back off briefly rather than spin
                    if let Some(suppressed) = gate.warn.allow() {
                        warn!(error = %e, suppressed, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
        };
        match gate.admit(peer.ip()) {
            Some(ticket) => {
                // a relay's whole job is latency: never wait to coalesce small frames
                let _ = stream.set_nodelay(true);
                return (stream, ticket, peer);
            }
            None => drop(stream),
        }
    }
}

impl Listener for GatedListener {
    type Io = Gated<TcpStream>;
    type Addr = Remote;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, ticket, peer) = accept_admitted(&self.tcp, &self.gate).await;
        Gated::new(stream, ticket, peer)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Err(io::Error::other(
            "a gated listener reports its address through Relay::local_addr",
        ))
    }
}

/// A warning at most once per period; says how many were held back meanwhile.
pub struct RateLimited {
    period: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl RateLimited {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n held back since the last one)` when a warning may be logged now.
    pub fn allow(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < self.period) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(per_source: usize, total: usize) -> Arc<Gate> {
        Gate::new(
            GateLimits {
                header_timeout: Duration::from_secs(5),
                max_total: total,
                max_per_source: per_source,
            },
            Arc::new(Metrics::default()),
        )
    }

    #[test]
    fn tickets_count_per_source_and_in_total_and_come_back_on_drop() {
        let g = gate(2, 3);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let t1 = g.admit(a).unwrap();
        let _t2 = g.admit(a).unwrap();
        assert!(g.admit(a).is_none(), "third from one source");
        let _t3 = g.admit(b).unwrap();
        assert!(g.admit(b).is_none(), "fourth in all");
        drop(t1);
        assert_eq!(g.unauthenticated(), 2);
        assert!(g.admit(b).is_some());
    }

    #[test]
    fn the_warning_is_rate_limited_and_counts_what_it_held_back() {
        let w = RateLimited::new(Duration::from_secs(3600));
        assert_eq!(w.allow(), Some(0));
        assert_eq!(w.allow(), None);
        assert_eq!(w.allow(), None);
        let w2 = RateLimited::new(Duration::ZERO);
        assert_eq!(w2.allow(), Some(0));
        assert_eq!(w2.allow(), Some(0));
    }
}
