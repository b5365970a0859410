//! The MAVLink implementation of [`super::FlightController`] (in progress: see issue 3).
