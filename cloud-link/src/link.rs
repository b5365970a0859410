//! The connection task: dial, introduce, flush the outbox, then pump frames both ways until the
//! link dies; wait (backoff) and do it again, forever.

use crate::config::CloudConfig;
use crate::outbox::{Outbox, OutboxError};
use futures_util::{SinkExt, StreamExt};
use protocol::ws::{ErrorMessage, Event, Message, PeerKind};
use protocol::Envelope;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tracing::{debug, error, info, info_span, warn, Instrument};
use uuid::Uuid;

/// Header carrying the agent's id next to its bearer token.
pub const AGENT_ID_HEADER: &str = "X-Skypost-Agent-Id";

/// Frames waiting for the connection (acks, responses). Bounded: past it new frames are dropped,
/// logged and counted — telemetry and events do not travel here, so what drops is best-effort.
const OUTGOING_CAPACITY: usize = 1024;
const INCOMING_CAPACITY: usize = 256;
/// Video frames waiting for the connection. Two: one being written and one ready; anything more
/// would only be older pictures sent late on a link that is already slow.
const VIDEO_CAPACITY: usize = 2;

/// Where the link stands.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkStatus {
    /// Never connected yet, or dialling after a failure.
    Connecting {
        attempt: u32,
    },
    Connected {
        since: SystemTime,
    },
    /// Down; `since` is when it went down (or when the agent started, if it never came up).
    Disconnected {
        since: SystemTime,
        reason: String,
    },
}

impl LinkStatus {
    pub fn is_connected(&self) -> bool {
        matches!(self, LinkStatus::Connected { .. })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("cloud.url {url:?} is not a usable WebSocket URL: {reason}")]
    BadUrl { url: String, reason: String },
}

struct Shared {
    outbox: Mutex<Outbox>,
    new_event: Notify,
    dropped_outgoing: std::sync::atomic::AtomicU64,
    dropped_video: std::sync::atomic::AtomicU64,
}

/// Handle to the running link. Cheap to share behind an `Arc`.
pub struct CloudLink {
    shared: Arc<Shared>,
    outgoing: mpsc::Sender<Envelope>,
    video: mpsc::Sender<Envelope>,
    telemetry: watch::Sender<Option<Envelope>>,
    hello: watch::Sender<Envelope>,
    status: watch::Receiver<LinkStatus>,
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl CloudLink {
    /// Opens the outbox in `outbox_dir` and starts dialling. Returns the handle and the stream of
    /// frames from the cloud (everything but `event_ack`, which the link consumes itself).
    ///
    /// `hello` is the first frame on every connection (`register` / `locker_register`); update it
    /// with [`CloudLink::set_hello`] as what it says changes.
    pub fn spawn(
        cfg: CloudConfig,
        kind: PeerKind,
        agent_id: String,
        outbox_dir: &Path,
        hello: Envelope,
    ) -> Result<(Self, mpsc::Receiver<Envelope>), LinkError> {
        // rustls needs a process-wide crypto provider; a second install is a harmless error.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut requests = Vec::new();
        for url in cfg.relays() {
            requests.push(request_for(url, &cfg.token, &agent_id)?);
        }
        if requests.is_empty() {
            return Err(LinkError::BadUrl {
                url: String::new(),
                reason: "no relay URL configured".into(),
            });
        }

        let (outbox, problems) = Outbox::open(outbox_dir, cfg.outbox_capacity)?;
        for p in problems {
            error!(error = %p, "event outbox had a corrupt entry; set aside");
        }
        if !outbox.is_empty() {
            info!(
                pending = outbox.len(),
                "unacknowledged events from before the restart will be re-sent"
            );
        }
        let shared = Arc::new(Shared {
            outbox: Mutex::new(outbox),
            new_event: Notify::new(),
            dropped_outgoing: Default::default(),
            dropped_video: Default::default(),
        });
        let (out_tx, out_rx) = mpsc::channel(OUTGOING_CAPACITY);
        let (video_tx, video_rx) = mpsc::channel(VIDEO_CAPACITY);
        let (in_tx, in_rx) = mpsc::channel(INCOMING_CAPACITY);
        let (tel_tx, tel_rx) = watch::channel(None);
        let (hello_tx, hello_rx) = watch::channel(hello);
        let (status_tx, status_rx) = watch::channel(LinkStatus::Connecting { attempt: 0 });
        let (stop_tx, stop_rx) = watch::channel(false);
        let relays = cfg.relays().join(" ");
        let span = info_span!("cloud_link", agent_id = %agent_id, kind = ?kind, relays = %relays);
        let task = tokio::spawn(
            Dialler {
                cfg,
                requests,
                shared: shared.clone(),
                outgoing: out_rx,
                video: video_rx,
                incoming: in_tx,
                telemetry: tel_rx,
                hello: hello_rx,
                status: status_tx,
                stop: stop_rx,
            }
            .run()
            .instrument(span),
        );
        let link = Self {
            shared,
            outgoing: out_tx,
            video: video_tx,
            telemetry: tel_tx,
            hello: hello_tx,
            status: status_rx,
            shutdown: stop_tx,
            task: Mutex::new(Some(task)),
        };
        Ok((link, in_rx))
    }

    /// Records an event on disk, then sends it (now, or after the next reconnect) until the cloud
    /// acknowledges it. Returns the event as sent, with its id and sequence number.
    pub async fn publish_event(&self, event: Event) -> Result<Event, OutboxError> {
        let shared = self.shared.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let mut ob = shared.outbox.lock().unwrap_or_else(|p| p.into_inner());
            ob.push(event)
        })
        .await
        .map_err(|e| OutboxError::Io {
            path: "outbox".into(),
            source: std::io::Error::other(e),
        })??;
        self.shared.new_event.notify_one();
        Ok(stored)
    }

    /// Sends a frame on the live connection, or on the next one; never stored on disk.
    /// Returns `false` (and counts it) if the send queue is full.
    pub fn send(&self, env: Envelope) -> bool {
        match self.outgoing.try_send(env) {
            Ok(()) => true,
            Err(e) => {
                let n = self
                    .shared
                    .dropped_outgoing
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    + 1;
                warn!(
                    kind = e.into_inner().kind(),
                    dropped_total = n,
                    "cloud send queue full: frame dropped"
                );
                false
            }
        }
    }

    /// Queues a video frame behind everything else on the link. Never waits: when the queue is
    /// full (the link is slower than the camera, or down) the frame is dropped, counted, and
    /// `false` comes back.
    pub fn send_video(&self, env: Envelope) -> bool {
        match self.video.try_send(env) {
            Ok(()) => true,
            Err(_) => {
                self.shared
                    .dropped_video
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                false
            }
        }
    }

    /// Video frames dropped since the link started (queue full, or link down).
    pub fn video_dropped(&self) -> u64 {
        self.shared
            .dropped_video
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Replaces the telemetry waiting to be sent: newest wins, nothing is queued.
    pub fn set_telemetry(&self, env: Envelope) {
        self.telemetry.send_replace(Some(env));
    }

    /// Replaces the frame sent first on every new connection.
    pub fn set_hello(&self, env: Envelope) {
        self.hello.send_replace(env);
    }

    pub fn status(&self) -> watch::Receiver<LinkStatus> {
        self.status.clone()
    }

    /// Events still waiting for their acknowledgement.
    pub fn pending_events(&self) -> usize {
        self.shared.outbox.lock().map(|o| o.len()).unwrap_or(0)
    }

    /// Closes the connection and stops dialling. Events still pending stay on disk.
    pub async fn close(&self) {
        self.shutdown.send_replace(true);
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for CloudLink {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// The upgrade request for one relay: its URL, the bearer token and the agent id.
fn request_for(
    url: &str,
    token: &str,
    agent_id: &str,
) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, LinkError> {
    let bad = |reason: String| LinkError::BadUrl {
        url: url.to_owned(),
        reason,
    };
    let mut request = url.into_client_request().map_err(|e| bad(e.to_string()))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|e| bad(format!("token: {e}")))?;
    let id = HeaderValue::from_str(agent_id).map_err(|e| bad(format!("agent id: {e}")))?;
    request.headers_mut().insert("Authorization", bearer);
    request.headers_mut().insert(AGENT_ID_HEADER, id);
    Ok(request)
}

struct Dialler {
    cfg: CloudConfig,
    /// One per relay, in the configured order; a lost connection moves on to the next.
    requests: Vec<tokio_tungstenite::tungstenite::handshake::client::Request>,
    shared: Arc<Shared>,
    outgoing: mpsc::Receiver<Envelope>,
    video: mpsc::Receiver<Envelope>,
    incoming: mpsc::Sender<Envelope>,
    telemetry: watch::Receiver<Option<Envelope>>,
    hello: watch::Receiver<Envelope>,
    status: watch::Sender<LinkStatus>,
    stop: watch::Receiver<bool>,
}

impl Dialler {
    async fn run(mut self) {
        let mut attempt: u32 = 0;
        let mut down_since = SystemTime::now();
        let mut relay = 0usize;
        loop {
            if *self.stop.borrow() {
                return;
            }
            self.status.send_replace(LinkStatus::Connecting { attempt });
            let timeout = CloudConfig::secs(self.cfg.connect_timeout_s);
            // Small buffers: a drone's frames are a few hundred bytes; tungstenite's defaults
            // (128 KiB read buffer) are sized for servers moving bulk data.
            let ws_config = WebSocketConfig::default()
                .read_buffer_size(16 * 1024)
                .write_buffer_size(16 * 1024)
                .max_message_size(Some(protocol::MAX_MESSAGE_BYTES))
                .max_frame_size(Some(protocol::MAX_MESSAGE_BYTES));
            let request = self.requests[relay % self.requests.len()].clone();
            let url = request.uri().to_string();
            let dial = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true);
            let reason = match tokio::time::timeout(timeout, dial).await {
                Ok(Ok((ws, _response))) => {
                    attempt = 0;
                    info!(%url, "connected");
                    self.status.send_replace(LinkStatus::Connected {
                        since: SystemTime::now(),
                    });
                    let reason = self.session(ws).await;
                    down_since = SystemTime::now();
                    reason
                }
                Ok(Err(e)) => format!("connect failed: {e}"),
                Err(_) => format!("connect timed out after {timeout:?}"),
            };
            if *self.stop.borrow() {
                self.status.send_replace(LinkStatus::Disconnected {
                    since: SystemTime::now(),
                    reason: "closed".into(),
                });
                return;
            }
            let delay = self.backoff(attempt);
            // a dead relay or a lost link: the next relay in the list (a cluster shares the
            // fleet, so any of them will do); with one relay this is the same one again
            relay = (relay + 1) % self.requests.len();
            warn!(%url, %reason, attempt, retry_in_ms = delay.as_millis() as u64, "cloud link down");
            self.status.send_replace(LinkStatus::Disconnected {
                since: down_since,
                reason,
            });
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.changed() => {}
            }
        }
    }

    /// 1, 2, 4, 8, 16 s (with the defaults), capped, plus up to `jitter` of itself at random.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.cfg.backoff_initial_s * 2f64.powi(attempt.min(30) as i32);
        let capped = base.min(self.cfg.backoff_max_s);
        let jitter = capped * self.cfg.backoff_jitter * rand::random::<f64>();
        CloudConfig::secs(capped + jitter)
    }

    /// One connection's life; returns why it ended.
    async fn session(
        &mut self,
        ws: tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    ) -> String {
        let (mut sink, mut stream) = ws.split();
        macro_rules! send {
            ($env:expr) => {
                if let Err(e) = sink.send(WsMessage::text($env.to_json())).await {
                    return format!("send failed: {e}");
                }
            };
        }
        let hello = self.hello.borrow().clone();
        send!(Envelope {
            timestamp: Some(chrono_now()),
            ..hello
        });
        // Every unacknowledged event, oldest first: the backend may see an id twice, never a gap.
        let mut sent: HashMap<Uuid, Instant> = HashMap::new();
        for ev in self.unsent(&sent) {
            sent.insert(ev.event_id.unwrap_or_default(), Instant::now());
            send!(Envelope::new(ev));
        }
        let latest = self.telemetry.borrow_and_update().clone();
        if let Some(t) = latest {
            send!(t);
        }
        let ping_every = CloudConfig::secs(self.cfg.ping_interval_s);
        let resend_after = CloudConfig::secs(self.cfg.event_resend_s);
        let mut ping = tokio::time::interval(ping_every);
        ping.reset();
        let mut resend = tokio::time::interval(resend_after / 2);
        let mut last_heard = Instant::now();
        // pictures queued while the link was down are stale: drop them, counted
        while self.video.try_recv().is_ok() {
            self.shared
                .dropped_video
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        loop {
            // Biased, video last: a video frame is written only when nothing else is waiting, so
            // it can delay an ack or an event by at most the one frame already being written.
            tokio::select! {
                biased;
                _ = self.stop.changed() => {
                    let _ = sink.send(WsMessage::Close(None)).await;
                    return "closed".into();
                }
                frame = stream.next() => {
                    let frame = match frame {
                        None => return "closed by relay".into(),
                        Some(Err(e)) => return format!("receive failed: {e}"),
                        Some(Ok(f)) => f,
                    };
                    last_heard = Instant::now();
                    match frame {
                        WsMessage::Text(text) => {
                            if let Some(reply) = self.on_text(text.as_str()).await {
                                send!(reply);
                            }
                        }
                        WsMessage::Close(_) => return "closed by relay".into(),
                        // tungstenite queues the pong itself; flushing sends it now.
                        WsMessage::Ping(_) => {
                            if let Err(e) = sink.flush().await {
                                return format!("send failed: {e}");
                            }
                        }
                        _ => {}
                    }
                }
                Some(env) = self.outgoing.recv() => send!(env),
                _ = self.shared.new_event.notified() => {
                    for ev in self.unsent(&sent) {
                        sent.insert(ev.event_id.unwrap_or_default(), Instant::now());
                        send!(Envelope::new(ev));
                    }
                }
                Ok(()) = self.telemetry.changed() => {
                    let latest = self.telemetry.borrow_and_update().clone();
                    if let Some(t) = latest {
                        send!(t);
                    }
                }
                _ = resend.tick() => {
                    let due: Vec<Event> = self.pending().into_iter()
                        .filter(|e| sent.get(&e.event_id.unwrap_or_default()).is_none_or(|t| t.elapsed() >= resend_after))
                        .collect();
                    for ev in due {
                        debug!(event_id = ?ev.event_id, seq = ev.seq, "re-sending unacknowledged event");
                        sent.insert(ev.event_id.unwrap_or_default(), Instant::now());
                        send!(Envelope::new(ev));
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > ping_every * 2 {
                        return format!("relay silent for {:?}", last_heard.elapsed());
                    }
                    if let Err(e) = sink.send(WsMessage::Ping(Vec::new().into())).await {
                        return format!("send failed: {e}");
                    }
                }
                Some(env) = self.video.recv() => send!(env),
            }
        }
    }

    /// Handles one text frame; returns a reply to send, if any.
    async fn on_text(&mut self, text: &str) -> Option<Envelope> {
        match Envelope::from_json(text) {
            Ok(env) => {
                if let Message::EventAck(ack) = &env.message {
                    let shared = self.shared.clone();
                    let id = ack.event_id;
                    let res = tokio::task::spawn_blocking(move || {
                        shared
                            .outbox
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .ack(id)
                    })
                    .await;
                    match res {
                        Ok(Ok(_)) => debug!(event_id = %id, "event acknowledged"),
                        Ok(Err(e)) => {
                            error!(error = %e, "could not drop an acknowledged event from the outbox")
                        }
                        Err(e) => error!(error = %e, "outbox task failed"),
                    }
                    return None;
                }
                if self.incoming.send(env).await.is_err() {
                    debug!("agent stopped reading cloud frames");
                }
                None
            }
            Err(e) => {
                warn!(error = %e, "malformed frame from the cloud");
                Some(Envelope::new(ErrorMessage {
                    code: e.code().into(),
                    message: e.to_string(),
                    in_reply_to: None,
                }))
            }
        }
    }

    fn pending(&self) -> Vec<Event> {
        self.shared
            .outbox
            .lock()
            .map(|o| o.pending().cloned().collect())
            .unwrap_or_default()
    }

    fn unsent(&self, sent: &HashMap<Uuid, Instant>) -> Vec<Event> {
        self.pending()
            .into_iter()
            .filter(|e| !sent.contains_key(&e.event_id.unwrap_or_default()))
            .collect()
    }
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}
