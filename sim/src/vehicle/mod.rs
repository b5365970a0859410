//! `sim vehicle`: a simulated quadcopter that speaks MAVLink 2 (`ardupilotmega` dialect) like PX4 SITL
//! (UDP, sends to the API port 14540 from 14580) or ArduPilot SITL (TCP server on 5760).
//!
//! - [`model`]: the vehicle and autopilot logic, pure and deterministic (seeded);
//! - this module: the clock (`--speedup`), the transports, telemetry scheduling, fault injection
//!   and the observable [`VehicleHandle`];
//! - [`control`]: a line-based TCP control socket so tests that run `sim vehicle` as a process can
//!   inject faults and read state.
//!
//! Time: the world advances in fixed 20 ms sim steps; each real tick (about 5 ms) runs as many steps
//! as `speedup` asks for. Telemetry streams run on sim time (a 10 Hz stream at 50× arrives at
//! 500 Hz real), except that each stream is sent at most once per real tick, and HEARTBEAT goes out
//! at least every 0.5 s of *real* time, because the companion judges the link on the wall clock.

pub mod cli;
pub mod control;
pub mod logs;
pub mod model;

use mavlink::dialects::ardupilotmega as apm;
use mavlink::dialects::ardupilotmega::{MavMessage, MavResult};
use mavlink::{MavHeader, MessageData};
use model::{Model, Out, Params, View};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

/// Which autopilot the sim imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavour {
    Px4,
    #[value(name = "ardupilot")]
    ArduPilot,
}

/// How the vehicle is reached.
#[derive(Debug, Clone)]
pub enum Transport {
    /// PX4 style: bind `bind`, send to `peer` until someone else sends to us (then reply to them).
    Udp { bind: SocketAddr, peer: SocketAddr },
    /// ArduPilot style: a TCP server; one client at a time (a new client replaces the old one).
    Tcp { listen: SocketAddr },
}

#[derive(Debug, Clone)]
pub struct VehicleConfig {
    pub flavour: Flavour,
    pub transport: Transport,
    /// Home: latitude, longitude (degrees), altitude AMSL (m).
    pub home: (f64, f64, f64),
    pub speedup: f64,
    pub seed: u64,
    pub params: Params,
}

impl VehicleConfig {
    /// The real SITL's ports: PX4 UDP 14580 → 127.0.0.1:14540, ArduPilot TCP 0.0.0.0:5760.
    pub fn standard(flavour: Flavour) -> Self {
        let transport = match flavour {
            Flavour::Px4 => Transport::Udp {
                bind: SocketAddr::from(([0, 0, 0, 0], 14580)),
                peer: SocketAddr::from(([127, 0, 0, 1], 14540)),
            },
            Flavour::ArduPilot => Transport::Tcp {
                listen: SocketAddr::from(([0, 0, 0, 0], 5760)),
            },
        };
        VehicleConfig {
            flavour,
            transport,
            home: (47.397_742, 8.545_594, 488.0),
            speedup: 1.0,
            seed: 1,
            params: Params::for_flavour(flavour),
        }
    }
}

/// A fault to inject.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Neither send nor receive anything for this long (real time: the companion's timeouts are
    /// wall-clock).
    LinkDrop(Duration),
    /// Drop the next `n` COMMAND_ACKs (the command still takes effect).
    LoseAcks(u32),
    /// Delay the next `n` COMMAND_ACKs by this much real time.
    DelayAcks(u32, Duration),
    /// No GPS fix for this many sim seconds.
    GpsLoss(f64),
    /// Battery loses this many percent at once.
    BatterySag(f64),
    /// Answer the next `n` commands with this id with `result` instead of executing them.
    Refuse {
        command: u32,
        result: MavResult,
        n: u32,
    },
    /// ArduPilot's RC throttle input, µs (default 1000: stick down, no transmitter). LOITER takes
    /// its climb rate from it.
    RcThrottle(u16),
    /// A lasting voltage sag, volts (the percentage, from consumed mAh, does not move).
    VoltageSag(f64),
    /// `BATTERY_STATUS.fault_bitmask` from now on (`MAV_BATTERY_FAULT` bits; 0 clears). Set
    /// on the way out, so the model's battery (percent, voltage, charge state) is untouched.
    BatteryFaults(u32),
    /// The wind from now on: mean speed, direction it blows from, gusts (issue 12).
    Wind(model::Wind),
    /// Set an autopilot parameter the sim models (`BATT_LOW_VOLT`, `BATT_FS_LOW_ACT`,
    /// `FS_GCS_ENABLE`, `SYSID_MYGCS`, `NAV_DLL_ACT`, ... see [`model::Params::set`]).
    Param(String, f64),
    /// A ground station on another link changes the mode (its name in this flavour, e.g.
    /// `LOITER`, `AUTO.LOITER`): a SET_MODE from system 255, handled like any other, its ACK
    /// going to that station (not on the companion's link).
    GcsMode(String),
    /// Lose the next `n` LOG_DATA packets of log downloads (one in three until `n` are lost).
    LogDrop(u32),
    /// Move the vehicle this far at once (north, east, up metres): out of its fence, say.
    Push(f64, f64, f64),
}

#[derive(Debug, thiserror::Error)]
pub enum VehicleError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("speedup {0} must be between 0.01 and 10000")]
    Speedup(f64),
}

/// A running vehicle. Dropping it stops the vehicle.
pub struct VehicleHandle {
    view: watch::Receiver<View>,
    faults: mpsc::UnboundedSender<Fault>,
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    logs: Arc<std::sync::Mutex<logs::LogStore>>,
}

impl VehicleHandle {
    /// The address the vehicle listens on (the UDP socket it sends from, or the TCP listener).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn inject(&self, fault: Fault) {
        // the vehicle task only ends when the handle is dropped
        let _ = self.faults.send(fault);
    }

    /// The autopilot's own logs, one per flight, oldest first (what a log download must match).
    pub fn log_files(&self) -> Vec<Arc<Vec<u8>>> {
        self.logs.lock().unwrap_or_else(|e| e.into_inner()).files()
    }

    /// The vehicle's state, updated every real tick.
    pub fn view(&self) -> watch::Receiver<View> {
        self.view.clone()
    }

    /// Waits until the vehicle's state satisfies `pred` (or `timeout` real time passes).
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&View) -> bool,
    ) -> Option<View> {
        let mut rx = self.view.clone();
        tokio::time::timeout(timeout, async move {
            loop {
                {
                    let v = rx.borrow_and_update();
                    if pred(&v) {
                        return Some(v.clone());
                    }
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await
        .ok()
        .flatten()
    }
}

impl Drop for VehicleHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a vehicle on the current tokio runtime.
pub async fn spawn(cfg: VehicleConfig) -> Result<VehicleHandle, VehicleError> {
    if !(0.01..=10_000.0).contains(&cfg.speedup) {
        return Err(VehicleError::Speedup(cfg.speedup));
    }
    let (link, local_addr) = Link::open(&cfg.transport).await?;
    let model = Model::new(cfg.flavour, cfg.params.clone(), cfg.home, cfg.seed);
    let (view_tx, view) = watch::channel(model.view());
    let (faults, fault_rx) = mpsc::unbounded_channel();
    info!(flavour = ?cfg.flavour, %local_addr, speedup = cfg.speedup, seed = cfg.seed, "vehicle up");
    let logs = Arc::new(std::sync::Mutex::new(logs::LogStore::new(
        cfg.flavour,
        cfg.seed,
    )));
    let task = tokio::spawn(run(
        model,
        link,
        cfg.speedup,
        view_tx,
        fault_rx,
        logs.clone(),
    ));
    Ok(VehicleHandle {
        view,
        faults,
        local_addr,
        task,
        logs,
    })
}

// ---------------------------------------------------------------------------------------------
// transports

enum Link {
    Udp {
        socket: Arc<UdpSocket>,
        peer: SocketAddr,
        rx: mpsc::Receiver<(MavHeader, MavMessage, SocketAddr)>,
        _reader: AbortOnDrop,
    },
    Tcp {
        rx: mpsc::Receiver<(MavHeader, MavMessage)>,
        /// The current client's outgoing queue (None until a client connects).
        writer: watch::Receiver<Option<ClientTx>>,
        _acceptor: AbortOnDrop,
    },
}

impl Link {
    async fn open(t: &Transport) -> Result<(Link, SocketAddr), VehicleError> {
        match t {
            Transport::Udp { bind, peer } => {
                let socket = UdpSocket::bind(bind)
                    .await
                    .map_err(|source| VehicleError::Bind {
                        addr: *bind,
                        source,
                    })?;
                let local = socket.local_addr().unwrap_or(*bind);
                let socket = Arc::new(socket);
                let (tx, rx) = mpsc::channel(1024);
                let reader = AbortOnDrop(tokio::spawn(udp_reader(socket.clone(), tx)));
                Ok((
                    Link::Udp {
                        socket,
                        peer: *peer,
                        rx,
                        _reader: reader,
                    },
                    local,
                ))
            }
            Transport::Tcp { listen } => {
                let listener =
                    TcpListener::bind(listen)
                        .await
                        .map_err(|source| VehicleError::Bind {
                            addr: *listen,
                            source,
                        })?;
                let local = listener.local_addr().unwrap_or(*listen);
                let (tx, rx) = mpsc::channel(1024);
                let (wtx, writer) = watch::channel(None);
                let acceptor = AbortOnDrop(tokio::spawn(tcp_acceptor(listener, tx, wtx)));
                Ok((
                    Link::Tcp {
                        rx,
                        writer,
                        _acceptor: acceptor,
                    },
                    local,
                ))
            }
        }
    }

    async fn recv(&mut self) -> Option<(MavHeader, MavMessage)> {
        match self {
            Link::Udp { rx, peer, .. } => {
                let (h, m, from) = rx.recv().await?;
                // like PX4, answer whoever talks to us
                *peer = from;
                Some((h, m))
            }
            Link::Tcp { rx, .. } => rx.recv().await,
        }
    }

    async fn send_bytes(&self, bytes: &[u8]) {
        match self {
            Link::Udp { socket, peer, .. } => {
                // a missing listener is normal (the companion is not up yet)
                let _ = socket.send_to(bytes, *peer).await;
            }
            Link::Tcp { writer, .. } => {
                let w = writer.borrow().clone();
                // a client that does not keep up loses whole batches (frames stay intact), as a
                // saturated telemetry link would, instead of stalling the world
                if let Some(w) = w {
                    if w.try_send(bytes.to_vec()).is_err() {
                        debug!("TCP client not keeping up: telemetry batch dropped");
                    }
                }
            }
        }
    }
}

async fn udp_reader(socket: Arc<UdpSocket>, tx: mpsc::Sender<(MavHeader, MavMessage, SocketAddr)>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(error) => {
                warn!(%error, "UDP receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let mut reader = mavlink::MavlinkReader::new(&buf[..n]);
        while let Ok((header, msg)) = reader.read_any_message::<MavMessage>() {
            if tx.send((header, msg, from)).await.is_err() {
                return;
            }
        }
    }
}

type ClientTx = mpsc::Sender<Vec<u8>>;

/// A task that ends with its owner (dropping a bare JoinHandle leaves the task running).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn tcp_acceptor(
    listener: TcpListener,
    tx: mpsc::Sender<(MavHeader, MavMessage)>,
    writer: watch::Sender<Option<ClientTx>>,
) {
    // the current client's tasks; dropping them (new client, or the vehicle gone) aborts them
    let mut current: Vec<AbortOnDrop> = Vec::new();
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(c) => c,
            Err(error) => {
                // e.g. out of file descriptors: do not spin
                warn!(%error, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        info!(%from, "TCP client connected");
        let _ = stream.set_nodelay(true);
        // like ArduPilot SITL's ports, one client at a time: the newest wins
        current.clear();
        let (read, mut write) = stream.into_split();
        let (ctx, mut crx) = mpsc::channel::<Vec<u8>>(256);
        writer.send_replace(Some(ctx));
        current.push(AbortOnDrop(tokio::spawn(async move {
            while let Some(batch) = crx.recv().await {
                if write.write_all(&batch).await.is_err() {
                    return;
                }
            }
        })));
        let tx = tx.clone();
        current.push(AbortOnDrop(tokio::spawn(async move {
            let mut reader = mavlink::AsyncMavlinkReader::new(read);
            loop {
                match reader.read_any_message::<MavMessage>().await {
                    Ok(received) => {
                        if tx.send(received).await.is_err() {
                            return;
                        }
                    }
                    Err(mavlink::error::MessageReadError::Parse(_)) => continue,
                    Err(mavlink::error::MessageReadError::Io(e)) => {
                        info!(%from, error = %e, "TCP client gone");
                        return;
                    }
                }
            }
        })));
    }
}

// ---------------------------------------------------------------------------------------------
// the loop

const STEP_S: f64 = 0.02;
/// A companion's 1 Hz HEARTBEAT counts as still beating this long (wall clock) after the last
/// one; from then its silence runs on sim time (so at 1× a failsafe fires up to this much late).
const HEARTBEAT_FRESH: Duration = Duration::from_millis(1100);
const TICK: Duration = Duration::from_millis(5);
/// LOG_DATA packets sent per real tick while a log is downloaded (about 1.8 MB/s).
const LOG_DATA_PER_TICK: usize = 100;

struct Sender {
    seq: u8,
    buf: Vec<u8>,
}

impl Sender {
    fn encode(&mut self, msg: &MavMessage) {
        let header = MavHeader {
            system_id: 1,
            component_id: 1,
            sequence: self.seq,
        };
        self.seq = self.seq.wrapping_add(1);
        // writing to a Vec cannot fail
        let _ = mavlink::write_v2_msg(&mut self.buf, header, msg);
    }
}

async fn run(
    mut model: Model,
    mut link: Link,
    speedup: f64,
    view: watch::Sender<View>,
    mut faults: mpsc::UnboundedReceiver<Fault>,
    logs: Arc<std::sync::Mutex<logs::LogStore>>,
) {
    let logs_lock = || logs.lock().unwrap_or_else(|e| e.into_inner());
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    let mut sim_debt = 0.0f64;
    let mut last_sent: HashMap<u32, f64> = HashMap::new();
    let mut last_heartbeat_sim = f64::NEG_INFINITY;
    let mut last_heartbeat_real = Instant::now() - Duration::from_secs(10);
    let mut link_down_until: Option<Instant> = None;
    let mut lose_acks = 0u32;
    let mut delay_acks: (u32, Duration) = (0, Duration::ZERO);
    let mut delayed_real: Vec<(Instant, MavMessage)> = Vec::new();
    let mut upload_quiet_since: Option<Instant> = None;
    // the last HEARTBEAT a link-loss failsafe watches, wall clock: the companion beats at 1 Hz
    // real time, so at a 50× speed-up its beats are 50 sim seconds apart
    let mut watched_heartbeat_real: Option<Instant> = None;
    let mut battery_faults = apm::MavBatteryFault::empty();
    let mut tx = Sender {
        seq: 0,
        buf: Vec::with_capacity(4096),
    };
    let mut outs: Vec<Out> = Vec::new();
    let hb_id = apm::HEARTBEAT_DATA::ID;

    loop {
        tokio::select! {
            // a fault injected before a message was sent must apply to that message
            biased;
            f = faults.recv() => {
                let Some(f) = f else { return };
                info!(?f, "fault injected");
                match f {
                    Fault::LinkDrop(d) => link_down_until = Some(Instant::now() + d),
                    Fault::LoseAcks(n) => lose_acks += n,
                    Fault::DelayAcks(n, d) => delay_acks = (delay_acks.0 + n, d),
                    Fault::GpsLoss(s) => model.faults.gps_lost_until = model.t + s,
                    Fault::BatterySag(p) => model.battery_sag(p),
                    Fault::Refuse { command, result, n } => {
                        model.faults.refuse.insert(command, (result, n));
                    }
                    Fault::RcThrottle(us) => model.set_rc_throttle(us),
                    Fault::VoltageSag(v) => model.set_voltage_sag(v),
                    Fault::Wind(w) => model.set_wind(w),
                    Fault::BatteryFaults(bits) => {
                        battery_faults = apm::MavBatteryFault::from_bits_truncate(bits);
                    }
                    Fault::GcsMode(name) => {
                        let mut replies = Vec::new();
                        match model.gcs_set_mode(&name, &mut replies) {
                            Ok(r) => info!(mode = %name, result = ?r, "mode change from a ground station"),
                            Err(error) => warn!(%error, "ground station's mode change not made"),
                        }
                        // the ACK is the station's; what the autopilot says about it goes out to all
                        outs.extend(replies.into_iter().filter(|o| !o.is_ack));
                    }
                    Fault::LogDrop(n) => logs_lock().drop_packets(n),
                    Fault::Push(n, e, u) => model.push(n, e, u),
                    Fault::Param(name, v) => {
                        if let Err(error) = model.params_mut().set(&name, v) {
                            warn!(%error, "parameter not set");
                        }
                    }
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                sim_debt += (now - last).as_secs_f64() * speedup;
                last = now;
                // bound the catch-up after a stall (e.g. a debugger): the world just runs slower
                sim_debt = sim_debt.min(STEP_S * 2000.0);
                while sim_debt >= STEP_S {
                    if watched_heartbeat_real.is_some_and(|at| now - at <= HEARTBEAT_FRESH) {
                        model.gcs_heartbeat_fresh();
                    }
                    model.step(STEP_S, &mut outs);
                    sim_debt -= STEP_S;
                }
                let down = link_down_until.is_some_and(|t| now < t);
                if !down {
                    link_down_until = None;
                    // heartbeat: 1 Hz sim, and never less than 2 Hz real
                    if model.t - last_heartbeat_sim >= 1.0 || now - last_heartbeat_real >= Duration::from_millis(500) {
                        last_heartbeat_sim = model.t;
                        last_heartbeat_real = now;
                        tx.encode(&model.heartbeat());
                    }
                    let due: Vec<u32> = model
                        .intervals
                        .iter()
                        .filter(|(id, iv)| **id != hb_id && model.t - last_sent.get(*id).copied().unwrap_or(f64::NEG_INFINITY) >= **iv)
                        .map(|(id, _)| *id)
                        .collect();
                    for id in due {
                        last_sent.insert(id, model.t);
                        if let Some(mut m) = model.telemetry_message(id) {
                            if let MavMessage::BATTERY_STATUS(b) = &mut m {
                                b.fault_bitmask = battery_faults;
                            }
                            tx.encode(&m);
                        }
                    }
                    // a log download in progress: ArduPilot streams about this many per loop
                    for m in logs_lock().stream(LOG_DATA_PER_TICK) {
                        tx.encode(&m);
                    }
                    // delayed ACKs that are due
                    let mut i = 0;
                    while i < delayed_real.len() {
                        if delayed_real[i].0 <= now {
                            let (_, m) = delayed_real.swap_remove(i);
                            tx.encode(&m);
                        } else {
                            i += 1;
                        }
                    }
                    // a mission upload whose uploader went quiet: ask again (the protocol's
                    // receiver-side retry)
                    match (model.mission_upload_nudge(), upload_quiet_since) {
                        (Some(nudge), Some(since)) if now - since > Duration::from_millis(1500) => {
                            upload_quiet_since = Some(now);
                            outs.push(nudge);
                        }
                        (Some(_), None) => upload_quiet_since = Some(now),
                        (None, _) => upload_quiet_since = None,
                        _ => {}
                    }
                }
                flush(&mut outs, &mut tx, down, &mut lose_acks, &mut delay_acks, &mut delayed_real, now);
                if !tx.buf.is_empty() {
                    link.send_bytes(&tx.buf).await;
                    tx.buf.clear();
                }
                let v = model.view();
                logs_lock().observe(v.t_s, v.armed);
                view.send_replace(v);
            }
            m = link.recv() => {
                let Some((header, m)) = m else { return };
                let now = Instant::now();
                if link_down_until.is_some_and(|t| now < t) {
                    continue;
                }
                debug!(?m, "received");
                if matches!(m, MavMessage::MISSION_ITEM_INT(_) | MavMessage::MISSION_COUNT(_)) {
                    upload_quiet_since = Some(now);
                }
                if let MavMessage::HEARTBEAT(hb) = &m {
                    if model.note_heartbeat(header, hb) {
                        watched_heartbeat_real = Some(now);
                    }
                }
                let time_utc = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as u32);
                let log_replies = logs_lock().handle(&m, time_utc);
                match log_replies {
                    Some(replies) => replies.iter().for_each(|r| tx.encode(r)),
                    None => model.handle(&m, &mut outs),
                }
                flush(&mut outs, &mut tx, false, &mut lose_acks, &mut delay_acks, &mut delayed_real, now);
                if !tx.buf.is_empty() {
                    link.send_bytes(&tx.buf).await;
                    tx.buf.clear();
                }
            }

        }
    }
}

fn flush(
    outs: &mut Vec<Out>,
    tx: &mut Sender,
    down: bool,
    lose_acks: &mut u32,
    delay_acks: &mut (u32, Duration),
    delayed_real: &mut Vec<(Instant, MavMessage)>,
    now: Instant,
) {
    for o in outs.drain(..) {
        if down {
            continue;
        }
        if o.is_ack && *lose_acks > 0 {
            *lose_acks -= 1;
            warn!(msg = ?o.msg, "COMMAND_ACK dropped (injected fault)");
            continue;
        }
        if o.is_ack && delay_acks.0 > 0 {
            delay_acks.0 -= 1;
            delayed_real.push((now + delay_acks.1, o.msg));
            continue;
        }
        tx.encode(&o.msg);
    }
}
