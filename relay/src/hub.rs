//! The live connections and the routing between them. No I/O happens here: connection tasks
//! (in [`crate::conn`]) read sockets and call in; the hub puts frames on other connections'
//! bounded queues and never waits, so one slow peer can only ever fill its own queue.
//!
//! # When a queue fills
//!
//! Every connection has a bounded outbound queue (`[queues]` in the config).
//! - Telemetry and video frames are *lossy*: they are shed (dropped, newest first: the frame
//!   being offered) as soon as the queue is fuller than `lossy_shed_fraction`. The next
//!   telemetry frame says the same thing more recently.
//! - Any other frame (event, ack, locker response, presence, error, and everything sent to an
//!   agent) that finds the queue completely full closes that slow connection (close code 1013,
//!   "try again later") rather than drop a frame that matters silently. The peer reconnects;
//!   agents re-send unacknowledged events from disk, and a backend gets the presence snapshot.
//!
//! Both are counted: `relay_queue_full_total{peer}` and `relay_dropped_frames_total{reason}`.
//!
//! # Ordering of presence
//!
//! Presence frames are put on the backends' queues while the agent map is locked, and a backend
//! registers (taking its snapshot of who is connected) under the same lock, so a backend never
//! sees `disconnected` before the `connected` it describes.

use crate::auth::{AgentKind, Authenticator, TokenMark};
use crate::cluster::{Cluster, Command};
use crate::config::Config;
use crate::conn::ConnSettings;
use crate::fleet::{Fleet, Revocation};
use crate::metrics::{kind_index, DropReason, Metrics, Side};
use protocol::ws::{
    ErrorMessage, LockerOp, LockerRequest, LockerResponse, Peer, PeerKind, Presence, PresenceStatus,
};
use protocol::{Envelope, Message};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, TryLockError};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};
use tungstenite::Utf8Bytes;
use uuid::Uuid;

/// An agent by kind and id.
pub type AgentKey = (AgentKind, Uuid);

/// One frame waiting on a connection's queue, already serialised (shared, not copied, between
/// the backends of a fan-out).
#[derive(Debug)]
pub struct Outbound {
    pub frame: Utf8Bytes,
    /// Index into [`Message::KINDS`], for the `frames_out` metric.
    pub kind: u8,
    /// When the agent frame this came from was read (for the forward-latency histogram).
    pub read_at: Option<Instant>,
}

/// Why the hub asks a connection to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KickReason {
    /// The same agent connected again; the newest connection wins.
    Replaced,
    /// Its queue was full for a frame that must not be lost.
    SlowConsumer,
    /// A fleet reload took its credentials away.
    Revoked(Revocation),
    /// The agent connected to another relay of the cluster, more recently.
    Moved,
    /// The relay is shutting down (close 1001, "going away").
    Shutdown,
}

/// One connection's bounded outbound queue, and the hub's way to ask that connection to close.
///
/// Hand-rolled rather than a tokio mpsc channel for memory: a channel allocates a block of 32
/// slots when it is created, about 2 KiB per connection, while an empty `VecDeque` allocates
/// nothing. Most agents are sent nothing for minutes at a time, so at 10,000 agents that is
/// 20 MiB saved. Offers never wait: a full queue is reported to the caller.
///
/// One `Notify` wakes the connection for both reasons (frames queued, or a kick): the task
/// waits on one future instead of two, and looks at [`Queue::kick_reason`] first when woken.
#[derive(Debug)]
pub struct Queue {
    items: Mutex<VecDeque<Outbound>>,
    capacity: usize,
    /// Lossy frames are queued only while fewer than this many frames wait.
    lossy_limit: usize,
    wake: Notify,
    /// 0 while the connection may live; otherwise why the hub wants it closed.
    kick_reason: AtomicU8,
    closed: AtomicBool,
}

impl Queue {
    fn new(capacity: usize, lossy_limit: usize) -> Self {
        Self {
            items: Mutex::new(VecDeque::new()),
            capacity,
            lossy_limit,
            wake: Notify::new(),
            kick_reason: AtomicU8::new(0),
            closed: AtomicBool::new(false),
        }
    }

    fn offer(&self, item: Outbound, lossy: bool) -> Offer {
        if self.closed.load(Ordering::Relaxed) {
            return Offer::Closed;
        }
        let mut items = lock(&self.items);
        if lossy && items.len() >= self.lossy_limit.min(self.capacity) {
            return Offer::Shed;
        }
        if items.len() >= self.capacity {
            return Offer::Full;
        }
        items.push_back(item);
        drop(items);
        // stores a permit if the connection task is busy: it will look again
        self.wake.notify_one();
        Offer::Queued
    }

    /// Resolves when frames may be waiting or the connection was kicked (spuriously at
    /// times): look at [`Queue::kick_reason`], then drain and see.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Stores a wake-up for the connection task (one it took while busy elsewhere).
    pub fn wake_again(&self) {
        self.wake.notify_one();
    }

    /// Moves up to `max` queued frames into `out`; if more remain, arranges another wake-up so
    /// the connection task gets back to them after serving its other duties.
    pub fn drain_into(&self, out: &mut Vec<Outbound>, max: usize) {
        let mut items = lock(&self.items);
        let n = items.len().min(max);
        out.extend(items.drain(..n));
        if !items.is_empty() {
            self.wake.notify_one();
        }
    }

    fn kick(&self, reason: KickReason) {
        let code = match reason {
            KickReason::Replaced => 1,
            KickReason::SlowConsumer => 2,
            KickReason::Revoked(Revocation::Removed) => 3,
            KickReason::Revoked(Revocation::Disabled) => 4,
            KickReason::Revoked(Revocation::TokenChanged) => 5,
            KickReason::Moved => 6,
            KickReason::Shutdown => 7,
        };
        self.kick_reason.store(code, Ordering::Relaxed);
        // notify_one stores a permit, so a task not waiting right now still sees it
        self.wake.notify_one();
    }

    /// Why the hub wants this connection closed, once it does.
    pub fn kick_reason(&self) -> Option<KickReason> {
        Some(match self.kick_reason.load(Ordering::Relaxed) {
            0 => return None,
            1 => KickReason::Replaced,
            3 => KickReason::Revoked(Revocation::Removed),
            4 => KickReason::Revoked(Revocation::Disabled),
            5 => KickReason::Revoked(Revocation::TokenChanged),
            6 => KickReason::Moved,
            7 => KickReason::Shutdown,
            _ => KickReason::SlowConsumer,
        })
    }

    /// The connection is gone: refuse further frames and free what is queued.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let mut items = lock(&self.items);
        items.clear();
        items.shrink_to_fit();
    }
}

/// What a connection task gets when it registers.
#[derive(Debug)]
pub struct Registration {
    pub conn: u64,
    pub queue: Arc<Queue>,
}

struct Slot {
    conn: u64,
    queue: Arc<Queue>,
    silent: bool,
    /// When this connection started, µs since the epoch (in a cluster, the newer wins).
    since: i64,
    /// Closed because the agent connected to another relay: no `disconnected` for it.
    moved: bool,
}

/// Why a frame from the backend could not be routed (each answered with an `error` frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no such agent in the relay's config")]
    UnknownAgent,
    #[error("agent is not connected")]
    Offline,
    #[error("agent's queue was full: its connection was closed as too slow")]
    Overloaded,
    #[error("agent is on another relay and the broker is unreachable")]
    ClusterDown,
}

/// Why an HTTP bridge call got no answer from the locker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BridgeFailure {
    #[error("no such locker in the relay's config")]
    UnknownLocker,
    #[error("locker is not connected")]
    Offline,
    #[error("locker disconnected before answering")]
    Disconnected,
    #[error("locker did not answer in time")]
    Timeout,
}

/// An agent another relay holds, as its presence said.
struct RemoteAgent {
    relay: String,
    since: i64,
    silent: bool,
}

struct Pending {
    locker: Uuid,
    reply: oneshot::Sender<Result<LockerResponse, BridgeFailure>>,
}

enum Offer {
    Queued,
    Shed,
    Full,
    Closed,
}

/// Queue limits, from `[queues]`.
#[derive(Debug, Clone, Copy)]
struct Limits {
    backend_frames: usize,
    agent_frames: usize,
    /// Lossy frames are shed once this many frames wait on a backend queue.
    backend_lossy_limit: usize,
    agent_lossy_limit: usize,
}

pub struct Hub {
    pub auth: Authenticator,
    pub metrics: Arc<Metrics>,
    limits: Limits,
    agents: Mutex<HashMap<AgentKey, Slot>>,
    backends: RwLock<Vec<Slot>>,
    pending: Mutex<HashMap<Uuid, Pending>>,
    /// Agents held by other relays of the cluster (empty without one).
    remote: Mutex<HashMap<AgentKey, RemoteAgent>>,
    cluster: OnceLock<Arc<Cluster>>,
    next_conn: AtomicU64,
    relay_peer: Peer,
    /// Set (with the agent map locked) when the relay shuts down: a connection that registers
    /// after it is closed at once.
    shutting_down: AtomicBool,
    /// Every connection's settings, here rather than copied into each connection's task.
    pub settings: ConnSettings,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves consistent data here (every critical
    // section is a map insert/remove), so keep serving rather than poison every connection.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How many frames may wait before lossy ones are shed: the configured fraction of the queue,
/// at least one.
fn lossy_limit(capacity: usize, fraction: f64) -> usize {
    ((capacity as f64 * fraction).floor() as usize).clamp(1, capacity.max(1))
}

/// Is this a frame that may be shed under load?
pub fn is_lossy(message: &Message) -> bool {
    matches!(message, Message::Telemetry(_) | Message::VideoFrame(_))
}

/// The id a reply to this message should name in `in_reply_to`, when it has one.
pub fn message_id(message: &Message) -> Option<String> {
    let id = match message {
        Message::Task(t) => t.delivery_id,
        Message::Command(c) => c.cmd_id?,
        Message::Ack(a) => a.cmd_id,
        Message::Event(e) => e.event_id?,
        Message::EventAck(a) => a.event_id,
        Message::LockerRequest(r) => r.request_id,
        Message::LockerResponse(r) => r.request_id,
        Message::QrValidate(q) => q.request_id,
        Message::QrValidation(q) => q.request_id,
        _ => return None,
    };
    Some(id.to_string())
}

impl Hub {
    pub fn new(config: &Config, fleet: Option<&Fleet>) -> Self {
        let q = &config.queues;
        Self {
            auth: Authenticator::new(config, fleet),
            metrics: Arc::new(Metrics::default()),
            limits: Limits {
                backend_frames: q.backend_frames,
                agent_frames: q.agent_frames,
                backend_lossy_limit: lossy_limit(q.backend_frames, q.lossy_shed_fraction),
                agent_lossy_limit: lossy_limit(q.agent_frames, q.lossy_shed_fraction),
            },
            agents: Mutex::new(HashMap::new()),
            backends: RwLock::new(Vec::new()),
            pending: Mutex::new(HashMap::new()),
            remote: Mutex::new(HashMap::new()),
            cluster: OnceLock::new(),
            next_conn: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            settings: ConnSettings::from_config(config),
            relay_peer: Peer {
                kind: PeerKind::Relay,
                id: "relay".to_owned(),
            },
        }
    }

    /// Takes each of the hub's locks once and lets go; false if one stays taken through a
    /// hundred tries (each hub critical section is a map insert or a queue offer: microseconds).
    /// It never blocks the thread: a wedged hub makes this say so rather than wedge the caller
    /// (blocking a runtime worker can stall the runtime's timers and sockets with it).
    pub async fn probe(&self) -> bool {
        for _ in 0..100 {
            let free = matches!(
                self.agents.try_lock(),
                Ok(_) | Err(TryLockError::Poisoned(_))
            ) && matches!(
                self.backends.try_read(),
                Ok(_) | Err(TryLockError::Poisoned(_))
            ) && matches!(
                self.pending.try_lock(),
                Ok(_) | Err(TryLockError::Poisoned(_))
            );
            if free {
                return true;
            }
            tokio::task::yield_now().await;
        }
        false
    }

    /// Holds the agent map locked (says so on `locked`) until `release` says so or is dropped:
    /// a wedged hub, for the watchdog's test.
    #[doc(hidden)]
    pub fn hold_locked_until_signalled(
        &self,
        release: std::sync::mpsc::Receiver<()>,
        locked: oneshot::Sender<()>,
    ) {
        let _held = lock(&self.agents);
        let _ = locked.send(());
        let _ = release.recv();
    }

    /// An `error` frame from the relay itself (its `source` says so).
    pub fn error_frame(
        &self,
        code: &str,
        message: impl Into<String>,
        in_reply_to: Option<String>,
    ) -> Envelope {
        Envelope::new(ErrorMessage {
            code: code.to_owned(),
            message: message.into(),
            in_reply_to,
        })
        .with_source(self.relay_peer.clone())
    }

    fn presence_frame(&self, key: AgentKey, status: PresenceStatus) -> Utf8Bytes {
        let peer = Peer {
            kind: key.0.peer_kind(),
            id: key.1.to_string(),
        };
        Envelope::new(Presence { peer, status })
            .with_source(self.relay_peer.clone())
            .to_json()
            .into()
    }

    fn new_conn(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    // -- agents -----------------------------------------------------------------------------

    /// Registers a freshly authenticated agent connection. An older connection of the same
    /// agent is closed (the newest wins: the old one is usually a dead 4G link TCP has not
    /// noticed yet), without a `disconnected` for it.
    pub fn register_agent(&self, key: AgentKey, mark: TokenMark) -> Registration {
        let queue = Arc::new(Queue::new(
            self.limits.agent_frames,
            self.limits.agent_lossy_limit,
        ));
        let conn = self.new_conn();
        let since = chrono::Utc::now().timestamp_micros();
        let slot = Slot {
            conn,
            queue: queue.clone(),
            silent: false,
            since,
            moved: false,
        };
        let mut agents = lock(&self.agents);
        // a fleet reload that revoked this agent, or changed its token, after it authenticated
        // and before it got here (checked under `agents`: a reload kicks what it finds there
        // after putting the new fleet in force, so one of the two sees the other)
        if let Err(why) = self.auth.still_allows(key.0, key.1, mark) {
            queue.kick(KickReason::Revoked(why));
        }
        if self.shutting_down.load(Ordering::Relaxed) {
            queue.kick(KickReason::Shutdown);
        }
        let replaced = agents.insert(key, slot);
        // held here now, whatever another relay said before
        lock(&self.remote).remove(&key);
        if let Some(old) = &replaced {
            old.queue.kick(KickReason::Replaced);
            self.metrics.replaced();
        }
        self.broadcast_presence(key, PresenceStatus::Connected);
        if let Some(c) = self.cluster.get() {
            // announce first, then bind: see `cluster` ("one owner")
            c.send(Command::Presence {
                key,
                frame: self.presence_frame(key, PresenceStatus::Connected),
                since,
            });
            c.send(Command::Bind(key));
        }
        drop(agents);
        if replaced.is_some() && key.0 == AgentKind::Locker {
            // requests queued on the old connection die with it
            self.fail_locker_calls(key.1);
        }
        Registration { conn, queue }
    }

    /// Closes every connection with 1001 "going away" (the relay is shutting down), and any
    /// that registers from now on. The kick replaces a shutdown `watch` each connection task
    /// waited on: one future less in each of twenty thousand tasks.
    pub fn shutdown(&self) {
        let agents = lock(&self.agents);
        self.shutting_down.store(true, Ordering::Relaxed);
        for slot in agents.values() {
            slot.queue.kick(KickReason::Shutdown);
        }
        let backends = self.backends.read().unwrap_or_else(PoisonError::into_inner);
        for b in backends.iter() {
            b.queue.kick(KickReason::Shutdown);
        }
        drop(backends);
        drop(agents);
    }

    /// Puts a reloaded fleet in force: agents no longer allowed are closed (4401, with the
    /// reason), every other connection is left alone. Returns what was revoked.
    pub fn replace_fleet(&self, fleet: &Fleet) -> Vec<(AgentKey, Revocation)> {
        let gone = self.auth.replace_fleet(fleet);
        let agents = lock(&self.agents);
        for (key, why) in &gone {
            if let Some(slot) = agents.get(key) {
                slot.queue.kick(KickReason::Revoked(*why));
            }
        }
        gone
    }

    /// Removes an agent connection when its task ends; tells the backends and fails any
    /// bridge call still waiting on that locker, unless a newer connection replaced it.
    pub fn unregister_agent(&self, key: AgentKey, conn: u64) {
        let mut agents = lock(&self.agents);
        if agents.get(&key).is_some_and(|s| s.conn == conn) {
            let slot = agents.remove(&key);
            let moved = slot.is_some_and(|s| s.moved);
            if let Some(c) = self.cluster.get() {
                c.send(Command::Unbind(key));
                if !moved {
                    c.send(Command::Presence {
                        key,
                        frame: self.presence_frame(key, PresenceStatus::Disconnected),
                        since: 0,
                    });
                }
            }
            if !moved {
                self.broadcast_presence(key, PresenceStatus::Disconnected);
            }
            drop(agents);
            if key.0 == AgentKind::Locker {
                self.fail_locker_calls(key.1);
            }
        }
    }

    /// Answers every bridge call waiting on this locker with "disconnected" (its requests were
    /// on a connection that is gone; the caller hears so now rather than at the timeout).
    fn fail_locker_calls(&self, locker: Uuid) {
        let mut pending = lock(&self.pending);
        let ids: Vec<Uuid> = pending
            .iter()
            .filter(|(_, p)| p.locker == locker)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(p) = pending.remove(&id) {
                let _ = p.reply.send(Err(BridgeFailure::Disconnected));
            }
        }
    }

    /// Marks an agent silent (missed pongs) or alive again, telling the backends on a change.
    pub fn set_silent(&self, key: AgentKey, conn: u64, silent: bool) {
        let mut agents = lock(&self.agents);
        if let Some(slot) = agents.get_mut(&key).filter(|s| s.conn == conn) {
            if slot.silent != silent {
                slot.silent = silent;
                if silent {
                    self.metrics.silent();
                }
                let status = if silent {
                    PresenceStatus::Silent
                } else {
                    PresenceStatus::Connected
                };
                self.broadcast_presence(key, status);
                if let Some(c) = self.cluster.get() {
                    c.send(Command::Presence {
                        key,
                        frame: self.presence_frame(key, status),
                        since: slot.since,
                    });
                }
            }
        }
    }

    /// Called with the agent map locked (see "Ordering of presence").
    fn broadcast_presence(&self, key: AgentKey, status: PresenceStatus) {
        let frame = self.presence_frame(key, status);
        self.to_backends(frame, kind_index("presence"), false, None);
    }

    /// Puts one agent frame (already stamped with its source) on every backend's queue, and
    /// in a cluster publishes it for the other relays and AMQP backends.
    pub fn from_agent(
        &self,
        key: AgentKey,
        frame: Utf8Bytes,
        kind: usize,
        lossy: bool,
        read_at: Instant,
    ) {
        let mut published = false;
        if let Some(c) = self.cluster.get() {
            published = c.is_up()
                && c.send(Command::Agent {
                    key,
                    kind: Message::KINDS.get(kind).copied().unwrap_or("invalid"),
                    frame: frame.clone(),
                    lossy,
                });
            if !published {
                // the agent's outbox re-sends an event until a backend acknowledges it
                self.metrics.dropped(DropReason::ClusterDown);
            }
        }
        // a frame handed to the broker is not dropped for want of a backend here: the
        // cluster's backends (another relay's, or on AMQP) get it
        if published
            && self
                .backends
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
        {
            return;
        }
        self.to_backends(frame, kind, lossy, Some(read_at));
    }

    // -- the cluster (see `crate::cluster`) ---------------------------------------------------

    /// Connects the hub to the broker task (once, at start).
    pub fn set_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// The presence of every local agent with its connect time (for a relay that says hello).
    pub fn local_presence(&self) -> Vec<(AgentKey, Utf8Bytes, i64)> {
        let agents = lock(&self.agents);
        agents
            .iter()
            .filter(|(_, s)| !s.moved)
            .map(|(k, s)| {
                let status = if s.silent {
                    PresenceStatus::Silent
                } else {
                    PresenceStatus::Connected
                };
                (*k, self.presence_frame(*k, status), s.since)
            })
            .collect()
    }

    /// A frame from the broker for a local agent.
    pub fn from_cluster_to_agent(&self, key: AgentKey, frame: Utf8Bytes) {
        let kind = Envelope::from_json(frame.as_str())
            .map(|e| kind_index(e.kind()))
            .unwrap_or(Message::KINDS.len());
        let agents = lock(&self.agents);
        match agents.get(&key).filter(|s| !s.moved) {
            Some(slot) => {
                let item = Outbound {
                    frame,
                    kind: kind as u8,
                    read_at: None,
                };
                if !matches!(slot.queue.offer(item, false), Offer::Queued) {
                    self.metrics.queue_full(agent_side(key.0));
                    self.metrics.dropped(DropReason::QueueFullClosed);
                    slot.queue.kick(KickReason::SlowConsumer);
                }
            }
            None => self.metrics.dropped(DropReason::AgentOffline),
        }
    }

    /// A frame another relay published for one of its agents: presence updates the fleet view
    /// (and may close an older local connection of that agent); a locker's answer may complete
    /// a bridge call waiting here; anything else goes to this relay's backends.
    pub fn from_cluster(&self, key: AgentKey, kind: &str, relay: &str, since: i64, text: &str) {
        if kind == "locker_response" && key.0 == AgentKind::Locker {
            if let Ok(env) = Envelope::from_json(text) {
                if let Message::LockerResponse(r) = &env.message {
                    if self.complete_locker_call(key.1, r) {
                        return;
                    }
                }
            }
        }
        if kind != "presence" {
            let lossy = kind == "telemetry" || kind == "video_frame";
            self.to_backends(
                Utf8Bytes::from(text.to_owned()),
                kind_index(kind),
                lossy,
                None,
            );
            return;
        }
        let Ok(env) = Envelope::from_json(text) else {
            return;
        };
        let Message::Presence(p) = &env.message else {
            return;
        };
        let mut agents = lock(&self.agents);
        let mut remote = lock(&self.remote);
        let self_id = self
            .cluster
            .get()
            .map(|c| c.relay_id.as_str())
            .unwrap_or("");
        match p.status {
            PresenceStatus::Connected | PresenceStatus::Silent => {
                if let Some(slot) = agents.get_mut(&key).filter(|s| !s.moved) {
                    if (since, relay) > (slot.since, self_id) {
                        // the agent connected again, to another relay: that one owns it now
                        slot.moved = true;
                        slot.queue.kick(KickReason::Moved);
                        self.metrics.replaced();
                    } else {
                        return; // an older connection elsewhere: this relay's is the owner
                    }
                }
                if remote
                    .get(&key)
                    .is_some_and(|r| r.relay != relay && r.since > since)
                {
                    return; // stale: a newer connection of it is known elsewhere
                }
                remote.insert(
                    key,
                    RemoteAgent {
                        relay: relay.to_owned(),
                        since,
                        silent: p.status == PresenceStatus::Silent,
                    },
                );
            }
            PresenceStatus::Disconnected => {
                if remote.get(&key).is_some_and(|r| r.relay == relay) {
                    remote.remove(&key);
                } else {
                    return; // about a connection that is no longer the owner
                }
                if agents.contains_key(&key) {
                    return;
                }
            }
        }
        drop(remote);
        self.to_backends(
            Utf8Bytes::from(text.to_owned()),
            kind_index("presence"),
            false,
            None,
        );
        drop(agents);
    }

    /// The relay of the cluster that holds this agent, as far as this relay has heard.
    pub fn held_by(&self, key: AgentKey) -> Option<String> {
        lock(&self.remote).get(&key).map(|r| r.relay.clone())
    }

    /// A relay whose lease ran out: its agents are disconnected as far as this relay can tell.
    pub fn relay_gone(&self, relay: &str) {
        let agents = lock(&self.agents);
        let mut remote = lock(&self.remote);
        let gone: Vec<AgentKey> = remote
            .iter()
            .filter(|(_, r)| r.relay == relay)
            .map(|(k, _)| *k)
            .collect();
        for key in gone {
            remote.remove(&key);
            if !agents.contains_key(&key) {
                self.broadcast_presence(key, PresenceStatus::Disconnected);
            }
        }
    }

    fn to_backends(&self, frame: Utf8Bytes, kind: usize, lossy: bool, read_at: Option<Instant>) {
        let backends = self.backends.read().unwrap_or_else(PoisonError::into_inner);
        if backends.is_empty() {
            // presence with nobody to tell is not a lost frame: a backend that connects later
            // gets the snapshot instead
            if read_at.is_some() {
                self.metrics.dropped(DropReason::NoBackend);
            }
            return;
        }
        for b in backends.iter() {
            let item = Outbound {
                frame: frame.clone(),
                kind: kind as u8,
                read_at,
            };
            match b.queue.offer(item, lossy) {
                Offer::Queued => {}
                Offer::Shed => {
                    self.metrics.queue_full(Side::Backend);
                    self.metrics.dropped(DropReason::QueueFullLossy);
                }
                Offer::Full => {
                    self.metrics.queue_full(Side::Backend);
                    self.metrics.dropped(DropReason::QueueFullClosed);
                    b.queue.kick(KickReason::SlowConsumer);
                }
                Offer::Closed => self.metrics.dropped(DropReason::ConnectionClosed),
            }
        }
    }

    /// Puts a frame from the backend on an agent's queue.
    pub fn to_agent(&self, key: AgentKey, frame: Utf8Bytes, kind: usize) -> Result<(), RouteError> {
        if !self.auth.knows(key.0, key.1) {
            self.metrics.dropped(DropReason::UnknownAgent);
            return Err(RouteError::UnknownAgent);
        }
        let agents = lock(&self.agents);
        let Some(slot) = agents.get(&key).filter(|s| !s.moved) else {
            drop(agents);
            return self.to_remote_agent(key, frame);
        };
        let item = Outbound {
            frame,
            kind: kind as u8,
            read_at: None,
        };
        match slot.queue.offer(item, false) {
            Offer::Queued => Ok(()),
            Offer::Full | Offer::Shed => {
                self.metrics.queue_full(agent_side(key.0));
                self.metrics.dropped(DropReason::QueueFullClosed);
                slot.queue.kick(KickReason::SlowConsumer);
                Err(RouteError::Overloaded)
            }
            Offer::Closed => {
                self.metrics.dropped(DropReason::ConnectionClosed);
                Err(RouteError::Offline)
            }
        }
    }

    /// A frame for an agent this relay does not hold: through the broker to the relay that
    /// does, if one does.
    fn to_remote_agent(&self, key: AgentKey, frame: Utf8Bytes) -> Result<(), RouteError> {
        let held_elsewhere = lock(&self.remote).contains_key(&key);
        match self.cluster.get() {
            Some(c) if held_elsewhere => {
                if c.is_up() && c.send(Command::ToAgent { key, frame }) {
                    Ok(())
                } else {
                    self.metrics.dropped(DropReason::ClusterDown);
                    Err(RouteError::ClusterDown)
                }
            }
            _ => {
                self.metrics.dropped(DropReason::AgentOffline);
                Err(RouteError::Offline)
            }
        }
    }

    // -- backends ---------------------------------------------------------------------------

    /// Registers a backend connection. Returns, with it, a `presence` frame for every agent
    /// connected right now (the snapshot the backend writes before anything on its queue).
    pub fn register_backend(&self) -> (Registration, Vec<Utf8Bytes>) {
        let queue = Arc::new(Queue::new(
            self.limits.backend_frames,
            self.limits.backend_lossy_limit,
        ));
        let conn = self.new_conn();
        let agents = lock(&self.agents);
        let snapshot = agents
            .iter()
            .map(|(key, slot)| {
                let status = if slot.silent {
                    PresenceStatus::Silent
                } else {
                    PresenceStatus::Connected
                };
                self.presence_frame(*key, status)
            })
            .collect::<Vec<_>>();
        // and the agents of the other relays (a cluster)
        let remote = lock(&self.remote);
        let snapshot = snapshot
            .into_iter()
            .chain(
                remote
                    .iter()
                    .filter(|(k, _)| !agents.contains_key(k))
                    .map(|(k, r)| {
                        let status = if r.silent {
                            PresenceStatus::Silent
                        } else {
                            PresenceStatus::Connected
                        };
                        self.presence_frame(*k, status)
                    }),
            )
            .collect();
        drop(remote);
        let mut backends = self
            .backends
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if self.shutting_down.load(Ordering::Relaxed) {
            queue.kick(KickReason::Shutdown);
        }
        backends.push(Slot {
            conn,
            queue: queue.clone(),
            silent: false,
            since: 0,
            moved: false,
        });
        // in a cluster, the first backend here makes this relay take every agent frame
        if let Some(c) = self.cluster.get() {
            c.set_backends(true);
        }
        drop(backends);
        drop(agents);
        (Registration { conn, queue }, snapshot)
    }

    pub fn unregister_backend(&self, conn: u64) {
        let mut backends = self
            .backends
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        backends.retain(|b| b.conn != conn);
        // the last one gone: the fleet's frames need not come here (presence still does)
        if let (true, Some(c)) = (backends.is_empty(), self.cluster.get()) {
            c.set_backends(false);
        }
    }

    // -- HTTP bridge ------------------------------------------------------------------------

    /// Sends one locker API operation to a locker and waits for its `locker_response`.
    pub async fn locker_call(
        &self,
        locker: Uuid,
        op: LockerOp,
        timeout: Duration,
    ) -> Result<LockerResponse, BridgeFailure> {
        let request_id = Uuid::new_v4();
        let (reply, answer) = oneshot::channel();
        lock(&self.pending).insert(request_id, Pending { locker, reply });
        // removes the entry however this future ends (answered, timed out, or the HTTP
        // client went away and the handler was dropped)
        let _guard = PendingGuard {
            hub: self,
            id: request_id,
        };
        let frame = Envelope::new(LockerRequest { request_id, op }).to_json();
        match self.to_agent(
            (AgentKind::Locker, locker),
            frame.into(),
            kind_index("locker_request"),
        ) {
            Ok(()) => {}
            Err(RouteError::UnknownAgent) => return Err(BridgeFailure::UnknownLocker),
            Err(RouteError::Offline | RouteError::Overloaded | RouteError::ClusterDown) => {
                return Err(BridgeFailure::Offline)
            }
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(BridgeFailure::Disconnected),
            Err(_) => Err(BridgeFailure::Timeout),
        }
    }

    /// Hands a locker's response to the bridge call waiting for it. Returns false (forward it
    /// to the backends instead) when no call from this relay is waiting for that id from that
    /// locker: a locker cannot answer another locker's request.
    pub fn complete_locker_call(&self, locker: Uuid, response: &LockerResponse) -> bool {
        let mut pending = lock(&self.pending);
        match pending.get(&response.request_id) {
            Some(p) if p.locker == locker => {
                if let Some(p) = pending.remove(&response.request_id) {
                    let _ = p.reply.send(Ok(response.clone()));
                }
                true
            }
            _ => false,
        }
    }
}

struct PendingGuard<'a> {
    hub: &'a Hub,
    id: Uuid,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.hub.pending).remove(&self.id);
    }
}

pub fn agent_side(kind: AgentKind) -> Side {
    match kind {
        AgentKind::Drone => Side::Drone,
        AgentKind::Locker => Side::Locker,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> Outbound {
        Outbound {
            frame: Utf8Bytes::from_static("{}"),
            kind: 0,
            read_at: None,
        }
    }

    #[test]
    fn lossy_frames_stop_at_the_shed_mark_others_at_capacity() {
        let q = Queue::new(4, lossy_limit(4, 0.5));
        assert!(matches!(q.offer(item(), true), Offer::Queued));
        assert!(matches!(q.offer(item(), true), Offer::Queued));
        assert!(matches!(q.offer(item(), true), Offer::Shed));
        assert!(matches!(q.offer(item(), false), Offer::Queued));
        assert!(matches!(q.offer(item(), false), Offer::Queued));
        assert!(matches!(q.offer(item(), false), Offer::Full));
        assert!(matches!(q.offer(item(), true), Offer::Shed));
        let mut out = Vec::new();
        q.drain_into(&mut out, 3);
        assert_eq!(out.len(), 3);
        q.close();
        assert!(matches!(q.offer(item(), false), Offer::Closed));
    }

    #[test]
    fn the_shed_mark_is_at_least_one_and_at_most_the_capacity() {
        assert_eq!(lossy_limit(64, 0.5), 32);
        assert_eq!(lossy_limit(64, 0.0), 1);
        assert_eq!(lossy_limit(64, 1.0), 64);
    }
}
