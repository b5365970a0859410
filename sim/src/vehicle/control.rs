//! The control socket: how a test that runs `sim vehicle` as a separate process injects faults and
//! reads the vehicle's state. One command per line, one reply line each (`ok …` or `error …`):
//!
//! ```text
//! link_drop <ms>                      stop sending and receiving for <ms> real milliseconds
//! lose_acks <n>                       drop the next n COMMAND_ACKs
//! delay_acks <n> <ms>                 delay the next n COMMAND_ACKs by <ms> real milliseconds
//! gps_loss <s>                        no GPS fix for <s> sim seconds
//! battery_sag <percent>               battery drops by <percent> at once
//! refuse <command id> <result> [n]    answer the next n (default 1) of that command with
//!                                     denied | temporarily_rejected | unsupported | failed
//! rc_throttle <us>                    ArduPilot's RC throttle input (default 1000: stick down,
//!                                     no transmitter; 1500 = mid-stick: LOITER holds altitude)
//! voltage_sag <volts>                 pack voltage this much lower from now on (percent unchanged)
//! wind <mps> <from_deg> [gust_mps] [gust_period_s]
//!                                     the wind from now on: mean speed, where it blows from
//!                                     (degrees from north), gusts swinging ± gust_mps over the
//!                                     period (sim seconds); `wind 0 0` calms it
//! battery_fault <name>...            BATTERY_STATUS fault bits from now on (none clears):
//!                                     deep_discharge spikes cell_fail over_current
//!                                     over_temperature under_temperature incompatible_voltage
//!                                     incompatible_firmware incompatible_cells
//! param <NAME> <value>                an autopilot parameter the sim models: BATT_LOW_VOLT,
//!                                     BATT_LOW_TIMER, BATT_FS_LOW_ACT, BATT_CAPACITY (PX4:
//!                                     BAT1_CAPACITY), SIM_BATT_RES_OHM, FS_GCS_ENABLE,
//!                                     SYSID_MYGCS, FS_GCS_TIMEOUT, NAV_DLL_ACT, COM_DL_LOSS_T
//! gcs_mode <MODE>                     a ground station on another link sets the mode (the
//!                                     flavour's name: LOITER, POSHOLD, GUIDED, AUTO.LOITER, …)
//! log_drop <n>                        lose the next n LOG_DATA packets of log downloads
//! push <north_m> <east_m> [up_m]      move the vehicle at once (negative = south/west/down):
//!                                     out of its fence, for the autopilot's breach action
//! status                              ok t=<s> armed=<bool> mode=<name> lat=… lon=… alt=… …
//! ```
//!
//! It is a plain text protocol on purpose: a test in any language (or `nc`) can drive it, and it
//! stays out of the MAVLink link, so a dropped MAVLink link does not take the controls with it.

use super::{Fault, VehicleHandle};
use mavlink::dialects::ardupilotmega::MavResult;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Parses one control line into a fault, or an error message for the reply.
pub fn parse_fault(line: &str) -> Result<Fault, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize, what: &str| -> Result<f64, String> {
        words
            .get(i)
            .ok_or_else(|| format!("missing {what}"))?
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("{what} must be a non-negative number"))
    };
    match words.first().copied() {
        Some("link_drop") => Ok(Fault::LinkDrop(Duration::from_secs_f64(
            num(1, "milliseconds")? / 1000.0,
        ))),
        Some("lose_acks") => Ok(Fault::LoseAcks(num(1, "count")? as u32)),
        Some("delay_acks") => Ok(Fault::DelayAcks(
            num(1, "count")? as u32,
            Duration::from_secs_f64(num(2, "milliseconds")? / 1000.0),
        )),
        Some("gps_loss") => Ok(Fault::GpsLoss(num(1, "seconds")?)),
        Some("battery_sag") => Ok(Fault::BatterySag(num(1, "percent")?)),
        Some("refuse") => {
            let command = num(1, "command id")? as u32;
            let result = match words.get(2).copied() {
                Some("denied") => MavResult::MAV_RESULT_DENIED,
                Some("temporarily_rejected") => MavResult::MAV_RESULT_TEMPORARILY_REJECTED,
                Some("unsupported") => MavResult::MAV_RESULT_UNSUPPORTED,
                Some("failed") => MavResult::MAV_RESULT_FAILED,
                other => {
                    return Err(format!(
                        "result {other:?} is not denied|temporarily_rejected|unsupported|failed"
                    ))
                }
            };
            let n = if words.len() > 3 {
                num(3, "count")? as u32
            } else {
                1
            };
            Ok(Fault::Refuse { command, result, n })
        }
        Some("rc_throttle") => Ok(Fault::RcThrottle(num(1, "microseconds")?.min(2200.0) as u16)),
        Some("voltage_sag") => Ok(Fault::VoltageSag(num(1, "volts")?)),
        Some("wind") => {
            let opt = |i: usize, what: &str| {
                if words.len() > i {
                    num(i, what)
                } else {
                    Ok(0.0)
                }
            };
            Ok(Fault::Wind(super::model::Wind {
                speed_mps: num(1, "wind speed")?,
                from_deg: num(2, "direction")?,
                gust_mps: opt(3, "gust speed")?,
                gust_period_s: opt(4, "gust period")?,
            }))
        }
        Some("battery_fault") => {
            // the MAVLink bit numbers, spelled here on purpose (the sim is a check on the hal)
            const NAMES: [&str; 9] = [
                "deep_discharge",
                "spikes",
                "cell_fail",
                "over_current",
                "over_temperature",
                "under_temperature",
                "incompatible_voltage",
                "incompatible_firmware",
                "incompatible_cells",
            ];
            let mut bits = 0u32;
            for w in words.iter().skip(1).filter(|w| **w != "none") {
                let i = NAMES
                    .iter()
                    .position(|n| n == w)
                    .ok_or_else(|| format!("unknown battery fault `{w}`"))?;
                bits |= 1 << i;
            }
            Ok(Fault::BatteryFaults(bits))
        }
        Some("push") => {
            let signed = |i: usize, what: &str| -> Result<f64, String> {
                words
                    .get(i)
                    .ok_or_else(|| format!("missing {what}"))?
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && v.abs() <= 100_000.0)
                    .ok_or_else(|| format!("{what} must be a number of metres"))
            };
            let up = if words.len() > 3 {
                signed(3, "up")?
            } else {
                0.0
            };
            Ok(Fault::Push(signed(1, "north")?, signed(2, "east")?, up))
        }
        Some("param") => {
            let name = words.get(1).ok_or("missing parameter name")?.to_string();
            let value = words
                .get(2)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite())
                .ok_or("missing or bad parameter value")?;
            // the model's own list decides which names exist
            super::model::Params::for_flavour(super::Flavour::Px4).set(&name, value)?;
            Ok(Fault::Param(name, value))
        }
        Some("log_drop") => Ok(Fault::LogDrop(num(1, "count")? as u32)),
        Some("gcs_mode") => Ok(Fault::GcsMode(
            words.get(1).ok_or("missing mode name")?.to_string(),
        )),
        Some(other) => Err(format!("unknown command `{other}`")),
        None => Err("empty line".into()),
    }
}

/// Serves the control socket until the listener fails.
pub async fn serve(listener: TcpListener, vehicle: Arc<VehicleHandle>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let vehicle = vehicle.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let reply = if line.trim() == "status" {
                    let v = vehicle.view().borrow().clone();
                    format!(
                        "ok t={:.2} armed={} mode={} lat={:.7} lon={:.7} alt={:.2} on_ground={} battery={:.1} gps={} gripper_released={} mission_len={} mission_current={} position_ok={} voltage={:.2} battery_failsafe={} gcs_failsafe={} rc_throttle={} fence_items={} fence_breached={} airspeed={:.2} groundspeed={:.2} current={:.2}\n",
                        v.t_s, v.armed, v.mode, v.lat_deg, v.lon_deg, v.alt_rel_m, v.on_ground,
                        v.battery_pct, v.gps_fix, v.gripper_released, v.mission_len, v.mission_current,
                        v.position_ok, v.voltage, v.battery_failsafe, v.gcs_failsafe, v.rc_throttle_us,
                        v.fence_items, v.fence_breached, v.airspeed_mps, v.speed_mps, v.current_a
                    )
                } else {
                    match parse_fault(&line) {
                        Ok(f) => {
                            vehicle.inject(f);
                            "ok\n".to_owned()
                        }
                        Err(e) => format!("error {e}\n"),
                    }
                };
                if write.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_fault_and_rejects_nonsense() {
        assert_eq!(
            parse_fault("link_drop 1500").unwrap(),
            Fault::LinkDrop(Duration::from_millis(1500))
        );
        assert_eq!(parse_fault("lose_acks 2").unwrap(), Fault::LoseAcks(2));
        assert_eq!(
            parse_fault("delay_acks 1 300").unwrap(),
            Fault::DelayAcks(1, Duration::from_millis(300))
        );
        assert_eq!(parse_fault("gps_loss 10").unwrap(), Fault::GpsLoss(10.0));
        assert_eq!(
            parse_fault("battery_sag 40").unwrap(),
            Fault::BatterySag(40.0)
        );
        assert_eq!(
            parse_fault("refuse 400 denied 2").unwrap(),
            Fault::Refuse {
                command: 400,
                result: MavResult::MAV_RESULT_DENIED,
                n: 2
            }
        );
        assert!(parse_fault("refuse 400 maybe").is_err());
        assert_eq!(
            parse_fault("rc_throttle 1500").unwrap(),
            Fault::RcThrottle(1500)
        );
        assert_eq!(
            parse_fault("voltage_sag 2.3").unwrap(),
            Fault::VoltageSag(2.3)
        );
        assert_eq!(
            parse_fault("battery_fault spikes over_temperature").unwrap(),
            Fault::BatteryFaults(2 | 16)
        );
        assert_eq!(
            parse_fault("battery_fault none").unwrap(),
            Fault::BatteryFaults(0)
        );
        assert!(parse_fault("battery_fault hot").is_err());
        assert_eq!(
            parse_fault("wind 6 180 2 30").unwrap(),
            Fault::Wind(crate::vehicle::model::Wind {
                speed_mps: 6.0,
                from_deg: 180.0,
                gust_mps: 2.0,
                gust_period_s: 30.0
            })
        );
        assert!(matches!(parse_fault("wind 6 90"), Ok(Fault::Wind(w)) if w.gust_mps == 0.0));
        assert!(parse_fault("wind fast").is_err());
        assert_eq!(
            parse_fault("voltage_sag 2.3").unwrap(),
            Fault::VoltageSag(2.3)
        );
        assert_eq!(
            parse_fault("param BATT_FS_LOW_ACT 2").unwrap(),
            Fault::Param("BATT_FS_LOW_ACT".into(), 2.0)
        );
        assert!(parse_fault("param NO_SUCH_PARAM 1").is_err());
        assert!(parse_fault("param BATT_LOW_VOLT").is_err());
        assert!(parse_fault("link_drop -5").is_err());
        assert!(parse_fault("explode").is_err());
        assert_eq!(
            parse_fault("gcs_mode LOITER").unwrap(),
            Fault::GcsMode("LOITER".into())
        );
        assert!(parse_fault("gcs_mode").is_err());
        assert_eq!(
            parse_fault("push 150 -20").unwrap(),
            Fault::Push(150.0, -20.0, 0.0)
        );
        assert!(parse_fault("push 150").is_err());
    }
}
