//! The running router: the endpoints' sockets, a bounded queue per endpoint link, and the
//! routing between them, the autopilot's link and the agent.
//!
//! Links: [`AUTOPILOT`] (what the agent's receive loop reads), [`AGENT`] (what the agent sends),
//! then one per udpout/udpin endpoint and one per connected tcpin client. The agent's own link
//! calls [`Router::from_autopilot`] and [`Router::from_agent`] for every frame; both only decide
//! and `try_send`, so a slow or dead ground station costs the agent's link nothing: its queue
//! fills and further frames for it are dropped and counted. Frames from endpoints for the
//! autopilot go through one bounded queue that the agent's link drains
//! ([`Router::autopilot_queue`]); the agent itself listens to the autopilot only (a GCS's
//! messages to component 191 are not for it).
//!
//! Unknown message types (outside the `ardupilotmega` dialect) are not forwarded: the frames are
//! decoded on the way through.

use super::endpoint::{read_key, EndpointConfig, EndpointMode, KeyError};
use super::signing::{Rejection, Signer};
use super::{read_only_allows, LinkId, RoutingTable};
use crate::flight::connection::ConnectionString;
use mavlink::dialects::ardupilotmega::{self as apm, MavMessage};
use mavlink::{MAVLinkMessageRaw, MAVLinkV2MessageRaw, MavHeader, Message};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, info, warn, Instrument};

/// The autopilot's link.
pub const AUTOPILOT: LinkId = 0;
/// The agent's own messages.
pub const AGENT: LinkId = 1;
/// Frames from ground stations waiting for the autopilot's link.
const AUTOPILOT_QUEUE: usize = 64;

/// A ground station's command, mode change, arm/disarm or mission write, forwarded to the
/// autopilot from a `full` endpoint: who is steering besides the agent. Published on
/// [`Router::routed_commands`] when the frame is queued for the autopilot (a GCS's resend is
/// published again); the autopilot may still refuse it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutedCommand {
    /// The endpoint's configured name.
    pub endpoint: String,
    /// The sender's MAVLink system and component ids.
    pub sysid: u8,
    pub compid: u8,
    pub what: Steering,
}

/// What a [`RoutedCommand`] asks of the autopilot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steering {
    Arm,
    Disarm,
    /// SET_MODE or MAV_CMD_DO_SET_MODE, with the autopilot-specific custom mode.
    ModeChange {
        custom_mode: u32,
    },
    /// Any other COMMAND_LONG / COMMAND_INT but those that only ask for messages.
    Command {
        id: u16,
    },
    /// MISSION_COUNT, MISSION_CLEAR_ALL, MISSION_WRITE_PARTIAL_LIST or MISSION_SET_CURRENT.
    MissionWrite,
}

impl Steering {
    /// Whether this takes the controls from the agent: arming, a mode, a mission, or a command
    /// that moves the vehicle or its payload (NAV_*, the DO_* that fly, change speed, home,
    /// servos, relays, yaw or the fence, terminate, reboot, MISSION_START). A ground station's
    /// housekeeping (camera, mount, calibration queries, commands that ask for messages) does
    /// not: a QGroundControl that connects mid-flight must not suspend the delivery.
    pub fn takes_the_controls(&self) -> bool {
        match self {
            Steering::Arm | Steering::Disarm | Steering::ModeChange { .. } => true,
            Steering::MissionWrite => true,
            Steering::Command { id } => matches!(
                id,
                16..=99 | 177..=201 | 207..=213 | 222..=224 | 246 | 300 | 3000
            ),
        }
    }
}

impl std::fmt::Display for Steering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Steering::Arm => write!(f, "arm"),
            Steering::Disarm => write!(f, "disarm"),
            Steering::ModeChange { custom_mode } => {
                write!(f, "mode change (custom mode {custom_mode})")
            }
            Steering::Command { id } => write!(f, "command {id}"),
            Steering::MissionWrite => write!(f, "mission write"),
        }
    }
}

/// An endpoint's counters, for `drone-agent status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EndpointStats {
    pub name: String,
    pub connection: String,
    pub mode: EndpointMode,
    pub signed: bool,
    /// Connected tcpin clients; udp: 1 once a peer is known.
    pub peers: usize,
    /// Frames received from the endpoint (before checks).
    pub received: u64,
    /// Frames queued to it.
    pub sent: u64,
    /// Frames for it dropped because its queue was full (a slow or dead ground station).
    pub dropped: u64,
    /// Frames from a read_only endpoint refused.
    pub refused: u64,
    /// Frames from a signed endpoint dropped: unsigned, wrongly signed, replayed or stale.
    pub bad_signature: u64,
}

#[derive(Default)]
struct Counters {
    peers: AtomicUsize,
    received: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
    refused: AtomicU64,
    bad_signature: AtomicU64,
}

struct Endpoint {
    cfg: EndpointConfig,
    signer: Option<Signer>,
    counters: Counters,
    /// Its queue was full at the last frame (one log line per congestion, not per frame).
    congested: AtomicBool,
}

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("endpoint `{endpoint}` ({connection}): cannot listen: {source}")]
    Bind {
        endpoint: String,
        connection: String,
        source: std::io::Error,
    },
    #[error("endpoint `{endpoint}`: signing key {0}", .source)]
    Key { endpoint: String, source: KeyError },
}

struct Out {
    endpoint: usize,
    tx: mpsc::Sender<Arc<[u8]>>,
}

#[derive(Default)]
struct Table {
    routes: RoutingTable,
    /// Every link, AUTOPILOT and AGENT first.
    links: Vec<LinkId>,
    outs: HashMap<LinkId, Out>,
}

/// The router. Cheap to share; dropping the last handle stops its sockets' tasks.
pub struct Router {
    table: Mutex<Table>,
    endpoints: Vec<Endpoint>,
    to_autopilot: mpsc::Sender<(MavHeader, MavMessage)>,
    autopilot_rx: tokio::sync::Mutex<mpsc::Receiver<(MavHeader, MavMessage)>>,
    commands: broadcast::Sender<RoutedCommand>,
    next_link: AtomicUsize,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Router {
    fn drop(&mut self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Router {
    /// Opens every endpoint's socket (a port that cannot be listened on is an error: configured
    /// but missing is never silent) and starts their tasks. `state_dir`: where signing clocks are
    /// kept (`<state_dir>/signing/<name>.timestamp`).
    pub async fn start(
        cfgs: &[EndpointConfig],
        state_dir: Option<&Path>,
    ) -> Result<Arc<Router>, RouterError> {
        let mut endpoints = Vec::with_capacity(cfgs.len());
        for (i, cfg) in cfgs.iter().enumerate() {
            let signer = match &cfg.signing_key_file {
                Some(path) => {
                    let key = read_key(path).map_err(|source| RouterError::Key {
                        endpoint: cfg.name.clone(),
                        source,
                    })?;
                    let file = state_dir.map(|d| {
                        let dir = d.join("signing");
                        let _ = std::fs::create_dir_all(&dir);
                        dir.join(format!("{}.timestamp", cfg.name))
                    });
                    Some(Signer::new(key, i as u8, file, SystemTime::now()))
                }
                None => None,
            };
            endpoints.push(Endpoint {
                cfg: cfg.clone(),
                signer,
                counters: Counters::default(),
                congested: AtomicBool::new(false),
            });
        }
        // bind before anything runs, so a taken port fails the start
        let mut sockets = Vec::new();
        for e in &endpoints {
            let bind_err = |source| RouterError::Bind {
                endpoint: e.cfg.name.clone(),
                connection: e.cfg.connection.to_string(),
                source,
            };
            sockets.push(match &e.cfg.connection {
                ConnectionString::UdpOut { host, port } => {
                    let s = UdpSocket::bind("0.0.0.0:0").await.map_err(bind_err)?;
                    s.connect((host.as_str(), *port)).await.map_err(bind_err)?;
                    Socket::Udp(s, false)
                }
                ConnectionString::UdpIn { host, port } => Socket::Udp(
                    UdpSocket::bind((host.trim_matches(['[', ']']), *port))
                        .await
                        .map_err(bind_err)?,
                    true,
                ),
                ConnectionString::TcpIn { host, port } => Socket::Tcp(
                    TcpListener::bind((host.trim_matches(['[', ']']), *port))
                        .await
                        .map_err(bind_err)?,
                ),
                other => {
                    return Err(bind_err(std::io::Error::other(format!(
                        "{other} is not an endpoint transport"
                    ))))
                }
            });
        }
        let (to_autopilot, autopilot_rx) = mpsc::channel(AUTOPILOT_QUEUE);
        let router = Arc::new(Router {
            table: Mutex::new(Table {
                links: vec![AUTOPILOT, AGENT],
                ..Table::default()
            }),
            endpoints,
            to_autopilot,
            autopilot_rx: tokio::sync::Mutex::new(autopilot_rx),
            commands: broadcast::channel(64).0,
            next_link: AtomicUsize::new(AGENT + 1),
            tasks: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&router);
        let mut tasks = Vec::new();
        for (i, socket) in sockets.into_iter().enumerate() {
            let span = tracing::info_span!("endpoint", name = %router.endpoints[i].cfg.name);
            let task = match socket {
                Socket::Udp(s, answer_latest) => {
                    tokio::spawn(run_udp(weak.clone(), i, s, answer_latest).instrument(span))
                }
                Socket::Tcp(l) => tokio::spawn(run_tcp(weak.clone(), i, l).instrument(span)),
            };
            tasks.push(task);
            info!(endpoint = %router.endpoints[i].cfg.name, connection = %router.endpoints[i].cfg.connection,
                mode = ?router.endpoints[i].cfg.mode, signed = router.endpoints[i].signer.is_some(), "ground-station endpoint open");
        }
        if router.endpoints.iter().any(|e| e.signer.is_some()) {
            tasks.push(tokio::spawn(save_clocks(weak.clone())));
        }
        *lock(&router.tasks) = tasks;
        Ok(router)
    }

    /// Every endpoint's counters.
    pub fn stats(&self) -> Vec<EndpointStats> {
        self.endpoints
            .iter()
            .map(|e| {
                let c = &e.counters;
                EndpointStats {
                    name: e.cfg.name.clone(),
                    connection: e.cfg.connection.to_string(),
                    mode: e.cfg.mode,
                    signed: e.signer.is_some(),
                    peers: c.peers.load(Ordering::Relaxed),
                    received: c.received.load(Ordering::Relaxed),
                    sent: c.sent.load(Ordering::Relaxed),
                    dropped: c.dropped.load(Ordering::Relaxed),
                    refused: c.refused.load(Ordering::Relaxed),
                    bad_signature: c.bad_signature.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Ground stations' commands as they are forwarded (see [`RoutedCommand`]).
    pub fn routed_commands(&self) -> broadcast::Receiver<RoutedCommand> {
        self.commands.subscribe()
    }

    /// A frame the agent's link received from the autopilot. Never waits.
    pub fn from_autopilot(&self, header: &MavHeader, msg: &MavMessage) {
        self.route(AUTOPILOT, header, msg);
    }

    /// A frame the agent sent to the autopilot. Never waits.
    pub fn from_agent(&self, header: &MavHeader, msg: &MavMessage) {
        self.route(AGENT, header, msg);
    }

    /// The frames from ground stations for the autopilot, for the one task that sends them on
    /// the autopilot's link (held while it runs).
    pub async fn autopilot_queue(
        &self,
    ) -> tokio::sync::MutexGuard<'_, mpsc::Receiver<(MavHeader, MavMessage)>> {
        let mut rx = self.autopilot_rx.lock().await;
        // frames queued while the link was down are stale: a ground station resends what it
        // still wants, an old "arm" must not reach a new connection
        while rx.try_recv().is_ok() {}
        rx
    }

    /// Routes one frame from `from` to every endpoint link it should reach (the autopilot's and
    /// the agent's links are fed by their callers, never from here).
    fn route(&self, from: LinkId, header: &MavHeader, msg: &MavMessage) -> Vec<LinkId> {
        let target = msg
            .target_system_id()
            .map(|s| (s, msg.target_component_id().unwrap_or(0)));
        let mut table = lock(&self.table);
        table
            .routes
            .learn(from, header.system_id as u8, header.component_id);
        let dests = table.routes.destinations(from, target, &table.links);
        let mut plain: Option<Arc<[u8]>> = None;
        for &link in &dests {
            let Some(out) = table.outs.get(&link) else {
                continue;
            };
            let ep = &self.endpoints[out.endpoint];
            let frame = match &ep.signer {
                Some(s) => encode(header, msg, Some(s)),
                None => plain
                    .get_or_insert_with(|| encode(header, msg, None))
                    .clone(),
            };
            match out.tx.try_send(frame) {
                Ok(()) => {
                    ep.counters.sent.fetch_add(1, Ordering::Relaxed);
                    if ep.congested.swap(false, Ordering::Relaxed) {
                        info!(endpoint = %ep.cfg.name, dropped = ep.counters.dropped.load(Ordering::Relaxed), "endpoint keeping up again");
                    }
                }
                Err(_) => {
                    ep.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    if !ep.congested.swap(true, Ordering::Relaxed) {
                        warn!(endpoint = %ep.cfg.name, queue = ep.cfg.queue, "endpoint not keeping up: its frames are dropped until it does");
                    }
                }
            }
        }
        dests
    }

    /// A frame from endpoint `ep` on `link`: checked (signature, read-only), learned, routed.
    fn endpoint_frame(&self, ep_index: usize, link: LinkId, raw: &MAVLinkMessageRaw) {
        let ep = &self.endpoints[ep_index];
        ep.counters.received.fetch_add(1, Ordering::Relaxed);
        if let Some(signer) = &ep.signer {
            let verdict = match raw {
                MAVLinkMessageRaw::V2(f) => signer.verify(f, SystemTime::now()),
                MAVLinkMessageRaw::V1(_) => Err(Rejection::Unsigned),
            };
            if let Err(why) = verdict {
                let n = ep.counters.bad_signature.fetch_add(1, Ordering::Relaxed);
                // the first, then every hundredth: an unsigned GCS sends a heartbeat a second
                if n.is_multiple_of(100) {
                    warn!(endpoint = %ep.cfg.name, reason = ?why, sysid = raw.system_id(), dropped = n + 1, "frame without a valid signature dropped");
                }
                return;
            }
        }
        let Ok(msg) = MavMessage::parse(raw.version(), raw.message_id(), raw.payload()) else {
            debug!(endpoint = %ep.cfg.name, id = raw.message_id(), "undecodable frame not forwarded");
            return;
        };
        let header = MavHeader {
            system_id: raw.system_id(),
            component_id: raw.component_id(),
            sequence: raw.sequence(),
        };
        let command = match &msg {
            MavMessage::COMMAND_LONG(c) => Some(c.command as u32 as u16),
            MavMessage::COMMAND_INT(c) => Some(c.command as u32 as u16),
            _ => None,
        };
        if ep.cfg.mode == EndpointMode::ReadOnly && !read_only_allows(raw.message_id(), command) {
            ep.counters.refused.fetch_add(1, Ordering::Relaxed);
            // no STATUSTEXT, no ack: the GCS sees a lost message (documented in the example)
            warn!(endpoint = %ep.cfg.name, message = msg.message_name(), command, sysid = header.system_id,
                "refused: read_only endpoint");
            // learn the sender anyway: its replies (to what it may ask) must find it
            lock(&self.table)
                .routes
                .learn(link, header.system_id as u8, header.component_id);
            return;
        }
        let dests = self.route(link, &header, &msg);
        if dests.contains(&AUTOPILOT) {
            let steering = steering(&msg);
            match self.to_autopilot.try_send((header, msg)) {
                Ok(()) => {
                    if let Some(what) = steering.filter(|_| ep.cfg.mode == EndpointMode::Full) {
                        info!(endpoint = %ep.cfg.name, sysid = header.system_id, %what, "ground station's command forwarded to the autopilot");
                        let _ = self.commands.send(RoutedCommand {
                            endpoint: ep.cfg.name.clone(),
                            sysid: header.system_id as u8,
                            compid: header.component_id,
                            what,
                        });
                    }
                }
                Err(_) => {
                    ep.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    debug!(endpoint = %ep.cfg.name, "autopilot queue full (link down?): frame dropped");
                }
            }
        }
    }

    fn add_link(&self, endpoint: usize, tx: mpsc::Sender<Arc<[u8]>>) -> LinkId {
        let link = self.next_link.fetch_add(1, Ordering::Relaxed);
        let mut t = lock(&self.table);
        t.links.push(link);
        t.outs.insert(link, Out { endpoint, tx });
        link
    }

    fn remove_link(&self, link: LinkId) {
        let mut t = lock(&self.table);
        t.links.retain(|l| *l != link);
        t.outs.remove(&link);
        t.routes.forget(link);
    }
}

/// What a ground station's message asks the autopilot to do, if it steers. (SET_MODE and
/// MISSION_SET_CURRENT are deprecated, and still what ground stations send.)
#[allow(deprecated)]
fn steering(msg: &MavMessage) -> Option<Steering> {
    let command = |id: u16, p1: f32, p2: f32| match id {
        400 if p1 >= 0.5 => Some(Steering::Arm),
        400 => Some(Steering::Disarm),
        176 => Some(Steering::ModeChange {
            custom_mode: p2 as u32,
        }),
        id if read_only_allows(
            <apm::COMMAND_LONG_DATA as mavlink::MessageData>::ID,
            Some(id),
        ) =>
        {
            None
        }
        id => Some(Steering::Command { id }),
    };
    match msg {
        MavMessage::SET_MODE(m) => Some(Steering::ModeChange {
            custom_mode: m.custom_mode,
        }),
        MavMessage::COMMAND_LONG(c) => command(c.command as u32 as u16, c.param1, c.param2),
        MavMessage::COMMAND_INT(c) => command(c.command as u32 as u16, c.param1, c.param2),
        MavMessage::MISSION_COUNT(_)
        | MavMessage::MISSION_CLEAR_ALL(_)
        | MavMessage::MISSION_WRITE_PARTIAL_LIST(_)
        | MavMessage::MISSION_SET_CURRENT(_) => Some(Steering::MissionWrite),
        _ => None,
    }
}

fn encode(header: &MavHeader, msg: &MavMessage, signer: Option<&Signer>) -> Arc<[u8]> {
    let mut f = MAVLinkV2MessageRaw::new();
    match signer {
        Some(s) => {
            f.serialize_message_for_signing(*header, msg);
            s.sign(&mut f, SystemTime::now());
        }
        None => f.serialize_message(*header, msg),
    }
    Arc::from(f.raw_bytes())
}

enum Socket {
    /// `true`: udpin (answer whoever sent last).
    Udp(UdpSocket, bool),
    Tcp(TcpListener),
}

/// Every frame in one datagram.
fn frames(datagram: &[u8]) -> Vec<MAVLinkMessageRaw> {
    let mut reader = mavlink::MavlinkReader::new(datagram);
    let mut out = Vec::new();
    loop {
        match reader.read_any_raw_message::<MavMessage>() {
            Ok(f) => out.push(f),
            Err(mavlink::error::MessageReadError::Parse(_)) => continue,
            Err(mavlink::error::MessageReadError::Io(_)) => return out,
        }
    }
}

async fn run_udp(
    router: std::sync::Weak<Router>,
    ep: usize,
    socket: UdpSocket,
    answer_latest: bool,
) {
    let Some(r) = router.upgrade() else { return };
    let queue = r.endpoints[ep].cfg.queue;
    let (tx, mut rx) = mpsc::channel::<Arc<[u8]>>(queue);
    // udpout knows its peer; udpin joins the routing at its first datagram
    let mut link = (!answer_latest).then(|| r.add_link(ep, tx.clone()));
    if link.is_some() {
        r.endpoints[ep].counters.peers.store(1, Ordering::Relaxed);
    }
    drop(r);
    let mut peer: Option<SocketAddr> = None;
    let mut buf = vec![0u8; 65_536];
    loop {
        tokio::select! {
            got = socket.recv_from(&mut buf) => {
                let (n, from) = match got {
                    Ok(x) => x,
                    // ICMP port unreachable from a udpout peer not up yet: keep going
                    Err(error) => { debug!(%error, "udp receive"); continue }
                };
                let Some(r) = router.upgrade() else { return };
                if answer_latest && peer != Some(from) {
                    debug!(%from, "ground station's address");
                    peer = Some(from);
                    if link.is_none() {
                        link = Some(r.add_link(ep, tx.clone()));
                        r.endpoints[ep].counters.peers.store(1, Ordering::Relaxed);
                    }
                }
                if let Some(link) = link {
                    for f in frames(&buf[..n]) {
                        r.endpoint_frame(ep, link, &f);
                    }
                }
            }
            Some(frame) = rx.recv() => {
                let sent = match (answer_latest, peer) {
                    (false, _) => socket.send(&frame).await,
                    (true, Some(p)) => socket.send_to(&frame, p).await,
                    (true, None) => continue,
                };
                if let Err(error) = sent {
                    debug!(%error, "udp send");
                }
            }
        }
    }
}

async fn run_tcp(router: std::sync::Weak<Router>, ep: usize, listener: TcpListener) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(error) => {
                warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(r) = router.upgrade() else { return };
        let _ = stream.set_nodelay(true);
        let (tx, rx) = mpsc::channel::<Arc<[u8]>>(r.endpoints[ep].cfg.queue);
        let link = r.add_link(ep, tx);
        r.endpoints[ep]
            .counters
            .peers
            .fetch_add(1, Ordering::Relaxed);
        info!(%from, link, "ground station connected");
        let client =
            tokio::spawn(run_tcp_client(router.clone(), ep, link, stream, rx).in_current_span());
        let mut tasks = lock(&r.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(client);
    }
}

async fn run_tcp_client(
    router: std::sync::Weak<Router>,
    ep: usize,
    link: LinkId,
    stream: TcpStream,
    mut rx: mpsc::Receiver<Arc<[u8]>>,
) {
    let (read, mut write) = stream.into_split();
    let writer = async move {
        while let Some(frame) = rx.recv().await {
            if write.write_all(&frame).await.is_err() {
                return;
            }
        }
    };
    let reader = async {
        let mut reader = mavlink::AsyncMavlinkReader::new(read);
        loop {
            match reader.read_any_raw_message::<MavMessage>().await {
                Ok(f) => {
                    let Some(r) = router.upgrade() else { return };
                    r.endpoint_frame(ep, link, &f);
                }
                Err(mavlink::error::MessageReadError::Parse(_)) => continue,
                Err(mavlink::error::MessageReadError::Io(_)) => return,
            }
        }
    };
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
    }
    if let Some(r) = router.upgrade() {
        r.remove_link(link);
        r.endpoints[ep]
            .counters
            .peers
            .fetch_sub(1, Ordering::Relaxed);
        info!(link, "ground station disconnected");
    }
}

async fn save_clocks(router: std::sync::Weak<Router>) {
    let mut tick = tokio::time::interval(super::signing::SAVE_EVERY);
    loop {
        tick.tick().await;
        let Some(r) = router.upgrade() else { return };
        for e in &r.endpoints {
            if let Some(s) = &e.signer {
                if let Err(error) = s.save().await {
                    warn!(endpoint = %e.cfg.name, %error, "signing clock not saved");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_what_flies_takes_the_controls() {
        for flies in [
            Steering::Arm,
            Steering::ModeChange { custom_mode: 5 },
            Steering::MissionWrite,
            Steering::Command { id: 20 },  // NAV_RETURN_TO_LAUNCH
            Steering::Command { id: 192 }, // DO_REPOSITION
            Steering::Command { id: 211 }, // DO_GRIPPER
        ] {
            assert!(flies.takes_the_controls(), "{flies}");
        }
        // camera information, flight information, a mount query: a GCS connecting
        for housekeeping in [521, 528, 2504] {
            assert!(!Steering::Command { id: housekeeping }.takes_the_controls());
        }
    }

    fn free_port() -> u16 {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn endpoint(name: &str, connection: String, mode: EndpointMode) -> EndpointConfig {
        EndpointConfig {
            name: name.into(),
            connection: connection.parse().unwrap(),
            mode,
            signing_key_file: None,
            queue: 8,
        }
    }

    fn frame(sysid: u32, msg: &MavMessage) -> Vec<u8> {
        let mut f = MAVLinkV2MessageRaw::new();
        let header = MavHeader {
            system_id: sysid,
            component_id: 190,
            sequence: 0,
        };
        f.serialize_message(header, msg);
        f.raw_bytes().to_vec()
    }

    #[tokio::test]
    async fn commands_are_forwarded_and_named_read_only_ones_refused_slow_readers_dropped() {
        let (full, watch, slow) = (free_port(), free_port(), free_port());
        let router = Router::start(
            &[
                endpoint("gcs", format!("udpin:127.0.0.1:{full}"), EndpointMode::Full),
                endpoint(
                    "watch",
                    format!("udpin:127.0.0.1:{watch}"),
                    EndpointMode::ReadOnly,
                ),
                endpoint(
                    "slow",
                    format!("tcpin:127.0.0.1:{slow}"),
                    EndpointMode::Full,
                ),
            ],
            None,
        )
        .await
        .unwrap();
        let vehicle = MavHeader {
            system_id: 1,
            component_id: 1,
            sequence: 0,
        };
        let heartbeat = MavMessage::HEARTBEAT(apm::HEARTBEAT_DATA::default());
        router.from_autopilot(&vehicle, &heartbeat);
        let mut notices = router.routed_commands();
        let mut queue = router.autopilot_queue().await;
        let arm = MavMessage::COMMAND_LONG(apm::COMMAND_LONG_DATA {
            target_system: 1,
            target_component: 1,
            command: apm::MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
            param1: 1.0,
            ..Default::default()
        });
        let gcs = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        gcs.send_to(&frame(255, &arm), ("127.0.0.1", watch))
            .unwrap();
        gcs.send_to(&frame(255, &arm), ("127.0.0.1", full)).unwrap();
        let notice = tokio::time::timeout(Duration::from_secs(5), notices.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            notice,
            RoutedCommand {
                endpoint: "gcs".into(),
                sysid: 255,
                compid: 190,
                what: Steering::Arm
            }
        );
        let (h, m) = queue.try_recv().unwrap();
        assert_eq!((h.system_id, m.message_id()), (255, 76));
        // the read-only endpoint's arm was refused, not queued
        let started = std::time::Instant::now();
        while router.stats()[1].refused == 0 {
            assert!(started.elapsed() < Duration::from_secs(5), "not refused");
            tokio::task::yield_now().await;
        }
        let stats = router.stats();
        assert_eq!((stats[1].received, stats[1].refused), (1, 1));
        assert_eq!(stats[0].refused, 0);
        assert!(queue.try_recv().is_err());

        // a tcpin client that never reads: its queue of 8 fills, the rest is dropped, and
        // routing never waits for it
        let _client = tokio::net::TcpStream::connect(("127.0.0.1", slow))
            .await
            .unwrap();
        let big = MavMessage::STATUSTEXT(apm::STATUSTEXT_DATA {
            text: [b'x'; 50].into(),
            ..Default::default()
        });
        let started = std::time::Instant::now();
        let mut i = 0;
        while router.stats()[2].dropped == 0 {
            router.from_autopilot(&vehicle, &big);
            i += 1;
            if i % 64 == 0 {
                tokio::task::yield_now().await;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "never dropped");
        }
        assert_eq!(router.stats()[2].peers, 1);
    }
}
