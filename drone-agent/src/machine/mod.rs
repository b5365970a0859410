//! The delivery state machine: events in, effects out, no I/O.
//!
//! Every flight decision lives here: when to take off, where to fly, when a refusal is retried
//! (bounded, backing off) and when it is given up, what "landed" means and whether it is home,
//! how long the cloud may be gone while the drone waits over the locker, and when to stop
//! commanding because the autopilot took over. The runtime (`crate::runtime`) only executes the
//! [`Effect`]s and turns what the flight controller, the cloud, the clock and a technician say
//! into [`Event`]s.
//!
//! - [`events`]: what goes in and out, and the [`Limits`] the machine decides with.
//! - `states`: the statig states; the flying ones share the `airborne` superstate.
//! - this module: the façade the runtime holds ([`Machine`]), and the refusal wording.
//!
//! [`TRANSITIONS`] lists every transition the machine can make; the liveness exploration
//! (`tests::liveness`) walks every reachable state and fails if the machine makes one the table
//! does not list (or the table lists one it never makes), and the diagram in
//! `docs/state-machine.md` is generated from the table (`drone-agent diagram`).

pub mod energy;
pub mod events;
mod states;
mod table;

pub use events::{
    landed, Delivery, Effect, Event, FlightOp, Fly, Frame, Limits, Outcome, PayloadReading, Timer,
    UnknownAirborne, Vehicle,
};
pub use states::{is_airborne, ApproachRun, Drone, FlightCmd, NavPhase, Resume, State};
pub use table::{mermaid, Transition, TRANSITIONS};

use events::command_name;
use protocol::ws::DroneState;
use states::Ctx;
use statig::prelude::IntoStateMachineExt;

/// `NAVIGATING`, as the backend spells it ([`DroneState::as_str`]).
pub fn state_name(s: DroneState) -> &'static str {
    s.as_str()
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
        Event::TechnicianReady { .. } => Some(format!(
            "ready is for a drone that landed elsewhere; this one is {}",
            state_name(state)
        )),
        Event::TestRelease => Some(format!(
            "test release refused: only when idle, and the drone is {}",
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

    /// Why this process has no flight on record (no state file, an unreadable one): said in
    /// the report if the vehicle turns out to be flying. Not persisted.
    pub fn set_lost_record(&mut self, why: String) {
        self.ctx.lost_record = Some(why);
    }

    /// A write failed and has not worked since (see [`Event::StorageFailed`]).
    pub fn storage_failed(&self) -> Option<&str> {
        self.sm.inner().storage_failed.as_deref()
    }

    /// The energy model learned since the config's seed (the runtime, after each flight).
    pub fn set_energy_model(&mut self, model: crate::energy::EnergyModel) {
        if let Some(e) = self.ctx.limits.energy.as_mut() {
            e.model = model;
        }
    }

    /// The last energy reading (kept across events: the pre-flight check and the drop wait use
    /// the latest one).
    pub fn energy_reading(&self) -> Option<&energy::EnergyReading> {
        self.ctx.energy.as_ref()
    }

    /// Feeds one event; returns what to do.
    pub fn handle(&mut self, event: &Event) -> Outcome {
        if let Event::Energy(r) = event {
            self.ctx.energy = Some(*r);
        }
        self.sm.handle_with_context(event, &mut self.ctx);
        let mut outcome = Outcome {
            effects: std::mem::take(&mut self.ctx.effects),
            transition: self.ctx.transition.take(),
            rejected: self.ctx.rejected.take(),
        };
        let accepted = std::mem::take(&mut self.ctx.accepted);
        let report = self.ctx.report.take();
        let before = std::mem::take(&mut self.ctx.reports_before);
        if outcome.transition.is_none()
            && outcome.rejected.is_none()
            && report.is_none()
            && outcome.effects.is_empty()
            && !accepted
        {
            outcome.rejected = fallback(self.sm.inner(), event, self.state());
        }
        if let Some((event, reason)) = report {
            outcome.effects.insert(0, Effect::Report { event, reason });
        }
        for (event, reason) in before.into_iter().rev() {
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

    /// The storage (delivery, parcel, attempts, the flight operation in progress).
    pub fn drone(&self) -> &Drone {
        self.sm.inner()
    }

    pub fn delivery(&self) -> Option<&Delivery> {
        self.sm.inner().delivery.as_ref()
    }

    pub fn parcel_on_board(&self) -> bool {
        self.sm.inner().parcel_on_board
    }

    /// The vehicle has been in the air during this delivery.
    pub fn left_ground(&self) -> bool {
        self.sm.inner().left_ground
    }

    /// The precision approach in progress (NAVIGATING's approach phase with a camera).
    pub fn approach(&self) -> Option<&ApproachRun> {
        self.sm.inner().approach.as_ref()
    }

    /// The camera's failure, while it lasts (as the camera worker reported it).
    pub fn camera_fault(&self) -> Option<&str> {
        self.sm.inner().camera_fault.as_deref()
    }

    pub fn nav_phase(&self) -> Option<NavPhase> {
        match self.sm.state() {
            State::Navigating { phase } => Some(*phase),
            _ => None,
        }
    }

    /// A flying state (the `airborne` superstate).
    pub fn airborne(&self) -> bool {
        is_airborne(self.state())
    }

    /// The machine is commanding the autopilot (not following it, not waiting for its link).
    pub fn commanding(&self) -> bool {
        !matches!(
            self.state(),
            DroneState::AutopilotControl | DroneState::PilotOverride | DroneState::Failsafe
        ) && self.airborne()
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

impl Clone for Machine {
    /// A copy for exploring ("what if this happened next"); the limits come along.
    fn clone(&self) -> Self {
        Self {
            sm: self.sm.clone(),
            ctx: Ctx {
                limits: self.ctx.limits.clone(),
                energy: self.ctx.energy,
                ..Ctx::default()
            },
        }
    }
}

#[cfg(test)]
mod tests;
