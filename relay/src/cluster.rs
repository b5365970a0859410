//! Several relays, one fleet, through RabbitMQ (`[cluster]` in the config; without it none of
//! this runs and the relay works alone).
//!
//! # Data flow
//! - Every frame an agent sends (stamped with its `source`) reaches the topic exchange
//!   `skypost.agents` with routing key `<kind>.<agent id>.<type>`: the relay publishes it to
//!   its own fanout exchange `skypost.agents.from.<relay id>`, bound to `skypost.agents` (so
//!   the keys are the same there). The relay's presence frames for its agents
//!   (`<kind>.<agent id>.presence`) and its heartbeat (`relay.<relay id>.heartbeat`) go to
//!   `skypost.agents` directly. A backend on AMQP consumes what it needs from there.
//! - Frames to an agent go to the topic exchange `skypost.to-agents` with routing key
//!   `<kind>.<agent id>` (publish there to reach an agent over AMQP).
//! - Each relay has one queue of its own (`skypost.relay.<relay id>`, exclusive: it dies with the
//!   relay's broker connection), bound to `skypost.agents` with `*.*.presence` and `relay.#`
//!   (its view of the fleet, always) and `locker.*.locker_response` (answers to its bridge
//!   calls); to every other relay's `skypost.agents.from.<relay id>` it has heard of, only while
//!   a WebSocket backend is connected to it (every agent frame of the other relays, for that
//!   backend: a relay without one does not take the fleet's traffic only to drop it, and none
//!   takes its own agents' frames back); and to `skypost.to-agents` with the key of each agent
//!   connected to it (bound on connect, unbound on disconnect). One queue, one consumer: what
//!   a relay learns arrives in the order the broker routed it. A backend that connects gets
//!   the fleet-wide snapshot at once (the presence bindings never go); agent frames published
//!   before the relay's bindings are made (the moment after a backend connects, or before a
//!   new relay is first heard of) are not delivered to it (telemetry is lossy; events are
//!   re-sent by the agents until acknowledged).
//! - Frames of a relay's own agents reach its own backends directly, so a broker outage does
//!   not stop a relay from serving the agents and backends connected to it.
//! - A relay publishes on several channels (`publish_channels`): the broker routes each
//!   channel's publishes in one process. Everything about one agent (its frames, presence,
//!   binding, frames to it) goes on the same channel, so the broker sees it in order.
//!
//! # Invariants
//! - An agent has one owner: the relay holding its newest connection. A relay announces a
//!   connection (presence `connected`, with the connect time in `x-since`) *before* it binds the
//!   agent's key; a relay that holds an older connection of the same agent closes it when the
//!   announcement reaches its queue ("replaced by a newer connection on another relay") — before
//!   any command routed to both queues, since both sit in the same FIFO queue.
//! - Presence is fleet-wide: each relay keeps the remote agents it has heard of, with the relay
//!   holding them; a backend that connects late gets them in its snapshot. A relay not heard
//!   from (heartbeat every `heartbeat_interval_s`) for `lease_s` has its agents reported
//!   `disconnected` to the backends of the relays that noticed: a relay killed with SIGKILL is
//!   seen within `lease_s + heartbeat_interval_s`.
//! - Publishes use publisher confirms and are pipelined: each is handed to the channel in the
//!   order made (its delivery tag taken at once) and its confirm awaited beside the others, so
//!   the task never waits for one frame's socket write or confirm before the next. Every
//!   unconfirmed publish is kept until its confirm: a nack or a lost connection re-publishes a
//!   frame that must not be lost (up to [`PUBLISH_TRIES`], on the next connection if the broker
//!   went away) and counts one that is dropped; while the broker
//!   is away, telemetry bound for other relays is dropped (counted) and a backend's frame for an
//!   agent on another relay is answered with an error at once. End to end, delivery is
//!   at-least-once by the agents' own outbox (events are re-sent until the backend's
//!   `event_ack` comes back) and by the backend's commands waiting for the agent's `ack`:
//!   the broker hop adds no new way to lose an acknowledged frame.

use crate::auth::AgentKind;
use crate::config::{secs, ClusterConfig};
use crate::hub::{AgentKey, Hub};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt as _;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeBindOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, ConnectionProperties, ExchangeKind};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
use tungstenite::Utf8Bytes;
use uuid::Uuid;

/// A frame that must not be lost is published at most this many times.
pub const PUBLISH_TRIES: u32 = 4;

/// Commands taken from the hub's queue in one turn of the broker task's loop.
const BATCH: usize = 256;

/// Publishes awaiting their confirm at most. Past it the task stops taking the hub's commands
/// until confirms come back, so a broker that cannot keep up fills the bounded command queue
/// (`publish_queue`; what does not fit is counted) instead of the relay's memory.
const MAX_UNCONFIRMED: usize = 4096;

/// What a relay's queue is always bound to on the agents' exchange: presence (the fleet view,
/// and who owns an agent), the relays' heartbeats and hellos, and lockers' answers (a bridge
/// call made on this relay for a locker on another). The other relays' outgoing exchanges
/// are bound as well while a backend is here.
const ALWAYS_BOUND: [&str; 3] = ["*.*.presence", "relay.#", "locker.*.locker_response"];

const RELAY_HEADER: &str = "x-relay";
const SINCE_HEADER: &str = "x-since";

/// What the hub asks of the broker connection.
#[derive(Debug)]
pub enum Command {
    /// An agent frame, already stamped: to `skypost.agents`.
    Agent {
        key: AgentKey,
        kind: &'static str,
        frame: Utf8Bytes,
        lossy: bool,
    },
    /// Presence of a local agent; `since` is its connection's start (µs since the epoch).
    Presence {
        key: AgentKey,
        frame: Utf8Bytes,
        since: i64,
    },
    /// A local agent connected: announce (already queued as `Presence`), then bind its key.
    Bind(AgentKey),
    /// It disconnected (or moved): unbind.
    Unbind(AgentKey),
    /// A frame for an agent on another relay: to `skypost.to-agents`.
    ToAgent { key: AgentKey, frame: Utf8Bytes },
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    up: AtomicBool,
    published: AtomicU64,
    publish_retried: AtomicU64,
    publish_failed: AtomicU64,
    received: AtomicU64,
    unroutable: AtomicU64,
    queue_full: AtomicU64,
    connects: AtomicU64,
    relays_expired: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// The hub's handle on the cluster.
pub struct Cluster {
    pub relay_id: String,
    tx: mpsc::Sender<Command>,
    /// Whether a WebSocket backend is connected here (the task binds the other relays' frames
    /// while it is).
    backends: watch::Sender<bool>,
    /// Shared with the broker task, which holds no reference to this handle: when the hub
    /// (and this) goes, the task's command channel closes and it disconnects.
    pub stats: Arc<ClusterStats>,
}

/// The fanout exchange a relay publishes its agents' frames to (`<agents_exchange>.from.
/// <relay id>`), bound to the agents' exchange by its relay.
fn outgoing_exchange(config: &ClusterConfig, relay_id: &str) -> String {
    format!("{}.from.{relay_id}", config.agents_exchange)
}

fn key_str(key: AgentKey) -> String {
    format!("{}.{}", key.0.as_str(), key.1)
}

fn parse_key(kind: &str, id: &str) -> Option<AgentKey> {
    let kind = match kind {
        "drone" => AgentKind::Drone,
        "locker" => AgentKind::Locker,
        _ => return None,
    };
    Some((kind, Uuid::parse_str(id).ok()?))
}

impl Cluster {
    pub fn is_up(&self) -> bool {
        self.stats.up.load(Relaxed)
    }

    /// Publishes confirmed by the broker so far.
    pub fn published(&self) -> u64 {
        self.stats.published.load(Relaxed)
    }

    /// Messages consumed from this relay's queue so far.
    pub fn received(&self) -> u64 {
        self.stats.received.load(Relaxed)
    }

    /// The hub says whether any backend is connected to this relay; the broker task binds or
    /// unbinds the other relays' frames to follow (only the latest value matters, so none is
    /// ever lost).
    pub fn set_backends(&self, present: bool) {
        self.backends
            .send_if_modified(|v| std::mem::replace(v, present) != present);
    }

    /// Hands a command to the broker task; never waits. False if its queue is full (counted).
    pub fn send(&self, c: Command) -> bool {
        match self.tx.try_send(c) {
            Ok(()) => true,
            Err(_) => {
                self.stats.queue_full.fetch_add(1, Relaxed);
                false
            }
        }
    }

    /// The `cluster` object of `/health`.
    pub fn health(&self) -> serde_json::Value {
        let last_error = self
            .stats
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        serde_json::json!({
            "relay_id": self.relay_id,
            "broker": if self.is_up() { "up" } else { "down" },
            "last_error": last_error,
        })
    }

    /// The cluster's lines of `/metrics`.
    pub fn render(&self, out: &mut String) {
        let s = &self.stats;
        for (name, kind, help, v) in [
            (
                "relay_cluster_broker_up",
                "gauge",
                "1 while the relay's RabbitMQ connection is up.",
                u64::from(self.is_up()),
            ),
            (
                "relay_cluster_published_total",
                "counter",
                "Frames published to the broker and confirmed.",
                s.published.load(Relaxed),
            ),
            (
                "relay_cluster_publish_retried_total",
                "counter",
                "Publishes sent again after a nack or a lost connection.",
                s.publish_retried.load(Relaxed),
            ),
            (
                "relay_cluster_publish_failed_total",
                "counter",
                "Frames not published: broker away, or still unconfirmed after the last try.",
                s.publish_failed.load(Relaxed),
            ),
            (
                "relay_cluster_received_total",
                "counter",
                "Messages consumed from the relay's queue.",
                s.received.load(Relaxed),
            ),
            (
                "relay_cluster_unroutable_total",
                "counter",
                "Frames for an agent that no relay holds (returned by the broker).",
                s.unroutable.load(Relaxed),
            ),
            (
                "relay_cluster_queue_full_total",
                "counter",
                "Frames not handed to the broker task because its queue was full.",
                s.queue_full.load(Relaxed),
            ),
            (
                "relay_cluster_connects_total",
                "counter",
                "Connections made to the broker.",
                s.connects.load(Relaxed),
            ),
            (
                "relay_cluster_relays_expired_total",
                "counter",
                "Relays whose lease ran out (their agents reported disconnected).",
                s.relays_expired.load(Relaxed),
            ),
        ] {
            crate::metrics::single(out, name, kind, help, v);
        }
    }
}

/// Starts the broker task for `hub`; returns the handle the hub keeps.
pub fn start(config: &ClusterConfig, hub: &Arc<Hub>) -> Arc<Cluster> {
    let (tx, rx) = mpsc::channel(config.publish_queue);
    let (backends, backends_rx) = watch::channel(false);
    let stats = Arc::new(ClusterStats::default());
    let cluster = Arc::new(Cluster {
        relay_id: config.relay_id.clone(),
        tx,
        backends,
        stats: stats.clone(),
    });
    let task = Task {
        outgoing: outgoing_exchange(config, &config.relay_id),
        config: config.clone(),
        hub: Arc::downgrade(hub),
        stats,
        rx,
        backends: backends_rx,
        remote_wanted: false,
        remote_bound: HashSet::new(),
        bound: HashMap::new(),
        leases: HashMap::new(),
        next_flight: 0,
        inflight: BTreeMap::new(),
    };
    tokio::spawn(task.run());
    cluster
}

struct Task {
    config: ClusterConfig,
    /// This relay's own outgoing exchange (named once: every agent frame is published there).
    outgoing: String,
    hub: Weak<Hub>,
    stats: Arc<ClusterStats>,
    rx: mpsc::Receiver<Command>,
    /// Whether a backend is connected here (see [`Cluster::set_backends`]).
    backends: watch::Receiver<bool>,
    /// Whether other relays' agent frames are wanted (a backend is here) on this connection.
    remote_wanted: bool,
    /// The other relays whose outgoing exchange this relay's queue is bound to, on this
    /// connection (see [`outgoing_exchange`]).
    remote_bound: HashSet<String>,
    /// Local agents and their connect time: bound again after a reconnect.
    bound: HashMap<AgentKey, ()>,
    /// Other relays, when last heard from.
    leases: HashMap<String, Instant>,
    /// Publishes made and not yet confirmed, by the number the task gave them: kept across a
    /// lost connection and made again on the next (those that must not be lost).
    next_flight: u64,
    inflight: BTreeMap<u64, InFlight>,
}

/// One publish waiting for its confirm, with what is needed to send it again.
struct InFlight {
    /// The channel it goes on (see [`Task::lane`]).
    lane: usize,
    exchange: String,
    key: String,
    payload: Utf8Bytes,
    headers: FieldTable,
    mandatory: bool,
    lossy: bool,
    tries: u32,
}

/// A publish's socket write and confirm, named by its key in `Task::inflight`.
type Confirming = std::pin::Pin<
    Box<dyn std::future::Future<Output = (u64, Result<Confirmation, lapin::Error>)> + Send>,
>;

impl Task {
    /// The publishing channel of everything about one agent: its frames, its presence, its
    /// binding and frames to it, so that the broker sees them in the order they were made.
    fn lane(&self, key: AgentKey) -> usize {
        let n = self.config.publish_channels.max(1) as u128;
        (key.1.as_u128() % n) as usize
    }

    fn queue_name(&self) -> String {
        format!("skypost.relay.{}", self.config.relay_id)
    }

    async fn run(mut self) {
        let mut attempt = 0u32;
        loop {
            let stats = self.stats.clone();
            let connects = stats.connects.load(Relaxed);
            let result = self.session().await;
            if stats.connects.load(Relaxed) != connects {
                attempt = 0; // it was up: start the backoff again from the first delay
            }
            let reason = match result {
                Ok(()) => return, // the relay is gone
                Err(e) => e,
            };
            stats.up.store(false, Relaxed);
            *stats
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(reason.clone());
            let delay = backoff(&self.config, attempt);
            attempt = attempt.saturating_add(1);
            warn!(error = %reason, retry_in_ms = delay.as_millis() as u64, "broker connection down; serving local agents only");
            // commands queued meanwhile: frames for the broker fail now (counted), bindings are
            // kept in `bound` and made again on the next connection
            let deadline = tokio::time::Instant::now() + delay;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    c = self.rx.recv() => match c {
                        None => return,
                        Some(c) => self.while_down(c),
                    },
                }
            }
        }
    }

    /// Publishes left unconfirmed by the last connection: those that must not be lost are made
    /// again on this one (in the order first made), the rest are counted as failed.
    fn retry_after_reconnect(&mut self) -> Vec<InFlight> {
        let mut again = Vec::new();
        for (_, f) in std::mem::take(&mut self.inflight) {
            if !f.lossy && f.tries < PUBLISH_TRIES {
                self.stats.publish_retried.fetch_add(1, Relaxed);
                again.push(f);
            } else {
                self.stats.publish_failed.fetch_add(1, Relaxed);
            }
        }
        again
    }

    fn while_down(&mut self, c: Command) {
        let stats = self.stats.clone();
        let failed = || {
            stats.publish_failed.fetch_add(1, Relaxed);
        };
        match c {
            Command::Bind(k) => {
                self.bound.insert(k, ());
            }
            Command::Unbind(k) => {
                self.bound.remove(&k);
            }
            Command::Agent { .. } | Command::Presence { .. } | Command::ToAgent { .. } => failed(),
        }
    }

    /// One broker connection's life; `Err` says why it ended.
    async fn session(&mut self) -> Result<(), String> {
        let stats = self.stats.clone();
        let props = ConnectionProperties::default()
            .with_connection_name(format!("skypost-relay {}", self.config.relay_id).into());
        let mut tls = lapin::tcp::OwnedTLSConfig::default();
        if let Some(path) = &self.config.ca_file {
            tls.cert_chain = Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cluster.ca_file {}: {e}", path.display()))?,
            );
        }
        let connect = lapin::DefaultConnectionBuilder::new()
            .map_err(|e| format!("runtime: {e}"))?
            .with_uri_str(self.config.url.clone())
            .with_properties(props)
            .with_tls_config(tls);
        let conn = tokio::time::timeout(secs(self.config.connect_timeout_s), connect.connect())
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| format!("connect: {e}"))?;
        // Publishing channels: RabbitMQ routes each channel's publishes in one process of its
        // own (the topic match is most of a publish's cost there), so one channel caps what a
        // relay can publish (~4,000 a second on a 2-core machine). An agent always uses the
        // same channel, so its frames, its presence and its binding keep their order.
        let mut chs = Vec::with_capacity(self.config.publish_channels);
        for _ in 0..self.config.publish_channels.max(1) {
            let ch = conn
                .create_channel()
                .await
                .map_err(|e| format!("channel: {e}"))?;
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| format!("confirm.select: {e}"))?;
            chs.push(ch);
        }
        let chs = &chs[..];
        let ch = &chs[0];
        for ex in [
            &self.config.agents_exchange,
            &self.config.to_agents_exchange,
        ] {
            declare_exchange(ch, ex, ExchangeKind::Topic, false).await?;
        }
        let queue = self.queue_name();
        ch.queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("queue {queue}: {e}"))?;
        let agents_exchange = self.config.agents_exchange.clone();
        for key in ALWAYS_BOUND {
            self.bind(ch, &agents_exchange, key, false).await?;
        }
        // this relay's agents' frames: published to its own fanout exchange, which passes
        // them all on to the agents' exchange (an AMQP backend sees them there, under the same
        // keys) and to the queues of the relays that have a backend
        let outgoing = &self.outgoing;
        declare_exchange(ch, outgoing, ExchangeKind::Fanout, true).await?;
        ch.exchange_bind(
            agents_exchange.as_str().into(),
            outgoing.as_str().into(),
            "".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("bind {outgoing} to {agents_exchange}: {e}"))?;
        self.remote_bound.clear();
        self.remote_wanted = *self.backends.borrow_and_update();
        self.follow_remote(ch).await?;
        let keys: Vec<AgentKey> = self.bound.keys().copied().collect();
        for k in keys {
            self.bind(
                &chs[self.lane(k)],
                &self.config.to_agents_exchange.clone(),
                &key_str(k),
                true,
            )
            .await?;
        }
        let consumer_ch = conn
            .create_channel()
            .await
            .map_err(|e| format!("channel: {e}"))?;
        let mut deliveries = consumer_ch
            .basic_consume(
                queue.as_str().into(),
                format!("relay-{}", self.config.relay_id).into(),
                BasicConsumeOptions {
                    no_ack: true,
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("consume: {e}"))?;
        stats.up.store(true, Relaxed);
        stats.connects.fetch_add(1, Relaxed);
        info!(relay_id = %self.config.relay_id, "broker connected");

        // every lease starts again: nothing was heard while this relay was away from the broker
        for t in self.leases.values_mut() {
            *t = Instant::now();
        }
        let mut confirming: FuturesUnordered<Confirming> = FuturesUnordered::new();
        // say hello: the other relays announce their agents again, for this relay's view
        // what the last connection left unconfirmed, taken before anything is published on
        // this one
        let again = self.retry_after_reconnect();
        let hello = format!("relay.{}.hello", self.config.relay_id);
        let hello = self.control(&hello);
        self.publish(chs, &mut confirming, hello)?;
        // and announce this relay's own agents (a reconnect after an outage)
        if let Some(hub) = self.hub.upgrade() {
            for (key, frame, since) in hub.local_presence() {
                let f = self.presence_flight(key, frame, since);
                self.publish(chs, &mut confirming, f)?;
            }
        }
        for f in again {
            self.publish(chs, &mut confirming, f)?;
        }
        let mut backends_open = true;
        let mut heartbeat = tokio::time::interval(secs(self.config.heartbeat_interval_s));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                d = deliveries.next() => match d {
                    Some(Ok(d)) => {
                        stats.received.fetch_add(1, Relaxed);
                        if let Some(republish) = self.delivered(d) {
                            for f in republish {
                                self.publish(chs, &mut confirming, f)?;
                            }
                        }
                        self.follow_remote(ch).await?;
                    }
                    Some(Err(e)) => return Err(format!("consume: {e}")),
                    None => return Err("the broker ended the consumer".into()),
                },
                c = self.rx.recv(), if self.inflight.len() < MAX_UNCONFIRMED => {
                    let Some(c) = c else {
                        // the relay is gone: leave the broker politely (the queue goes with it)
                        let _ = conn.close(200, "relay stopping".into()).await;
                        return Ok(());
                    };
                    self.command(chs, &mut confirming, c).await?;
                    // what else is waiting, without a turn of the loop for each
                    for _ in 1..BATCH {
                        if self.inflight.len() >= MAX_UNCONFIRMED {
                            break;
                        }
                        let Ok(c) = self.rx.try_recv() else { break };
                        self.command(chs, &mut confirming, c).await?;
                    }
                }
                Some((id, result)) = confirming.next() => {
                    self.confirmed(chs, &mut confirming, id, result)?;
                }
                r = self.backends.changed(), if backends_open => {
                    if r.is_err() {
                        backends_open = false; // the hub is going; `rx` ends the session
                        continue;
                    }
                    self.remote_wanted = *self.backends.borrow_and_update();
                    self.follow_remote(ch).await?;
                }
                _ = heartbeat.tick() => {
                    let hb = format!("relay.{}.heartbeat", self.config.relay_id);
                    let hb = self.control(&hb);
                    self.publish(chs, &mut confirming, hb)?;
                    self.expire_leases();
                }
            }
        }
    }

    /// Makes the queue's bindings to other relays' outgoing exchanges follow what is wanted:
    /// bound to every relay heard of while a backend is here, to none otherwise. A relay's
    /// own agents' frames never come back to it through the broker: its backends got them
    /// when they were read.
    async fn follow_remote(&mut self, ch: &Channel) -> Result<(), String> {
        if self.remote_wanted {
            let missing: Vec<String> = self
                .leases
                .keys()
                .filter(|r| !self.remote_bound.contains(*r))
                .cloned()
                .collect();
            for rid in missing {
                // declared here too (the same arguments as its relay's, so the broker takes
                // either first): a bind never meets a missing exchange
                let ex = outgoing_exchange(&self.config, &rid);
                declare_exchange(ch, &ex, ExchangeKind::Fanout, true).await?;
                self.bind(ch, &ex, "", true).await?;
                self.remote_bound.insert(rid);
            }
        } else if !self.remote_bound.is_empty() {
            for rid in std::mem::take(&mut self.remote_bound) {
                let ex = outgoing_exchange(&self.config, &rid);
                self.unbind(ch, &ex, "").await?;
            }
        }
        Ok(())
    }

    fn control(&self, key: &str) -> InFlight {
        InFlight {
            lane: 0,
            exchange: self.config.agents_exchange.clone(),
            key: key.to_owned(),
            payload: Utf8Bytes::from_static("{}"),
            headers: self.headers(None),
            mandatory: false,
            lossy: true,
            tries: 0,
        }
    }

    fn headers(&self, since: Option<i64>) -> FieldTable {
        let mut h = FieldTable::default();
        h.insert(
            RELAY_HEADER.into(),
            AMQPValue::LongString(self.config.relay_id.as_str().into()),
        );
        if let Some(since) = since {
            h.insert(SINCE_HEADER.into(), AMQPValue::LongLongInt(since));
        }
        h
    }

    fn presence_flight(&self, key: AgentKey, frame: Utf8Bytes, since: i64) -> InFlight {
        InFlight {
            lane: self.lane(key),
            exchange: self.config.agents_exchange.clone(),
            key: format!("{}.presence", key_str(key)),
            payload: frame,
            headers: self.headers(Some(since)),
            mandatory: false,
            lossy: false,
            tries: 0,
        }
    }

    /// Binds this relay's queue. `nowait`: the broker sends no answer and the task does not
    /// wait a round trip for one (agents' keys: a ramp of thousands of connections would
    /// otherwise hold publishing up for as many round trips); a bind the broker refuses then
    /// closes the channel, which ends the session like any channel error.
    async fn bind(
        &self,
        ch: &Channel,
        exchange: &str,
        key: &str,
        nowait: bool,
    ) -> Result<(), String> {
        ch.queue_bind(
            self.queue_name().as_str().into(),
            exchange.into(),
            key.into(),
            QueueBindOptions { nowait },
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("bind {key}: {e}"))
    }

    async fn unbind(&self, ch: &Channel, exchange: &str, key: &str) -> Result<(), String> {
        ch.queue_unbind(
            self.queue_name().as_str().into(),
            exchange.into(),
            key.into(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("unbind {key}: {e}"))
    }

    async fn command(
        &mut self,
        chs: &[Channel],
        confirming: &mut FuturesUnordered<Confirming>,
        c: Command,
    ) -> Result<(), String> {
        match c {
            Command::Agent {
                key,
                kind,
                frame,
                lossy,
            } => {
                let f = InFlight {
                    lane: self.lane(key),
                    exchange: self.outgoing.clone(),
                    key: format!("{}.{kind}", key_str(key)),
                    payload: frame,
                    headers: self.headers(None),
                    mandatory: false,
                    lossy,
                    tries: 0,
                };
                self.publish(chs, confirming, f)
            }
            Command::Presence { key, frame, since } => {
                let f = self.presence_flight(key, frame, since);
                self.publish(chs, confirming, f)
            }
            Command::Bind(key) => {
                self.bound.insert(key, ());
                self.bind(
                    &chs[self.lane(key)],
                    &self.config.to_agents_exchange.clone(),
                    &key_str(key),
                    true,
                )
                .await
            }
            Command::Unbind(key) => {
                self.bound.remove(&key);
                self.unbind(
                    &chs[self.lane(key)],
                    &self.config.to_agents_exchange.clone(),
                    &key_str(key),
                )
                .await
            }
            Command::ToAgent { key, frame } => {
                let f = InFlight {
                    lane: self.lane(key),
                    exchange: self.config.to_agents_exchange.clone(),
                    key: key_str(key),
                    payload: frame,
                    headers: self.headers(None),
                    mandatory: true,
                    lossy: false,
                    tries: 0,
                };
                self.publish(chs, confirming, f)
            }
        }
    }

    /// Publishes and queues the wait for its socket write and confirm; keeps the frame in
    /// `inflight` until then. `Err` only when the channel is gone.
    fn publish(
        &mut self,
        chs: &[Channel],
        confirming: &mut FuturesUnordered<Confirming>,
        mut f: InFlight,
    ) -> Result<(), String> {
        f.tries += 1;
        let id = self.next_flight;
        self.next_flight += 1;
        let props = BasicProperties::default()
            .with_headers(f.headers.clone())
            .with_content_type(ShortString::from("application/json"));
        // a lane past the channels (none should be) goes on the first rather than nowhere
        let ch = chs.get(f.lane).unwrap_or(&chs[0]);
        let (ch2, exchange, key) = (ch.clone(), f.exchange.clone(), f.key.clone());
        let (payload, mandatory) = (f.payload.clone(), f.mandatory);
        self.inflight.insert(id, f);
        let mut publishing: Confirming = Box::pin(async move {
            let sent = ch2
                .basic_publish(
                    exchange.as_str().into(),
                    key.as_str().into(),
                    BasicPublishOptions {
                        mandatory,
                        ..Default::default()
                    },
                    payload.as_bytes(),
                    props,
                )
                .await;
            match sent {
                Ok(confirm) => (id, confirm.await),
                Err(e) => (id, Err(e)),
            }
        });
        // One poll now: basic_publish takes its delivery tag and queues its frames for the
        // socket before its first await, so publishes leave in the order they were made even
        // though their writes and confirms are awaited together. The real waker comes with the
        // next poll, by `confirming`.
        let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
        match publishing.as_mut().poll(&mut cx) {
            std::task::Poll::Pending => confirming.push(publishing),
            std::task::Poll::Ready((id, Err(e))) => {
                // the channel is gone: the frame stays in `inflight` for the next connection
                let _ = id;
                return Err(format!("publish: {e}"));
            }
            std::task::Poll::Ready(done) => {
                confirming.push(Box::pin(std::future::ready(done)));
            }
        }
        Ok(())
    }

    fn confirmed(
        &mut self,
        chs: &[Channel],
        confirming: &mut FuturesUnordered<Confirming>,
        id: u64,
        result: Result<Confirmation, lapin::Error>,
    ) -> Result<(), String> {
        let Some(flight) = self.inflight.remove(&id) else {
            return Ok(()); // made again after a reconnect under a new number
        };
        let s = self.stats.clone();
        match result {
            Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => {
                s.published.fetch_add(1, Relaxed);
                Ok(())
            }
            Ok(Confirmation::Ack(Some(_returned))) => {
                // A frame for an agent that no queue is bound for. The relay that announced it
                // binds its key just after the announcement, so right after a connection this
                // is that window: try again a little later, a bounded number of times.
                if flight.tries < PUBLISH_TRIES {
                    s.publish_retried.fetch_add(1, Relaxed);
                    let delay = Duration::from_millis(100) * flight.tries;
                    // kept under its number; the "nack" below makes it again after the delay
                    self.inflight.insert(id, flight);
                    confirming.push(Box::pin(async move {
                        tokio::time::sleep(delay).await;
                        (id, Ok(Confirmation::Nack(None)))
                    }));
                } else {
                    s.unroutable.fetch_add(1, Relaxed);
                    debug!(key = %flight.key, "frame for an agent no relay holds: returned");
                }
                Ok(())
            }
            Ok(Confirmation::Nack(_)) | Err(_) => {
                if !flight.lossy && flight.tries < PUBLISH_TRIES {
                    s.publish_retried.fetch_add(1, Relaxed);
                    self.publish(chs, confirming, flight)
                } else {
                    s.publish_failed.fetch_add(1, Relaxed);
                    warn!(key = %flight.key, tries = flight.tries, "publish not confirmed: dropped");
                    Ok(())
                }
            }
        }
    }

    /// Handles one message from the relay's queue; returns frames to publish in answer (a
    /// hello from another relay is answered with this relay's presence).
    fn delivered(&mut self, d: lapin::message::Delivery) -> Option<Vec<InFlight>> {
        let hub = self.hub.upgrade()?;
        let headers = d.properties.headers().clone().unwrap_or_default();
        let from = match headers.inner().get(RELAY_HEADER) {
            Some(AMQPValue::LongString(s)) => Some(s.to_string()),
            _ => None,
        };
        let since = match headers.inner().get(SINCE_HEADER) {
            Some(AMQPValue::LongLongInt(v)) => *v,
            _ => 0,
        };
        let key = d.routing_key.as_str();
        let exchange = d.exchange.as_str();
        let own = from.as_deref() == Some(self.config.relay_id.as_str());
        if let Some(rid) = &from {
            if !own {
                self.leases.insert(rid.clone(), Instant::now());
            }
        }
        let Ok(text) = std::str::from_utf8(&d.data) else {
            return None;
        };
        let mut parts = key.splitn(3, '.');
        let (a, b, c) = (parts.next()?, parts.next()?, parts.next());
        if exchange == self.config.to_agents_exchange {
            let agent = parse_key(a, b)?;
            hub.from_cluster_to_agent(agent, Utf8Bytes::from(text.to_owned()));
            return None;
        }
        if a == "relay" {
            if c == Some("hello") && !own {
                let answers = hub
                    .local_presence()
                    .into_iter()
                    .map(|(k, f, s)| self.presence_flight(k, f, s))
                    .collect();
                return Some(answers);
            }
            return None;
        }
        if own {
            return None; // delivered to this relay's backends when it was read
        }
        let agent = parse_key(a, b)?;
        let rid = from.unwrap_or_default();
        hub.from_cluster(agent, c.unwrap_or(""), &rid, since, text);
        None
    }

    fn expire_leases(&mut self) {
        let lease = secs(self.config.lease_s);
        let dead: Vec<String> = self
            .leases
            .iter()
            .filter(|(_, t)| t.elapsed() > lease)
            .map(|(r, _)| r.clone())
            .collect();
        for rid in dead {
            self.leases.remove(&rid);
            self.stats.relays_expired.fetch_add(1, Relaxed);
            warn!(relay_id = %rid, lease_s = self.config.lease_s, "relay not heard from: its agents are reported disconnected");
            if let Some(hub) = self.hub.upgrade() {
                hub.relay_gone(&rid);
            }
        }
    }
}

/// Declares a durable exchange (it outlives the relays' connections: the agents' exchanges, and
/// each relay's outgoing one, which feeds the agents' exchange). `nowait`: see [`Task::bind`].
async fn declare_exchange(
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
    nowait: bool,
) -> Result<(), String> {
    ch.exchange_declare(
        name.into(),
        kind,
        ExchangeDeclareOptions {
            durable: true,
            nowait,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(|e| format!("exchange {name}: {e}"))
}

fn backoff(c: &ClusterConfig, attempt: u32) -> Duration {
    let base = c.reconnect_initial_s * 2f64.powi(attempt.min(20) as i32);
    secs(base.min(c.reconnect_max_s))
}
