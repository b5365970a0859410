//! The delivery state machine: events in, effects out, no I/O.
//!
//! Built with `statig`: every state is a `#[state]` method below, and the flying states share the
//! `airborne` superstate, the one place where battery, GPS, flight-controller-link and mission
//! control events are handled for all of them. [`TRANSITIONS`] lists every transition the machine
//! can make; a test walks the machine and fails if it makes one the table does not list (or the
//! table lists one it never makes), and the diagram in `docs/state-machine.md` is generated from
//! the table (`drone-agent diagram`).
//!
//! The machine never sleeps and never talks to hardware. It answers each [`Event`] with an
//! [`Outcome`]: the effects to run (fly here, release, start a timer, report this), the transition
//! it made, or why it rejected the event. The runtime (`crate::runtime`) executes the effects and
//! turns what the flight controller, the cloud and the clock say into new events.

mod table;

pub use table::{mermaid, Transition, TRANSITIONS};

use protocol::ws::{CommandKind, DroneState, EventType};
use serde::{Deserialize, Serialize};
use statig::prelude::*;
use std::time::Duration;
use uuid::Uuid;

/// The delivery being flown (from the cloud's `task`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub delivery_id: Uuid,
    pub lat: f64,
    pub lon: f64,
    pub aruco_id: u32,
    pub priority: protocol::ws::Priority,
}

/// Where a delivery flight is, within NAVIGATING.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NavPhase {
    /// Armed, climbing to cruise altitude over home.
    TakingOff,
    /// At cruise altitude, flying to the destination.
    Cruising,
    /// Over the destination, descending to drop height and centring.
    Approaching,
}

/// Where PAUSED goes back to on `resume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resume {
    Navigating(NavPhase),
    WaitingDrop,
    Dropped,
    Returning,
    Aborting,
}

/// Timers the machine asks the runtime to run; each fires [`Event::TimerFired`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Timer {
    /// WAITING_DROP: how long to wait for `drop_cargo`.
    DropWait,
    /// DROPPED: fly home by itself after this long without `return_to_base`.
    AutoReturn,
    /// NAVIGATING/Approaching: the marker or the drop height must be reached within this.
    Approach,
    /// GPS lost in the air: land if it has not come back by then.
    GpsLoss,
}

/// Numbers the machine decides with. Not persisted: they come from the config at every start.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub cruise_alt_m: f64,
    pub drop_alt_m: f64,
    pub max_nav_attempts: u32,
    pub drop_wait: Duration,
    /// `None`: wait for `return_to_base` however long it takes.
    pub auto_return: Option<Duration>,
    pub approach_timeout: Duration,
    pub gps_loss_land: Duration,
    /// After an agent restart in the air: carry on (`true`) or fly home with what is on board.
    pub continue_after_restart: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            cruise_alt_m: 30.0,
            drop_alt_m: 4.0,
            max_nav_attempts: 3,
            drop_wait: Duration::from_secs(120),
            auto_return: Some(Duration::from_secs(30)),
            approach_timeout: Duration::from_secs(60),
            gps_loss_land: Duration::from_secs(20),
            continue_after_restart: true,
        }
    }
}

/// What happened, as the machine needs to know it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The cloud sent a delivery (`task_assigned`).
    Task(Delivery),
    PreflightPassed,
    PreflightFailed(String),
    /// Reached cruise altitude.
    ClimbComplete,
    /// Over the destination at cruise altitude.
    OverDestination,
    /// Hovering at drop height, centred over the locker (`arrived`).
    AtDropHeight,
    /// The approach did not succeed (marker not seen, wrong marker, timeout): `retry_navigation`.
    ApproachFailed(String),
    /// A command from the cloud.
    Command(CommandKind),
    ReleaseDone,
    ReleaseFailed(String),
    TimerFired(Timer),
    /// On the ground, disarmed, within the home radius.
    LandedAtHome,
    /// On the ground, disarmed, away from home.
    LandedAway,
    BatteryLow,
    BatteryCritical,
    GpsLost,
    GpsRestored,
    FcLinkLost,
    /// The autopilot answers again; `airborne` is what it reports.
    FcLinkRestored {
        airborne: bool,
    },
    /// The cloud link has been down past the configured limit.
    CloudLost,
    /// A flight-controller operation failed (`what` names it).
    FlightOpFailed(String),
    /// The agent restarted with this state loaded from disk; `airborne` from the autopilot.
    Restarted {
        airborne: bool,
    },
    /// Ready for the next task: the runtime sends it right after COMPLETED has been reported; a
    /// technician sends it when a drone that landed elsewhere is back at base.
    Recovered,
}

impl Event {
    /// Stable short name, used in logs, rejections and the transition table.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Task(_) => "task",
            Event::PreflightPassed => "preflight_passed",
            Event::PreflightFailed(_) => "preflight_failed",
            Event::ClimbComplete => "climb_complete",
            Event::OverDestination => "over_destination",
            Event::AtDropHeight => "at_drop_height",
            Event::ApproachFailed(_) => "approach_failed",
            Event::Command(c) => command_name(*c),
            Event::ReleaseDone => "release_done",
            Event::ReleaseFailed(_) => "release_failed",
            Event::TimerFired(Timer::DropWait) => "drop_wait_expired",
            Event::TimerFired(Timer::AutoReturn) => "auto_return_due",
            Event::TimerFired(Timer::Approach) => "approach_timeout",
            Event::TimerFired(Timer::GpsLoss) => "gps_loss_timeout",
            Event::LandedAtHome => "landed_at_home",
            Event::LandedAway => "landed_away",
            Event::BatteryLow => "battery_low",
            Event::BatteryCritical => "battery_critical",
            Event::GpsLost => "gps_lost",
            Event::GpsRestored => "gps_restored",
            Event::FcLinkLost => "fc_link_lost",
            Event::FcLinkRestored { airborne: true } => "fc_link_restored_airborne",
            Event::FcLinkRestored { airborne: false } => "fc_link_restored_on_ground",
            Event::CloudLost => "cloud_lost",
            Event::FlightOpFailed(_) => "flight_op_failed",
            Event::Restarted { airborne: true } => "restarted_airborne",
            Event::Restarted { airborne: false } => "restarted_on_ground",
            Event::Recovered => "ready",
        }
    }
}

/// What the runtime must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Report this to the cloud (every transition reports one; some events report without one).
    Report {
        event: EventType,
        reason: Option<String>,
    },
    RunPreflight,
    /// Arm and take off to this altitude above home.
    Takeoff {
        alt_m: f64,
    },
    /// Fly to a point at an altitude above home.
    Goto {
        lat: f64,
        lon: f64,
        alt_m: f64,
    },
    /// Descend (or climb) to this altitude over the current position and hover.
    HoverAt {
        alt_m: f64,
    },
    /// Stop and hold position.
    Hold,
    ReleasePayload,
    /// Return to launch: the autopilot flies home, lands and disarms.
    ReturnHome,
    /// Land where the drone is.
    LandNow,
    StartTimer(Timer, Duration),
    CancelTimer(Timer),
}

/// The machine's answer to one event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    pub effects: Vec<Effect>,
    /// `(from, to)` when the event changed the state.
    pub transition: Option<(DroneState, DroneState)>,
    /// Why the event was refused; the runtime sends it to the cloud.
    pub rejected: Option<String>,
}

/// The shared storage of the statig machine: what every state can see. Persisted (with the
/// current state) after every transition.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Drone {
    pub delivery: Option<Delivery>,
    pub parcel_on_board: bool,
    pub nav_attempts: u32,
    /// `drop_cargo` accepted, release not yet confirmed: after a restart, release again.
    #[serde(default)]
    pub releasing: bool,
}

/// What one event produced, collected while the machine handles it (statig's context). Holds the
/// limits too: they come from the config, not from the state file.
#[derive(Debug, Default)]
pub struct Ctx {
    limits: Limits,
    effects: Vec<Effect>,
    report: Option<(EventType, Option<String>)>,
    rejected: Option<String>,
    transition: Option<(DroneState, DroneState)>,
}

impl Ctx {
    fn report(&mut self, event: EventType, reason: Option<String>) {
        self.report = Some((event, reason));
    }

    /// Report and run one effect: the common shape of a transition.
    fn go(&mut self, event: EventType, reason: Option<String>, effect: Effect) {
        self.report(event, reason);
        self.effects.push(effect);
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
            Event::Task(d) => {
                self.delivery = Some(d.clone());
                self.parcel_on_board = true;
                self.nav_attempts = 0;
                ctx.go(EventType::TaskAssigned, None, Effect::RunPreflight);
                Transition(State::preflight())
            }
            _ => Super,
        }
    }

    #[state(superstate = "grounded")]
    fn preflight(&mut self, ctx: &mut Ctx, event: &Event) -> Response {
        match event {
            Event::PreflightPassed => {
                let alt_m = ctx.limits.cruise_alt_m;
                ctx.go(EventType::TookOff, None, Effect::Takeoff { alt_m });
                Transition(State::navigating(NavPhase::TakingOff))
            }
            Event::PreflightFailed(why) | Event::FlightOpFailed(why) => {
                ctx.report(EventType::PreflightFailed, Some(why.clone()));
                self.finish_delivery();
                Transition(State::idle())
            }
            Event::Command(CommandKind::Abort) => {
                ctx.report(EventType::Aborted, Some("aborted before take-off".into()));
                self.finish_delivery();
                Transition(State::idle())
            }
            Event::Restarted { .. } => {
                ctx.go(
                    EventType::AgentRestarted,
                    Some("checking again before take-off".into()),
                    Effect::RunPreflight,
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
                Transition(State::idle())
            }
            _ => Super,
        }
    }

    #[state(superstate = "grounded")]
    fn landed_elsewhere(&mut self, ctx: &mut Ctx, event: &Event) -> Response {
        match event {
            Event::Recovered => {
                ctx.report(EventType::Ready, Some("recovered by a technician".into()));
                self.finish_delivery();
                Transition(State::idle())
            }
            _ => Super,
        }
    }

    /// Ground states: a task while busy is refused; flight events are stale and ignored.
    #[superstate]
    fn grounded(&mut self, ctx: &mut Ctx, event: &Event) -> Response {
        match event {
            Event::Restarted { airborne: true } => {
                // On the ground in our books but flying by the autopilot's word: a human flies it.
                ctx.report(EventType::AgentRestarted, Some("autopilot reports airborne while the agent was on the ground; not taking control".into()));
                Handled
            }
            Event::Restarted { airborne: false } => {
                ctx.report(EventType::AgentRestarted, None);
                Handled
            }
            _ => Super,
        }
    }

    // ------------------------------------------------------------------ in the air

    #[state(superstate = "airborne")]
    fn navigating(&mut self, ctx: &mut Ctx, phase: &mut NavPhase, event: &Event) -> Response {
        match (event, *phase) {
            (Event::ClimbComplete, NavPhase::TakingOff) => {
                *phase = NavPhase::Cruising;
                self.fly_to_destination(ctx);
                Handled
            }
            (Event::OverDestination, NavPhase::Cruising) => {
                *phase = NavPhase::Approaching;
                let alt_m = ctx.limits.drop_alt_m;
                ctx.effects.push(Effect::HoverAt { alt_m });
                ctx.effects.push(Effect::StartTimer(
                    Timer::Approach,
                    ctx.limits.approach_timeout,
                ));
                Handled
            }
            (Event::AtDropHeight, NavPhase::Approaching) => {
                ctx.effects.push(Effect::CancelTimer(Timer::Approach));
                ctx.go(
                    EventType::Arrived,
                    None,
                    Effect::StartTimer(Timer::DropWait, ctx.limits.drop_wait),
                );
                Transition(State::waiting_drop())
            }
            (Event::ApproachFailed(why), NavPhase::Approaching) => self.retry(ctx, why.clone()),
            (Event::TimerFired(Timer::Approach), NavPhase::Approaching) => self.retry(
                ctx,
                "drop height not reached over the marker in time".into(),
            ),
            (Event::Command(CommandKind::Pause), p) => self.pause(ctx, Resume::Navigating(p)),
            (Event::Restarted { airborne: true }, p) => {
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
                ctx.effects.push(Effect::CancelTimer(Timer::DropWait));
                ctx.effects.push(Effect::ReleasePayload);
                Handled
            }
            Event::ReleaseDone => {
                self.parcel_on_board = false;
                self.releasing = false;
                let effect = match ctx.limits.auto_return {
                    Some(after) => Effect::StartTimer(Timer::AutoReturn, after),
                    None => Effect::CancelTimer(Timer::AutoReturn),
                };
                ctx.go(EventType::DropConfirmed, None, effect);
                Transition(State::dropped())
            }
            Event::ReleaseFailed(why) => {
                self.releasing = false;
                // The parcel may still hang: fly it home rather than drop it somewhere else.
                self.abort_home(
                    ctx,
                    EventType::Aborted,
                    format!("payload release failed: {why}"),
                )
            }
            Event::TimerFired(Timer::DropWait) => self.abort_home(
                ctx,
                EventType::DropTimeout,
                format!("no drop_cargo within {} s", ctx.limits.drop_wait.as_secs()),
            ),
            Event::CloudLost => self.abort_home(
                ctx,
                EventType::CloudLinkLost,
                "cloud link lost while waiting for the drop".into(),
            ),
            // Already over the locker: another try means going around again.
            Event::ApproachFailed(why) => self.retry(ctx, why.clone()),
            Event::Command(CommandKind::Pause) => self.pause(ctx, Resume::WaitingDrop),
            Event::Restarted { airborne: true } => {
                self.resume_after_restart(ctx, Resume::WaitingDrop)
            }
            _ => Super,
        }
    }

    #[state(superstate = "airborne")]
    fn dropped(&mut self, ctx: &mut Ctx, event: &Event) -> Response {
        match event {
            Event::Command(CommandKind::ReturnToBase | CommandKind::ReturnToHome) => {
                ctx.effects.push(Effect::CancelTimer(Timer::AutoReturn));
                ctx.go(EventType::ReturnCommand, None, Effect::ReturnHome);
                Transition(State::returning())
            }
            Event::TimerFired(Timer::AutoReturn) => {
                ctx.go(
                    EventType::ReturnCommand,
                    Some("no return_to_base after the drop: returning by itself".into()),
                    Effect::ReturnHome,
                );
                Transition(State::returning())
            }
            Event::Command(CommandKind::Pause) => self.pause(ctx, Resume::Dropped),
            Event::Restarted { airborne: true } => {
                ctx.go(
                    EventType::ReturnCommand,
                    Some("agent restarted after the drop".into()),
                    Effect::ReturnHome,
                );
                Transition(State::returning())
            }
            _ => Super,
        }
    }

    #[state(superstate = "airborne")]
    fn returning(&mut self, ctx: &mut Ctx, event: &Event) -> Response {
        match event {
            Event::LandedAtHome => {
                ctx.report(EventType::ArrivedBase, None);
                Transition(State::completed())
            }
            Event::Command(CommandKind::Pause) => self.pause(ctx, Resume::Returning),
            Event::Restarted { airborne: true } => {
                ctx.effects.push(Effect::ReturnHome);
                ctx.report(
                    EventType::AgentRestarted,
                    Some("resuming the flight home".into()),
                );
                Handled
            }
            // Already on the way home: these change nothing but are answered as done.
            Event::Command(CommandKind::ReturnToBase | CommandKind::ReturnToHome) => Handled,
            Event::GpsRestored => self.home_again_after_gps(ctx),
            Event::BatteryLow => {
                ctx.report(EventType::BatteryLow, Some("already returning".into()));
                Handled
            }
            _ => Super,
        }
    }

    /// Flying home with the parcel still on board.
    #[state(superstate = "airborne")]
    fn aborting(&mut self, ctx: &mut Ctx, event: &Event) -> Response {
        match event {
            Event::LandedAtHome => {
                ctx.report(
                    EventType::ArrivedBase,
                    Some("returned with the parcel".into()),
                );
                Transition(State::completed())
            }
            Event::Command(CommandKind::Pause) => self.pause(ctx, Resume::Aborting),
            Event::Restarted { airborne: true } => {
                ctx.effects.push(Effect::ReturnHome);
                ctx.report(
                    EventType::AgentRestarted,
                    Some("resuming the flight home with the parcel".into()),
                );
                Handled
            }
            Event::Command(
                CommandKind::Abort | CommandKind::ReturnToHome | CommandKind::ReturnToBase,
            ) => Handled,
            Event::BatteryLow | Event::CloudLost => Handled,
            Event::GpsRestored => self.home_again_after_gps(ctx),
            _ => Super,
        }
    }

    #[state(superstate = "airborne")]
    fn paused(&mut self, ctx: &mut Ctx, resume: &mut Resume, event: &Event) -> Response {
        match event {
            Event::Command(CommandKind::Resume) => {
                let resume = *resume;
                ctx.report(EventType::Resumed, None);
                Transition(self.resume_into(ctx, resume))
            }
            Event::Command(CommandKind::Pause) => Handled,
            Event::Restarted { airborne: true } => {
                ctx.effects.push(Effect::Hold);
                ctx.report(EventType::AgentRestarted, Some("still paused".into()));
                Handled
            }
            // The drop wait and auto-return keep running while paused; they act on resume.
            Event::TimerFired(Timer::DropWait | Timer::AutoReturn | Timer::Approach) => Handled,
            _ => Super,
        }
    }

    #[state(superstate = "airborne")]
    fn emergency_landing(&mut self, ctx: &mut Ctx, event: &Event) -> Response {
        match event {
            Event::LandedAtHome => {
                ctx.report(
                    EventType::ArrivedBase,
                    Some("emergency landing at home".into()),
                );
                Transition(State::completed())
            }
            Event::LandedAway => {
                ctx.report(
                    EventType::LandedElsewhere,
                    Some("emergency landing completed".into()),
                );
                Transition(State::landed_elsewhere())
            }
            Event::Restarted { airborne: true } => {
                ctx.effects.push(Effect::LandNow);
                Handled
            }
            // Nothing but landing now: battery or GPS made the decision.
            Event::Command(c) => {
                ctx.rejected = Some(format!(
                    "{} refused: emergency landing in progress",
                    command_name(*c)
                ));
                Handled
            }
            Event::BatteryLow | Event::BatteryCritical | Event::GpsLost | Event::CloudLost => {
                Handled
            }
            Event::TimerFired(Timer::GpsLoss) => Handled,
            Event::FlightOpFailed(why) => {
                // Nothing better to try than landing: say so, the autopilot's failsafe is next.
                ctx.report(
                    EventType::Failsafe,
                    Some(format!("landing command failed: {why}")),
                );
                Handled
            }
            _ => Super,
        }
    }

    /// The autopilot stopped answering; its own failsafe flies the drone. We wait for it.
    #[state(superstate = "airborne")]
    fn failsafe(&mut self, ctx: &mut Ctx, event: &Event) -> Response {
        match event {
            Event::FcLinkRestored { airborne: true } => {
                // Whatever the autopilot did meanwhile, the safe continuation is home.
                if self.parcel_on_board {
                    ctx.go(
                        EventType::FcLinkRestored,
                        Some("flying home with the parcel".into()),
                        Effect::ReturnHome,
                    );
                    Transition(State::aborting())
                } else {
                    ctx.go(
                        EventType::FcLinkRestored,
                        Some("flying home".into()),
                        Effect::ReturnHome,
                    );
                    Transition(State::returning())
                }
            }
            Event::FcLinkRestored { airborne: false } | Event::LandedAway => {
                ctx.report(
                    EventType::LandedElsewhere,
                    Some("autopilot failsafe landed the drone".into()),
                );
                Transition(State::landed_elsewhere())
            }
            Event::LandedAtHome => {
                ctx.report(
                    EventType::ArrivedBase,
                    Some("autopilot failsafe brought the drone home".into()),
                );
                Transition(State::completed())
            }
            Event::FcLinkLost => Handled,
            Event::Command(c) => {
                ctx.rejected = Some(format!(
                    "{} refused: no link to the flight controller",
                    command_name(*c)
                ));
                Handled
            }
            Event::Restarted { .. } => Handled,
            _ => Handled,
        }
    }

    /// Every flying state: the one place for failsafes and mission controls they share.
    #[superstate]
    fn airborne(&mut self, ctx: &mut Ctx, event: &Event) -> Response {
        match event {
            Event::Command(CommandKind::Abort) => {
                if self.parcel_on_board {
                    self.abort_home(ctx, EventType::Aborted, "abort command".into())
                } else {
                    ctx.go(
                        EventType::Aborted,
                        Some("abort command after the drop".into()),
                        Effect::ReturnHome,
                    );
                    Transition(State::returning())
                }
            }
            Event::Command(CommandKind::ReturnToHome) => {
                if self.parcel_on_board {
                    self.abort_home(
                        ctx,
                        EventType::ReturnCommand,
                        "return_to_home command".into(),
                    )
                } else {
                    ctx.go(EventType::ReturnCommand, None, Effect::ReturnHome);
                    Transition(State::returning())
                }
            }
            Event::BatteryLow => {
                if self.parcel_on_board {
                    self.abort_home(
                        ctx,
                        EventType::BatteryLow,
                        "battery below the return threshold".into(),
                    )
                } else {
                    ctx.go(
                        EventType::BatteryLow,
                        Some("battery below the return threshold".into()),
                        Effect::ReturnHome,
                    );
                    Transition(State::returning())
                }
            }
            Event::BatteryCritical => {
                ctx.go(
                    EventType::BatteryCritical,
                    Some("battery below the critical threshold: landing now".into()),
                    Effect::LandNow,
                );
                Transition(State::emergency_landing())
            }
            Event::GpsLost => {
                ctx.effects.push(Effect::Hold);
                ctx.effects
                    .push(Effect::StartTimer(Timer::GpsLoss, ctx.limits.gps_loss_land));
                ctx.report(EventType::GpsLost, Some("holding until GPS returns".into()));
                Handled
            }
            Event::GpsRestored => {
                ctx.effects.push(Effect::CancelTimer(Timer::GpsLoss));
                ctx.report(
                    EventType::GpsRestored,
                    Some("GPS back: holding; resume or return by command".into()),
                );
                Handled
            }
            Event::TimerFired(Timer::GpsLoss) => {
                ctx.go(
                    EventType::GpsLost,
                    Some("GPS did not return: landing now".into()),
                    Effect::LandNow,
                );
                Transition(State::emergency_landing())
            }
            Event::FcLinkLost => {
                ctx.report(
                    EventType::FcLinkLost,
                    Some("no heartbeat from the flight controller: its failsafe flies".into()),
                );
                Transition(State::failsafe())
            }
            Event::LandedAway => {
                ctx.report(
                    EventType::LandedElsewhere,
                    Some("on the ground away from home".into()),
                );
                Transition(State::landed_elsewhere())
            }
            Event::LandedAtHome => {
                ctx.report(
                    EventType::ArrivedBase,
                    Some("landed at home before finishing".into()),
                );
                Transition(State::completed())
            }
            Event::FlightOpFailed(why) => {
                if self.parcel_on_board {
                    self.abort_home(
                        ctx,
                        EventType::Aborted,
                        format!("flight controller refused: {why}"),
                    )
                } else {
                    ctx.go(
                        EventType::ReturnCommand,
                        Some(format!("flight controller refused: {why}")),
                        Effect::ReturnHome,
                    );
                    Transition(State::returning())
                }
            }
            Event::CloudLost => Handled, // only WAITING_DROP acts on it; elsewhere the flight goes on
            _ => Super,
        }
    }

    // ------------------------------------------------------------------ helpers

    fn fly_to_destination(&self, ctx: &mut Ctx) {
        if let Some(d) = &self.delivery {
            ctx.effects.push(Effect::Goto {
                lat: d.lat,
                lon: d.lon,
                alt_m: ctx.limits.cruise_alt_m,
            });
        }
    }

    fn retry(&mut self, ctx: &mut Ctx, why: String) -> Response {
        self.nav_attempts += 1;
        ctx.effects.push(Effect::CancelTimer(Timer::Approach));
        ctx.effects.push(Effect::CancelTimer(Timer::DropWait));
        if self.nav_attempts >= ctx.limits.max_nav_attempts {
            return self.abort_home(
                ctx,
                EventType::Aborted,
                format!(
                    "gave up after {} approach attempt(s): {why}",
                    self.nav_attempts
                ),
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

    fn abort_home(&mut self, ctx: &mut Ctx, event: EventType, why: String) -> Response {
        for t in [Timer::DropWait, Timer::Approach, Timer::AutoReturn] {
            ctx.effects.push(Effect::CancelTimer(t));
        }
        ctx.go(event, Some(why), Effect::ReturnHome);
        Transition(State::aborting())
    }

    fn pause(&mut self, ctx: &mut Ctx, resume: Resume) -> Response {
        ctx.go(EventType::Paused, None, Effect::Hold);
        Transition(State::paused(resume))
    }

    fn resume_into(&mut self, ctx: &mut Ctx, resume: Resume) -> State {
        match resume {
            Resume::Navigating(NavPhase::TakingOff) => {
                let alt_m = ctx.limits.cruise_alt_m;
                ctx.effects.push(Effect::HoverAt { alt_m });
                State::navigating(NavPhase::TakingOff)
            }
            Resume::Navigating(NavPhase::Cruising) => {
                self.fly_to_destination(ctx);
                State::navigating(NavPhase::Cruising)
            }
            Resume::Navigating(NavPhase::Approaching) => {
                let alt_m = ctx.limits.drop_alt_m;
                ctx.effects.push(Effect::HoverAt { alt_m });
                State::navigating(NavPhase::Approaching)
            }
            Resume::WaitingDrop => State::waiting_drop(),
            Resume::Dropped => State::dropped(),
            Resume::Returning => {
                ctx.effects.push(Effect::ReturnHome);
                State::returning()
            }
            Resume::Aborting => {
                ctx.effects.push(Effect::ReturnHome);
                State::aborting()
            }
        }
    }

    fn resume_after_restart(&mut self, ctx: &mut Ctx, resume: Resume) -> Response {
        if ctx.limits.continue_after_restart {
            let next = self.resume_into(ctx, resume);
            // timers do not survive a restart: start the ones the state needs again
            match resume {
                Resume::WaitingDrop => ctx
                    .effects
                    .push(Effect::StartTimer(Timer::DropWait, ctx.limits.drop_wait)),
                Resume::Navigating(NavPhase::Approaching) => ctx.effects.push(Effect::StartTimer(
                    Timer::Approach,
                    ctx.limits.approach_timeout,
                )),
                _ => {}
            }
            ctx.report(
                EventType::AgentRestarted,
                Some("carrying on with the delivery".into()),
            );
            Transition(next)
        } else {
            self.abort_home(
                ctx,
                EventType::AgentRestarted,
                "agent restarted in flight: returning home by config".into(),
            )
        }
    }

    fn home_again_after_gps(&mut self, ctx: &mut Ctx) -> Response {
        ctx.effects.push(Effect::CancelTimer(Timer::GpsLoss));
        ctx.go(
            EventType::GpsRestored,
            Some("GPS back: flying home again".into()),
            Effect::ReturnHome,
        );
        Handled
    }

    fn finish_delivery(&mut self) {
        self.delivery = None;
        self.parcel_on_board = false;
        self.nav_attempts = 0;
    }

    fn after_transition(&mut self, source: &State, target: &State, ctx: &mut Ctx) {
        ctx.transition = Some((source.drone_state(), target.drone_state()));
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
        }
    }
}

/// `NAVIGATING`, as the backend spells it.
pub fn state_name(s: DroneState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{s:?}"))
}

fn command_name(c: CommandKind) -> &'static str {
    match c {
        CommandKind::DropCargo => "drop_cargo",
        CommandKind::ReturnToBase => "return_to_base",
        CommandKind::Pause => "pause",
        CommandKind::Resume => "resume",
        CommandKind::Abort => "abort",
        CommandKind::ReturnToHome => "return_to_home",
    }
}

/// The machine's last word on an event no state took: tasks while busy and commands that make
/// no sense now are refused with a reason; flight progress for a state already left is dropped.
fn fallback(drone: &Drone, event: &Event, state: DroneState) -> Option<String> {
    match event {
        Event::Task(d) => Some(format!(
            "task {} refused: drone is {} with delivery {}",
            d.delivery_id,
            state_name(state),
            drone
                .delivery
                .as_ref()
                .map(|d| d.delivery_id.to_string())
                .unwrap_or_else(|| "none".into())
        )),
        Event::Command(c) => Some(format!(
            "{} is not accepted while {}",
            command_name(*c),
            state_name(state)
        )),
        _ => None,
    }
}

/// The machine with its storage; what the runtime holds and persists.
pub struct Machine {
    sm: statig::blocking::StateMachine<Drone>,
    ctx: Ctx,
}

impl Machine {
    pub fn new(limits: Limits) -> Self {
        Self {
            sm: Drone::default().state_machine(),
            ctx: Ctx {
                limits,
                ..Ctx::default()
            },
        }
    }

    /// Feeds one event; returns what to do.
    pub fn handle(&mut self, event: &Event) -> Outcome {
        self.sm.handle_with_context(event, &mut self.ctx);
        let mut outcome = Outcome {
            effects: std::mem::take(&mut self.ctx.effects),
            transition: self.ctx.transition.take(),
            rejected: self.ctx.rejected.take(),
        };
        let report = self.ctx.report.take();
        if outcome.transition.is_none()
            && outcome.rejected.is_none()
            && report.is_none()
            && outcome.effects.is_empty()
        {
            outcome.rejected = fallback(self.sm.inner(), event, self.state());
        }
        if let Some((event, reason)) = report {
            outcome.effects.insert(0, Effect::Report { event, reason });
        }
        outcome
    }

    pub fn state(&self) -> DroneState {
        self.sm.state().drone_state()
    }

    /// The statig state (with its local data), for persistence and tests.
    pub fn raw_state(&self) -> &State {
        self.sm.state()
    }

    pub fn delivery(&self) -> Option<&Delivery> {
        self.sm.inner().delivery.as_ref()
    }

    pub fn parcel_on_board(&self) -> bool {
        self.sm.inner().parcel_on_board
    }

    pub fn nav_phase(&self) -> Option<NavPhase> {
        match self.sm.state() {
            State::Navigating { phase } => Some(*phase),
            _ => None,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.ctx.limits
    }

    /// Serialises the state and its storage for the state file.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.sm).unwrap_or(serde_json::Value::Null)
    }

    /// Restores a machine saved by [`Machine::to_json`].
    pub fn from_json(value: serde_json::Value, limits: Limits) -> Result<Self, serde_json::Error> {
        let sm: statig::blocking::StateMachine<Drone> = serde_json::from_value(value)?;
        Ok(Self {
            sm,
            ctx: Ctx {
                limits,
                ..Ctx::default()
            },
        })
    }
}

#[cfg(test)]
mod tests;
