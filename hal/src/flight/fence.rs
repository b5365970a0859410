//! The geofence an autopilot enforces by itself (issue 12): what the agent asks for, and what the
//! autopilot reports when it is breached. The MAVLink encoding is in `mavlink/fence.rs`.

use std::time::SystemTime;

/// One zone of a fence, in WGS-84 degrees.
#[derive(Debug, Clone, PartialEq)]
pub enum FenceZone {
    /// A polygon (3 or more vertices, not closed: the last joins the first). `inclusion`: the
    /// vehicle must stay inside; otherwise it must stay out.
    Polygon {
        inclusion: bool,
        vertices: Vec<(f64, f64)>,
    },
    /// A circle of `radius_m` around (`lat`, `lon`).
    Circle {
        inclusion: bool,
        center: (f64, f64),
        radius_m: f64,
    },
}

/// What the autopilot does on a breach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceAction {
    ReturnToLaunch,
    Land,
}

/// A complete fence: the zones (mission protocol, `MAV_MISSION_TYPE_FENCE`), the ceiling above
/// home and the action (parameters).
#[derive(Debug, Clone, PartialEq)]
pub struct Fence {
    pub zones: Vec<FenceZone>,
    pub max_alt_m: f64,
    pub action: FenceAction,
}

/// Which limit was breached (`FENCE_STATUS.breach_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceBreachKind {
    None,
    MinAltitude,
    MaxAltitude,
    Boundary,
}

impl FenceBreachKind {
    pub fn describe(self) -> &'static str {
        match self {
            FenceBreachKind::None => "no breach",
            FenceBreachKind::MinAltitude => "below the fence's floor",
            FenceBreachKind::MaxAltitude => "above the fence's ceiling",
            FenceBreachKind::Boundary => "outside the fence's boundary",
        }
    }
}

/// The autopilot's `FENCE_STATUS` (ArduPilot sends it while a fence is enabled; PX4 does not, it
/// says so only in its events).
#[derive(Debug, Clone, PartialEq)]
pub struct FenceStatus {
    pub breached: bool,
    pub breach_count: u16,
    pub kind: FenceBreachKind,
    /// When this link received the report that made `breached` true (wall clock).
    pub at: SystemTime,
}
