//! The states: every `#[state]` method below, grouped under the `grounded` and `airborne`
//! superstates, both under `any`. `airborne` is the one place where battery, GPS, link,
//! autopilot refusals and mission controls are handled for every flying state; `go_home` is the
//! one place that decides between "home with the parcel" (ABORTING) and "home empty" (RETURNING).

use super::events::{
    command_name, Delivery, Effect, Event, FlightOp, Fly, Frame, Limits, PayloadReading, Timer,
    UnknownAirborne, Vehicle,
};
use crate::precision::{Approach, Decision};
use protocol::ws::{CommandKind, DroneState, EventType};
use serde::{Deserialize, Serialize};
use statig::prelude::*;

/// Where a delivery flight is, within NAVIGATING.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NavPhase {
    /// Armed, climbing to cruise altitude over home.
    TakingOff,
    /// At cruise altitude, flying to the destination.
    Cruising,
    /// Over the destination, descending to drop height and centring.
    Approaching,
}

/// Where PAUSED (or AUTOPILOT_CONTROL) goes back to on `resume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Resume {
    Navigating(NavPhase),
    WaitingDrop,
    Dropped,
    Returning,
    Aborting,
    EmergencyLanding,
}

/// The flight operation last asked for, and how often the autopilot has refused it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FlightCmd {
    pub fly: Fly,
    pub refusals: u32,
}

/// The precision approach in progress: machine data, so every decision on it (steer, centred,
/// failed, finish by GPS when the camera fails) is the machine's. Exists only while the machine
/// is in NAVIGATING's approach phase with `Limits::precision` set. Not persisted: its clock is
/// the process's, and a restart in the approach starts the descent and the approach again (the
/// attempt count, `Drone::nav_attempts`, is persisted).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ApproachRun {
    /// The camera failed and config allows finishing by GPS: the monitor's "at drop height"
    /// decides, as without a camera.
    pub gps_only: bool,
    /// The camera had already failed when the approach began and there is no GPS fallback: the
    /// approach's first clock tick fails it.
    blind: Option<String>,
    /// The marker tracking; started at the first clock reading (frame or tick).
    marker: Option<Approach>,
}

/// The shared storage of the statig machine: what every state can see. Persisted (with the
/// current state) after every transition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Drone {
    pub delivery: Option<Delivery>,
    pub parcel_on_board: bool,
    pub nav_attempts: u32,
    /// `drop_cargo` accepted, release not yet confirmed: after a restart, read the payload.
    #[serde(default)]
    pub releasing: bool,
    /// The vehicle has been in the air during this delivery: only then is "on the ground" a
    /// landing (and not "not yet taken off").
    #[serde(default)]
    pub left_ground: bool,
    /// The last flight operation asked for (retried on refusal); `None` while the machine
    /// commands nothing (the autopilot flies).
    #[serde(default)]
    pub flight: Option<FlightCmd>,
    /// The cloud link is down (the runtime says so again after a restart).
    #[serde(default)]
    pub cloud_down: bool,
    /// A technician's test release is running (a restart ends it).
    #[serde(default)]
    pub testing: bool,
    /// The drop wait, seconds, when the battery shortened it (for the timeout's words).
    #[serde(default)]
    pub drop_wait_cut_s: Option<u64>,
    /// Why the last write of the state file or the outbox failed, while it still fails. Never
    /// persisted: a new process finds out for itself.
    #[serde(skip)]
    pub storage_failed: Option<String>,
    /// The precision approach in progress (see [`ApproachRun`]).
    #[serde(skip)]
    pub approach: Option<ApproachRun>,
    /// Why the camera is failed, while it is (a new process's camera worker reports it again).
    #[serde(skip)]
    pub camera_fault: Option<String>,
}

/// What one event produced, collected while the machine handles it (statig's context). Holds the
/// limits too: they come from the config, not from the state file.
#[derive(Debug, Default)]
pub struct Ctx {
    pub(super) limits: Limits,
    pub(super) effects: Vec<Effect>,
    pub(super) report: Option<(EventType, Option<String>)>,
    /// Reports that go out before `report` (a camera fault before the retry it causes).
    pub(super) reports_before: Vec<(EventType, Option<String>)>,
    pub(super) rejected: Option<String>,
    /// Taken without anything to do (a `return_to_base` while already returning).
    pub(super) accepted: bool,
    pub(super) transition: Option<(DroneState, DroneState)>,
    /// Why this process started with no flight on record (see `Machine::set_lost_record`).
    pub(super) lost_record: Option<String>,
    /// The latest energy reading ([`Event::Energy`]), for the pre-flight check and the drop wait.
    pub(super) energy: Option<super::energy::EnergyReading>,
}

/// Who flies while the agent commands nothing (`autopilot_control`, `pilot_override`).
#[derive(Debug, Clone, Copy)]
enum Flier {
    Autopilot,
    Pilot,
}

impl Flier {
    fn name(self) -> &'static str {
        match self {
            Flier::Autopilot => "the autopilot",
            Flier::Pilot => "the pilot",
        }
    }
}

impl Ctx {
    fn report(&mut self, event: EventType, reason: Option<String>) {
        self.report = Some((event, reason));
    }

    fn timer(&mut self, t: Timer, after: std::time::Duration) {
        self.effects.push(Effect::StartTimer(t, after));
    }

    fn cancel(&mut self, timers: &[Timer]) {
        for t in timers {
            self.effects.push(Effect::CancelTimer(*t));
        }
    }

    fn reject(&mut self, why: String) {
        self.rejected = Some(why);
    }
}

type Response = statig::blocking::Outcome<State>;

#[state_machine(
    initial = "State::idle()",
    after_transition = "Self::after_transition",
    context_identifier = "ctx",
    state(derive(Debug, Clone, PartialEq, Serialize, Deserialize)),
    superstate(derive(Debug))
)]
impl Drone {
    // ------------------------------------------------------------------ on the ground

    #[state(superstate = "grounded")]
    fn idle(&mut self, ctx: &mut Ctx, event: &Event) -> Response {
        match event {
            Event::Task(d) if self.testing => {
                ctx.reject(format!(
                    "task {} refused: a technician's test release is running",
                    d.delivery_id
                ));
                Handled
            }
            // Fail closed: a flight that cannot be recorded does not start.
            Event::Task(d) if self.storage_failed.is_some() => {
                ctx.reject(format!(
                    "task {} refused: the drone cannot save its state or events ({}); it will not take off until it can",
                    d.delivery_id,
                    self.storage_failed.as_deref().unwrap_or_default()
                ));
                Handled
            }
            Event::Task(d) => {
                self.finish_delivery();
                self.delivery = Some(d.clone());
                self.parcel_on_board = true;
                ctx.report(EventType::TaskAssigned, None);
                ctx.effects.push(Effect::RunPreflight);
                Transition(State::preflight())
            }
            _ => Super,
        }
    }

    #[state(superstate = "grounded")]
    fn preflight(&mut self, ctx: &mut Ctx, event: &Event) -> Response {
        match event {
            Event::PreflightPassed if self.round_trip_refusal(ctx).is_some() => {
                let why = self.round_trip_refusal(ctx).unwrap_or_default();
                ctx.report(EventType::PreflightFailed, Some(why));
                self.finish_delivery();
                Transition(State::idle())
            }
            Event::PreflightPassed => {
                // `took_off` waits for the vehicle to leave the ground (`left_ground`)
                self.fly(
                    ctx,
                    Fly::Takeoff {
                        alt_m: ctx.limits.cruise_alt_m,
                    },
                );
                Transition(State::navigating(NavPhase::TakingOff))
            }
            Event::PreflightFailed(why) => {
                ctx.report(EventType::PreflightFailed, Some(why.clone()));
                self.finish_delivery();
                Transition(State::idle())
            }
            // The task could not be recorded (its state or its `task_assigned`): still on the
            // ground, so it is refused rather than flown unrecorded.
            Event::StorageFailed(why) => {
                self.storage_failed = Some(why.clone());
                let id = self
                    .delivery
                    .as_ref()
                    .map(|d| d.delivery_id.to_string())
                    .unwrap_or_default();
                let refusal = format!(
                    "task {id} refused: the drone cannot save its state or events ({why}); it will not take off until it can"
                );
                ctx.report(EventType::PreflightFailed, Some(refusal.clone()));
                ctx.reject(refusal);
                self.finish_delivery();
                Transition(State::idle())
            }
            Event::Command(CommandKind::Abort) => {
                ctx.report(EventType::Aborted, Some("aborted before take-off".into()));
                self.finish_delivery();
                Transition(State::idle())
            }
            // Killed between the take-off order and saving NAVIGATING: the vehicle is climbing.
            Event::Restarted(Vehicle::Airborne) => {
                self.left_ground = true;
                ctx.report(
                    EventType::AgentRestarted,
                    Some("restarted during the take-off: carrying on".into()),
                );
                self.fly(
                    ctx,
                    Fly::HoverAt {
                        alt_m: ctx.limits.cruise_alt_m,
                    },
                );
                Transition(State::navigating(NavPhase::TakingOff))
            }
            Event::Restarted(_) => {
                self.testing = false;
                ctx.report(
                    EventType::AgentRestarted,
                    Some("checking again before take-off".into()),
                );
                ctx.effects.push(Effect::RunPreflight);
                Handled
            }
            Event::TestRelease => {
                ctx.reject(
                    "test release refused: only when idle, and a delivery is starting".into(),
                );
                Handled
            }
            _ => Super,
        }
    }

    #[state(superstate = "grounded")]
    fn completed(&mut self, ctx: &mut Ctx, event: &Event) -> Response {
        match event {
            // COMPLETED is reported, then the drone is ready for the next task at once.
            Event::Recovered => {
                ctx.report(EventType::Ready, None);
                self.finish_delivery();
                Transition(State::idle())
            }
            _ => Super,
        }
    }

    #[state(superstate = "grounded")]
    fn landed_elsewhere(&mut self, ctx: &mut Ctx, event: &Event) -> Response {
        match event {
            Event::TechnicianReady { armed, in_air } if *armed || *in_air => {
                ctx.reject(format!(
                    "ready refused: the autopilot says the drone is {}",
                    if *in_air { "in the air" } else { "armed" }
                ));
                Handled
            }
            Event::TechnicianReady { .. } => {
                ctx.report(EventType::Ready, Some("recovered by a technician".into()));
                self.finish_delivery();
                Transition(State::idle())
            }
            _ => Super,
        }
    }

    /// Ground states: a task while busy is refused; flight events are stale and ignored.
    #[superstate(superstate = "any")]
    fn grounded(&mut self, ctx: &mut Ctx, event: &Event) -> Response {
        match event {
            // No flight on record (lost, empty or unreadable state, or IDLE/COMPLETED/landed
            // away) but the autopilot says armed and in the air: never sit under it doing nothing.
            Event::Restarted(Vehicle::Airborne) => self.make_safe(ctx),
            Event::Restarted(_) => {
                self.testing = false;
                ctx.report(EventType::AgentRestarted, None);
                Handled
            }
            // on the ground the agent flies nothing to hand over: said, nothing more
            Event::PilotOverride { who, what } => {
                ctx.report(EventType::PilotOverride, Some(format!("{who}: {what}")));
                Handled
            }
            Event::TestRelease if self.testing => {
                ctx.reject("a test release is already running".into());
                Handled
            }
            Event::TestRelease => {
                self.testing = true;
                ctx.report(
                    EventType::TechnicianAction,
                    Some("test release: opening the payload release".into()),
                );
                ctx.effects.push(Effect::TestRelease);
                Handled
            }
            _ => Super,
        }
    }

    // ------------------------------------------------------------------ in the air

    #[state(superstate = "airborne")]
    fn navigating(&mut self, ctx: &mut Ctx, phase: &mut NavPhase, event: &Event) -> Response {
        match (event, *phase) {
            (Event::LeftGround, NavPhase::TakingOff) if !self.left_ground => {
                self.left_ground = true;
                ctx.report(EventType::TookOff, None);
                Handled
            }
            (Event::LeftGround, _) => Handled,
            (Event::ClimbComplete, NavPhase::TakingOff) => {
                if !self.left_ground {
                    self.left_ground = true;
                    ctx.report(EventType::TookOff, None);
                }
                *phase = NavPhase::Cruising;
                self.fly_to_destination(ctx);
                Handled
            }
            (Event::OverDestination, NavPhase::Cruising) => {
                *phase = NavPhase::Approaching;
                self.descend_over_destination(ctx);
                Handled
            }
            (Event::AtDropHeight, NavPhase::Approaching) => self.arrived(ctx),
            (Event::CameraFrame(frame), NavPhase::Approaching) => self.on_camera_frame(ctx, frame),
            (Event::ApproachTick { now_s }, NavPhase::Approaching) => {
                self.on_approach_tick(ctx, *now_s)
            }
            (Event::CameraFault(why), NavPhase::Approaching) => {
                self.camera_failed_in_approach(ctx, why)
            }
            (Event::TimerFired(Timer::Approach), NavPhase::Approaching) => self.retry(
                ctx,
                "drop height not reached over the marker in time".into(),
            ),
            (Event::Command(CommandKind::Pause), p) => self.pause(ctx, Resume::Navigating(p)),
            (Event::AutopilotTookOver { mode, reason }, p) => {
                // over the locker again from cruise: the autopilot may have moved the drone
                let back = match p {
                    NavPhase::TakingOff => NavPhase::TakingOff,
                    _ => NavPhase::Cruising,
                };
                self.follow(ctx, Resume::Navigating(back), mode, reason)
            }
            (Event::PilotOverride { who, what }, p) => {
                // the pilot may have moved the drone: over the locker again from cruise
                let back = match p {
                    NavPhase::TakingOff => NavPhase::TakingOff,
                    _ => NavPhase::Cruising,
                };
                self.yield_to_pilot(ctx, Resume::Navigating(back), who, what)
            }
            (Event::Restarted(Vehicle::Airborne), p) => {
                self.left_ground = true;
                self.resume_after_restart(ctx, Resume::Navigating(p))
            }
            _ => Super,
        }
    }

    #[state(superstate = "airborne")]
    fn waiting_drop(&mut self, ctx: &mut Ctx, event: &Event) -> Response {
        match event {
            Event::Command(CommandKind::DropCargo) => {
                self.releasing = true;
                ctx.cancel(&[Timer::DropWait]);
                ctx.effects.push(Effect::ReleasePayload);
                Handled
            }
            Event::ReleaseDone => self.released(ctx),
            Event::PayloadRead(PayloadReading::Released) if self.releasing => self.released(ctx),
            Event::PayloadRead(_) if self.releasing => {
                // not (known to be) open: the backend ordered the drop, so release again
                ctx.effects.push(Effect::ReleasePayload);
                Handled
            }
            Event::ReleaseFailed(why) => {
                self.releasing = false;
                // The parcel may still hang: fly it home rather than drop it somewhere else.
                self.go_home(
                    ctx,
                    EventType::Aborted,
                    Some(format!("payload release failed: {why}")),
                )
            }
            Event::TimerFired(Timer::DropWait) => {
                let why = match self.drop_wait_cut_s {
                    Some(s) => format!("no drop_cargo within {s} s (shortened by the battery)"),
                    None => format!("no drop_cargo within {} s", ctx.limits.drop_wait.as_secs()),
                };
                self.go_home(ctx, EventType::DropTimeout, Some(why))
            }
            Event::TimerFired(Timer::CloudLoss) => self.go_home(
                ctx,
                EventType::CloudLinkLost,
                Some("cloud link lost while waiting for the drop".into()),
            ),
            Event::Command(CommandKind::Pause) => self.pause(ctx, Resume::WaitingDrop),
            Event::AutopilotTookOver { mode, reason } => {
                self.follow(ctx, Resume::Navigating(NavPhase::Cruising), mode, reason)
            }
            Event::PilotOverride { who, what } => {
                self.yield_to_pilot(ctx, Resume::Navigating(NavPhase::Cruising), who, what)
            }
            Event::Restarted(Vehicle::Airborne) if self.releasing => {
                // Killed between `drop_cargo` and the release's confirmation: the parcel may be
                // in the locker already. Ask the payload, then confirm or release again.
                ctx.report(
                    EventType::AgentRestarted,
                    Some("restarted during the release: reading the payload".into()),
                );
                ctx.effects.push(Effect::ReadPayload);
                Handled
            }
            Event::Restarted(Vehicle::Airborne) => {
                self.resume_after_restart(ctx, Resume::WaitingDrop)
            }
            _ => Super,
        }
    }

    #[state(superstate = "airborne")]
    fn dropped(&mut self, ctx: &mut Ctx, event: &Event) -> Response {
        match event {
            Event::Command(CommandKind::ReturnToBase | CommandKind::ReturnToHome) => {
                self.go_home(ctx, EventType::ReturnCommand, None)
            }
            Event::TimerFired(Timer::AutoReturn) => self.go_home(
                ctx,
                EventType::ReturnCommand,
                Some("no return_to_base after the drop: returning by itself".into()),
            ),
            Event::Command(CommandKind::Pause) => self.pause(ctx, Resume::Dropped),
            Event::AutopilotTookOver { mode, reason } => {
                self.follow(ctx, Resume::Returning, mode, reason)
            }
            Event::PilotOverride { who, what } => {
                self.yield_to_pilot(ctx, Resume::Returning, who, what)
            }
            Event::Restarted(Vehicle::Airborne) => self.go_home(
                ctx,
                EventType::ReturnCommand,
                Some("agent restarted after the drop".into()),
            ),
            _ => Super,
        }
    }

    #[state(superstate = "airborne")]
    fn returning(&mut self, ctx: &mut Ctx, event: &Event) -> Response {
        self.flying_home(ctx, event, Resume::Returning)
    }

    /// Flying home with the parcel still on board.
    #[state(superstate = "airborne")]
    fn aborting(&mut self, ctx: &mut Ctx, event: &Event) -> Response {
        self.flying_home(ctx, event, Resume::Aborting)
    }

    #[state(superstate = "airborne")]
    fn paused(&mut self, ctx: &mut Ctx, resume: &mut Resume, event: &Event) -> Response {
        match event {
            Event::Command(CommandKind::Resume) => {
                let resume = *resume;
                ctx.report(EventType::Resumed, None);
                Transition(self.resume_into(ctx, resume))
            }
            Event::Command(CommandKind::Pause) => {
                ctx.accepted = true;
                Handled
            }
            Event::AutopilotTookOver { mode, reason } => {
                let resume = *resume;
                self.follow(ctx, resume, mode, reason)
            }
            Event::PilotOverride { who, what } => {
                let resume = *resume;
                self.yield_to_pilot(ctx, resume, who, what)
            }
            Event::Restarted(Vehicle::Airborne) => {
                self.fly(ctx, Fly::Hold);
                ctx.report(EventType::AgentRestarted, Some("still paused".into()));
                Handled
            }
            _ => Super,
        }
    }

    #[state(superstate = "airborne")]
    fn emergency_landing(&mut self, ctx: &mut Ctx, event: &Event) -> Response {
        match event {
            Event::LandedAtHome => self.landed_home(ctx, Some("emergency landing at home".into())),
            Event::LandedAway => self.landed_away(ctx, "emergency landing completed"),
            Event::Restarted(Vehicle::Airborne) => {
                self.fly(ctx, Fly::LandNow);
                ctx.report(EventType::AgentRestarted, Some("still landing".into()));
                Handled
            }
            Event::AutopilotTookOver { mode, reason } => {
                self.follow(ctx, Resume::EmergencyLanding, mode, reason)
            }
            Event::PilotOverride { who, what } => {
                self.yield_to_pilot(ctx, Resume::EmergencyLanding, who, what)
            }
            // Nothing but landing now: battery or GPS made the decision.
            Event::Command(c) => {
                ctx.reject(format!(
                    "{} refused: emergency landing in progress",
                    command_name(*c)
                ));
                Handled
            }
            Event::BatteryLow(_)
            | Event::BatteryCritical(_)
            | Event::Energy(_)
            | Event::GpsLost
            | Event::TimerFired(Timer::GpsLoss) => Handled,
            _ => Super,
        }
    }

    /// The autopilot stopped answering; its own failsafe flies the drone. We wait for it.
    #[state(superstate = "airborne")]
    fn failsafe(&mut self, ctx: &mut Ctx, event: &Event) -> Response {
        match event {
            // Whatever the autopilot did meanwhile, the safe continuation is home.
            Event::FcLinkRestored(Vehicle::Airborne) | Event::Restarted(Vehicle::Airborne) => {
                let why = if self.parcel_on_board {
                    "flying home with the parcel"
                } else {
                    "flying home"
                };
                self.go_home(ctx, EventType::FcLinkRestored, Some(why.into()))
            }
            Event::FcLinkRestored(Vehicle::OnGround { at_home }) => {
                self.on_ground(ctx, *at_home, "the autopilot's failsafe landed the drone")
            }
            Event::Command(c) => {
                ctx.reject(format!(
                    "{} refused: no link to the flight controller",
                    command_name(*c)
                ));
                Handled
            }
            // the two ways out on the ground are the airborne superstate's
            Event::Restarted(Vehicle::OnGround { .. }) => Super,
            Event::LandedAtHome | Event::LandedAway => Super,
            Event::Task(_) | Event::TechnicianReady { .. } | Event::TestRelease => Super,
            // a disk that refuses writes is reported here too, and so is the camera
            Event::StorageFailed(_) | Event::StorageRestored(_) => Super,
            Event::CameraFault(_) | Event::CameraRestored => Super,
            // Nothing else can be acted on without the autopilot.
            _ => Handled,
        }
    }

    /// The autopilot changed mode by itself: follow it, command nothing, until `resume` (or the
    /// configured take-back time) hands control back.
    #[state(superstate = "airborne")]
    fn autopilot_control(&mut self, ctx: &mut Ctx, resume: &mut Resume, event: &Event) -> Response {
        match event {
            Event::Command(CommandKind::Resume | CommandKind::Pause) => {
                ctx.cancel(&[Timer::TakeBack]);
                self.someone_else_flies(ctx, *resume, Flier::Autopilot, event)
            }
            Event::TimerFired(Timer::TakeBack) => self.go_home(
                ctx,
                EventType::ReturnCommand,
                Some("taking control back from the autopilot by config: flying home".into()),
            ),
            // a person takes over from the autopilot's failsafe: theirs until they hand back
            Event::PilotOverride { who, what } => {
                let resume = *resume;
                ctx.cancel(&[Timer::TakeBack]);
                self.yield_to_pilot(ctx, resume, who, what)
            }
            _ => self.someone_else_flies(ctx, *resume, Flier::Autopilot, event),
        }
    }

    /// A person flies the drone (a ground station, an RC transmitter): the delivery is
    /// suspended, telemetry goes on, nothing is commanded until `resume` or the pilot's switch
    /// to the config's hand-back mode. `abort` and `return_to_home` (the `airborne` superstate)
    /// take control back to fly home; a landing ends it like any landing.
    #[state(superstate = "airborne")]
    fn pilot_override(&mut self, ctx: &mut Ctx, resume: &mut Resume, event: &Event) -> Response {
        match event {
            Event::PilotHandBack { mode } => {
                let resume = *resume;
                ctx.report(
                    EventType::Resumed,
                    Some(format!(
                        "the pilot switched to {mode}: carrying on with the delivery"
                    )),
                );
                Transition(self.resume_into(ctx, resume))
            }
            // further actions of a pilot: reported
            Event::PilotOverride { who, what } => {
                ctx.report(EventType::PilotOverride, Some(format!("{who}: {what}")));
                Handled
            }
            Event::LandedAway => self.landed_away(ctx, "the pilot landed the drone away from home"),
            _ => self.someone_else_flies(ctx, *resume, Flier::Pilot, event),
        }
    }

    /// Every flying state: the one place for failsafes, refusals and controls they share.
    #[superstate(superstate = "any")]
    fn airborne(&mut self, ctx: &mut Ctx, event: &Event) -> Response {
        match event {
            Event::Command(CommandKind::Abort) => {
                self.go_home(ctx, EventType::Aborted, Some("abort command".into()))
            }
            Event::Command(CommandKind::ReturnToHome) => self.go_home(
                ctx,
                EventType::ReturnCommand,
                Some("return_to_home command".into()),
            ),
            Event::BatteryLow(why) => self.go_home(ctx, EventType::BatteryLow, Some(why.clone())),
            Event::Energy(r) => self.energy_check(ctx, r),
            Event::BatteryCritical(why) => self.land_now(
                ctx,
                EventType::BatteryCritical,
                format!("{why}: landing now"),
            ),
            Event::GpsLost => {
                self.fly(ctx, Fly::Hold);
                ctx.timer(Timer::GpsLoss, ctx.limits.gps_loss_land);
                ctx.report(EventType::GpsLost, Some("holding until GPS returns".into()));
                Handled
            }
            Event::GpsRestored => {
                ctx.cancel(&[Timer::GpsLoss]);
                ctx.report(
                    EventType::GpsRestored,
                    Some("GPS back: holding; resume or return by command".into()),
                );
                Handled
            }
            Event::TimerFired(Timer::GpsLoss) => self.land_now(
                ctx,
                EventType::GpsLost,
                "GPS did not return: landing now".into(),
            ),
            Event::TimerFired(Timer::FlightRetry) => {
                if let Some(cmd) = self.flight {
                    ctx.effects.push(Effect::Fly(cmd.fly));
                }
                Handled
            }
            Event::FcLinkLost => {
                self.stop_commanding(ctx);
                ctx.report(
                    EventType::FcLinkLost,
                    Some("no heartbeat from the flight controller: its failsafe flies".into()),
                );
                Transition(State::failsafe())
            }
            Event::FcLinkRestored(_) => Handled,
            Event::LandedAway => self.landed_away(ctx, "on the ground away from home"),
            Event::LandedAtHome => {
                self.landed_home(ctx, Some("landed at home before finishing".into()))
            }
            Event::FlightOpFailed { op, why, transient } => self.refused(ctx, *op, why, *transient),
            Event::Restarted(Vehicle::OnGround { at_home }) => {
                self.on_ground(ctx, *at_home, "landed while the agent was down")
            }
            Event::Restarted(Vehicle::Unreachable) => {
                self.stop_commanding(ctx);
                ctx.report(
                    EventType::FcLinkLost,
                    Some("no flight controller after the restart: its failsafe flies".into()),
                );
                Transition(State::failsafe())
            }
            Event::Restarted(Vehicle::Airborne) => {
                ctx.report(EventType::AgentRestarted, None);
                Handled
            }
            Event::TechnicianReady { .. } => {
                ctx.reject("ready refused: the drone is on a flight".into());
                Handled
            }
            Event::TestRelease => {
                ctx.reject(
                    "test release refused: only when idle, and the drone is on a flight".into(),
                );
                Handled
            }
            _ => Super,
        }
    }

    /// Everything: the cloud link's clock and answers to work that has ended.
    #[superstate]
    fn any(&mut self, ctx: &mut Ctx, event: &Event) -> Response {
        match event {
            Event::CloudDown if !self.cloud_down => {
                self.cloud_down = true;
                ctx.timer(Timer::CloudLoss, ctx.limits.cloud_loss_return);
                Handled
            }
            Event::CloudUp if self.cloud_down => {
                self.cloud_down = false;
                ctx.cancel(&[Timer::CloudLoss]);
                Handled
            }
            Event::TestReleaseDone => {
                self.testing = false;
                Handled
            }
            // whatever the state: a file on disk to say, nothing to decide
            Event::FlightLogReady(what) => {
                ctx.report(EventType::FlightLogReady, Some(what.clone()));
                Handled
            }
            Event::CameraFault(why) => {
                self.camera_fault = Some(why.clone());
                ctx.report(
                    EventType::CameraFault,
                    Some(format!("camera failed: {why}")),
                );
                Handled
            }
            Event::CameraRestored => {
                self.camera_fault = None;
                ctx.report(EventType::CameraRestored, None);
                Handled
            }
            // In the air (and idle): reported, and the flight goes on; the runtime keeps the
            // events in memory and retries the writes.
            Event::StorageFailed(why) if self.storage_failed.is_none() => {
                self.storage_failed = Some(why.clone());
                ctx.report(
                    EventType::StorageFailed,
                    Some(format!(
                        "cannot save the state or events: {why}; a flight goes on, no new task is taken; events kept in memory until the disk takes them"
                    )),
                );
                Handled
            }
            Event::StorageRestored(what) if self.storage_failed.is_some() => {
                self.storage_failed = None;
                ctx.report(EventType::StorageRestored, Some(what.clone()));
                Handled
            }
            _ => Handled,
        }
    }

    // ------------------------------------------------------------------ helpers

    /// Asks for a flight operation (superseding the last): refusals count from zero again.
    fn fly(&mut self, ctx: &mut Ctx, fly: Fly) {
        self.flight = Some(FlightCmd { fly, refusals: 0 });
        ctx.cancel(&[Timer::FlightRetry]);
        ctx.effects.push(Effect::Fly(fly));
    }

    /// The autopilot flies from here on: nothing to retry.
    fn stop_commanding(&mut self, ctx: &mut Ctx) {
        self.flight = None;
        ctx.cancel(&[Timer::FlightRetry]);
    }

    fn fly_to_destination(&mut self, ctx: &mut Ctx) {
        self.goto_destination(ctx, ctx.limits.cruise_alt_m);
    }

    /// A goto to the delivery's destination at `alt_m` (nothing without a delivery).
    fn goto_destination(&mut self, ctx: &mut Ctx, alt_m: f64) {
        if let Some(d) = &self.delivery {
            let fly = Fly::Goto {
                lat: d.lat,
                lon: d.lon,
                alt_m,
            };
            self.fly(ctx, fly);
        }
    }

    /// Down to drop height over the destination itself: GPS drift must not carry the descent
    /// away from the locker.
    fn descend_over_destination(&mut self, ctx: &mut Ctx) {
        self.goto_destination(ctx, ctx.limits.drop_alt_m);
        ctx.timer(Timer::Approach, ctx.limits.approach_timeout);
        self.approach = ctx
            .limits
            .precision
            .as_ref()
            .map(|p| match &self.camera_fault {
                None => ApproachRun::default(),
                Some(_) if p.gps_fallback => ApproachRun {
                    gps_only: true,
                    ..ApproachRun::default()
                },
                Some(why) => ApproachRun {
                    blind: Some(why.clone()),
                    ..ApproachRun::default()
                },
            });
    }

    /// Centred over the marker (or at drop height by GPS): wait for `drop_cargo`.
    fn arrived(&mut self, ctx: &mut Ctx) -> Response {
        ctx.cancel(&[Timer::Approach]);
        ctx.report(EventType::Arrived, None);
        self.wait_for_drop(ctx);
        Transition(State::waiting_drop())
    }

    /// The marker tracking, started at the approach's first clock reading.
    fn marker_approach(&mut self, ctx: &Ctx, now_s: f64) -> Option<&mut Approach> {
        let cfg = ctx.limits.precision.clone()?;
        let want = self.delivery.as_ref()?.aruco_id;
        let run = self.approach.as_mut()?;
        if run.gps_only || run.blind.is_some() {
            return None;
        }
        Some(
            run.marker
                .get_or_insert_with(|| Approach::new(cfg, want, ctx.limits.drop_alt_m, now_s)),
        )
    }

    fn on_camera_frame(&mut self, ctx: &mut Ctx, frame: &Frame) -> Response {
        let decision = match self.marker_approach(ctx, frame.now_s) {
            Some(a) => a.frame(frame.now_s, &frame.markers, frame.pose),
            None => Decision::Wait,
        };
        self.decided(ctx, decision)
    }

    fn on_approach_tick(&mut self, ctx: &mut Ctx, now_s: f64) -> Response {
        if let Some(why) = self.approach.as_mut().and_then(|r| r.blind.take()) {
            return self.retry(ctx, format!("camera failed: {why}"));
        }
        let decision = match self.marker_approach(ctx, now_s) {
            Some(a) => a.tick(now_s),
            None => Decision::Wait,
        };
        self.decided(ctx, decision)
    }

    fn decided(&mut self, ctx: &mut Ctx, decision: Decision) -> Response {
        match decision {
            Decision::Wait => Handled,
            Decision::Steer(to) => {
                self.fly(
                    ctx,
                    Fly::Goto {
                        lat: to.lat_deg,
                        lon: to.lon_deg,
                        alt_m: to.alt_rel_m,
                    },
                );
                Handled
            }
            Decision::Centred => self.arrived(ctx),
            Decision::Failed(why) => self.retry(ctx, why.to_string()),
        }
    }

    /// The camera failed during the approach: finish it by GPS if config allows (back over the
    /// GPS point: the steering may have moved the drone off it), else the approach has failed.
    fn camera_failed_in_approach(&mut self, ctx: &mut Ctx, why: &str) -> Response {
        self.camera_fault = Some(why.to_owned());
        let mut reason = format!("camera failed: {why}");
        let fallback = ctx
            .limits
            .precision
            .as_ref()
            .is_some_and(|p| p.gps_fallback);
        let Some(run) = self
            .approach
            .as_mut()
            .filter(|r| !r.gps_only && r.blind.is_none())
        else {
            ctx.report(EventType::CameraFault, Some(reason));
            return Handled;
        };
        if !fallback {
            ctx.reports_before
                .push((EventType::CameraFault, Some(reason.clone())));
            return self.retry(ctx, reason);
        }
        run.gps_only = true;
        reason.push_str("; finishing the approach by GPS");
        ctx.report(EventType::CameraFault, Some(reason));
        self.goto_destination(ctx, ctx.limits.drop_alt_m);
        Handled
    }

    fn wait_for_drop(&mut self, ctx: &mut Ctx) {
        let wait = self.drop_wait(ctx);
        ctx.timer(Timer::DropWait, wait);
        if self.cloud_down {
            // the link was already down: the drop needs it, so its clock starts here
            ctx.timer(Timer::CloudLoss, ctx.limits.cloud_loss_return);
        }
    }

    fn released(&mut self, ctx: &mut Ctx) -> Response {
        self.parcel_on_board = false;
        self.releasing = false;
        ctx.report(EventType::DropConfirmed, None);
        self.start_auto_return(ctx);
        Transition(State::dropped())
    }

    fn start_auto_return(&mut self, ctx: &mut Ctx) {
        if let Some(after) = ctx.limits.auto_return {
            ctx.timer(Timer::AutoReturn, after);
        }
    }

    fn retry(&mut self, ctx: &mut Ctx, why: String) -> Response {
        self.nav_attempts += 1;
        ctx.cancel(&[Timer::Approach, Timer::DropWait, Timer::CloudLoss]);
        if self.nav_attempts >= ctx.limits.max_nav_attempts {
            let n = self.nav_attempts;
            return self.go_home(
                ctx,
                EventType::Aborted,
                Some(format!("gave up after {n} approach attempt(s): {why}")),
            );
        }
        // climb back to cruise over the destination and come down again
        ctx.report(
            EventType::RetryNavigation,
            Some(format!("attempt {}: {why}", self.nav_attempts + 1)),
        );
        self.fly_to_destination(ctx);
        Transition(State::navigating(NavPhase::Cruising))
    }

    /// On the ground at home: `arrived_base` (with why, if anything is worth saying) and the
    /// delivery is over. One place for "landed at home", whichever state saw it.
    fn landed_home(&mut self, ctx: &mut Ctx, why: Option<String>) -> Response {
        ctx.report(EventType::ArrivedBase, why);
        Transition(State::completed())
    }

    /// On the ground away from home: `landed_elsewhere` with why; a technician's `ready` ends it.
    fn landed_away(&mut self, ctx: &mut Ctx, why: &str) -> Response {
        ctx.report(EventType::LandedElsewhere, Some(why.into()));
        Transition(State::landed_elsewhere())
    }

    /// Home, with the parcel (ABORTING) or without (RETURNING): the one place that decides.
    fn go_home(&mut self, ctx: &mut Ctx, event: EventType, why: Option<String>) -> Response {
        ctx.cancel(&[
            Timer::DropWait,
            Timer::Approach,
            Timer::AutoReturn,
            Timer::TakeBack,
            Timer::CloudLoss,
        ]);
        self.fly(ctx, Fly::ReturnHome);
        ctx.report(event, why);
        if self.parcel_on_board {
            Transition(State::aborting())
        } else {
            Transition(State::returning())
        }
    }

    /// At every telemetry step: when what the battery has left is what the way home needs (at
    /// cruise against the wind, down, land, the reserve), home now with the numbers.
    fn energy_check(&mut self, ctx: &mut Ctx, r: &super::energy::EnergyReading) -> Response {
        let Some(e) = ctx.limits.energy else {
            return Handled;
        };
        let why = match super::energy::home_need(&e, r, ctx.limits.cruise_alt_m) {
            Ok(need) if r.battery_pct > need.total_pct => return Handled,
            Ok(need) => format!(
                "energy: needed {:.0} %, have {:.0} % at {:.1} km, {} {:.0} m/s",
                need.total_pct,
                r.battery_pct,
                need.distance_m / 1000.0,
                if need.headwind_mps >= 0.0 {
                    "headwind"
                } else {
                    "tailwind"
                },
                need.headwind_mps.abs()
            ),
            Err(no_way) => format!("energy: {no_way}; have {:.0} %", r.battery_pct),
        };
        self.go_home(ctx, EventType::BatteryLow, Some(why))
    }

    /// The drop wait: the configured one, or what the battery still allows hovering here before
    /// the way home, if that is shorter (said in the report that goes with it).
    fn drop_wait(&mut self, ctx: &mut Ctx) -> std::time::Duration {
        self.drop_wait_cut_s = None;
        let full = ctx.limits.drop_wait;
        let (Some(e), Some(r)) = (ctx.limits.energy, ctx.energy) else {
            return full;
        };
        let budget = super::energy::hover_budget_s(&e, &r, ctx.limits.cruise_alt_m);
        if budget >= full.as_secs_f64() {
            return full;
        }
        let cut = budget.max(1.0).floor();
        self.drop_wait_cut_s = Some(cut as u64);
        let note = format!(
            "drop wait shortened to {cut:.0} s of {} s: battery {:.0} %, the rest is the way home",
            full.as_secs(),
            r.battery_pct
        );
        match ctx.report.as_mut() {
            Some((_, reason)) => {
                *reason = Some(match reason.take() {
                    Some(r) => format!("{r}; {note}"),
                    None => note,
                })
            }
            None => ctx.report(EventType::Arrived, Some(note)),
        }
        std::time::Duration::from_secs_f64(cut)
    }

    /// Before take-off: the task's round trip against the battery now; `Some(why)` refuses it.
    fn round_trip_refusal(&self, ctx: &Ctx) -> Option<String> {
        let (e, r, d) = (ctx.limits.energy?, ctx.energy?, self.delivery.as_ref()?);
        let l = &ctx.limits;
        match super::energy::round_trip(
            &e,
            &r,
            (d.lat, d.lon),
            l.cruise_alt_m,
            l.drop_alt_m,
            l.drop_wait.as_secs_f64(),
        ) {
            Ok((need, _)) if need < r.battery_pct => None,
            Ok((_, words)) => Some(format!("energy: {words}")),
            Err(no_way) => Some(format!("energy: {no_way}")),
        }
    }

    /// RETURNING (`Resume::Returning`) and ABORTING (`Resume::Aborting`, the parcel on board):
    /// the flight home, one handler for both.
    fn flying_home(&mut self, ctx: &mut Ctx, event: &Event, resume: Resume) -> Response {
        let parcel = resume == Resume::Aborting;
        match event {
            Event::LandedAtHome => {
                self.landed_home(ctx, parcel.then(|| "returned with the parcel".into()))
            }
            Event::Command(CommandKind::Pause) => self.pause(ctx, resume),
            Event::AutopilotTookOver { mode, reason } => self.follow(ctx, resume, mode, reason),
            Event::PilotOverride { who, what } => self.yield_to_pilot(ctx, resume, who, what),
            Event::Restarted(Vehicle::Airborne) => {
                self.fly(ctx, Fly::ReturnHome);
                let why = if parcel {
                    "resuming the flight home with the parcel"
                } else {
                    "resuming the flight home"
                };
                ctx.report(EventType::AgentRestarted, Some(why.into()));
                Handled
            }
            // Already on the way home: these change nothing but are answered as done.
            Event::Command(
                CommandKind::ReturnToBase | CommandKind::ReturnToHome | CommandKind::Abort,
            ) => {
                ctx.accepted = true;
                Handled
            }
            Event::GpsRestored => self.home_again_after_gps(ctx),
            // already on the way home: the estimate can only say so again
            Event::Energy(_) => Handled,
            // with the parcel on board the abort has said enough
            Event::BatteryLow(_) if parcel => Handled,
            Event::BatteryLow(why) => {
                ctx.report(
                    EventType::BatteryLow,
                    Some(format!("{why}; already returning")),
                );
                Handled
            }
            _ => Super,
        }
    }

    fn land_now(&mut self, ctx: &mut Ctx, event: EventType, why: String) -> Response {
        ctx.cancel(&[
            Timer::DropWait,
            Timer::Approach,
            Timer::AutoReturn,
            Timer::TakeBack,
            Timer::CloudLoss,
            Timer::GpsLoss,
        ]);
        self.fly(ctx, Fly::LandNow);
        ctx.report(event, Some(why));
        Transition(State::emergency_landing())
    }

    fn pause(&mut self, ctx: &mut Ctx, resume: Resume) -> Response {
        // the waits start again on resume: a pause must not use them up
        ctx.cancel(&[Timer::DropWait, Timer::AutoReturn, Timer::Approach]);
        self.fly(ctx, Fly::Hold);
        ctx.report(EventType::Paused, None);
        Transition(State::paused(resume))
    }

    fn follow(&mut self, ctx: &mut Ctx, resume: Resume, mode: &str, reason: &str) -> Response {
        self.hand_over(ctx);
        if let Some(after) = ctx.limits.take_back_after {
            ctx.timer(Timer::TakeBack, after);
        }
        ctx.report(
            EventType::AutopilotTookOver,
            Some(format!("{mode}: {reason}; following it until resume")),
        );
        Transition(State::autopilot_control(resume))
    }

    /// A person took the controls: stop commanding (nothing retried, no timer that would fly),
    /// say who and what, and wait for the hand-back.
    fn yield_to_pilot(&mut self, ctx: &mut Ctx, resume: Resume, who: &str, what: &str) -> Response {
        self.hand_over(ctx);
        ctx.report(
            EventType::PilotOverride,
            Some(format!(
                "{who}: {what}; the delivery is suspended until resume or the hand-back mode"
            )),
        );
        Transition(State::pilot_override(resume))
    }

    /// What `autopilot_control` and `pilot_override` do alike while someone else flies: the agent
    /// commands nothing (no hold on GPS loss, no landing by timer, no turn home for energy: the
    /// reading is kept for after the hand-back), reports what it sees, takes control back on
    /// `resume` or `pause`, and a landing at home ends the delivery.
    fn someone_else_flies(
        &mut self,
        ctx: &mut Ctx,
        resume: Resume,
        flier: Flier,
        event: &Event,
    ) -> Response {
        let who = flier.name();
        match event {
            Event::Command(CommandKind::Resume) => {
                ctx.report(
                    EventType::Resumed,
                    Some(format!("taking control back from {who}")),
                );
                Transition(self.resume_into(ctx, resume))
            }
            Event::Command(CommandKind::Pause) => self.pause(ctx, resume),
            Event::AutopilotTookOver { mode, reason } => {
                let reason = match flier {
                    Flier::Autopilot => format!("{mode}: {reason}"),
                    Flier::Pilot => format!("{mode}: {reason}; the pilot is in control"),
                };
                ctx.report(EventType::AutopilotTookOver, Some(reason));
                Handled
            }
            Event::LandedAtHome => {
                self.landed_home(ctx, Some(format!("{who} landed the drone at home")))
            }
            Event::Restarted(Vehicle::Airborne) => {
                ctx.report(
                    EventType::AgentRestarted,
                    Some(format!("{who} is still in control")),
                );
                Handled
            }
            Event::BatteryLow(why) | Event::BatteryCritical(why) => {
                ctx.report(
                    EventType::BatteryLow,
                    Some(format!("{why}; {who} is in control")),
                );
                Handled
            }
            Event::GpsLost | Event::GpsRestored | Event::TimerFired(_) | Event::Energy(_) => {
                Handled
            }
            _ => Super,
        }
    }

    /// Someone else took the controls: stop commanding (nothing retried, no timer that would
    /// fly) before saying who.
    fn hand_over(&mut self, ctx: &mut Ctx) {
        self.stop_commanding(ctx);
        ctx.cancel(&[
            Timer::DropWait,
            Timer::AutoReturn,
            Timer::Approach,
            Timer::GpsLoss,
            Timer::CloudLoss,
        ]);
    }

    /// Back to where `resume` says, with that state's flight and timers.
    fn resume_into(&mut self, ctx: &mut Ctx, resume: Resume) -> State {
        match resume {
            Resume::Navigating(NavPhase::TakingOff) => {
                // climb on over where the drone is, not towards the destination
                self.fly(
                    ctx,
                    Fly::HoverAt {
                        alt_m: ctx.limits.cruise_alt_m,
                    },
                );
                State::navigating(NavPhase::TakingOff)
            }
            Resume::Navigating(NavPhase::Cruising) => {
                self.fly_to_destination(ctx);
                State::navigating(NavPhase::Cruising)
            }
            Resume::Navigating(NavPhase::Approaching) => {
                self.descend_over_destination(ctx);
                State::navigating(NavPhase::Approaching)
            }
            Resume::WaitingDrop => {
                self.wait_for_drop(ctx);
                State::waiting_drop()
            }
            Resume::Dropped => {
                self.start_auto_return(ctx);
                State::dropped()
            }
            Resume::Returning => {
                self.fly(ctx, Fly::ReturnHome);
                State::returning()
            }
            Resume::Aborting => {
                self.fly(ctx, Fly::ReturnHome);
                State::aborting()
            }
            Resume::EmergencyLanding => {
                self.fly(ctx, Fly::LandNow);
                State::emergency_landing()
            }
        }
    }

    fn resume_after_restart(&mut self, ctx: &mut Ctx, resume: Resume) -> Response {
        if ctx.limits.continue_after_restart {
            let next = self.resume_into(ctx, resume);
            ctx.report(
                EventType::AgentRestarted,
                Some("carrying on with the delivery".into()),
            );
            Transition(next)
        } else {
            self.go_home(
                ctx,
                EventType::AgentRestarted,
                Some("agent restarted in flight: returning home by config".into()),
            )
        }
    }

    /// Flying with no flight on record: `[restart] unknown_airborne` says how to make it safe,
    /// and the report says why. Nothing is known of a parcel: it counts as not on board.
    fn make_safe(&mut self, ctx: &mut Ctx) -> Response {
        self.finish_delivery();
        self.testing = false;
        self.left_ground = true;
        ctx.cancel(&[Timer::CloudLoss]);
        let record = ctx
            .lost_record
            .clone()
            .unwrap_or_else(|| "the saved state says the drone is on the ground".into());
        let policy = ctx.limits.unknown_airborne;
        let (action, fly, next) = match policy {
            UnknownAirborne::ReturnHome => ("returning home", Fly::ReturnHome, State::returning()),
            UnknownAirborne::Land => ("landing here", Fly::LandNow, State::emergency_landing()),
            UnknownAirborne::Hold => (
                "holding position until resume (home), return_to_home or abort",
                Fly::Hold,
                State::paused(Resume::Returning),
            ),
        };
        self.fly(ctx, fly);
        ctx.report(
            EventType::AgentRestarted,
            Some(format!(
                "no flight on record ({record}) but the autopilot reports the vehicle armed and in the air: {action} ([restart] unknown_airborne = \"{}\")",
                policy.name()
            )),
        );
        Transition(next)
    }

    fn home_again_after_gps(&mut self, ctx: &mut Ctx) -> Response {
        ctx.cancel(&[Timer::GpsLoss]);
        self.fly(ctx, Fly::ReturnHome);
        ctx.report(
            EventType::GpsRestored,
            Some("GPS back: flying home again".into()),
        );
        Handled
    }

    /// On the ground in a flying state: landed (here or away), or never left the ground.
    fn on_ground(&mut self, ctx: &mut Ctx, at_home: bool, landed_why: &str) -> Response {
        self.stop_commanding(ctx);
        ctx.cancel(&[
            Timer::DropWait,
            Timer::Approach,
            Timer::AutoReturn,
            Timer::GpsLoss,
            Timer::TakeBack,
            Timer::CloudLoss,
        ]);
        if !self.left_ground {
            ctx.report(
                EventType::AgentRestarted,
                Some("the take-off had not left the ground: checking again".into()),
            );
            ctx.effects.push(Effect::RunPreflight);
            return Transition(State::preflight());
        }
        if at_home {
            ctx.report(EventType::ArrivedBase, Some(landed_why.into()));
            Transition(State::completed())
        } else {
            ctx.report(EventType::LandedElsewhere, Some(landed_why.into()));
            Transition(State::landed_elsewhere())
        }
    }

    /// The autopilot refused the current flight operation: ask again, backing off, a bounded
    /// number of times (reported once); then give it up in the way that operation allows.
    fn refused(&mut self, ctx: &mut Ctx, op: FlightOp, why: &str, transient: bool) -> Response {
        let Some(cmd) = self.flight.as_mut() else {
            return Handled; // nothing commanded now: an old answer
        };
        if cmd.fly.op() != op {
            return Handled; // superseded by a newer operation
        }
        let on_ground = op == FlightOp::Takeoff && !self.left_ground;
        cmd.refusals += 1;
        let n = cmd.refusals;
        // On the ground only "not yet" is worth another try; in the air every refusal is.
        let retry = n <= ctx.limits.flight_op_retries && (transient || !on_ground);
        if retry {
            if n == 1 && !on_ground {
                ctx.report(
                    EventType::FlightOpRefused,
                    Some(format!(
                        "{} refused: {why}; asking again (at most {} times)",
                        op.name(),
                        ctx.limits.flight_op_retries
                    )),
                );
            }
            ctx.timer(Timer::FlightRetry, ctx.limits.backoff(n));
            return Handled;
        }
        self.stop_commanding(ctx);
        match op {
            FlightOp::Takeoff if on_ground => {
                ctx.effects.push(Effect::Disarm);
                ctx.report(
                    EventType::PreflightFailed,
                    Some(format!("take-off refused by the autopilot: {why}")),
                );
                self.finish_delivery();
                Transition(State::idle())
            }
            FlightOp::Takeoff | FlightOp::Goto | FlightOp::HoverAt | FlightOp::Hold => {
                let event = if self.parcel_on_board {
                    EventType::Aborted
                } else {
                    EventType::ReturnCommand
                };
                self.go_home(
                    ctx,
                    event,
                    Some(format!("flight controller refused {}: {why}", op.name())),
                )
            }
            FlightOp::ReturnHome => self.land_now(
                ctx,
                EventType::Failsafe,
                format!("return to launch refused: {why}; landing here"),
            ),
            FlightOp::LandNow => {
                ctx.report(
                    EventType::Failsafe,
                    Some(format!(
                        "landing refused: {why}; the autopilot's own failsafe is next"
                    )),
                );
                Handled
            }
        }
    }

    fn finish_delivery(&mut self) {
        self.delivery = None;
        self.parcel_on_board = false;
        self.nav_attempts = 0;
        self.releasing = false;
        self.left_ground = false;
        self.flight = None;
    }

    fn after_transition(&mut self, source: &State, target: &State, ctx: &mut Ctx) {
        ctx.transition = Some((source.drone_state(), target.drone_state()));
        if !matches!(
            target,
            State::Navigating {
                phase: NavPhase::Approaching
            }
        ) {
            self.approach = None;
        }
        if target.is_grounded() {
            self.flight = None;
        }
        if target.drone_state() == DroneState::Completed {
            // the flight is over: ready for the next task (COMPLETED → IDLE is reported too)
            self.delivery = None;
        }
    }
}

impl State {
    /// The state's wire name.
    pub fn drone_state(&self) -> DroneState {
        match self {
            State::Idle {} => DroneState::Idle,
            State::Preflight {} => DroneState::Preflight,
            State::Navigating { .. } => DroneState::Navigating,
            State::WaitingDrop {} => DroneState::WaitingDrop,
            State::Dropped {} => DroneState::Dropped,
            State::Returning {} => DroneState::Returning,
            State::Completed {} => DroneState::Completed,
            State::Paused { .. } => DroneState::Paused,
            State::Aborting {} => DroneState::Aborting,
            State::EmergencyLanding {} => DroneState::EmergencyLanding,
            State::Failsafe {} => DroneState::Failsafe,
            State::LandedElsewhere {} => DroneState::LandedElsewhere,
            State::AutopilotControl { .. } => DroneState::AutopilotControl,
            State::PilotOverride { .. } => DroneState::PilotOverride,
        }
    }

    /// Under the `grounded` superstate.
    pub fn is_grounded(&self) -> bool {
        !is_airborne(self.drone_state())
    }
}

/// The one answer to "is this a flying state" (the `airborne` superstate): the monitor and the
/// runtime ask here.
pub fn is_airborne(s: DroneState) -> bool {
    use DroneState::*;
    match s {
        Idle | Preflight | Completed | LandedElsewhere => false,
        Navigating | WaitingDrop | Dropped | Returning | Paused | Aborting | EmergencyLanding
        | Failsafe | AutopilotControl | PilotOverride => true,
    }
}
