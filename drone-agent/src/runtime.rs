//! The async side: runs the machine's effects against the flight controller, the payload release
//! and the cloud, and turns what they say (and the clock) back into events.
//!
//! One task owns the machine; everything reaches it as a message, so the machine sees one event
//! at a time in the order they happened. Flight-controller operations run in spawned tasks that
//! report back through the internal channel; a new flight operation supersedes the previous one
//! (a `pause` during a take-off aborts the wait for the take-off and holds).
//!
//! The precision approach (`[precision]`) lives here too: while the machine is in NAVIGATING's
//! approach phase the runtime holds a [`precision::Approach`], asks the camera worker for marker
//! sightings, sends each sighting of the task's marker to the autopilot as `LANDING_TARGET`,
//! steers with the approach's corrections, and turns its verdict into `at_drop_height` (centred)
//! or `approach_failed` (the machine's `retry_navigation`). Invariant: an approach exists only
//! while the machine is in that phase — [`Agent::feed`] ends it before running the effects of
//! the event that left it, so a `pause` is never followed by a stale steering command.

use crate::camera::{CameraReport, CameraRig, CameraWork, Sighting};
use crate::commands::CommandLog;
use crate::config::DroneConfig;
use crate::machine::{Delivery, Effect, Event, Machine, NavPhase, Outcome, Timer};
use crate::monitor::{self, Monitor, Thresholds};
use crate::persist::StateFile;
use crate::precision::{self, Approach, Decision};
use crate::report;
use cloud_link::CloudLink;
use hal::flight::{FcError, FcSnapshot, FlightController, GeoPoint, LandedState};
use hal::marker::MarkerConfig;
use hal::payload::PayloadRelease;
use protocol::error::codes;
use protocol::ws::{DroneState, ErrorMessage, EventType, Message};
use protocol::Envelope;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, info_span, warn, Instrument};

/// The running agent: the machine and the handles it drives.
pub struct Agent<F: FlightController, P: PayloadRelease> {
    cfg: DroneConfig,
    fc: Arc<F>,
    payload: Arc<P>,
    link: Arc<CloudLink>,
    machine: Machine,
    monitor: Monitor,
    commands: CommandLog,
    state_file: StateFile,
    timers: HashMap<Timer, Instant>,
    internal: mpsc::UnboundedSender<Event>,
    flight_op: Option<JoinHandle<()>>,
    release_op: Option<JoinHandle<()>>,
    snap: FcSnapshot,
    restored: bool,
    /// What the technician socket shows; only this task writes it.
    view: watch::Sender<crate::technician::AgentView>,
    camera: Option<CameraHandle>,
    approach: Option<ApproachRun>,
    /// The approach's clock starts here.
    epoch: Instant,
}

/// The runtime's side of the camera worker.
struct CameraHandle {
    work: watch::Sender<CameraWork>,
    reports: Option<mpsc::Receiver<CameraReport>>,
    /// The marker and lens (for `LANDING_TARGET`'s angular size).
    marker: MarkerConfig,
    /// Why the camera is failed, while it is.
    fault: Option<String>,
}

/// The precision approach in progress.
struct ApproachRun {
    approach: Approach,
    /// The camera failed and config allows finishing by GPS: the monitor decides again.
    gps_only: bool,
}

impl<F: FlightController, P: PayloadRelease> Agent<F, P> {
    /// `machine` comes from the state file (or is new); `restored` says which.
    pub fn new(
        cfg: DroneConfig,
        fc: Arc<F>,
        payload: Arc<P>,
        link: Arc<CloudLink>,
        machine: Machine,
        commands: CommandLog,
        restored: bool,
    ) -> (Self, mpsc::UnboundedReceiver<Event>) {
        let (internal, internal_rx) = mpsc::unbounded_channel();
        let monitor = Monitor::new(Thresholds {
            cruise_alt_m: cfg.flight.cruise_alt_m,
            drop_alt_m: cfg.flight.drop_alt_m,
            arrive_radius_m: cfg.flight.arrive_radius_m,
            alt_tolerance_m: cfg.flight.alt_tolerance_m,
            home_radius_m: cfg.flight.home_radius_m,
            battery_return_percent: cfg.battery.return_percent,
            battery_critical_percent: cfg.battery.critical_percent,
        });
        let state_file = StateFile::new(&cfg.drone.state_dir);
        let snap = fc.snapshot().borrow().clone();
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
            flight_op: None,
            release_op: None,
            snap,
            restored,
            view,
            camera: None,
            approach: None,
            epoch: Instant::now(),
        };
        (agent, internal_rx)
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
            fault: None,
        });
        self
    }

    pub fn state(&self) -> DroneState {
        self.machine.state()
    }

    /// The state, delivery and recent events as the technician socket shows them.
    pub fn technician_view(&self) -> watch::Receiver<crate::technician::AgentView> {
        self.view.subscribe()
    }

    /// Runs until `shutdown` resolves. Saves state on the way out; lands nothing by itself.
    pub async fn run(
        mut self,
        mut incoming: mpsc::Receiver<Envelope>,
        mut internal_rx: mpsc::UnboundedReceiver<Event>,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut snaps = self.fc.snapshot();
        let mut cloud = self.link.status();
        let mut telemetry = tokio::time::interval(self.cfg.telemetry_interval());
        telemetry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let cloud_limit = self.cfg.cloud_loss_limit();
        let mut cloud_check = tokio::time::interval((cloud_limit / 4).min(Duration::from_secs(1)));
        let mut cloud_down_since: Option<Instant> = None;
        let mut cloud_loss_reported = false;
        let mut camera_reports = self.camera.as_mut().and_then(|c| c.reports.take());
        // the approach's timeouts must fire even when no frame arrives (a dead camera)
        let mut approach_tick = tokio::time::interval(Duration::from_millis(200));
        approach_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        // Under systemd (Type=notify): READY=1 once the flight controller is reached (the config
        // was valid before we got here); the watchdog is fed from this loop, so a stuck loop is
        // restarted. Everything is a no-op when not started by systemd.
        let mut systemd = daemon::systemd::Service::from_env();
        systemd.status("waiting for the flight controller");

        self.save();
        if self.restored {
            self.reattach(&mut snaps).await;
        }
        self.ready_if_fc_reached(&mut systemd);

        loop {
            let next_timer = self
                .timers
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(t, at)| (*t, *at));
            tokio::select! {
                _ = &mut shutdown => break,
                frame = incoming.recv() => match frame {
                    Some(env) => self.on_frame(env).await,
                    None => {
                        error!("cloud link stopped delivering frames; flying on without it");
                        incoming = mpsc::channel(1).1;
                    }
                },
                changed = snaps.changed() => {
                    if changed.is_err() {
                        error!("flight controller snapshot stream ended");
                        break;
                    }
                    self.snap = snaps.borrow_and_update().clone();
                    self.ready_if_fc_reached(&mut systemd);
                    let at = self.monitor_position();
                    for event in self.monitor.observe(&self.snap, at) {
                        self.feed(event).await;
                    }
                }
                Some(event) = internal_rx.recv() => { self.feed(event).await; }
                _ = sleep_until(next_timer.map(|t| t.1)), if next_timer.is_some() => {
                    if let Some((timer, _)) = next_timer {
                        self.timers.remove(&timer);
                        self.feed(Event::TimerFired(timer)).await;
                    }
                }
                Some(report) = recv_some(&mut camera_reports) => self.on_camera(report).await,
                _ = approach_tick.tick(), if self.approach.is_some() => self.tick_approach().await,
                _ = telemetry.tick() => self.push_telemetry(),
                // Reaching this branch means the loop turns and the FC snapshot stream is alive
                // (its end breaks the loop): healthy. A lost FC link is not a reason to be
                // restarted — the machine's FAILSAFE handles it — so it does not starve the watchdog.
                _ = systemd.watchdog_due() => systemd.alive(),
                Ok(()) = cloud.changed() => {
                    let up = cloud.borrow_and_update().is_connected();
                    if up {
                        cloud_down_since = None;
                        cloud_loss_reported = false;
                    } else if cloud_down_since.is_none() {
                        cloud_down_since = Some(Instant::now());
                    }
                }
                _ = cloud_check.tick() => {
                    let down_long = cloud_down_since.is_some_and(|t| t.elapsed() >= cloud_limit);
                    if down_long && !cloud_loss_reported && self.machine.state() == DroneState::WaitingDrop {
                        cloud_loss_reported = true;
                        self.feed(Event::CloudLost).await;
                    }
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

    /// After a restart mid-delivery: wait for the autopilot, then let the machine decide.
    async fn reattach(&mut self, snaps: &mut watch::Receiver<FcSnapshot>) {
        let state = self.machine.state();
        let wait = self.cfg.fc_reattach();
        info!(
            ?state,
            wait_s = wait.as_secs_f64(),
            "restarted with saved state; waiting for the flight controller"
        );
        let found = tokio::time::timeout(wait, async {
            loop {
                {
                    let s = snaps.borrow_and_update();
                    if s.link.is_connected() && s.position.is_some() {
                        return s.clone();
                    }
                }
                if snaps.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        match found {
            Ok(snap) => {
                self.snap = snap;
                let airborne = self.snap.armed && self.snap.landed != LandedState::OnGround;
                let taking_off = state == DroneState::Preflight
                    || self.machine.nav_phase() == Some(crate::machine::NavPhase::TakingOff);
                if airborne {
                    self.monitor.assume_flown();
                    self.feed(Event::Restarted { airborne }).await;
                } else if monitor_airborne(state) && !taking_off {
                    // the flight ended while the agent was down: it landed, here or elsewhere
                    let event = match (self.snap.home, self.snap.position) {
                        (Some(home), Some(pos))
                            if home.distance_m(pos.lat_deg, pos.lon_deg)
                                <= self.cfg.flight.home_radius_m =>
                        {
                            Event::LandedAtHome
                        }
                        _ => Event::LandedAway,
                    };
                    self.feed(Event::Restarted { airborne }).await;
                    self.feed(event).await;
                } else {
                    self.feed(Event::Restarted { airborne }).await;
                }
            }
            Err(_) => {
                warn!("flight controller not reachable after restart");
                self.feed(Event::Restarted { airborne: false }).await;
                if monitor_airborne(state) {
                    self.feed(Event::FcLinkLost).await;
                }
            }
        }
    }

    fn monitor_position(&self) -> monitor::Position {
        monitor::Position {
            state: self.machine.state(),
            phase: self.machine.nav_phase(),
            destination: self.machine.delivery().map(|d| (d.lat, d.lon)),
            precision: self.approach.as_ref().is_some_and(|a| !a.gps_only),
        }
    }

    /// Feeds one event through the machine and runs what it asks for.
    pub async fn feed(&mut self, event: Event) -> Outcome {
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
            .partition(|e| matches!(e, Effect::Report { .. }));
        for effect in actions {
            self.run_effect(effect, &outcome, delivery_before).await;
        }
        for effect in reports {
            self.run_effect(effect, &outcome, delivery_before).await;
        }
        if outcome.transition.is_some() || !outcome.effects.is_empty() {
            self.save();
        }
        if matches!(outcome.transition, Some((_, DroneState::Completed))) {
            // COMPLETED is on disk and reported: ready for the next task.
            let _ = self.internal.send(Event::Recovered);
        }
        outcome
    }

    /// Starts or ends the precision approach to match the machine (see the module docs).
    fn sync_approach(&mut self) {
        let approaching = self.machine.state() == DroneState::Navigating
            && self.machine.nav_phase() == Some(NavPhase::Approaching);
        let wanted = approaching && self.camera.is_some();
        match (&self.cfg.precision, wanted, self.approach.is_some()) {
            (Some(cfg), true, false) => {
                let Some(d) = self.machine.delivery() else {
                    return;
                };
                info!(
                    aruco_id = d.aruco_id,
                    "precision approach: looking for the marker"
                );
                let mut run = ApproachRun {
                    approach: Approach::new(
                        cfg.clone(),
                        d.aruco_id,
                        self.cfg.flight.drop_alt_m,
                        self.epoch.elapsed().as_secs_f64(),
                    ),
                    gps_only: false,
                };
                if let Some(why) = self.camera.as_ref().and_then(|c| c.fault.clone()) {
                    if cfg.gps_fallback {
                        warn!(reason = %why, "camera failed: approaching by GPS only");
                        run.gps_only = true;
                    } else {
                        let _ = self
                            .internal
                            .send(Event::ApproachFailed(format!("camera failed: {why}")));
                    }
                }
                self.approach = Some(run);
            }
            (_, false, true) => {
                debug!("precision approach ended");
                self.approach = None;
            }
            _ => {}
        }
        let detect = self.approach.as_ref().is_some_and(|a| !a.gps_only);
        if let Some(c) = &self.camera {
            c.work
                .send_if_modified(|w| std::mem::replace(&mut w.detect, detect) != detect);
        }
    }

    async fn on_camera(&mut self, report: CameraReport) {
        match report {
            CameraReport::Sighting(s) => self.on_sighting(s).await,
            CameraReport::Fault(why) => {
                if let Some(c) = self.camera.as_mut() {
                    c.fault = Some(why.clone());
                }
                self.view
                    .send_modify(|v| v.camera_fault = Some(why.clone()));
                let mut reason = format!("camera failed: {why}");
                let fallback = self.cfg.precision.as_ref().is_some_and(|p| p.gps_fallback);
                match self.approach.as_mut() {
                    Some(run) if !run.gps_only && fallback => {
                        run.gps_only = true;
                        reason.push_str("; finishing the approach by GPS");
                        warn!(reason = %why, "camera failed during the approach: GPS only");
                    }
                    Some(run) if !run.gps_only => {
                        let _ = self.internal.send(Event::ApproachFailed(reason.clone()));
                    }
                    _ => {}
                }
                self.publish(EventType::CameraFault, Some(reason)).await;
                self.sync_approach();
                // back by GPS: the steering may have left the drone off the GPS point
                if self.approach.as_ref().is_some_and(|a| a.gps_only) {
                    if let Some(d) = self.machine.delivery() {
                        let (lat, lon, alt) = (d.lat, d.lon, self.cfg.flight.drop_alt_m);
                        let fc = self.fc.clone();
                        self.spawn_flight("descend by GPS", async move {
                            fc.goto(GeoPoint::new(lat, lon, alt)).await
                        });
                    }
                }
            }
            CameraReport::Restored => {
                if let Some(c) = self.camera.as_mut() {
                    c.fault = None;
                }
                self.view.send_modify(|v| v.camera_fault = None);
                self.publish(EventType::CameraRestored, None).await;
            }
        }
    }

    /// One frame's markers: `LANDING_TARGET` for the task's, then the approach decides.
    async fn on_sighting(&mut self, s: Sighting) {
        let Some(run) = self.approach.as_mut() else {
            return;
        };
        if run.gps_only {
            return;
        }
        let markers = match s.markers {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "marker detection failed on a frame");
                Vec::new()
            }
        };
        let at = s.at.or_else(|| {
            self.snap
                .position
                .map(|p| GeoPoint::new(p.lat_deg, p.lon_deg, p.alt_rel_m))
        });
        let Some(at) = at else {
            return;
        };
        let want = self.machine.delivery().map(|d| d.aruco_id);
        if let (Some(m), Some(c)) = (
            markers.iter().find(|m| Some(m.id) == want),
            self.camera.as_ref(),
        ) {
            let intrinsics = c.marker.intrinsics(s.frame_size.0, s.frame_size.1);
            let lt = precision::landing_target(m, &intrinsics, s.captured_wall);
            if let Err(e) = self.fc.send_landing_target(lt).await {
                warn!(error = %e, "LANDING_TARGET not sent");
            }
        }
        let now_s = tokio::time::Instant::from_std(s.captured)
            .saturating_duration_since(self.epoch)
            .as_secs_f64();
        let pose = precision::Pose {
            at,
            heading_deg: s.heading_deg.or(self.snap.heading_deg).unwrap_or(0.0),
            // unknown speed: never "still", so never centred on a guess
            speed_mps: s.speed_mps.unwrap_or(f64::INFINITY),
        };
        let decision = run.approach.frame(now_s, &markers, pose);
        self.act_on(decision).await;
    }

    async fn tick_approach(&mut self) {
        let now_s = self.epoch.elapsed().as_secs_f64();
        let Some(run) = self.approach.as_mut() else {
            return;
        };
        if run.gps_only {
            return;
        }
        let decision = run.approach.tick(now_s);
        self.act_on(decision).await;
    }

    async fn act_on(&mut self, decision: Decision) {
        match decision {
            Decision::Wait => {}
            Decision::Steer(to) => {
                let fc = self.fc.clone();
                self.spawn_flight("precision steer", async move { fc.goto(to).await });
            }
            Decision::Centred => {
                info!("precision approach: centred over the marker at drop height");
                self.feed(Event::AtDropHeight).await;
            }
            Decision::Failed(why) => {
                warn!(reason = %why, "precision approach failed");
                self.feed(Event::ApproachFailed(why.to_string())).await;
            }
        }
    }

    /// An event outside any transition (camera faults): reported like the machine's.
    async fn publish(&self, event: EventType, reason: Option<String>) {
        let facts = report::EventFacts {
            event,
            reason,
            delivery_id: self.machine.delivery().map(|d| d.delivery_id),
            transition: None,
        };
        if let Err(e) = self
            .link
            .publish_event(report::event(facts, &self.snap))
            .await
        {
            error!(error = %e, ?event, "could not store the event in the outbox");
        }
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

    fn save(&self) {
        if let Err(e) = self.state_file.save(self.machine.to_json(), &self.commands) {
            error!(error = %e, "could not save the state file; a restart now would forget this step");
        }
    }

    async fn run_effect(
        &mut self,
        effect: Effect,
        outcome: &Outcome,
        delivery_before: Option<uuid::Uuid>,
    ) {
        match effect {
            Effect::Report { event, reason } => {
                let facts = report::EventFacts {
                    event,
                    reason,
                    delivery_id: self
                        .machine
                        .delivery()
                        .map(|d| d.delivery_id)
                        .or(delivery_before),
                    transition: outcome.transition,
                };
                let ev = report::event(facts, &self.snap);
                if let Err(e) = self.link.publish_event(ev).await {
                    error!(error = %e, ?event, "could not store the event in the outbox");
                }
            }
            Effect::RunPreflight => {
                let fc = self.fc.clone();
                let min = self.cfg.battery.min_takeoff_percent;
                let tx = self.internal.clone();
                tokio::spawn(async move {
                    let event = match fc.preflight_check(min).await {
                        Ok(r) if r.passed() => Event::PreflightPassed,
                        Ok(r) => Event::PreflightFailed(
                            r.failures()
                                .map(|c| format!("{}: {}", c.name, c.detail))
                                .collect::<Vec<_>>()
                                .join("; "),
                        ),
                        Err(e) => Event::PreflightFailed(e.to_string()),
                    };
                    let _ = tx.send(event);
                });
            }
            Effect::Takeoff { alt_m } => {
                let fc = self.fc.clone();
                self.spawn_flight("take-off", async move {
                    retry_transient(|| fc.arm()).await?;
                    retry_transient(|| fc.takeoff(alt_m)).await
                });
            }
            Effect::Goto { lat, lon, alt_m } => {
                let fc = self.fc.clone();
                self.spawn_flight("goto", async move {
                    fc.goto(GeoPoint::new(lat, lon, alt_m)).await
                });
            }
            Effect::HoverAt { alt_m } => {
                let fc = self.fc.clone();
                // over the destination itself when there is one: GPS drift must not carry the
                // descent away from the locker
                let dest = self.machine.delivery().map(|d: &Delivery| (d.lat, d.lon));
                self.spawn_flight("descend", async move {
                    match dest {
                        Some((lat, lon)) => fc.goto(GeoPoint::new(lat, lon, alt_m)).await,
                        None => fc.hover_at(alt_m).await,
                    }
                });
            }
            Effect::Hold => {
                let fc = self.fc.clone();
                self.spawn_flight("hold", async move { fc.hold().await });
            }
            Effect::ReturnHome => {
                let fc = self.fc.clone();
                self.spawn_flight(
                    "return to launch",
                    async move { fc.return_to_launch().await },
                );
            }
            Effect::LandNow => {
                let fc = self.fc.clone();
                self.spawn_flight("land", async move { fc.land().await });
            }
            Effect::ReleasePayload => {
                let payload = self.payload.clone();
                let tx = self.internal.clone();
                if let Some(h) = self.release_op.take() {
                    h.abort();
                }
                self.release_op = Some(tokio::spawn(
                    async move {
                        let event = match payload.release().await {
                            Ok(()) => Event::ReleaseDone,
                            Err(e) => Event::ReleaseFailed(e.to_string()),
                        };
                        let _ = tx.send(event);
                    }
                    .instrument(info_span!("payload_release")),
                ));
            }
            Effect::StartTimer(timer, after) => {
                self.timers.insert(timer, Instant::now() + after);
            }
            Effect::CancelTimer(timer) => {
                self.timers.remove(&timer);
            }
        }
    }

    /// Starts a flight-controller operation, superseding the one in progress.
    fn spawn_flight(
        &mut self,
        what: &'static str,
        op: impl Future<Output = Result<(), FcError>> + Send + 'static,
    ) {
        if let Some(previous) = self.flight_op.take() {
            previous.abort();
        }
        let tx = self.internal.clone();
        self.flight_op = Some(tokio::spawn(
            async move {
                match op.await {
                    Ok(()) => debug!("accepted by the autopilot"),
                    Err(e) => {
                        warn!(error = %e, "flight controller operation failed");
                        let _ = tx.send(Event::FlightOpFailed(format!("{what}: {e}")));
                    }
                }
            }
            .instrument(info_span!("flight_op", op = what)),
        ));
    }

    fn push_telemetry(&self) {
        if let Some(t) = report::telemetry(&self.snap, &self.machine) {
            self.link.set_telemetry(Envelope::new(t));
        }
        let hello = report::register(
            self.cfg.drone.id,
            &self.cfg.drone.model,
            &self.snap,
            &self.machine,
        );
        self.link.set_hello(Envelope::new(hello));
    }

    async fn on_frame(&mut self, env: Envelope) {
        match env.message {
            Message::Task(task) => {
                // A backend re-sends a task it saw no ack for: while the drone is flying that very
                // delivery it is acknowledged again, never refused as "busy" nor flown twice. Once
                // the drone is idle again (the pre-flight refused it, or a kill lost it before it
                // was saved) the same task is a new attempt.
                let flying_it = self
                    .machine
                    .delivery()
                    .is_some_and(|d| d.delivery_id == task.delivery_id);
                if flying_it {
                    debug!(delivery_id = %task.delivery_id, "task already being flown: acknowledging again");
                    let ack = match self.commands.seen(task.delivery_id) {
                        Some(prev) => prev.clone(),
                        None => self.commands.record(task.delivery_id, None),
                    };
                    self.link.send(Envelope::new(ack));
                    return;
                }
                let span = info_span!("task", delivery_id = %task.delivery_id);
                let delivery = Delivery {
                    delivery_id: task.delivery_id,
                    lat: task.destination.lat.get(),
                    lon: task.destination.lon.get(),
                    aruco_id: task.destination.aruco_id,
                    priority: task.priority,
                };
                let outcome = self.feed(Event::Task(delivery)).instrument(span).await;
                // A task has no cmd_id: its delivery id stands in for one in the ack.
                let ack = self
                    .commands
                    .record(task.delivery_id, outcome.rejected.clone());
                if let Some(why) = outcome.rejected {
                    self.link.send(Envelope::new(ErrorMessage {
                        code: codes::TASK_REJECTED.into(),
                        message: why,
                        in_reply_to: Some(task.delivery_id.to_string()),
                    }));
                }
                self.link.send(Envelope::new(ack));
            }
            Message::Command(cmd) => {
                if let Some(prev) = cmd.cmd_id.and_then(|id| self.commands.seen(id)) {
                    debug!(cmd_id = %prev.cmd_id, "command id seen before: acknowledging again, not acting");
                    self.link.send(Envelope::new(prev.clone()));
                    return;
                }
                let active = self.machine.delivery().map(|d| d.delivery_id);
                let rejected = match (cmd.delivery_id, active) {
                    (Some(asked), Some(flying)) if asked != flying => Some(format!(
                        "command is for delivery {asked}, the drone is flying {flying}"
                    )),
                    _ => self.feed(Event::Command(cmd.command)).await.rejected,
                };
                match cmd.cmd_id {
                    Some(id) => {
                        let ack = self.commands.record(id, rejected);
                        self.save();
                        self.link.send(Envelope::new(ack));
                    }
                    None => {
                        if let Some(why) = rejected {
                            self.link.send(Envelope::new(ErrorMessage {
                                code: codes::COMMAND_REJECTED.into(),
                                message: why,
                                in_reply_to: cmd.delivery_id.map(|d| d.to_string()),
                            }));
                        }
                    }
                }
            }
            Message::Error(e) => {
                warn!(code = %e.code, message = %e.message, "the cloud reports an error")
            }
            Message::Presence(_) => {}
            other => {
                let kind = Envelope::new(other).kind();
                self.link.send(Envelope::new(ErrorMessage {
                    code: codes::UNEXPECTED_MESSAGE.into(),
                    message: format!("a drone does not accept `{kind}` messages"),
                    in_reply_to: None,
                }));
            }
        }
    }
}

fn monitor_airborne(s: DroneState) -> bool {
    use DroneState::*;
    matches!(
        s,
        Navigating | WaitingDrop | Dropped | Returning | Aborting | Paused | EmergencyLanding
    )
}

/// The next item of an optional receiver; never, if there is none (or it is closed).
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

/// Arming and take-off are refused for a while after the autopilot boots (EKF settling):
/// `TEMPORARILY_REJECTED` is worth a few more tries; anything else is final.
async fn retry_transient<Fut>(mut op: impl FnMut() -> Fut) -> Result<(), FcError>
where
    Fut: Future<Output = Result<(), FcError>>,
{
    let mut tries = 0;
    loop {
        match op().await {
            Err(FcError::TemporarilyRejected { .. }) if tries < 10 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => return other,
        }
    }
}
