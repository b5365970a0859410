//! Short distances on the Earth, the one way the suite computes them: a point so many metres
//! north and east of another, the north/east offset between two points, and the great-circle
//! distance. One Earth radius for all of it ([`EARTH_RADIUS_M`]).
//!
//! The offsets are the local flat-earth approximation (metres per degree taken at the first
//! point): exact enough for the hundreds of metres to a few kilometres a delivery spans (the
//! error grows with the square of the distance: a few centimetres at 1 km), and cheap enough for the
//! sim's camera, which asks once per frame. [`LatLon::distance_m`] is the haversine formula, for
//! lengths of a track.

use crate::units::{Latitude, Longitude, Position};

/// The mean Earth radius (IUGG, `R1`), metres.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A WGS-84 point in plain degrees (unchecked: for computing, where [`Position`] is for the wire).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatLon {
    pub lat_deg: f64,
    pub lon_deg: f64,
}

/// How far one point is from another, metres north and east (negative: south, west).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct NorthEast {
    pub north_m: f64,
    pub east_m: f64,
}

impl NorthEast {
    pub fn new(north_m: f64, east_m: f64) -> Self {
        Self { north_m, east_m }
    }

    /// The horizontal length of the offset, metres.
    pub fn length_m(&self) -> f64 {
        self.north_m.hypot(self.east_m)
    }

    /// The direction of the offset, degrees clockwise from north in `[0, 360)`.
    pub fn bearing_deg(&self) -> f64 {
        self.east_m
            .atan2(self.north_m)
            .to_degrees()
            .rem_euclid(360.0)
    }
}

impl LatLon {
    pub fn new(lat_deg: f64, lon_deg: f64) -> Self {
        Self { lat_deg, lon_deg }
    }

    /// The point `by` away from this one.
    pub fn offset(&self, by: NorthEast) -> LatLon {
        LatLon {
            lat_deg: self.lat_deg + (by.north_m / EARTH_RADIUS_M).to_degrees(),
            lon_deg: self.lon_deg
                + (by.east_m / (EARTH_RADIUS_M * self.lat_deg.to_radians().cos())).to_degrees(),
        }
    }

    /// How far `to` is from this point, north and east: the inverse of [`LatLon::offset`].
    pub fn north_east_to(&self, to: LatLon) -> NorthEast {
        NorthEast {
            north_m: (to.lat_deg - self.lat_deg).to_radians() * EARTH_RADIUS_M,
            east_m: (to.lon_deg - self.lon_deg).to_radians()
                * EARTH_RADIUS_M
                * self.lat_deg.to_radians().cos(),
        }
    }

    /// Great-circle distance to `to` (haversine), metres.
    pub fn distance_m(&self, to: LatLon) -> f64 {
        let (p1, p2) = (self.lat_deg.to_radians(), to.lat_deg.to_radians());
        let dp = p2 - p1;
        let dl = (to.lon_deg - self.lon_deg).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_M * a.sqrt().atan2((1.0 - a).sqrt())
    }
}

impl From<Position> for LatLon {
    fn from(p: Position) -> Self {
        LatLon::new(p.lat.get(), p.lon.get())
    }
}

impl Position {
    /// The point `by` away from this one at the same altitude. Latitude and longitude are clamped
    /// into their ranges (an offset across a pole or the antimeridian is far outside what the
    /// approximation is for anyway).
    pub fn offset(&self, by: NorthEast) -> Position {
        let p = LatLon::from(*self).offset(by);
        Position {
            lat: Latitude::saturating(p.lat_deg),
            lon: Longitude::saturating(p.lon_deg),
            alt: self.alt,
        }
    }

    /// How far `to` is from this point, north and east (altitudes ignored).
    pub fn north_east_to(&self, to: &Position) -> NorthEast {
        LatLon::from(*self).north_east_to(LatLon::from(*to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::Metres;

    const ZURICH: LatLon = LatLon {
        lat_deg: 47.3769,
        lon_deg: 8.5417,
    };

    #[test]
    fn offset_and_north_east_to_are_inverses() {
        for (n, e) in [(0.0, 0.0), (100.0, 0.0), (0.0, -250.0), (-812.5, 1_999.0)] {
            let by = NorthEast::new(n, e);
            let there = ZURICH.offset(by);
            let back = ZURICH.north_east_to(there);
            assert!((back.north_m - n).abs() < 1e-6, "{by:?} -> {back:?}");
            assert!((back.east_m - e).abs() < 1e-6, "{by:?} -> {back:?}");
        }
    }

    #[test]
    fn a_degree_of_latitude_is_the_radius_times_pi_over_180() {
        let north = ZURICH.north_east_to(LatLon::new(ZURICH.lat_deg + 1.0, ZURICH.lon_deg));
        assert!((north.north_m - 111_195.08).abs() < 0.01, "{north:?}");
        assert_eq!(north.east_m, 0.0);
        // east-west degrees shrink with the cosine of the latitude
        let east = ZURICH.north_east_to(LatLon::new(ZURICH.lat_deg, ZURICH.lon_deg + 1.0));
        let expected = 111_195.08 * ZURICH.lat_deg.to_radians().cos();
        assert!((east.east_m - expected).abs() < 0.01, "{east:?}");
    }

    #[test]
    fn flat_offsets_agree_with_the_great_circle_over_a_delivery() {
        let by = NorthEast::new(1_200.0, -900.0);
        let there = ZURICH.offset(by);
        let d = ZURICH.distance_m(there);
        // 1.5 km: the flat approximation is 5.5 cm short at Zurich's latitude
        assert!((d - by.length_m()).abs() < 0.1, "{d} vs {}", by.length_m());
        assert_eq!(ZURICH.distance_m(ZURICH), 0.0);
        assert!((ZURICH.distance_m(there) - there.distance_m(ZURICH)).abs() < 1e-6);
    }

    #[test]
    fn bearings_go_clockwise_from_north() {
        assert_eq!(NorthEast::new(1.0, 0.0).bearing_deg(), 0.0);
        assert!((NorthEast::new(0.0, 1.0).bearing_deg() - 90.0).abs() < 1e-9);
        assert!((NorthEast::new(-1.0, 0.0).bearing_deg() - 180.0).abs() < 1e-9);
        assert!((NorthEast::new(0.0, -1.0).bearing_deg() - 270.0).abs() < 1e-9);
        assert_eq!(NorthEast::new(3.0, 4.0).length_m(), 5.0);
    }

    #[test]
    fn positions_offset_keep_their_altitude_and_stay_in_range() {
        let p = Position {
            lat: Latitude::new(ZURICH.lat_deg).unwrap(),
            lon: Longitude::new(ZURICH.lon_deg).unwrap(),
            alt: Metres::new(30.0).unwrap(),
        };
        let q = p.offset(NorthEast::new(50.0, 50.0));
        assert_eq!(q.alt, p.alt);
        let back = p.north_east_to(&q);
        assert!((back.north_m - 50.0).abs() < 1e-6 && (back.east_m - 50.0).abs() < 1e-6);
        let pole = p.offset(NorthEast::new(5_000_000.0, 0.0));
        assert_eq!(pole.lat.get(), Latitude::MAX);
    }
}
