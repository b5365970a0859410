//! The operational volume a delivery may fly in (issue 12): the airspace the operator is approved
//! for, carried by a `task` and turned by the drone agent into a fence the autopilot enforces.
//!
//! Wire shape (optional in `task`; without it the agent uses its `[geofence]` config):
//!
//! ```json
//! "volume": {
//!   "inclusion": { "type": "corridor", "width_m": 80, "route": [{"lat": 47.3977, "lon": 8.5456}, …] },
//!   "max_alt_m": 60,
//!   "exclusions": [[{"lat": …, "lon": …}, …]]
//! }
//! ```
//!
//! `inclusion` is either `{"type": "polygon", "vertices": [...]}` or a corridor of `width_m` along
//! `route` (the centre line). Altitudes are metres above home, like every altitude on the wire.
//! The shape is checked on the way in: a polygon of fewer than three vertices, a corridor of one
//! point, a width or ceiling out of range is a parse error naming the field.
//!
//! Geometry is flat-earth around the volume's first point: a delivery volume spans kilometres, where
//! the error is centimetres.

use crate::geo;
use crate::units::{Latitude, Longitude};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The most vertices one polygon (or corridor outline) may have: what autopilots store in their
/// fence (ArduPilot's fence storage holds about 80 points on small boards).
pub const MAX_VERTICES: usize = 64;
/// The most exclusion polygons in one volume.
pub const MAX_EXCLUSIONS: usize = 8;

/// A point on the ground: latitude and longitude in degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatLon {
    pub lat: Latitude,
    pub lon: Longitude,
}

impl LatLon {
    /// A point from plain degrees, checked.
    pub fn new(lat: f64, lon: f64) -> Result<Self, crate::units::UnitError> {
        Ok(Self {
            lat: Latitude::new(lat)?,
            lon: Longitude::new(lon)?,
        })
    }
}

/// Where the drone may be: inside a polygon, or within half the width of a route's centre line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Inclusion {
    Polygon { vertices: Vec<LatLon> },
    Corridor { width_m: f64, route: Vec<LatLon> },
}

/// The airspace a delivery may use. Built only through its checks (parse or [`Self::new`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawVolume", into = "RawVolume")]
pub struct OperationalVolume {
    inclusion: Inclusion,
    max_alt_m: f64,
    exclusions: Vec<Vec<LatLon>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVolume {
    inclusion: Inclusion,
    max_alt_m: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    exclusions: Vec<Vec<LatLon>>,
}

/// A volume that cannot be flown: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("volume.{field}: {problem}")]
pub struct VolumeError {
    pub field: String,
    pub problem: String,
}

fn bad(field: impl Into<String>, problem: impl Into<String>) -> VolumeError {
    VolumeError {
        field: field.into(),
        problem: problem.into(),
    }
}

impl TryFrom<RawVolume> for OperationalVolume {
    type Error = VolumeError;
    fn try_from(raw: RawVolume) -> Result<Self, VolumeError> {
        Self::new(raw.inclusion, raw.max_alt_m, raw.exclusions)
    }
}

impl From<OperationalVolume> for RawVolume {
    fn from(v: OperationalVolume) -> Self {
        Self {
            inclusion: v.inclusion,
            max_alt_m: v.max_alt_m,
            exclusions: v.exclusions,
        }
    }
}

fn check_polygon(field: &str, vertices: &[LatLon]) -> Result<(), VolumeError> {
    if vertices.len() < 3 {
        return Err(bad(
            field,
            format!("{} vertices; a polygon needs at least 3", vertices.len()),
        ));
    }
    if vertices.len() > MAX_VERTICES {
        return Err(bad(
            field,
            format!("{} vertices; at most {MAX_VERTICES}", vertices.len()),
        ));
    }
    Ok(())
}

impl OperationalVolume {
    /// Checks the shape: polygons of 3..=64 vertices, a corridor of 2..=64 route points and a
    /// width of 1..=5,000 m, a ceiling of 1..=1,000 m above home, at most 8 exclusions.
    pub fn new(
        inclusion: Inclusion,
        max_alt_m: f64,
        exclusions: Vec<Vec<LatLon>>,
    ) -> Result<Self, VolumeError> {
        match &inclusion {
            Inclusion::Polygon { vertices } => check_polygon("inclusion.vertices", vertices)?,
            Inclusion::Corridor { width_m, route } => {
                if !(width_m.is_finite() && (1.0..=5_000.0).contains(width_m)) {
                    return Err(bad(
                        "inclusion.width_m",
                        format!("{width_m} m; must be 1 to 5000 m"),
                    ));
                }
                if route.len() < 2 || route.len() > MAX_VERTICES {
                    return Err(bad(
                        "inclusion.route",
                        format!(
                            "{} points; a corridor needs 2 to {MAX_VERTICES}",
                            route.len()
                        ),
                    ));
                }
            }
        }
        if !(max_alt_m.is_finite() && (1.0..=1_000.0).contains(&max_alt_m)) {
            return Err(bad(
                "max_alt_m",
                format!("{max_alt_m} m; must be 1 to 1000 m above home"),
            ));
        }
        if exclusions.len() > MAX_EXCLUSIONS {
            return Err(bad(
                "exclusions",
                format!("{}; at most {MAX_EXCLUSIONS}", exclusions.len()),
            ));
        }
        for (i, polygon) in exclusions.iter().enumerate() {
            check_polygon(&format!("exclusions[{i}]"), polygon)?;
        }
        Ok(Self {
            inclusion,
            max_alt_m,
            exclusions,
        })
    }

    pub fn inclusion(&self) -> &Inclusion {
        &self.inclusion
    }

    /// The ceiling, metres above home.
    pub fn max_alt_m(&self) -> f64 {
        self.max_alt_m
    }

    pub fn exclusions(&self) -> &[Vec<LatLon>] {
        &self.exclusions
    }

    fn origin(&self) -> LatLon {
        match &self.inclusion {
            Inclusion::Polygon { vertices } => vertices[0],
            Inclusion::Corridor { route, .. } => route[0],
        }
    }

    /// Whether a point at `alt_m` above home is inside: the first rule it breaks, if any.
    pub fn check(&self, point: LatLon, alt_m: f64) -> Result<(), Breach> {
        let frame = Frame::new(self.origin());
        let p = frame.local(point);
        if alt_m > self.max_alt_m {
            return Err(Breach::AboveCeiling {
                alt_m,
                max_alt_m: self.max_alt_m,
            });
        }
        match &self.inclusion {
            Inclusion::Polygon { vertices } => {
                let poly = frame.polygon(vertices);
                if !contains(&poly, p) {
                    return Err(Breach::OutsideInclusion {
                        by_m: distance_to_outline(&poly, p),
                    });
                }
            }
            Inclusion::Corridor { width_m, route } => {
                let line = frame.polygon(route);
                let off = distance_to_polyline(&line, p) - width_m / 2.0;
                if off > 0.0 {
                    return Err(Breach::OutsideInclusion { by_m: off });
                }
            }
        }
        for (index, polygon) in self.exclusions.iter().enumerate() {
            if contains(&frame.polygon(polygon), p) {
                return Err(Breach::InsideExclusion { index });
            }
        }
        Ok(())
    }

    /// Whether the straight leg between two points stays inside (sampled every `step_m`, at least
    /// every 10 m): a destination inside does not make the way there inside.
    pub fn check_leg(&self, from: LatLon, to: LatLon, alt_m: f64) -> Result<(), Breach> {
        let frame = Frame::new(from);
        let (e, n) = frame.local(to);
        let length = e.hypot(n);
        let steps = (length / 10.0).ceil().max(1.0) as usize;
        for i in 0..=steps {
            let f = i as f64 / steps as f64;
            self.check(frame.global((e * f, n * f)), alt_m)?;
        }
        Ok(())
    }

    /// The inclusion as a polygon an autopilot can store: the polygon itself, or the corridor's
    /// outline (each segment offset by half the width on both sides, mitred at the turns, with
    /// square ends). A corridor that turns back on itself within its own width gives an outline
    /// that crosses itself; autopilots refuse those, and so does the read-back check.
    pub fn inclusion_outline(&self) -> Vec<LatLon> {
        match &self.inclusion {
            Inclusion::Polygon { vertices } => vertices.clone(),
            Inclusion::Corridor { width_m, route } => {
                let frame = Frame::new(route[0]);
                let line = frame.polygon(route);
                corridor_outline(&line, width_m / 2.0)
                    .into_iter()
                    .map(|p| frame.global(p))
                    .collect()
            }
        }
    }
}

/// Which rule a point breaks.
#[derive(Debug, Clone, PartialEq)]
pub enum Breach {
    AboveCeiling { alt_m: f64, max_alt_m: f64 },
    OutsideInclusion { by_m: f64 },
    InsideExclusion { index: usize },
}

impl fmt::Display for Breach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Breach::AboveCeiling { alt_m, max_alt_m } => {
                write!(
                    f,
                    "{alt_m:.1} m is above the volume's ceiling of {max_alt_m:.1} m"
                )
            }
            Breach::OutsideInclusion { by_m } => {
                write!(f, "{by_m:.1} m outside the approved volume")
            }
            Breach::InsideExclusion { index } => write!(f, "inside exclusion zone {index}"),
        }
    }
}

type Xy = (f64, f64);

/// Flat-earth east/north metres around an origin ([`crate::geo`]).
struct Frame {
    origin: geo::LatLon,
}

impl Frame {
    fn new(origin: LatLon) -> Self {
        Self {
            origin: geo::LatLon::new(origin.lat.get(), origin.lon.get()),
        }
    }

    fn local(&self, p: LatLon) -> Xy {
        let d = self
            .origin
            .north_east_to(geo::LatLon::new(p.lat.get(), p.lon.get()));
        (d.east_m, d.north_m)
    }

    fn global(&self, (east, north): Xy) -> LatLon {
        let p = self.origin.offset(geo::NorthEast::new(north, east));
        LatLon {
            lat: Latitude::saturating(p.lat_deg),
            lon: Longitude::saturating(p.lon_deg),
        }
    }

    fn polygon(&self, points: &[LatLon]) -> Vec<Xy> {
        points.iter().map(|p| self.local(*p)).collect()
    }
}

/// Even-odd rule: a ray to the east crosses the outline an odd number of times.
fn contains(poly: &[Xy], (x, y): Xy) -> bool {
    let mut inside = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let (xi, yi) = poly[i];
        let (xj, yj) = poly[j];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

fn distance_to_segment((px, py): Xy, (ax, ay): Xy, (bx, by): Xy) -> f64 {
    let (dx, dy) = (bx - ax, by - ay);
    let len2 = dx * dx + dy * dy;
    let t = if len2 == 0.0 {
        0.0
    } else {
        (((px - ax) * dx + (py - ay) * dy) / len2).clamp(0.0, 1.0)
    };
    (px - (ax + t * dx)).hypot(py - (ay + t * dy))
}

fn distance_to_polyline(line: &[Xy], p: Xy) -> f64 {
    line.windows(2)
        .map(|w| distance_to_segment(p, w[0], w[1]))
        .fold(f64::INFINITY, f64::min)
}

fn distance_to_outline(poly: &[Xy], p: Xy) -> f64 {
    let closing = distance_to_segment(p, poly[poly.len() - 1], poly[0]);
    distance_to_polyline(poly, p).min(closing)
}

fn corridor_outline(line: &[Xy], half: f64) -> Vec<Xy> {
    // unit direction of each segment (a zero-length segment keeps the previous direction)
    let mut dirs: Vec<Xy> = Vec::with_capacity(line.len() - 1);
    for w in line.windows(2) {
        let (dx, dy) = (w[1].0 - w[0].0, w[1].1 - w[0].1);
        let len = dx.hypot(dy);
        let dir = if len > 1e-9 {
            (dx / len, dy / len)
        } else {
            dirs.last().copied().unwrap_or((1.0, 0.0))
        };
        dirs.push(dir);
    }
    let left = |d: Xy| (-d.1, d.0);
    let mut left_side = Vec::with_capacity(line.len() + 1);
    let mut right_side = Vec::with_capacity(line.len() + 1);
    let n = line.len();
    for (i, &p) in line.iter().enumerate() {
        // the offset direction at a vertex: the segment's normal at the ends, the mitre between
        // the two normals inside (lengthened so both edges keep their distance, capped at 2x)
        let (normal, scale) = if i == 0 || i == n - 1 {
            (left(dirs[i.min(n - 2)]), 1.0)
        } else {
            let (a, b) = (left(dirs[i - 1]), left(dirs[i]));
            let sum = (a.0 + b.0, a.1 + b.1);
            let len = sum.0.hypot(sum.1);
            if len < 1e-9 {
                (a, 1.0)
            } else {
                let m = (sum.0 / len, sum.1 / len);
                let cos = m.0 * a.0 + m.1 * a.1;
                (m, (1.0 / cos.max(0.5)).min(2.0))
            }
        };
        // square ends: the first and last points pushed out along the route by half the width
        let along = if i == 0 {
            (-dirs[0].0 * half, -dirs[0].1 * half)
        } else if i == n - 1 {
            (dirs[n - 2].0 * half, dirs[n - 2].1 * half)
        } else {
            (0.0, 0.0)
        };
        let o = (normal.0 * half * scale, normal.1 * half * scale);
        left_side.push((p.0 + along.0 + o.0, p.1 + along.1 + o.1));
        right_side.push((p.0 + along.0 - o.0, p.1 + along.1 - o.1));
    }
    right_side.reverse();
    left_side.extend(right_side);
    left_side
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ll(lat: f64, lon: f64) -> LatLon {
        LatLon::new(lat, lon).unwrap()
    }

    /// A point `east`, `north` metres from (47.4, 8.5).
    fn at(east: f64, north: f64) -> LatLon {
        Frame::new(ll(47.4, 8.5)).global((east, north))
    }

    fn square(half: f64) -> Vec<LatLon> {
        vec![
            at(-half, -half),
            at(half, -half),
            at(half, half),
            at(-half, half),
        ]
    }

    #[test]
    fn polygon_inclusion_ceiling_and_exclusion() {
        let v = OperationalVolume::new(
            Inclusion::Polygon {
                vertices: square(500.0),
            },
            60.0,
            vec![vec![
                at(100.0, 100.0),
                at(200.0, 100.0),
                at(200.0, 200.0),
                at(100.0, 200.0),
            ]],
        )
        .unwrap();
        assert_eq!(v.check(at(0.0, 0.0), 30.0), Ok(()));
        assert!(matches!(
            v.check(at(0.0, 0.0), 61.0),
            Err(Breach::AboveCeiling { .. })
        ));
        match v.check(at(520.0, 0.0), 30.0) {
            Err(Breach::OutsideInclusion { by_m }) => assert!((by_m - 20.0).abs() < 0.5, "{by_m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            v.check(at(150.0, 150.0), 30.0),
            Err(Breach::InsideExclusion { index: 0 })
        );
        // the leg through the exclusion is refused though both ends are allowed
        assert_eq!(
            v.check_leg(at(0.0, 150.0), at(300.0, 150.0), 30.0),
            Err(Breach::InsideExclusion { index: 0 })
        );
        assert_eq!(v.check_leg(at(0.0, 0.0), at(300.0, 0.0), 30.0), Ok(()));
    }

    #[test]
    fn corridor_is_half_the_width_either_side_of_the_route() {
        let route = vec![at(0.0, 0.0), at(1000.0, 0.0), at(1000.0, 1000.0)];
        let v = OperationalVolume::new(
            Inclusion::Corridor {
                width_m: 80.0,
                route,
            },
            60.0,
            vec![],
        )
        .unwrap();
        assert_eq!(v.check(at(500.0, 39.0), 30.0), Ok(()));
        assert!(matches!(
            v.check(at(500.0, 45.0), 30.0),
            Err(Breach::OutsideInclusion { .. })
        ));
        assert_eq!(v.check(at(1030.0, 500.0), 30.0), Ok(()));
        // the outline an autopilot stores holds the route and leaves the outside out
        let outline = v.inclusion_outline();
        assert_eq!(outline.len(), 6);
        let frame = Frame::new(ll(47.4, 8.5));
        let poly = frame.polygon(&outline);
        for inside in [
            (0.0, 0.0),
            (500.0, 35.0),
            (1000.0, 500.0),
            (1035.0, 990.0),
            (-30.0, 0.0),
        ] {
            assert!(contains(&poly, inside), "{inside:?}");
        }
        for outside in [(500.0, 45.0), (500.0, 500.0), (1050.0, 500.0), (-50.0, 0.0)] {
            assert!(!contains(&poly, outside), "{outside:?}");
        }
    }

    #[test]
    fn shapes_that_cannot_be_flown_are_refused_by_field() {
        let e = OperationalVolume::new(
            Inclusion::Polygon {
                vertices: square(10.0)[..2].to_vec(),
            },
            60.0,
            vec![],
        )
        .unwrap_err();
        assert_eq!(e.field, "inclusion.vertices");
        let e = OperationalVolume::new(
            Inclusion::Corridor {
                width_m: 0.0,
                route: square(10.0),
            },
            60.0,
            vec![],
        )
        .unwrap_err();
        assert_eq!(e.field, "inclusion.width_m");
        let e = OperationalVolume::new(
            Inclusion::Polygon {
                vertices: square(10.0),
            },
            f64::NAN,
            vec![],
        )
        .unwrap_err();
        assert_eq!(e.field, "max_alt_m");
        let e = OperationalVolume::new(
            Inclusion::Polygon {
                vertices: square(10.0),
            },
            60.0,
            vec![vec![]],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "volume.exclusions[0]: 0 vertices; a polygon needs at least 3"
        );
    }

    #[test]
    fn parses_and_round_trips_and_names_the_problem() {
        let json = r#"{"inclusion":{"type":"corridor","width_m":80,"route":[{"lat":47.4,"lon":8.5},{"lat":47.41,"lon":8.5}]},"max_alt_m":60}"#;
        let v: OperationalVolume = serde_json::from_str(json).unwrap();
        assert_eq!(v.max_alt_m(), 60.0);
        let again: OperationalVolume =
            serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(again, v);
        let bad = r#"{"inclusion":{"type":"corridor","width_m":80,"route":[{"lat":47.4,"lon":8.5}]},"max_alt_m":60}"#;
        let e = serde_json::from_str::<OperationalVolume>(bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("volume.inclusion.route"), "{e}");
        let unknown = r#"{"inclusion":{"type":"circle","radius_m":80},"max_alt_m":60}"#;
        assert!(serde_json::from_str::<OperationalVolume>(unknown).is_err());
    }
}
