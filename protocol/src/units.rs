//! Physical quantities with their unit in the type, checked on the way in.
//!
//! The seed's own agents put battery *voltage* in `battery_level` and local x/y/z in `lat`/`lon`;
//! these types make that a parse error instead of a silent lie. Each one deserialises from a plain
//! JSON number (the wire shape stays the seed's) and refuses values outside its range.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A number outside the range its unit allows.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{value} is not a valid {unit}: {rule}")]
pub struct UnitError {
    pub unit: &'static str,
    pub value: f64,
    pub rule: &'static str,
}

macro_rules! bounded_f64 {
    ($(#[$doc:meta])* $name:ident, $unit:literal, $min:expr, $max:expr, $rule:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
        #[serde(try_from = "f64", into = "f64")]
        pub struct $name(f64);

        impl $name {
            pub const MIN: f64 = $min;
            pub const MAX: f64 = $max;

            /// Checks the range; NaN and infinities are always refused.
            pub fn new(value: f64) -> Result<Self, UnitError> {
                if value.is_finite() && (Self::MIN..=Self::MAX).contains(&value) {
                    Ok(Self(value))
                } else {
                    Err(UnitError { unit: $unit, value, rule: $rule })
                }
            }

            /// Clamps into range (NaN becomes the minimum): for readings from sensors that
            /// overshoot, where refusing the whole snapshot would be worse than clamping.
            pub fn saturating(value: f64) -> Self {
                if value.is_nan() {
                    Self(Self::MIN)
                } else {
                    Self(value.clamp(Self::MIN, Self::MAX))
                }
            }

            pub fn get(self) -> f64 {
                self.0
            }
        }

        impl TryFrom<f64> for $name {
            type Error = UnitError;
            fn try_from(value: f64) -> Result<Self, UnitError> {
                Self::new(value)
            }
        }

        impl From<$name> for f64 {
            fn from(v: $name) -> f64 {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

bounded_f64!(
    /// State of charge, percent of full (0–100).
    Percent, "percent", 0.0, 100.0, "must be between 0 and 100"
);
bounded_f64!(
    /// WGS-84 latitude in degrees, north positive.
    Latitude, "latitude", -90.0, 90.0, "must be between -90 and 90 degrees"
);
bounded_f64!(
    /// WGS-84 longitude in degrees, east positive.
    Longitude, "longitude", -180.0, 180.0, "must be between -180 and 180 degrees"
);
bounded_f64!(
    /// Altitude or distance in metres. The bounds cover a drone's world: from the Dead Sea shore to
    /// far above any legal flight ceiling.
    Metres, "metres", -1_000.0, 100_000.0, "must be between -1000 and 100000 m"
);
bounded_f64!(
    /// Heading in degrees clockwise from true north, 0 inclusive to 360 exclusive in spirit;
    /// 360 itself is accepted because autopilots send it.
    Degrees, "heading", 0.0, 360.0, "must be between 0 and 360 degrees"
);
bounded_f64!(
    /// Speed in metres per second.
    MetresPerSecond, "speed", 0.0, 200.0, "must be between 0 and 200 m/s"
);
bounded_f64!(
    /// Battery voltage in volts.
    Volts, "voltage", 0.0, 100.0, "must be between 0 and 100 V"
);

/// A WGS-84 position: latitude and longitude in degrees, altitude in metres.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub lat: Latitude,
    pub lon: Longitude,
    /// Altitude above the home position (the seed's `alt`), metres.
    pub alt: Metres,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_is_enforced_and_named() {
        assert!(Percent::new(100.0).is_ok());
        let err = Percent::new(100.5).unwrap_err();
        assert_eq!(err.unit, "percent");
        assert!(err.to_string().contains("between 0 and 100"));
        assert!(Latitude::new(f64::NAN).is_err());
        assert!(Longitude::new(f64::INFINITY).is_err());
        assert_eq!(Percent::saturating(130.0).get(), 100.0);
        assert_eq!(Percent::saturating(f64::NAN).get(), 0.0);
    }

    #[test]
    fn deserialises_from_plain_numbers() {
        let p: Position = serde_json::from_str(r#"{"lat":55.75,"lon":37.61,"alt":10.5}"#).unwrap();
        assert_eq!(p.lat.get(), 55.75);
        let e =
            serde_json::from_str::<Position>(r#"{"lat":95,"lon":37.61,"alt":10.5}"#).unwrap_err();
        assert!(e.to_string().contains("latitude"), "{e}");
    }
}
