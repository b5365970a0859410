//! The pack and the air (issue 12): current drawn by what the vehicle does (hover, cruise through
//! the air, climb), the voltage sagging under that load, and the wind, constant or gusting, that
//! the position controller flies against. The percentage stays consumed mAh against
//! BATT_CAPACITY / BAT1_CAPACITY (never the voltage), as both autopilots' current monitors do.

use super::*;

/// The wind, set over the control socket (`wind <speed> <from_deg> [gust_mps] [gust_period_s]`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Wind {
    /// Mean speed, m/s.
    pub speed_mps: f64,
    /// Where it blows from, degrees from north (meteorological, as ArduPilot's WIND reports it).
    pub from_deg: f64,
    /// Gusts: the speed swings this much either side of the mean…
    pub gust_mps: f64,
    /// …over this period, sim seconds (0: no gusts).
    pub gust_period_s: f64,
}

impl Wind {
    /// Speed at sim time `t`.
    pub fn speed_at(&self, t: f64) -> f64 {
        let gust = if self.gust_period_s > 0.0 {
            self.gust_mps * (std::f64::consts::TAU * t / self.gust_period_s).sin()
        } else {
            0.0
        };
        (self.speed_mps + gust).max(0.0)
    }

    /// The air's velocity at `t`, north and east, m/s (the direction it moves *to*).
    pub fn velocity_ne(&self, t: f64) -> (f64, f64) {
        let s = self.speed_at(t);
        let r = self.from_deg.to_radians();
        (-s * r.cos(), -s * r.sin())
    }
}

impl Model {
    /// The wind from now on (the control socket's `wind`).
    pub fn set_wind(&mut self, wind: Wind) {
        self.wind = wind;
    }

    /// The vehicle's velocity through the air, north and east.
    pub(super) fn air_velocity_ne(&self) -> (f64, f64) {
        let (wn, we) = self.wind.velocity_ne(self.t);
        (self.vel[0] - wn, self.vel[1] - we)
    }

    pub(super) fn airspeed(&self) -> f64 {
        let (n, e) = self.air_velocity_ne();
        n.hypot(e)
    }

    /// The fastest ground speed along the unit direction `(un, ue)` that keeps the airspeed at
    /// or under `max_air`: the position controller cannot ask the airframe for more, so a
    /// headwind slows the vehicle over the ground and a tailwind speeds it up.
    pub(super) fn ground_speed_limit(&self, un: f64, ue: f64, max_air: f64) -> f64 {
        let (wn, we) = self.wind.velocity_ne(self.t);
        // |g·u − w| = max_air, solved for g ≥ 0
        let along = un * wn + ue * we;
        let disc = along * along - (wn * wn + we * we) + max_air * max_air;
        if disc <= 0.0 {
            0.0
        } else {
            (along + disc.sqrt()).max(0.0)
        }
    }

    /// Amps drawn now: hover current in the air, more with airspeed (the airframe's drag at
    /// cruise) and with climb, a little less descending; idle on the ground.
    pub(crate) fn current_a(&self) -> f64 {
        if !self.armed || self.on_ground() {
            return self.p.current_idle_a;
        }
        let hover = self.p.current_flying_a;
        let air = (self.airspeed() / self.p.max_horizontal_mps.max(0.1)).min(1.5);
        let climb = self.vel[2];
        let climb_a = if climb > 0.0 {
            climb * self.p.climb_current_a_per_mps
        } else {
            // descending: the rotors work less, but never below ~80 % of hover
            (climb * self.p.climb_current_a_per_mps * 0.3).max(-0.2 * hover)
        };
        hover * (1.0 + self.p.cruise_current_extra * air * air) + climb_a
    }

    /// Pack voltage: from the charge left (the percentage never comes from it), minus the load
    /// through the pack's internal resistance, a transient sag and the control socket's lasting one.
    pub(super) fn voltage(&self) -> f64 {
        let cells = f64::from(self.p.cells);
        cells * (3.5 + 0.7 * self.battery / 100.0)
            - self.current_a() * self.p.internal_resistance_ohm
            - self.sag_v
            - self.voltage_sag_v
    }

    /// One step of the pack: consumed mAh from the current, the percentage against the capacity.
    pub(super) fn battery_step(&mut self, dt: f64) {
        let amps = self.current_a();
        self.consumed_mah += amps * dt / 3.6;
        self.battery = (100.0 - 100.0 * self.consumed_mah / self.p.capacity_mah).max(0.0);
        self.sag_v = (self.sag_v - 0.5 * dt).max(0.0);
    }

    /// ArduPilot's WIND: where the wind comes from and its speed, as its EKF estimates them.
    pub(super) fn wind_message(&self) -> MavMessage {
        MavMessage::WIND(apm::WIND_DATA {
            direction: self.wind.from_deg.rem_euclid(360.0) as f32,
            speed: self.wind.speed_at(self.t) as f32,
            speed_z: 0.0,
        })
    }

    /// Battery sag fault: lose `percent` at once, with a voltage dip that recovers over seconds.
    pub fn battery_sag(&mut self, percent: f64) {
        self.consumed_mah += percent / 100.0 * self.p.capacity_mah;
        self.battery = (self.battery - percent).max(0.0);
        self.sag_v += 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(f: Flavour) -> Model {
        let mut m = Model::new(f, Params::for_flavour(f), (47.0, 8.0, 400.0), 1);
        m.armed = true;
        m.pos[2] = 20.0;
        m
    }

    #[test]
    fn a_headwind_slows_the_vehicle_over_the_ground_and_a_tailwind_speeds_it_up() {
        let mut m = model(Flavour::Px4);
        // 6 m/s from the north: flying north is into it
        m.set_wind(Wind {
            speed_mps: 6.0,
            from_deg: 0.0,
            ..Wind::default()
        });
        let north = m.ground_speed_limit(1.0, 0.0, 10.0);
        let south = m.ground_speed_limit(-1.0, 0.0, 10.0);
        assert!((north - 4.0).abs() < 1e-9, "{north}");
        assert!((south - 16.0).abs() < 1e-9, "{south}");
        // across it: the airframe crabs, sqrt(10² − 6²) = 8 m/s over the ground
        assert!((m.ground_speed_limit(0.0, 1.0, 10.0) - 8.0).abs() < 1e-9);
        // stronger than the airframe: no way forward
        m.set_wind(Wind {
            speed_mps: 12.0,
            from_deg: 0.0,
            ..Wind::default()
        });
        assert_eq!(m.ground_speed_limit(1.0, 0.0, 10.0), 0.0);
    }

    #[test]
    fn current_grows_with_airspeed_and_climb_and_the_voltage_sags_under_it() {
        let mut m = model(Flavour::Px4);
        let hover = m.current_a();
        let v_hover = m.voltage();
        m.vel = [10.0, 0.0, 0.0];
        let cruise = m.current_a();
        m.vel = [0.0, 0.0, 3.0];
        let climb = m.current_a();
        assert!(cruise > hover * 1.15, "{hover} {cruise}");
        assert!(climb > hover + 5.0, "{hover} {climb}");
        assert!(m.voltage() < v_hover - 0.1, "sag under the climb's load");
        // hovering in a wind is flying through the air
        m.vel = [0.0; 3];
        m.set_wind(Wind {
            speed_mps: 10.0,
            from_deg: 90.0,
            ..Wind::default()
        });
        assert!((m.current_a() - cruise).abs() < 1e-9);
        // capacity from the parameter: the same draw empties a smaller pack faster
        let mut small = model(Flavour::Px4);
        small.p.set("BAT1_CAPACITY", 2500.0).unwrap();
        let mut big = model(Flavour::Px4);
        for _ in 0..500 {
            small.battery_step(0.02);
            big.battery_step(0.02);
        }
        let (used_small, used_big) = (100.0 - small.battery, 100.0 - big.battery);
        assert!((used_small / used_big - 2.0).abs() < 1e-6);
    }

    #[test]
    fn gusts_swing_around_the_mean() {
        let w = Wind {
            speed_mps: 5.0,
            from_deg: 270.0,
            gust_mps: 3.0,
            gust_period_s: 20.0,
        };
        assert!((w.speed_at(5.0) - 8.0).abs() < 1e-9);
        assert!((w.speed_at(15.0) - 2.0).abs() < 1e-9);
        // from the west: the air moves east
        let (n, e) = w.velocity_ne(0.0);
        assert!(n.abs() < 1e-9 && (e - 5.0).abs() < 1e-9);
    }
}
