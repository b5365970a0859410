//! Energy to get home, the runtime's half (issue 12): it measures, the machine decides. From the
//! autopilot's snapshots it records what each phase of a flight used (hover seconds, cruise
//! seconds, metres climbed, by the battery percentage's fall), estimates the wind (ArduPilot's
//! WIND where it is sent, else VFR_HUD's ground speed against airspeed along the track), and
//! hands the machine an [`EnergyReading`] at every telemetry step. After each flight the model
//! learns and is kept in `<state_dir>/energy.json`; a disk that refuses the write is reported
//! and changes nothing else (the model in memory is used).

use crate::energy::{EnergyModel, FlightLog, Phase};
use crate::machine::energy::EnergyReading;
use hal::flight::FcSnapshot;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tracing::{info, warn};

/// Readings go to the machine once per this many seconds of the autopilot's clock (a sim
/// faster than real time gets its readings as often per metre flown as a real flight).
const READING_EVERY_S: f64 = 1.0;
/// Above this climb rate, m/s, a step is climbing; above this ground speed, m/s, cruising.
const CLIMB_MPS: f64 = 0.5;
const CRUISE_MPS: f64 = 2.0;
/// How much of a new wind sample the estimate takes (smooths VFR_HUD's rounding and gusts).
const WIND_WEIGHT: f64 = 0.2;

#[derive(Debug, Clone, Copy)]
struct Sample {
    fc_t: f64,
    pct: f64,
    alt: f64,
}

#[derive(Debug)]
pub struct EnergyRecorder {
    path: PathBuf,
    learn: bool,
    pub model: EnergyModel,
    log: FlightLog,
    last: Option<Sample>,
    flying: bool,
    wind_ne: (f64, f64),
    /// The autopilot's clock against ours, from the first sample of this link.
    anchor: Option<(f64, Instant)>,
    last_sent: Option<f64>,
}

impl EnergyRecorder {
    /// The model kept in `state_dir`, or the config's seed (the first flight, or an unreadable
    /// file: said in the log).
    pub fn open(state_dir: &Path, seed: EnergyModel, learn: bool) -> Self {
        let path = state_dir.join("energy.json");
        let model = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<EnergyModel>(&bytes) {
                Ok(m) if learn => m,
                Ok(_) => seed,
                Err(error) => {
                    warn!(path = %path.display(), %error, "energy model unreadable: using the config's seed");
                    seed
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => seed,
            Err(error) => {
                warn!(path = %path.display(), %error, "energy model unreadable: using the config's seed");
                seed
            }
        };
        Self {
            path,
            learn,
            model,
            log: FlightLog::default(),
            last: None,
            flying: false,
            wind_ne: (0.0, 0.0),
            anchor: None,
            last_sent: None,
        }
    }

    /// One snapshot: records the phase, updates the wind; returns a reading for the machine when
    /// one is due, and the learned model when a flight just ended.
    pub fn observe(
        &mut self,
        snap: &FcSnapshot,
        now: Instant,
    ) -> (Option<EnergyReading>, Option<EnergyModel>) {
        let (Some(pct), Some(pos), Some(fc_t)) =
            (snap.battery_percent, snap.position.as_ref(), snap.fc_time_s)
        else {
            return (None, None);
        };
        let in_air = snap.armed && pos.alt_rel_m > 1.0;
        self.wind(snap);
        let learned = self.record(
            snap,
            Sample {
                fc_t,
                pct,
                alt: pos.alt_rel_m,
            },
            in_air,
        );
        let rate = self.clock_rate(fc_t, now);
        let due = self
            .last_sent
            .is_none_or(|at| fc_t - at >= READING_EVERY_S || fc_t < at);
        let reading = match (&snap.home, due) {
            (Some(home), true) => {
                self.last_sent = Some(fc_t);
                Some(EnergyReading {
                    battery_pct: pct,
                    here: (pos.lat_deg, pos.lon_deg),
                    home: (home.lat_deg, home.lon_deg),
                    alt_m: pos.alt_rel_m,
                    wind_ne_mps: self.wind_ne,
                    velocity_ne_mps: snap
                        .velocity_ned_mps
                        .map(|v| (v[0], v[1]))
                        .unwrap_or_default(),
                    clock_rate: rate,
                })
            }
            _ => None,
        };
        (reading, learned)
    }

    fn clock_rate(&mut self, fc_t: f64, now: Instant) -> f64 {
        match self.anchor {
            Some((t0, _)) if fc_t < t0 => {
                // the autopilot rebooted: start again
                self.anchor = Some((fc_t, now));
                1.0
            }
            Some((t0, w0)) => {
                let wall = now.duration_since(w0).as_secs_f64();
                if wall < 2.0 {
                    1.0
                } else {
                    ((fc_t - t0) / wall).clamp(0.1, 1000.0)
                }
            }
            None => {
                self.anchor = Some((fc_t, now));
                1.0
            }
        }
    }

    fn wind(&mut self, snap: &FcSnapshot) {
        if let Some(w) = snap.wind_ne_mps {
            self.wind_ne = w;
            return;
        }
        // no WIND (PX4): along the track, the ground speed minus the airspeed is what the air
        // adds; only while moving, where the track means something
        let (Some(gs), Some(air), Some(v)) = (
            snap.groundspeed_mps,
            snap.airspeed_mps,
            snap.velocity_ned_mps,
        ) else {
            return;
        };
        let speed = v[0].hypot(v[1]);
        if gs < CRUISE_MPS || speed < CRUISE_MPS {
            return;
        }
        let along = gs - air;
        let sample = (along * v[0] / speed, along * v[1] / speed);
        self.wind_ne = (
            self.wind_ne.0 + (sample.0 - self.wind_ne.0) * WIND_WEIGHT,
            self.wind_ne.1 + (sample.1 - self.wind_ne.1) * WIND_WEIGHT,
        );
    }

    fn record(&mut self, snap: &FcSnapshot, s: Sample, in_air: bool) -> Option<EnergyModel> {
        let prev = self.last.replace(s);
        if in_air {
            self.flying = true;
            if let Some(p) = prev {
                let dt = s.fc_t - p.fc_t;
                if dt > 0.0 && dt < 5.0 {
                    let used = p.pct - s.pct;
                    let climb = s.alt - p.alt;
                    let ground = snap
                        .groundspeed_mps
                        .or(snap.velocity_ned_mps.map(|v| v[0].hypot(v[1])))
                        .unwrap_or(0.0);
                    if climb / dt > CLIMB_MPS {
                        self.log.record(Phase::Climb, used, climb);
                    } else if ground > CRUISE_MPS {
                        self.log.record(Phase::Cruise, used, dt);
                    } else {
                        self.log.record(Phase::Hover, used, dt);
                    }
                }
            }
            return None;
        }
        if !self.flying || snap.armed {
            return None;
        }
        // landed and disarmed: the flight is over
        self.flying = false;
        let log = std::mem::take(&mut self.log);
        if !self.learn {
            return None;
        }
        let before = self.model;
        self.model = self.model.learn(&log);
        info!(?log, ?before, after = ?self.model, "energy model learned from the flight");
        Some(self.model)
    }

    /// Keeps the model; a failure is said and changes nothing else.
    pub async fn save(&self) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(&self.model).map_err(|e| e.to_string())?;
        daemon::fs::write_atomic_async(self.path.clone(), bytes)
            .await
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hal::flight::GlobalPosition;

    fn snap(t: f64, pct: f64, alt: f64, ground: f64, armed: bool) -> FcSnapshot {
        let pos = GlobalPosition {
            lat_deg: 47.0,
            lon_deg: 8.0,
            alt_msl_m: 400.0 + alt,
            alt_rel_m: alt,
        };
        FcSnapshot {
            battery_percent: Some(pct),
            position: Some(pos),
            home: Some(pos),
            fc_time_s: Some(t),
            armed,
            groundspeed_mps: Some(ground),
            airspeed_mps: Some(ground + 4.0),
            velocity_ned_mps: Some([ground, 0.0, 0.0]),
            ..FcSnapshot::initial()
        }
    }

    #[test]
    fn a_flight_is_recorded_by_phase_learned_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let seed = EnergyModel {
            hover_pct_per_s: 0.1,
            cruise_pct_per_s: 0.1,
            climb_pct_per_m: 0.1,
            flights: 0,
        };
        let mut r = EnergyRecorder::open(dir.path(), seed, true);
        let now = Instant::now();
        let mut t = 0.0;
        let mut pct = 100.0;
        // 60 s of hover at 0.2 %/s, then 60 s of cruise at 0.05 %/s, 1 s steps
        for i in 0..120 {
            t += 1.0;
            pct -= if i < 60 { 0.2 } else { 0.05 };
            let ground = if i < 60 { 0.0 } else { 10.0 };
            let (_, learned) = r.observe(&snap(t, pct, 20.0, ground, true), now);
            assert!(learned.is_none());
        }
        // VFR_HUD: 4 m/s more through the air than over the ground, flying north: from the north
        assert!((r.wind_ne.0 + 4.0).abs() < 0.1, "{:?}", r.wind_ne);
        let (_, learned) = r.observe(&snap(t + 1.0, pct, 0.0, 0.0, false), now);
        let m = learned.expect("learned at the disarm");
        assert!(
            (m.hover_pct_per_s - (0.1 + (0.2 - 0.1) / 3.0)).abs() < 1e-6,
            "{m:?}"
        );
        assert!(
            (m.cruise_pct_per_s - (0.1 - 0.05 / 3.0)).abs() < 1e-3,
            "{m:?}"
        );
        assert_eq!(m.climb_pct_per_m, 0.1, "no climb recorded");
        assert_eq!(m.flights, 1);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(r.save()).unwrap();
        let again = EnergyRecorder::open(dir.path(), seed, true);
        assert_eq!(again.model, m);
        // a disk that refuses: said, not fatal
        let gone = EnergyRecorder::open(&dir.path().join("no/such/dir"), seed, true);
        assert!(rt.block_on(gone.save()).is_err());
    }
}
