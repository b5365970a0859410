//! One task per WebSocket connection, after authentication and upgrade.
//!
//! Each task owns its socket: it reads frames and hands them to the [`Hub`], drains its own
//! outbound queue in batches (one flush per batch), pings on a timer, and closes when the hub
//! kicks it (replaced, too slow) or the relay shuts down. A task never waits on another
//! connection: everything it gives the hub is a non-blocking queue offer.

use crate::auth::{AgentKind, TokenMark};
use crate::config::{secs, Config};
use crate::hub::{agent_side, is_lossy, message_id, Hub, KickReason, Outbound, Queue, RouteError};
use crate::metrics::{kind_index, DropReason, Side};
use crate::wsframe::{AgentSocket, FrameError, Incoming};
use axum::extract::ws::close_code;
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use protocol::error::codes;
use protocol::ws::{Message, Peer};
use protocol::Envelope;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::time::{interval_at, timeout, MissedTickBehavior};
use tokio_tungstenite_029::WebSocketStream;
use tracing::{debug, info, warn};
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Error as WsError, Message as WsMessage, Utf8Bytes};
use uuid::Uuid;

/// A backend's WebSocket: tungstenite straight on the connection hyper hands over after the
/// 101 (the relay does the upgrade itself, see [`crate::server`]).
pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// An agent's WebSocket: our own framing ([`crate::wsframe`]) on the same connection, so that
/// an idle agent's socket holds no buffer (tungstenite keeps a read buffer per connection for
/// its whole life; twenty thousand agents, issue 14).
pub type AgentConn = AgentSocket<TokioIo<Upgraded>>;

/// Close code for an agent whose credentials a fleet reload took away (4000-4999 are the
/// application's; 4401 reads as "401, after the fact").
pub const REVOKED: u16 = 4401;

/// At most this many queued frames go into one flush.
const MAX_BATCH: usize = 512;

/// Per-connection settings, copied out of the config once.
#[derive(Debug, Clone, Copy)]
pub struct ConnSettings {
    pub ping_interval: Duration,
    pub silent_after: u32,
    pub close_after: u32,
    pub write_timeout: Duration,
    /// Largest frame the relay sends (as it goes out, after stamping `source`), and accepts.
    pub max_message: usize,
    /// The most an agent's socket reads per call, into its worker thread's buffer (not the
    /// connection's: see [`crate::wsframe`]); the backend's tungstenite read and write buffers.
    pub agent_read_buffer: usize,
    pub backend_read_buffer: usize,
    pub backend_write_buffer: usize,
}

impl ConnSettings {
    pub fn from_config(c: &Config) -> Self {
        Self {
            ping_interval: secs(c.presence.ping_interval_s),
            silent_after: c.presence.silent_after_missed_pongs,
            close_after: c.presence.close_after_missed_pongs,
            write_timeout: secs(c.queues.write_timeout_s),
            max_message: c.websocket.max_message_bytes,
            agent_read_buffer: c.websocket.agent_read_buffer,
            backend_read_buffer: c.websocket.backend_read_buffer,
            backend_write_buffer: c.websocket.backend_write_buffer,
        }
    }

    /// A backend's socket: frames to it are batched up to `backend_write_buffer` per write.
    pub fn backend_socket(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(self.backend_read_buffer)
            .write_buffer_size(self.backend_write_buffer)
            .max_write_buffer_size(
                self.backend_write_buffer
                    .saturating_add(self.max_message.saturating_mul(2)),
            )
            .max_message_size(Some(self.max_message))
            .max_frame_size(Some(self.max_message))
    }
}

/// The connection once hyper has sent the 101 and handed it over; `None` if the client went
/// away first. Awaited inside each connection's future, so it awaits nothing but hyper's handle
/// (8 bytes).
async fn upgraded(on_upgrade: OnUpgrade) -> Option<TokioIo<Upgraded>> {
    match on_upgrade.await {
        Ok(upgraded) => Some(TokioIo::new(upgraded)),
        Err(e) => {
            debug!(error = %e, "the connection was not upgraded");
            None
        }
    }
}

/// An agent's WebSocket, with the `[websocket]` limits.
async fn accept_agent(on_upgrade: OnUpgrade, settings: &ConnSettings) -> Option<AgentConn> {
    let io = upgraded(on_upgrade).await?;
    Some(AgentSocket::new(
        io,
        settings.max_message,
        settings.agent_read_buffer,
    ))
}

/// A backend's WebSocket. tungstenite's `from_raw_socket` does no I/O and is ready at once, so
/// it is polled here (`now_or_never`) rather than kept as a future in the task.
async fn accept_backend(on_upgrade: OnUpgrade, settings: &ConnSettings) -> Option<Socket> {
    let io = upgraded(on_upgrade).await?;
    WebSocketStream::from_raw_socket(io, Role::Server, Some(settings.backend_socket()))
        .now_or_never()
}

/// The writes both loops make, on an agent's socket (our framing) and on a backend's
/// (tungstenite), so that draining a queue, replying and closing are one code for both.
trait Frames {
    type Error: std::fmt::Display;
    /// One text frame: written through at once (agents) or into the write buffer (backend).
    async fn feed_frame(&mut self, frame: Utf8Bytes) -> Result<(), Self::Error>;
    async fn flush_frames(&mut self) -> Result<(), Self::Error>;
    /// One text frame, flushed.
    async fn send_frame(&mut self, frame: String) -> Result<(), Self::Error>;
    /// Our close frame.
    async fn send_close(&mut self, code: u16, reason: &'static str) -> Result<(), Self::Error>;
    /// Whatever the socket still owes the peer when the connection ends without our close
    /// (the answer to the peer's close).
    async fn finish(&mut self) -> Result<(), Self::Error>;
}

impl Frames for AgentConn {
    type Error = FrameError;
    async fn feed_frame(&mut self, frame: Utf8Bytes) -> Result<(), FrameError> {
        self.feed_text(frame.as_str()).await
    }
    async fn flush_frames(&mut self) -> Result<(), FrameError> {
        self.flush().await
    }
    async fn send_frame(&mut self, frame: String) -> Result<(), FrameError> {
        self.send_text(&frame).await
    }
    async fn send_close(&mut self, code: u16, reason: &'static str) -> Result<(), FrameError> {
        self.close(code, reason).await
    }
    async fn finish(&mut self) -> Result<(), FrameError> {
        AgentSocket::finish(self).await
    }
}

impl Frames for Socket {
    type Error = WsError;
    async fn feed_frame(&mut self, frame: Utf8Bytes) -> Result<(), WsError> {
        self.feed(WsMessage::Text(frame)).await
    }
    async fn flush_frames(&mut self) -> Result<(), WsError> {
        self.flush().await
    }
    async fn send_frame(&mut self, frame: String) -> Result<(), WsError> {
        self.send(WsMessage::Text(frame.into())).await
    }
    async fn send_close(&mut self, code: u16, reason: &'static str) -> Result<(), WsError> {
        let frame = CloseFrame {
            code: code.into(),
            reason: Utf8Bytes::from_static(reason),
        };
        self.send(WsMessage::Close(Some(frame))).await
    }
    /// Nothing: a backend's connection that ends without our close is dropped as it is.
    async fn finish(&mut self) -> Result<(), WsError> {
        Ok(())
    }
}

/// What ended a connection loop.
enum End {
    /// The peer closed or the socket failed: nothing more to send.
    Gone,
    /// We close, with this code and reason.
    Close(u16, &'static str),
}

/// Counts missed pongs: anything heard from the peer since the last ping counts as a pong.
struct Liveness {
    heard: bool,
    missed: u32,
}

impl Liveness {
    fn new() -> Self {
        Self {
            heard: true,
            missed: 0,
        }
    }
    /// On each ping tick: how many intervals in a row have passed without a word.
    fn tick(&mut self) -> u32 {
        if self.heard {
            self.missed = 0;
        } else {
            self.missed += 1;
        }
        self.heard = false;
        self.missed
    }
}

/// Writes a batch of queued frames, then flushes once.
async fn write_batch<W: Frames>(
    ws: &mut W,
    batch: &mut Vec<Outbound>,
    hub: &Hub,
    side: Side,
) -> Result<(), W::Error> {
    // only frames to a backend carry a read time; an agent's batch never allocates here
    let mut stamps = Vec::new();
    for item in batch.drain(..) {
        if let Some(t) = item.read_at {
            stamps.push(t);
        }
        hub.metrics.frame_out(side, usize::from(item.kind));
        ws.feed_frame(item.frame).await?;
    }
    ws.flush_frames().await?;
    for t in stamps {
        hub.metrics.forward_latency(t.elapsed());
    }
    Ok(())
}

/// Drains one batch from the queue and writes it, bounded as [`bounded_write`] says.
async fn write_queued<W: Frames>(
    ws: &mut W,
    queue: &Queue,
    batch: &mut Vec<Outbound>,
    hub: &Hub,
    side: Side,
    limit: Duration,
) -> Result<(), End> {
    queue.drain_into(batch, MAX_BATCH);
    if batch.is_empty() {
        return Ok(());
    }
    let result = bounded_write(write_batch(ws, batch, hub, side), queue, limit).await;
    batch.clear();
    result
}

/// Runs a queue write to completion unless the socket stalls past `limit` or the hub kicks the
/// connection meanwhile (a stalled peer's queue fills while we wait on its socket: that kick
/// must not wait for the write timeout).
async fn bounded_write<E: std::fmt::Display>(
    write: impl std::future::Future<Output = Result<(), E>>,
    queue: &Queue,
    limit: Duration,
) -> Result<(), End> {
    let write = timeout(limit, write);
    tokio::pin!(write);
    // the queue's one wake-up also says "frames queued": one taken here is given back after
    let mut woken = false;
    let result = loop {
        tokio::select! {
            written = &mut write => break match written {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => {
                    debug!(error = %e, "write failed");
                    Err(End::Gone)
                }
                Err(_) => Err(End::Close(close_code::AGAIN, "write timed out")),
            },
            _ = queue.woken() => {
                if let Some(reason) = queue.kick_reason() {
                    break Err(kick_end(reason));
                }
                woken = true;
            }
        }
    };
    if woken {
        queue.wake_again();
    }
    result
}

/// Sends one frame straight from this task (replies to the peer's own frames).
async fn send_now<W: Frames>(
    ws: &mut W,
    env: &Envelope,
    hub: &Hub,
    side: Side,
    limit: Duration,
) -> bool {
    hub.metrics.frame_out(side, kind_index(env.kind()));
    matches!(
        timeout(limit, ws.send_frame(env.to_json())).await,
        Ok(Ok(()))
    )
}

/// Sends our close, or what the socket still owes the peer, for at most a second.
async fn close<W: Frames>(ws: &mut W, end: End) {
    let _ = timeout(Duration::from_secs(1), async {
        match end {
            End::Close(code, reason) => ws.send_close(code, reason).await,
            End::Gone => ws.finish().await,
        }
    })
    .await;
}

/// What a failed read was, whichever socket read it (tungstenite's for a backend, ours for an
/// agent): one mapping to close codes, reasons and log lines for both.
enum ReadFailure<'a> {
    /// A message over the size limit.
    TooLong {
        size: u64,
        max_size: usize,
    },
    /// Another of the socket's limits.
    OverLimit(&'a dyn std::fmt::Display),
    NotUtf8(&'a dyn std::fmt::Display),
    Protocol(&'a dyn std::fmt::Display),
    /// The socket itself failed.
    Socket(&'a dyn std::fmt::Display),
}

/// How a failed read ends the connection: a frame over the size limit or a text frame that is
/// not UTF-8 gets the close code RFC 6455 gives it (1009 / 1007) and a reason, rather than a
/// connection that just vanishes; a socket error has nobody left to tell.
fn read_ended(failure: ReadFailure<'_>, peer: &'static str) -> End {
    match failure {
        ReadFailure::TooLong { size, max_size } => {
            warn!(peer, size, max_size, "frame over the size limit: closing");
            End::Close(close_code::SIZE, "message too big")
        }
        ReadFailure::OverLimit(c) => {
            warn!(peer, error = %c, "frame over a limit: closing");
            End::Close(close_code::SIZE, "message too big")
        }
        ReadFailure::NotUtf8(why) => {
            warn!(peer, error = %why, "text frame is not UTF-8: closing");
            End::Close(close_code::INVALID, "text frame is not valid UTF-8")
        }
        ReadFailure::Protocol(p) => {
            debug!(peer, error = %p, "WebSocket protocol error: closing");
            End::Close(close_code::PROTOCOL, "WebSocket protocol error")
        }
        ReadFailure::Socket(e) => {
            debug!(peer, error = %e, "socket error");
            End::Gone
        }
    }
}

/// [`read_ended`] for a backend's socket (tungstenite).
fn read_failed(e: WsError, peer: &'static str) -> End {
    use tungstenite::error::CapacityError;
    let failure = match &e {
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            ReadFailure::TooLong {
                size: *size as u64,
                max_size: *max_size,
            }
        }
        WsError::Capacity(c) => ReadFailure::OverLimit(c),
        WsError::Utf8(why) => ReadFailure::NotUtf8(why),
        WsError::Protocol(p) => ReadFailure::Protocol(p),
        e => ReadFailure::Socket(e),
    };
    read_ended(failure, peer)
}

/// [`read_ended`] for an agent's socket (ours).
fn agent_read_failed(e: FrameError) -> End {
    let failure = match &e {
        FrameError::TooLarge { size, max } => ReadFailure::TooLong {
            size: *size,
            max_size: *max,
        },
        FrameError::BadUtf8(why) => ReadFailure::NotUtf8(why),
        FrameError::Io(_) | FrameError::Closed => ReadFailure::Socket(&e),
        _ => ReadFailure::Protocol(&e),
    };
    read_ended(failure, "agent")
}

fn kick_end(reason: KickReason) -> End {
    match reason {
        KickReason::Replaced => End::Close(close_code::POLICY, "replaced by a newer connection"),
        KickReason::SlowConsumer => End::Close(close_code::AGAIN, "too slow: outbound queue full"),
        KickReason::Revoked(why) => End::Close(REVOKED, why.reason()),
        KickReason::Moved => End::Close(
            close_code::POLICY,
            "replaced by a newer connection on another relay",
        ),
        KickReason::Shutdown => End::Close(close_code::AWAY, "relay shutting down"),
    }
}

/// Runs one agent's connection until it ends.
///
/// Not an `async fn`: an async fn moves each argument from the future's captured fields into
/// locals of its body, so the socket (368 bytes) and the rest were stored twice in each of
/// twenty thousand futures. An `async move` block uses what it captured in place (the future
/// went from 1,736 to 1,272 bytes, 9.6 MiB less at 19,900 agents; issue 14 note).
///
/// For the same reason the settings are read from the hub rather than copied in, the queue's
/// one wake-up serves frames and kicks (shutdown is a kick too), and the `source` stamped on
/// the agent's frames is built per frame rather than held (a heap string per connection).
///
/// It is spawned as the connection's whole task right after the 101 is answered, and waits
/// for hyper to hand the connection over itself: no wrapper (axum's `on_upgrade` block kept its
/// own captures, config and protocol beside this future, in every task).
#[allow(clippy::manual_async_fn)] // on purpose: the reason is above
pub fn run_agent(
    hub: Arc<Hub>,
    on_upgrade: OnUpgrade,
    kind: AgentKind,
    id: Uuid,
    // the token it was accepted with, checked again at registration
    mark: TokenMark,
    // held until the task ends: shutdown waits for every one to be dropped
    drain: mpsc::Sender<()>,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        // named inside the block, so the block owns it until the connection ends
        let _drain = &drain;
        let Some(mut ws) = accept_agent(on_upgrade, &hub.settings).await else {
            return;
        };
        let side = agent_side(kind);
        let key = (kind, id);
        hub.metrics.connected(side);
        let reg = hub.register_agent(key, mark);
        info!(conn = reg.conn, "agent connected");

        let every = hub.settings.ping_interval;
        let mut ping = interval_at(tokio::time::Instant::now() + every, every);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut live = Liveness::new();
        let mut silent = false;
        let mut batch = Vec::new();

        // Ten thousand of these futures are alive at once: every await that is rare (replies,
        // pings, writes to the agent, the close) is boxed, so the future itself only holds the
        // select's small branch states (2.4 KiB before, see docs/relay.md).
        let end = loop {
            tokio::select! {
                incoming = ws.next() => {
                    // handled in a plain function: the message and the reply are not kept in
                    // this future (an `Envelope` is hundreds of bytes; the reply is boxed)
                    let reply = match agent_incoming(&hub, key, reg.conn, incoming, &mut live, &mut silent) {
                        Ok(reply) => reply,
                        Err(end) => break end,
                    };
                    if let Some(reply) = reply {
                        if !Box::pin(send_now(&mut ws, &reply, &hub, side, hub.settings.write_timeout)).await {
                            break End::Gone;
                        }
                    }
                }
                _ = reg.queue.woken() => {
                    if let Some(reason) = reg.queue.kick_reason() {
                        break kick_end(reason);
                    }
                    // built inside Box::pin: a future first bound to a local keeps its space in
                    // this one even after it is moved into the box
                    let queued = Box::pin(write_queued(&mut ws, &reg.queue, &mut batch, &hub, side, hub.settings.write_timeout)).await;
                    if let Err(end) = queued {
                        break end;
                    }
                }
                _ = ping.tick() => {
                    let missed = live.tick();
                    if missed >= hub.settings.close_after {
                        warn!(missed, "agent silent too long: closing");
                        break End::Close(close_code::POLICY, "no pong");
                    }
                    if missed >= hub.settings.silent_after && !silent {
                        silent = true;
                        warn!(missed, "agent silent: missed pongs");
                        hub.set_silent(key, reg.conn, true);
                    }
                    let pinged = Box::pin(timeout(hub.settings.write_timeout, ws.ping())).await;
                    if !matches!(pinged, Ok(Ok(()))) {
                        break End::Gone;
                    }
                }
            }
        };
        reg.queue.close();
        Box::pin(close(&mut ws, end)).await;
        hub.unregister_agent(key, reg.conn);
        hub.metrics.disconnected(side);
        info!(conn = reg.conn, "agent disconnected");
    }
}

/// What the agent's socket gave: the reply to send, if any, or how the connection ends.
fn agent_incoming(
    hub: &Hub,
    key: (AgentKind, Uuid),
    conn: u64,
    incoming: Option<Result<Incoming, FrameError>>,
    live: &mut Liveness,
    silent: &mut bool,
) -> Result<Option<Box<Envelope>>, End> {
    let msg = match incoming {
        Some(Ok(m)) => m,
        Some(Err(e)) => return Err(agent_read_failed(e)),
        None => {
            // (tungstenite called this a protocol error and tried to send a 1002 to nobody)
            debug!(peer = "agent", "the connection ended without a close frame");
            return Err(End::Gone);
        }
    };
    live.heard = true;
    if *silent {
        *silent = false;
        hub.set_silent(key, conn, false);
        info!("agent answering again");
    }
    Ok(match msg {
        Incoming::Text(t) => agent_frame(hub, key, t.as_bytes()).map(Box::new),
        Incoming::Binary(b) => agent_frame(hub, key, &b).map(Box::new),
        // the answer to it is written as the connection ends (`close`)
        Incoming::Close(_) => return Err(End::Gone),
        Incoming::Ping | Incoming::Pong => None,
    })
}

/// Handles one frame from an agent; returns the `error` to answer it with, if any.
fn agent_frame(hub: &Hub, key: (AgentKind, Uuid), bytes: &[u8]) -> Option<Envelope> {
    let max_message = hub.settings.max_message;
    let read_at = Instant::now();
    let side = agent_side(key.0);
    let mut env = match Envelope::from_slice(bytes) {
        Ok(env) => env,
        Err(e) => {
            hub.metrics.frame_in(side, usize::MAX);
            hub.metrics.dropped(DropReason::Refused);
            debug!(error = %e, "malformed frame from agent");
            return Some(hub.error_frame(e.code(), e.to_string(), None));
        }
    };
    let kind = kind_index(env.kind());
    hub.metrics.frame_in(side, kind);
    if let Some(problem) = impersonation(&env.message, key) {
        hub.metrics.dropped(DropReason::Refused);
        warn!(%problem, "agent frame names another agent: refused");
        return Some(hub.error_frame(codes::UNAUTHORIZED, problem, message_id(&env.message)));
    }
    match &env.message {
        Message::Presence(_) => {
            hub.metrics.dropped(DropReason::Refused);
            return Some(hub.error_frame(
                codes::UNEXPECTED_MESSAGE,
                "`presence` is written by the relay only",
                None,
            ));
        }
        // a response to a bridge call goes to that call, not to the backends
        Message::LockerResponse(r)
            if key.0 == AgentKind::Locker && hub.complete_locker_call(key.1, r) =>
        {
            return None;
        }
        _ => {}
    }
    // The relay's word on who said it, whatever the agent wrote; `target` means nothing here.
    env.source = Some(Peer {
        kind: key.0.peer_kind(),
        id: key.1.to_string(),
    });
    env.target = None;
    if env.timestamp.is_none() {
        env.timestamp = Some(chrono::Utc::now());
    }
    let lossy = is_lossy(&env.message);
    let frame = env.to_json();
    // The limit applies to what is sent: a frame just under it on the way in can be over it
    // once `source` is stamped, and the backend would refuse it.
    if frame.len() > max_message {
        hub.metrics.dropped(DropReason::Refused);
        warn!(
            size = frame.len(),
            max_message, "agent frame over the size limit once stamped: refused"
        );
        return Some(hub.error_frame(
            codes::MESSAGE_TOO_LARGE,
            format!(
                "`{}` frame is {} bytes with its `source`, over the {max_message}-byte limit",
                env.kind(),
                frame.len()
            ),
            message_id(&env.message),
        ));
    }
    hub.from_agent(key, frame.into(), kind, lossy, read_at);
    None
}

/// A frame whose body names an agent other than the one authenticated on this connection.
fn impersonation(message: &Message, (kind, id): (AgentKind, Uuid)) -> Option<String> {
    let (what, claimed) = match message {
        Message::Register(r) => ("register.drone_id", r.drone_id),
        Message::LockerRegister(r) => ("locker_register.locker_id", r.locker_id),
        Message::QrValidate(q) => ("qr_validate.locker_id", q.locker_id),
        _ => return None,
    };
    (claimed != id).then(|| {
        format!(
            "{what} is {claimed} but this connection is authenticated as {} {id}",
            kind.as_str()
        )
    })
}

/// Runs one backend connection until it ends.
pub async fn run_backend(hub: Arc<Hub>, on_upgrade: OnUpgrade, _drain: mpsc::Sender<()>) {
    let settings = hub.settings;
    let Some(mut ws) = accept_backend(on_upgrade, &settings).await else {
        return;
    };
    hub.metrics.connected(Side::Backend);
    let (reg, snapshot) = hub.register_backend();
    info!(
        conn = reg.conn,
        agents = snapshot.len(),
        "backend connected"
    );
    let mut batch = Vec::new();
    let end = 'conn: {
        // who is connected right now, before anything that happened after
        let presence = kind_index("presence");
        let snapshot_sent = async {
            for frame in snapshot {
                hub.metrics.frame_out(Side::Backend, presence);
                ws.feed(WsMessage::Text(frame)).await?;
            }
            ws.flush().await
        };
        if !matches!(
            timeout(settings.write_timeout, snapshot_sent).await,
            Ok(Ok(()))
        ) {
            break 'conn End::Gone;
        }

        let start = tokio::time::Instant::now() + settings.ping_interval;
        let mut ping = interval_at(start, settings.ping_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut live = Liveness::new();
        loop {
            tokio::select! {
                incoming = ws.next() => {
                    let msg = match incoming {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => break read_failed(e, "backend"),
                        None => break End::Gone,
                    };
                    live.heard = true;
                    let reply = match msg {
                        WsMessage::Text(t) => backend_frame(&hub, t.as_bytes()),
                        WsMessage::Binary(b) => backend_frame(&hub, &b),
                        WsMessage::Close(_) => break End::Gone,
                        WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => None,
                    };
                    if let Some(reply) = reply {
                        if !send_now(&mut ws, &reply, &hub, Side::Backend, settings.write_timeout).await {
                            break End::Gone;
                        }
                    }
                }
                _ = reg.queue.woken() => {
                    if let Some(reason) = reg.queue.kick_reason() {
                        break kick_end(reason);
                    }
                    let queued = write_queued(&mut ws, &reg.queue, &mut batch, &hub, Side::Backend, settings.write_timeout);
                    if let Err(end) = queued.await {
                        break end;
                    }
                }
                _ = ping.tick() => {
                    if live.tick() >= settings.close_after {
                        warn!("backend silent too long: closing");
                        break End::Close(close_code::POLICY, "no pong");
                    }
                    let ping = ws.send(WsMessage::Ping(Default::default()));
                    if !matches!(timeout(settings.write_timeout, ping).await, Ok(Ok(()))) {
                        break End::Gone;
                    }
                }
            }
        }
    };
    reg.queue.close();
    close(&mut ws, end).await;
    hub.unregister_backend(reg.conn);
    hub.metrics.disconnected(Side::Backend);
    info!(conn = reg.conn, "backend disconnected");
}

/// Routes one frame from the backend to the agent in its `target`; returns the `error` to
/// answer it with when it cannot be delivered.
fn backend_frame(hub: &Hub, bytes: &[u8]) -> Option<Envelope> {
    let mut env = match Envelope::from_slice(bytes) {
        Ok(env) => env,
        Err(e) => {
            hub.metrics.frame_in(Side::Backend, usize::MAX);
            debug!(error = %e, "malformed frame from backend");
            return Some(hub.error_frame(e.code(), e.to_string(), None));
        }
    };
    let kind = kind_index(env.kind());
    hub.metrics.frame_in(Side::Backend, kind);
    let reply_to = message_id(&env.message);
    let Some(target) = env.target.take() else {
        return Some(hub.error_frame(
            codes::MALFORMED_MESSAGE,
            format!(
                "`{}` frame has no `target`: the relay cannot tell which agent it is for",
                env.kind()
            ),
            reply_to,
        ));
    };
    let unknown = || {
        hub.error_frame(
            codes::UNKNOWN_AGENT,
            format!("no {:?} {} in the relay's config", target.kind, target.id),
            reply_to.clone(),
        )
    };
    let Some(agent_kind) = AgentKind::from_peer_kind(target.kind) else {
        return Some(unknown());
    };
    let Ok(id) = Uuid::parse_str(&target.id) else {
        return Some(unknown());
    };
    // agents see neither routing field: `target` is consumed here, `source` is the backend's
    env.source = None;
    match hub.to_agent((agent_kind, id), env.to_json().into(), kind) {
        Ok(()) => None,
        Err(RouteError::UnknownAgent) => Some(unknown()),
        Err(e @ (RouteError::Offline | RouteError::Overloaded | RouteError::ClusterDown)) => {
            Some(hub.error_frame(
                codes::AGENT_OFFLINE,
                format!("{} {id}: {e}", agent_kind.as_str()),
                reply_to,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future a function returns, without calling it.
    fn future_size<F, A, B, C, D, E, G, Fut>(_: F) -> usize
    where
        F: FnOnce(A, B, C, D, E, G) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// Twenty thousand of these futures are alive at once, each the whole of its task (the relay
    /// does the WebSocket upgrade itself: no axum block around it). 1,240 bytes (debug build)
    /// before the queue's two wake-ups became one, the shutdown watch a kick, the settings and
    /// the `source` peer stopped being copied in, and the reply was boxed: 696 after; 656 since
    /// it awaits the upgrade itself (and tungstenite's ready-at-once `from_raw_socket` is not
    /// kept as a future); 456 since the agent's socket is our own framing (`AgentConn`, a
    /// fraction of tungstenite's stream, which is kept for the backend); + 8 for the token's mark
    /// checked at registration. A bound with room to spare: an `Envelope` (240 bytes) kept
    /// across an await again would cross it.
    #[test]
    fn an_agent_connections_future_stays_small() {
        let n = future_size(run_agent);
        eprintln!(
            "run_agent future: {n} bytes, Envelope {} bytes, agent socket {} bytes \
             (tungstenite's {})",
            std::mem::size_of::<Envelope>(),
            std::mem::size_of::<AgentConn>(),
            std::mem::size_of::<Socket>(),
        );
        assert!(n <= 600, "run_agent's future is {n} bytes");
    }

    /// The agent's socket itself: the stream and three empty buffers' headers, no buffer behind
    /// them while idle (`wsframe`'s tests check that).
    #[test]
    fn an_agent_socket_is_small() {
        let n = std::mem::size_of::<AgentConn>();
        assert!(n <= 176, "an agent's socket is {n} bytes");
    }
}
