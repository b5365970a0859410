//! The airspace a delivery may use (issue 12): the task's operational volume, or without one the
//! `[geofence]` config's circle around home and ceiling. Pure: the runtime checks every go-to
//! against it and uploads it to the autopilot as its fence (`runtime/fence.rs`).

use daemon::config::{Validate, Validator};
use hal::flight::{Fence, FenceAction, FenceZone};
use protocol::geo;
use protocol::volume::{LatLon, OperationalVolume};
use serde::Deserialize;

/// `[geofence]`: the fence when a task carries no operational volume, and what a breach does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeofenceConfig {
    /// Radius of the circle around home the drone must stay inside, metres.
    pub radius_m: f64,
    /// Ceiling above home, metres.
    pub max_alt_m: f64,
    /// What the autopilot does on a breach: `rtl` or `land`.
    pub action: BreachAction,
    /// Refuse a take-off unless the fence is stored in the autopilot, read back equal, and
    /// enabled.
    pub required: bool,
}

impl Default for GeofenceConfig {
    fn default() -> Self {
        Self {
            radius_m: 2000.0,
            max_alt_m: 120.0,
            action: BreachAction::Rtl,
            required: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreachAction {
    Rtl,
    Land,
}

impl GeofenceConfig {
    /// Checked against the cruise altitude, which must fit under the ceiling.
    pub fn validate_with(&self, cruise_alt_m: f64, v: &mut Validator) {
        v.range("geofence.radius_m", self.radius_m, 10.0, 50_000.0);
        v.range("geofence.max_alt_m", self.max_alt_m, 5.0, 1000.0);
        v.check(
            self.max_alt_m > cruise_alt_m,
            "geofence.max_alt_m",
            format!(
                "{} m is not above flight.cruise_alt_m ({cruise_alt_m} m): every flight would breach it",
                self.max_alt_m
            ),
        );
    }

    pub fn action(&self) -> FenceAction {
        match self.action {
            BreachAction::Rtl => FenceAction::ReturnToLaunch,
            BreachAction::Land => FenceAction::Land,
        }
    }
}

impl Validate for GeofenceConfig {
    fn validate(&self, v: &mut Validator) {
        self.validate_with(0.0, v);
    }
}

/// The volume one delivery flies in.
#[derive(Debug, Clone, PartialEq)]
pub enum Volume {
    /// The task's own.
    Task(OperationalVolume),
    /// `[geofence]`: a circle around home and a ceiling.
    Circle {
        home: (f64, f64),
        radius_m: f64,
        max_alt_m: f64,
    },
}

impl Volume {
    /// The task's volume, else the config's circle around `home`, else none.
    pub fn choose(
        task: Option<&OperationalVolume>,
        config: Option<&GeofenceConfig>,
        home: Option<(f64, f64)>,
    ) -> Option<Volume> {
        if let Some(v) = task {
            return Some(Volume::Task(v.clone()));
        }
        let c = config?;
        Some(Volume::Circle {
            home: home?,
            radius_m: c.radius_m,
            max_alt_m: c.max_alt_m,
        })
    }

    /// Whether the straight leg from `from` to `to` at `alt_m` above home stays inside: the rule
    /// it breaks, in words, if not.
    pub fn check_leg(&self, from: (f64, f64), to: (f64, f64), alt_m: f64) -> Result<(), String> {
        match self {
            Volume::Task(v) => {
                let p = |(lat, lon): (f64, f64)| {
                    LatLon::new(lat, lon).map_err(|e| format!("position {lat},{lon}: {e}"))
                };
                v.check_leg(p(from)?, p(to)?, alt_m)
                    .map_err(|b| b.to_string())
            }
            Volume::Circle {
                home,
                radius_m,
                max_alt_m,
            } => {
                if alt_m > *max_alt_m {
                    return Err(format!(
                        "{alt_m:.1} m is above the geofence's ceiling of {max_alt_m:.1} m"
                    ));
                }
                // a circle is convex: both ends inside keep the leg inside
                let centre = geo::LatLon::new(home.0, home.1);
                for end in [from, to] {
                    let d = centre.distance_m(geo::LatLon::new(end.0, end.1));
                    if d > *radius_m {
                        return Err(format!(
                            "{:.1} m outside the geofence (a circle of {radius_m:.0} m around home)",
                            d - radius_m
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    /// The fence the autopilot stores for this volume.
    pub fn fence(&self, action: FenceAction) -> Fence {
        match self {
            Volume::Task(v) => {
                let ll = |p: &LatLon| (p.lat.get(), p.lon.get());
                let mut zones = vec![FenceZone::Polygon {
                    inclusion: true,
                    vertices: v.inclusion_outline().iter().map(ll).collect(),
                }];
                zones.extend(v.exclusions().iter().map(|poly| FenceZone::Polygon {
                    inclusion: false,
                    vertices: poly.iter().map(ll).collect(),
                }));
                Fence {
                    zones,
                    max_alt_m: v.max_alt_m(),
                    action,
                }
            }
            Volume::Circle {
                home,
                radius_m,
                max_alt_m,
            } => Fence {
                zones: vec![FenceZone::Circle {
                    inclusion: true,
                    center: *home,
                    radius_m: *radius_m,
                }],
                max_alt_m: *max_alt_m,
                action,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::volume::Inclusion;

    #[test]
    fn the_circle_and_the_task_volume_name_the_rule_broken() {
        let home = (55.0, 37.0);
        let circle = Volume::choose(None, Some(&GeofenceConfig::default()), Some(home)).unwrap();
        let north = |m: f64| {
            let p = geo::LatLon::new(home.0, home.1).offset(geo::NorthEast::new(m, 0.0));
            (p.lat_deg, p.lon_deg)
        };
        assert_eq!(circle.check_leg(home, north(1500.0), 30.0), Ok(()));
        let out = circle.check_leg(home, north(2500.0), 30.0).unwrap_err();
        assert!(out.contains("outside the geofence"), "{out}");
        let high = circle.check_leg(home, north(100.0), 150.0).unwrap_err();
        assert!(high.contains("ceiling"), "{high}");

        let corridor = OperationalVolume::new(
            Inclusion::Corridor {
                width_m: 100.0,
                route: vec![
                    LatLon::new(home.0, home.1).unwrap(),
                    LatLon::new(north(1000.0).0, north(1000.0).1).unwrap(),
                ],
            },
            60.0,
            vec![],
        )
        .unwrap();
        let task = Volume::choose(
            Some(&corridor),
            Some(&GeofenceConfig::default()),
            Some(home),
        )
        .unwrap();
        assert!(matches!(task, Volume::Task(_)), "the task's volume wins");
        assert_eq!(task.check_leg(home, north(900.0), 30.0), Ok(()));
        let why = task.check_leg(home, north(1300.0), 30.0).unwrap_err();
        assert!(why.contains("outside the approved volume"), "{why}");
        let fence = task.fence(FenceAction::Land);
        assert!(
            matches!(&fence.zones[0], FenceZone::Polygon { inclusion: true, vertices } if vertices.len() >= 4)
        );
        assert_eq!(fence.max_alt_m, 60.0);
        assert_eq!(Volume::choose(None, None, Some(home)), None);
    }
}
