//! What the drone tells the cloud, built from the machine and the latest snapshot: the
//! `register` hello, `telemetry`, and `event`s.

use crate::machine::Machine;
use hal::flight::{FcSnapshot, GpsFixType, LandedState};
use protocol::units::{
    Degrees, Latitude, Longitude, Metres, MetresPerSecond, Percent, Position, Volts,
};
use protocol::ws::{DroneState, EventType, FlightStatus, GpsFix, GpsStatus, Register, Telemetry};
use uuid::Uuid;

pub fn position(snap: &FcSnapshot) -> Option<Position> {
    let p = snap.position?;
    Some(Position {
        lat: Latitude::new(p.lat_deg).ok()?,
        lon: Longitude::new(p.lon_deg).ok()?,
        alt: Metres::saturating(p.alt_rel_m),
    })
}

fn status(snap: &FcSnapshot, state: DroneState) -> FlightStatus {
    match (state, snap.armed, snap.landed) {
        (DroneState::Failsafe, ..) => FlightStatus::Failsafe,
        (DroneState::WaitingDrop | DroneState::Paused, true, _) => FlightStatus::Hovering,
        (_, true, LandedState::InAir | LandedState::TakingOff | LandedState::Landing) => {
            FlightStatus::Flying
        }
        (_, false, _) if state == DroneState::Idle || state == DroneState::Completed => {
            FlightStatus::Idle
        }
        _ => FlightStatus::Landed,
    }
}

fn gps(fix: GpsFixType) -> GpsFix {
    match fix {
        GpsFixType::Unknown | GpsFixType::NoGps | GpsFixType::NoFix => GpsFix::NoFix,
        GpsFixType::Fix2d => GpsFix::Fix2d,
        GpsFixType::Fix3d => GpsFix::Fix3d,
        GpsFixType::Dgps => GpsFix::Dgps,
        GpsFixType::RtkFloat => GpsFix::RtkFloat,
        GpsFixType::RtkFixed => GpsFix::RtkFixed,
    }
}

/// Telemetry in the seed's shape with real units: percent (not volts), WGS-84 (not local x/y).
/// `None` until the autopilot has reported a position and a battery level: better no frame than
/// a made-up one.
pub fn telemetry(
    snap: &FcSnapshot,
    machine: &Machine,
    storage: protocol::ws::StorageHealth,
) -> Option<Telemetry> {
    let speed = snap
        .velocity_ned_mps
        .map(|[n, e, _]| MetresPerSecond::saturating((n * n + e * e).sqrt()));
    Some(Telemetry {
        battery_level: Percent::saturating(snap.battery_percent?),
        position: position(snap)?,
        status: status(snap, machine.state()),
        battery_voltage: snap.battery_voltage.map(Volts::saturating),
        alt_msl: snap.position.map(|p| Metres::saturating(p.alt_msl_m)),
        heading: snap.heading_deg.map(Degrees::saturating),
        ground_speed: speed,
        gps: Some(GpsStatus {
            fix: gps(snap.gps_fix),
            satellites: snap.satellites.unwrap_or(0),
        }),
        armed: Some(snap.armed),
        flight_mode: Some(snap.mode.raw.clone()),
        state: Some(machine.state()),
        delivery_id: machine.delivery().map(|d| d.delivery_id),
        storage: Some(storage),
    })
}

/// The first frame on every connection. Battery is 0 until the autopilot reports it.
pub fn register(drone_id: Uuid, model: &str, snap: &FcSnapshot, machine: &Machine) -> Register {
    Register {
        drone_id,
        model: model.to_owned(),
        battery_level: Percent::saturating(snap.battery_percent.unwrap_or(0.0)),
        protocol_version: Some(protocol::PROTOCOL_VERSION),
        firmware_version: Some(format!("{:?}", snap.autopilot)),
        agent_version: Some(concat!("drone-agent ", env!("CARGO_PKG_VERSION")).to_owned()),
        state: Some(machine.state()),
        delivery_id: machine.delivery().map(|d| d.delivery_id),
    }
}

pub struct EventFacts {
    pub event: EventType,
    pub reason: Option<String>,
    pub delivery_id: Option<Uuid>,
    pub transition: Option<(DroneState, DroneState)>,
}

pub fn event(facts: EventFacts, snap: &FcSnapshot) -> protocol::ws::Event {
    let mut ev = protocol::ws::Event::new(facts.event);
    ev.delivery_id = facts.delivery_id;
    ev.reason = facts.reason;
    ev.from_state = facts.transition.map(|t| t.0);
    ev.to_state = facts.transition.map(|t| t.1);
    ev.position = position(snap);
    ev
}
