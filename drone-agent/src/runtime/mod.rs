//! The async side: executes the machine's effects against the flight controller, the payload
//! release and the cloud, and turns what they say (and the clock, and a technician) back into
//! events. It executes and never decides: every "what now" is the machine's.
//!
//! One task owns the machine; everything reaches it as a message, so the machine sees one event
//! at a time in the order they happened.
//!
//! - [`effects`]: runs one effect (flight operations numbered so a superseded one's answer is
//!   dropped, the payload, timers, reports).
//! - [`inbound`]: the cloud's frames (tasks, commands, idempotency) and the technician's
//!   requests.
//! - [`restart`]: after a restart mid-delivery, wait for the autopilot (home first), then tell
//!   the machine what the vehicle is doing.
//! - [`storage`]: a disk that refuses writes: events sent live and held in memory, the state
//!   file re-saved, retried backing off; the machine is told.
//! - [`energy`]: energy to get home, measured (phases, wind, the autopilot's clock) and learned
//!   per flight; the machine gets the numbers as [`Event::Energy`] and decides.
//! - [`approach`]: the precision approach executor (camera sightings → `LANDING_TARGET` and
//!   steering; the approach's verdict goes to the machine as an event).
//! - `fake` (tests): an in-memory [`FlightController`] that can refuse, delay and fail on request,
//!   and an in-memory [`Cloud`], so the runtime's tests run in milliseconds without sockets.

mod approach;
mod effects;
mod energy;
mod fence;
mod inbound;
mod restart;
mod storage;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use crate::camera::CameraRig;
use crate::commands::CommandLog;
use crate::config::DroneConfig;
use crate::machine::{Event, FlightOp, Machine, Outcome, Timer};
use crate::monitor::{self, Monitor, Thresholds};
use crate::persist::StateFile;
use crate::technician::ChecksReply;
pub use crate::technician::TechRequest;
use cloud_link::{CloudLink, LinkStatus};
use hal::flight::{FcError, FcSnapshot, FlightController};
use hal::marker::MarkerConfig;
use hal::payload::PayloadRelease;
use protocol::ws::DroneState;
use protocol::Envelope;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

pub use approach::CameraHandle;

/// What the runtime needs from the cloud link, so its tests can use an in-memory one.
pub trait Cloud: Send + Sync + 'static {
    /// Stores the event in the outbox (on disk when this returns) for sending.
    fn publish_event(
        &self,
        event: protocol::ws::Event,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Sends a frame now if connected (acks, errors); dropped otherwise.
    fn send(&self, env: Envelope);
    fn set_telemetry(&self, env: Envelope);
    fn set_hello(&self, env: Envelope);
    fn status(&self) -> watch::Receiver<LinkStatus>;
    fn close(&self) -> impl Future<Output = ()> + Send;
}

impl Cloud for CloudLink {
    async fn publish_event(&self, event: protocol::ws::Event) -> Result<(), String> {
        CloudLink::publish_event(self, event)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    fn send(&self, env: Envelope) {
        CloudLink::send(self, env);
    }
    fn set_telemetry(&self, env: Envelope) {
        CloudLink::set_telemetry(self, env)
    }
    fn set_hello(&self, env: Envelope) {
        CloudLink::set_hello(self, env)
    }
    fn status(&self) -> watch::Receiver<LinkStatus> {
        CloudLink::status(self)
    }
    async fn close(&self) {
        CloudLink::close(self).await
    }
}

/// What spawned work reports back to the task that owns the machine.
#[derive(Debug)]
pub enum Internal {
    /// An event for the machine (pre-flight verdicts, the payload's answers, the runtime's own
    /// `ready` after COMPLETED).
    Event(Event),
    /// Flight operation number `seq` was refused.
    FlightFailed {
        seq: u64,
        op: FlightOp,
        error: FcError,
    },
    /// The technician's test release finished.
    TestDone(ChecksReply),
}

/// The running agent: the machine and the handles it drives.
pub struct Agent<F: FlightController, P: PayloadRelease, C: Cloud = CloudLink> {
    cfg: DroneConfig,
    fc: Arc<F>,
    payload: Arc<P>,
    link: Arc<C>,
    machine: Machine,
    monitor: Monitor,
    commands: CommandLog,
    state_file: StateFile,
    timers: HashMap<Timer, Instant>,
    internal: mpsc::UnboundedSender<Internal>,
    /// The flight operation in progress and its number; a newer one aborts it, and only the
    /// newest one's refusal reaches the machine.
    flight_seq: u64,
    flight_op: Option<JoinHandle<()>>,
    release_op: Option<JoinHandle<()>>,
    snap: FcSnapshot,
    restored: bool,
    /// What the technician socket shows; only this task writes it.
    view: watch::Sender<crate::technician::AgentView>,
    camera: Option<CameraHandle>,
    /// The approach's clock starts here.
    epoch: Instant,
    pending_test: Option<oneshot::Sender<Result<ChecksReply, String>>>,
    /// Turns of the main loop (a closed channel must not make it spin).
    turns: Arc<AtomicU64>,
    /// Writes that failed and what waits for the disk.
    storage: storage::Storage,
    /// Started with no flight on record: look once at what the vehicle is doing (a flying one
    /// is made safe by the machine).
    check_vehicle: bool,
    /// Ground stations' steering commands the router forwarded (issue 13): who a mode change
    /// that follows came from.
    routed: Option<tokio::sync::broadcast::Receiver<hal::flight::router::RoutedCommand>>,
    /// The last task's operational volume (by delivery id), for its pre-flight.
    task_volume: Option<(uuid::Uuid, Option<protocol::volume::OperationalVolume>)>,
    /// The volume the current delivery flies in (chosen in pre-flight); every go-to is checked.
    volume: Option<crate::geofence::Volume>,
    /// `[energy]`: the flight's recording and the learned model.
    energy: Option<energy::EnergyRecorder>,
}

impl<F: FlightController, P: PayloadRelease, C: Cloud> Agent<F, P, C> {
    /// `machine` comes from the state file (or is new); `restored` says which.
    pub fn new(
        cfg: DroneConfig,
        fc: Arc<F>,
        payload: Arc<P>,
        link: Arc<C>,
        machine: Machine,
        mut commands: CommandLog,
        restored: bool,
    ) -> (Self, mpsc::UnboundedReceiver<Internal>) {
        let (internal, internal_rx) = mpsc::unbounded_channel();
        let monitor = Monitor::new(Thresholds {
            cruise_alt_m: cfg.flight.cruise_alt_m,
            drop_alt_m: cfg.flight.drop_alt_m,
            arrive_radius_m: cfg.flight.arrive_radius_m,
            alt_tolerance_m: cfg.flight.alt_tolerance_m,
            home_radius_m: cfg.flight.home_radius_m,
            battery_return_percent: cfg.battery.return_percent,
            battery_critical_percent: cfg.battery.critical_percent,
            battery_cells: cfg
                .battery
                .cells
                .map(|n| (n, cfg.battery.return_cell_v, cfg.battery.critical_cell_v)),
            hand_back_mode: cfg.pilot.hand_back_mode.clone(),
        });
        commands.set_capacity(cfg.commands.remember);
        let state_file = StateFile::new(&cfg.drone.state_dir);
        let snap = fc.snapshot().borrow().clone();
        let energy = cfg
            .energy
            .as_ref()
            .map(|e| energy::EnergyRecorder::open(&cfg.drone.state_dir, e.seed(), e.learn));
        let mut machine = machine;
        if let Some(e) = &energy {
            machine.set_energy_model(e.model);
        }
        let view = watch::Sender::new(crate::technician::AgentView::new(
            machine.state(),
            machine.delivery().map(|d| d.delivery_id),
        ));
        let agent = Self {
            cfg,
            fc,
            payload,
            link,
            machine,
            monitor,
            commands,
            state_file,
            timers: HashMap::new(),
            internal,
            flight_seq: 0,
            flight_op: None,
            release_op: None,
            snap,
            restored,
            view,
            camera: None,
            epoch: Instant::now(),
            pending_test: None,
            turns: Arc::default(),
            storage: storage::Storage::default(),
            check_vehicle: !restored,
            routed: None,
            task_volume: None,
            volume: None,
            energy,
        };
        (agent, internal_rx)
    }

    /// A sender of events for the machine, for workers outside the agent's task (the autopilot
    /// log download).
    pub fn event_sender(&self) -> impl Fn(Event) + Send + Sync + 'static {
        let internal = self.internal.clone();
        move |e| {
            // the agent's task gone: the process is stopping
            let _ = internal.send(Internal::Event(e));
        }
    }

    /// Gives the agent its camera worker (`camera::spawn`) and the marker and lens it was set
    /// up with. Video starts if `[video]` enables it.
    pub fn with_camera(mut self, rig: CameraRig, marker: MarkerConfig) -> Self {
        info!(camera = %rig.describe, video = self.cfg.video.enabled, precision = self.cfg.precision.is_some(), "camera attached");
        rig.work.send_modify(|w| w.video = self.cfg.video.enabled);
        self.camera = Some(CameraHandle {
            work: rig.work,
            reports: Some(rig.reports),
            marker,
        });
        self
    }

    /// Gives the agent the router's notices of ground stations' steering commands, so a
    /// `pilot_override` names the endpoint that took the controls.
    pub fn with_routed_commands(
        mut self,
        routed: tokio::sync::broadcast::Receiver<hal::flight::router::RoutedCommand>,
    ) -> Self {
        self.routed = Some(routed);
        self
    }

    pub fn state(&self) -> DroneState {
        self.machine.state()
    }

    /// Counts the main loop's turns (for a test that the loop idles when nothing happens).
    pub fn turns(&self) -> Arc<AtomicU64> {
        self.turns.clone()
    }

    /// The state, delivery and recent events as the technician socket shows them.
    pub fn technician_view(&self) -> watch::Receiver<crate::technician::AgentView> {
        self.view.subscribe()
    }

    /// Runs until `shutdown` resolves. Saves state on the way out; lands nothing by itself.
    pub async fn run(
        mut self,
        mut incoming: mpsc::Receiver<Envelope>,
        mut internal_rx: mpsc::UnboundedReceiver<Internal>,
        mut technician: mpsc::Receiver<TechRequest>,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut snaps = self.fc.snapshot();
        let mut cloud = self.link.status();
        let mut telemetry = tokio::time::interval(self.cfg.telemetry_interval());
        telemetry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut camera_reports = self.camera.as_mut().and_then(|c| c.reports.take());
        // the approach's timeouts must fire even when no frame arrives (a dead camera)
        let mut approach_tick = tokio::time::interval(self.cfg.approach_tick());
        approach_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A channel that has ended is never polled again (a closed one is always ready).
        let (mut frames_open, mut technician_open) = (true, true);
        tokio::pin!(shutdown);
        // Under systemd (Type=notify): READY=1 once the flight controller is reached (the config
        // was valid before we got here); the watchdog is fed from this loop, so a stuck loop is
        // restarted. Everything is a no-op when not started by systemd.
        let mut systemd = daemon::systemd::Service::from_env();
        systemd.status("waiting for the flight controller");

        self.save();
        // the machine times cloud outages itself: it hears the link's state from the start
        let up = cloud.borrow_and_update().is_connected();
        self.feed(if up { Event::CloudUp } else { Event::CloudDown })
            .await;
        if self.restored {
            self.reattach(&mut snaps).await;
        }
        self.ready_if_fc_reached(&mut systemd);

        loop {
            self.turns.fetch_add(1, Ordering::Relaxed);
            let next_timer = self
                .timers
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(t, at)| (*t, *at));
            tokio::select! {
                _ = &mut shutdown => break,
                frame = incoming.recv(), if frames_open => match frame {
                    Some(env) => self.on_frame(env).await,
                    None => {
                        error!("cloud link stopped delivering frames; flying on without it");
                        frames_open = false;
                    }
                },
                request = technician.recv(), if technician_open => match request {
                    Some(r) => self.on_technician(r).await,
                    None => technician_open = false,
                },
                changed = snaps.changed() => {
                    if changed.is_err() {
                        error!("flight controller snapshot stream ended");
                        break;
                    }
                    self.snap = snaps.borrow_and_update().clone();
                    self.ready_if_fc_reached(&mut systemd);
                    self.check_vehicle_once().await;
                    let at = self.monitor_position();
                    for event in self.monitor.observe(&self.snap, at) {
                        self.feed(event).await;
                    }
                    self.observe_energy().await;
                }
                Some(msg) = internal_rx.recv() => self.on_internal(msg).await,
                _ = sleep_until(next_timer.map(|t| t.1)), if next_timer.is_some() => {
                    if let Some((timer, _)) = next_timer {
                        self.timers.remove(&timer);
                        self.feed(Event::TimerFired(timer)).await;
                    }
                }
                Some(report) = recv_some(&mut camera_reports) => self.on_camera(report).await,
                // a ground station's housekeeping (camera, queries) is not a take-over
                Some(cmd) = recv_routed(&mut self.routed) => if cmd.what.takes_the_controls() {
                    let at = self.monitor_position();
                    let what = cmd.what.to_string();
                    let now = std::time::SystemTime::now();
                    if let Some(event) = self.monitor.routed_command(&cmd.endpoint, &what, now, at) {
                        self.feed(event).await;
                    }
                },
                _ = approach_tick.tick(), if self.machine.approach().is_some() => self.tick_approach().await,
                _ = telemetry.tick() => self.push_telemetry(),
                _ = sleep_until(self.storage.retry_at()), if self.storage.retry_at().is_some() => {
                    self.retry_storage().await;
                    if let Some(news) = self.storage.take_news() {
                        self.feed(news).await;
                    }
                }
                // Reaching this branch means the loop turns and the FC snapshot stream is alive
                // (its end breaks the loop): healthy. A lost FC link is not a reason to be
                // restarted — the machine's FAILSAFE handles it — so it does not starve the watchdog.
                _ = systemd.watchdog_due() => systemd.alive(),
                Ok(()) = cloud.changed() => {
                    let up = cloud.borrow_and_update().is_connected();
                    self.feed(if up { Event::CloudUp } else { Event::CloudDown }).await;
                }
            }
        }
        systemd.stopping();
        info!(state = ?self.machine.state(), "shutting down: state saved, nothing landed");
        self.save();
        if let Some(h) = self.flight_op.take() {
            h.abort();
        }
        self.link.close().await;
    }

    /// Tells systemd the agent is up the first time the flight controller's link is up.
    fn ready_if_fc_reached(&self, systemd: &mut daemon::systemd::Service) {
        if !systemd.is_ready() && self.snap.link.is_connected() {
            systemd.ready(&format!(
                "flight controller reached; state {:?}",
                self.machine.state()
            ));
        }
    }

    fn monitor_position(&self) -> monitor::Position {
        monitor::Position {
            state: self.machine.state(),
            phase: self.machine.nav_phase(),
            destination: self.machine.delivery().map(|d| (d.lat, d.lon)),
            precision: self.detecting(),
            left_ground: self.machine.left_ground(),
        }
    }

    async fn on_internal(&mut self, msg: Internal) {
        match msg {
            Internal::Event(e) => {
                self.feed(e).await;
            }
            Internal::FlightFailed { seq, op, error } => {
                if seq != self.flight_seq || matches!(error, FcError::Cancelled { .. }) {
                    // superseded: a newer operation is what the autopilot is doing now
                    debug!(seq, current = self.flight_seq, %error, "stale flight result dropped");
                    return;
                }
                let transient = matches!(error, FcError::TemporarilyRejected { .. });
                self.feed(Event::FlightOpFailed {
                    op,
                    why: error.to_string(),
                    transient,
                })
                .await;
            }
            Internal::TestDone(reply) => {
                self.feed(Event::TestReleaseDone).await;
                if let Some(tx) = self.pending_test.take() {
                    let _ = tx.send(Ok(reply));
                }
            }
        }
    }

    /// Feeds one event through the machine and runs what it asks for. A write that failed
    /// while doing so (or worked again) is told to the machine at once, before anything else
    /// happens; a refusal that follows from it (a task that cannot be recorded) is this
    /// event's refusal.
    pub async fn feed(&mut self, event: Event) -> Outcome {
        let mut outcome = self.feed_one(event).await;
        while let Some(news) = self.storage.take_news() {
            let follow = self.feed_one(news).await;
            if outcome.rejected.is_none() {
                outcome.rejected = follow.rejected;
            }
        }
        outcome
    }

    /// The energy numbers of this snapshot to the machine; after a flight, the learned model to
    /// the machine and the disk (a failed write is said, and the flight goes on regardless).
    async fn observe_energy(&mut self) {
        let Some(rec) = self.energy.as_mut() else {
            return;
        };
        let (reading, learned) = rec.observe(&self.snap, std::time::Instant::now());
        if let Some(model) = learned {
            self.machine.set_energy_model(model);
            if let Err(error) = rec.save().await {
                warn!(%error, "energy model not saved: the learned one is used until the agent restarts");
            }
        }
        if let Some(r) = reading {
            self.feed(Event::Energy(r)).await;
        }
    }

    /// Started with no flight on record: once the autopilot's link and position are known, a
    /// flying vehicle is told to the machine as a restart in the air (it decides what is safe).
    async fn check_vehicle_once(&mut self) {
        if !self.check_vehicle || !self.snap.link.is_connected() || self.snap.position.is_none() {
            return;
        }
        self.check_vehicle = false;
        let vehicle = self.monitor.vehicle(&self.snap);
        if vehicle == crate::machine::Vehicle::Airborne && !self.machine.airborne() {
            warn!(state = ?self.machine.state(), armed = self.snap.armed, landed = ?self.snap.landed,
                "started with no flight on record, and the autopilot reports the vehicle flying");
            self.feed(Event::Restarted(vehicle)).await;
        }
    }

    async fn feed_one(&mut self, event: Event) -> Outcome {
        let delivery_before = self.machine.delivery().map(|d| d.delivery_id);
        let where_before = (self.machine.state(), self.machine.nav_phase());
        let outcome = self.machine.handle(&event);
        if outcome.transition.is_some()
            || where_before != (self.machine.state(), self.machine.nav_phase())
        {
            self.monitor.machine_moved();
        }
        if let Some((from, to)) = outcome.transition {
            info!(event = event.name(), ?from, ?to, "state changed");
        } else if let Some(why) = &outcome.rejected {
            info!(event = event.name(), state = ?self.machine.state(), reason = %why, "event rejected");
        } else {
            debug!(event = event.name(), state = ?self.machine.state(), "event handled");
        }
        self.publish_view(&event, &outcome);
        self.sync_approach();
        // Flight and payload effects first: they only start tasks, and the autopilot should hear
        // about a pause before any fsync has run. Then the reports (each on disk in the outbox
        // when `publish_event` returns), then the state file: a crash in between repeats a step
        // and its event after the restart (the backend may see `arrived` twice), but never leaves
        // a state the backend was not told about.
        let (reports, actions): (Vec<_>, Vec<_>) = outcome
            .effects
            .iter()
            .cloned()
            .partition(|e| matches!(e, crate::machine::Effect::Report { .. }));
        for effect in actions.into_iter().chain(reports) {
            self.run_effect(effect, &outcome, delivery_before).await;
        }
        // A camera frame's steering changes nothing a restart needs (the approach starts again
        // after one): no state-file write per frame.
        let steering_only = matches!(event, Event::CameraFrame(_) | Event::ApproachTick { .. })
            && outcome.transition.is_none();
        if (outcome.transition.is_some() || !outcome.effects.is_empty()) && !steering_only {
            self.save();
        }
        if matches!(outcome.transition, Some((_, DroneState::Completed))) {
            // COMPLETED is on disk and reported: ready for the next task.
            let _ = self.internal.send(Internal::Event(Event::Recovered));
        }
        outcome
    }

    fn publish_view(&self, event: &Event, outcome: &Outcome) {
        use crate::technician::RecentEvent;
        let entry = match (&outcome.transition, &outcome.rejected) {
            (Some((from, to)), _) => Some((format!("{from:?} -> {to:?}").to_uppercase(), false)),
            (None, Some(why)) => Some((format!("refused: {why}"), true)),
            (None, None) => None,
        };
        let (state, delivery) = (
            self.machine.state(),
            self.machine.delivery().map(|d| d.delivery_id),
        );
        self.view.send_modify(|v| {
            v.state = state;
            v.delivery_id = delivery;
            if let Some((detail, error)) = entry {
                v.record(RecentEvent::now(event.name(), detail), error);
            }
        });
    }

    fn push_telemetry(&self) {
        let storage = if self.storage.failed() {
            protocol::ws::StorageHealth::Failed
        } else {
            protocol::ws::StorageHealth::Ok
        };
        if let Some(t) = crate::report::telemetry(&self.snap, &self.machine, storage) {
            self.link.set_telemetry(Envelope::new(t));
        }
        let hello = crate::report::register(
            self.cfg.drone.id,
            &self.cfg.drone.model,
            &self.snap,
            &self.machine,
        );
        self.link.set_hello(Envelope::new(hello));
    }
}

/// The next item of an optional receiver; never, if there is none (or it is closed).
/// The next routed command; a lagging receiver skips what it missed (only the latest matters),
/// a closed one is never polled again.
async fn recv_routed<T: Clone>(rx: &mut Option<tokio::sync::broadcast::Receiver<T>>) -> Option<T> {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match rx {
            Some(r) => match r.recv().await {
                Ok(v) => return Some(v),
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => {
                    *rx = None;
                }
            },
            None => std::future::pending::<()>().await,
        }
    }
}

async fn recv_some<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => match r.recv().await {
            Some(v) => Some(v),
            None => {
                *rx = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
