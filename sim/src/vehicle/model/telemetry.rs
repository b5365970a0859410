//! Messages out: HEARTBEAT, the streamed telemetry each flavour sends unasked and on request,
//! HOME_POSITION, AUTOPILOT_VERSION, SERVO_OUTPUT_RAW.

use super::*;
use mavlink::dialects::ardupilotmega as apm;
use mavlink::dialects::ardupilotmega::MavMessage;
use std::collections::HashMap;

pub(super) fn id<T: mavlink::MessageData>() -> u32 {
    T::ID
}

/// What each autopilot streams unasked (rates in seconds). ArduPilot streams HOME_POSITION and
/// EKF_STATUS_REPORT; PX4 sends HOME_POSITION only when asked or when home changes, and
/// CURRENT_EVENT_SEQUENCE for the events protocol.
pub(super) fn default_intervals(f: Flavour) -> HashMap<u32, f64> {
    let mut m = HashMap::from([
        (id::<apm::GLOBAL_POSITION_INT_DATA>(), 0.2),
        (id::<apm::ATTITUDE_DATA>(), 0.2),
        (id::<apm::SYS_STATUS_DATA>(), 0.5),
        (id::<apm::GPS_RAW_INT_DATA>(), 1.0),
        (id::<apm::EXTENDED_SYS_STATE_DATA>(), 1.0),
        (id::<apm::BATTERY_STATUS_DATA>(), 1.0),
        (id::<apm::SERVO_OUTPUT_RAW_DATA>(), 1.0),
        (id::<apm::MISSION_CURRENT_DATA>(), 1.0),
        (id::<apm::VFR_HUD_DATA>(), 0.5),
    ]);
    match f {
        Flavour::ArduPilot => {
            m.insert(id::<apm::HOME_POSITION_DATA>(), 5.0);
            m.insert(id::<apm::EKF_STATUS_REPORT_DATA>(), 1.0);
            // WIND only when asked (SET_MESSAGE_INTERVAL / SR_EXTRA3): the recorded link never
            // carried it unasked (`sim/tests/ardupilot_recordings.rs`)
        }
        Flavour::Px4 => {
            m.insert(id::<apm::CURRENT_EVENT_SEQUENCE_DATA>(), 1.0);
        }
    }
    m
}

pub fn status_text(severity: apm::MavSeverity, text: &str) -> MavMessage {
    let mut data = [0u8; 50];
    let n = text.len().min(50);
    data[..n].copy_from_slice(&text.as_bytes()[..n]);
    MavMessage::STATUSTEXT(apm::STATUSTEXT_DATA {
        severity,
        text: data.into(),
        ..Default::default()
    })
}
impl Model {
    pub fn heartbeat(&self) -> MavMessage {
        use apm::MavModeFlag as F;
        let mut base = F::MAV_MODE_FLAG_CUSTOM_MODE_ENABLED | F::MAV_MODE_FLAG_STABILIZE_ENABLED;
        if self.flavour == Flavour::ArduPilot {
            // ArduCopter always reports manual input enabled (0x51 disarmed in STABILIZE)
            base |= F::MAV_MODE_FLAG_MANUAL_INPUT_ENABLED;
        }
        if self.armed {
            base |= F::MAV_MODE_FLAG_SAFETY_ARMED;
        }
        if self.mode != Mode::Manual {
            base |= F::MAV_MODE_FLAG_GUIDED_ENABLED;
        }
        MavMessage::HEARTBEAT(apm::HEARTBEAT_DATA {
            custom_mode: self.mode.custom_mode(self.flavour),
            mavtype: apm::MavType::MAV_TYPE_QUADROTOR,
            autopilot: match self.flavour {
                Flavour::Px4 => apm::MavAutopilot::MAV_AUTOPILOT_PX4,
                Flavour::ArduPilot => apm::MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA,
            },
            base_mode: base,
            // ArduPilot reports a failsafe as CRITICAL
            system_status: if self.batt_failsafe || self.gcs_failsafe {
                apm::MavState::MAV_STATE_CRITICAL
            } else if self.armed {
                apm::MavState::MAV_STATE_ACTIVE
            } else {
                apm::MavState::MAV_STATE_STANDBY
            },
            mavlink_version: 3,
        })
    }

    pub(super) fn home_position(&self) -> MavMessage {
        // home as the autopilot believes it (shifted by any GPS error, like everything it reports)
        let (lat, lon) = self.latlon_of(0.0, 0.0);
        MavMessage::HOME_POSITION(apm::HOME_POSITION_DATA {
            latitude: (lat * 1e7).round() as i32,
            longitude: (lon * 1e7).round() as i32,
            altitude: (self.home.2 * 1e3).round() as i32,
            q: [1.0, 0.0, 0.0, 0.0],
            ..Default::default()
        })
    }

    fn autopilot_version(&self) -> MavMessage {
        MavMessage::AUTOPILOT_VERSION(apm::AUTOPILOT_VERSION_DATA {
            capabilities: apm::MavProtocolCapability::MAV_PROTOCOL_CAPABILITY_MISSION_INT
                | apm::MavProtocolCapability::MAV_PROTOCOL_CAPABILITY_COMMAND_INT
                | apm::MavProtocolCapability::MAV_PROTOCOL_CAPABILITY_MAVLINK2,
            ..Default::default()
        })
    }

    /// The telemetry message with this id, as of now (None if the sim does not produce it or, for
    /// HOME_POSITION, home is not set yet).
    pub fn telemetry_message(&mut self, msg_id: u32) -> Option<MavMessage> {
        let boot_ms = (self.t * 1000.0) as u32;
        let (lat, lon) = self.latlon_of(self.pos[0], self.pos[1]);
        let gps = self.gps_ok();
        let m = if msg_id == id::<apm::GLOBAL_POSITION_INT_DATA>() {
            MavMessage::GLOBAL_POSITION_INT(apm::GLOBAL_POSITION_INT_DATA {
                time_boot_ms: boot_ms,
                lat: (lat * 1e7).round() as i32,
                lon: (lon * 1e7).round() as i32,
                alt: ((self.home.2 + self.pos[2]) * 1e3).round() as i32,
                relative_alt: (self.pos[2] * 1e3).round() as i32,
                vx: (self.vel[0] * 100.0).round() as i16,
                vy: (self.vel[1] * 100.0).round() as i16,
                vz: (-self.vel[2] * 100.0).round() as i16,
                hdg: (self.heading_deg * 100.0).round() as u16 % 36000,
            })
        } else if msg_id == id::<apm::GPS_RAW_INT_DATA>() {
            let noise = self.rng.unit();
            MavMessage::GPS_RAW_INT(apm::GPS_RAW_INT_DATA {
                time_usec: (self.t * 1e6) as u64,
                lat: (lat * 1e7).round() as i32,
                lon: (lon * 1e7).round() as i32,
                alt: ((self.home.2 + self.pos[2]) * 1e3).round() as i32,
                eph: if gps { 90 } else { u16::MAX },
                epv: if gps { 120 } else { u16::MAX },
                vel: (self.vel[0].hypot(self.vel[1]) * 100.0) as u16,
                cog: (self.heading_deg * 100.0) as u16,
                fix_type: if gps {
                    apm::GpsFixType::GPS_FIX_TYPE_3D_FIX
                } else {
                    apm::GpsFixType::GPS_FIX_TYPE_NO_FIX
                },
                satellites_visible: if gps {
                    (12.0 + 2.0 * noise).round() as u8
                } else {
                    0
                },
                ..Default::default()
            })
        } else if msg_id == id::<apm::SYS_STATUS_DATA>() {
            use apm::MavSysStatusSensor as S;
            let mut present = S::MAV_SYS_STATUS_SENSOR_3D_GYRO
                | S::MAV_SYS_STATUS_SENSOR_3D_ACCEL
                | S::MAV_SYS_STATUS_SENSOR_3D_MAG
                | S::MAV_SYS_STATUS_SENSOR_ABSOLUTE_PRESSURE
                | S::MAV_SYS_STATUS_SENSOR_GPS
                | S::MAV_SYS_STATUS_SENSOR_RC_RECEIVER
                | S::MAV_SYS_STATUS_SENSOR_MOTOR_OUTPUTS
                | S::MAV_SYS_STATUS_AHRS
                | S::MAV_SYS_STATUS_SENSOR_BATTERY;
            // only ArduPilot reports its pre-arm state; PX4 never sets the bit
            if self.flavour == Flavour::ArduPilot {
                present |= S::MAV_SYS_STATUS_PREARM_CHECK;
            }
            let mut health = present;
            if !gps {
                health.remove(S::MAV_SYS_STATUS_SENSOR_GPS);
            }
            match self.flavour {
                Flavour::ArduPilot => {
                    // ArduPilot's pre-arm checks pass once the EKF has its origin, before it
                    // navigates by GPS (arming in STABILIZE needs no position)
                    if !gps {
                        health.remove(S::MAV_SYS_STATUS_PREARM_CHECK);
                    }
                    if self.batt_failsafe {
                        health.remove(S::MAV_SYS_STATUS_SENSOR_BATTERY);
                    }
                }
                // PX4 with no RC and no MAVLink joystick: receiver enabled but unhealthy, and it
                // arms and flies its autonomous modes all the same
                Flavour::Px4 => health.remove(S::MAV_SYS_STATUS_SENSOR_RC_RECEIVER),
            }
            MavMessage::SYS_STATUS(apm::SYS_STATUS_DATA {
                onboard_control_sensors_present: present,
                onboard_control_sensors_enabled: present,
                onboard_control_sensors_health: health,
                load: 250,
                voltage_battery: (self.voltage() * 1000.0) as u16,
                current_battery: (self.current_a() * 100.0) as i16,
                battery_remaining: self.battery.round() as i8,
                ..Default::default()
            })
        } else if msg_id == id::<apm::BATTERY_STATUS_DATA>() {
            // ArduPilot's analog monitor reports the pack in the first cell slot; PX4 the cells
            let mut voltages = [u16::MAX; 10];
            let v = self.voltage();
            match self.flavour {
                Flavour::ArduPilot => voltages[0] = (v * 1000.0) as u16,
                Flavour::Px4 => {
                    let n = usize::from(self.p.cells.clamp(1, 10));
                    let cell = (v / n as f64 * 1000.0) as u16;
                    voltages[..n].fill(cell);
                }
            }
            use apm::MavBatteryChargeState as C;
            let charge_state = if self.batt_failsafe {
                C::MAV_BATTERY_CHARGE_STATE_LOW
            } else {
                C::MAV_BATTERY_CHARGE_STATE_OK
            };
            MavMessage::BATTERY_STATUS(apm::BATTERY_STATUS_DATA {
                current_consumed: self.consumed_mah.round() as i32,
                energy_consumed: -1,
                temperature: i16::MAX,
                voltages,
                current_battery: (self.current_a() * 100.0) as i16,
                id: 0,
                battery_function: apm::MavBatteryFunction::MAV_BATTERY_FUNCTION_ALL,
                mavtype: apm::MavBatteryType::MAV_BATTERY_TYPE_LIPO,
                battery_remaining: self.battery.round() as i8,
                charge_state,
                ..Default::default()
            })
        } else if msg_id == id::<apm::EKF_STATUS_REPORT_DATA>() {
            // the values a real ArduCopter 4.7 sends: attitude and velocities with a constant
            // position stand-in (0xa7) until the EKF uses GPS (0x33f)
            let bits: u16 = if self.position_ok() { 0x33f } else { 0xa7 };
            MavMessage::EKF_STATUS_REPORT(apm::EKF_STATUS_REPORT_DATA {
                flags: apm::EkfStatusFlags::from_bits_truncate(bits),
                velocity_variance: 0.01,
                pos_horiz_variance: 0.01,
                pos_vert_variance: 0.01,
                compass_variance: 0.01,
                ..Default::default()
            })
        } else if msg_id == id::<apm::ESTIMATOR_STATUS_DATA>() {
            let bits: u16 = if self.position_ok() { 0x33f } else { 0xa7 };
            MavMessage::ESTIMATOR_STATUS(apm::ESTIMATOR_STATUS_DATA {
                time_usec: (self.t * 1e6) as u64,
                flags: apm::EstimatorStatusFlags::from_bits_truncate(bits),
                ..Default::default()
            })
        } else if msg_id == id::<apm::CURRENT_EVENT_SEQUENCE_DATA>() {
            if self.flavour != Flavour::Px4 {
                return None;
            }
            MavMessage::CURRENT_EVENT_SEQUENCE(apm::CURRENT_EVENT_SEQUENCE_DATA {
                sequence: self.event_seq,
                ..Default::default()
            })
        } else if msg_id == id::<apm::EXTENDED_SYS_STATE_DATA>() {
            use apm::MavLandedState as L;
            let landed = if !self.armed || self.on_ground() && self.takeoff_alt.is_none() {
                L::MAV_LANDED_STATE_ON_GROUND
            } else if self.takeoff_alt.is_some() {
                L::MAV_LANDED_STATE_TAKEOFF
            } else if self.mode == Mode::Land
                || (self.mode == Mode::Rtl && self.rtl == RtlPhase::Descend)
            {
                L::MAV_LANDED_STATE_LANDING
            } else {
                L::MAV_LANDED_STATE_IN_AIR
            };
            MavMessage::EXTENDED_SYS_STATE(apm::EXTENDED_SYS_STATE_DATA {
                vtol_state: apm::MavVtolState::MAV_VTOL_STATE_UNDEFINED,
                landed_state: landed,
            })
        } else if msg_id == id::<apm::ATTITUDE_DATA>() {
            MavMessage::ATTITUDE(apm::ATTITUDE_DATA {
                time_boot_ms: boot_ms,
                yaw: self.heading_deg.to_radians() as f32,
                ..Default::default()
            })
        } else if msg_id == id::<apm::VFR_HUD_DATA>() {
            MavMessage::VFR_HUD(apm::VFR_HUD_DATA {
                airspeed: self.airspeed() as f32,
                groundspeed: self.vel[0].hypot(self.vel[1]) as f32,
                alt: (self.home.2 + self.pos[2]) as f32,
                climb: self.vel[2] as f32,
                heading: self.heading_deg as i16,
                throttle: if self.armed { 50 } else { 0 },
            })
        } else if msg_id == id::<apm::WIND_DATA>() {
            // ArduPilot's EKF estimates the wind and sends it when asked; PX4 sends WIND_COV
            if self.flavour != Flavour::ArduPilot {
                return None;
            }
            self.wind_message()
        } else if msg_id == id::<apm::SERVO_OUTPUT_RAW_DATA>() {
            self.servo_output()
        } else if msg_id == id::<apm::MISSION_CURRENT_DATA>() {
            MavMessage::MISSION_CURRENT(apm::MISSION_CURRENT_DATA {
                seq: self.mission_current,
                ..Default::default()
            })
        } else if msg_id == id::<apm::HOME_POSITION_DATA>() {
            if !self.home_set {
                return None;
            }
            self.home_position()
        } else if msg_id == id::<apm::AUTOPILOT_VERSION_DATA>() {
            self.autopilot_version()
        } else {
            return None;
        };
        Some(m)
    }

    /// All 16 outputs in one message on port 0, 9..16 in the MAVLink 2 extension fields: what
    /// ArduPilot 4.x and PX4 1.16 SITL both send (neither sends port 1 for them).
    pub fn servo_output(&self) -> MavMessage {
        let s = &self.servo;
        MavMessage::SERVO_OUTPUT_RAW(apm::SERVO_OUTPUT_RAW_DATA {
            time_usec: (self.t * 1e6) as u32,
            servo1_raw: s[0],
            servo2_raw: s[1],
            servo3_raw: s[2],
            servo4_raw: s[3],
            servo5_raw: s[4],
            servo6_raw: s[5],
            servo7_raw: s[6],
            servo8_raw: s[7],
            port: 0,
            servo9_raw: s[8],
            servo10_raw: s[9],
            servo11_raw: s[10],
            servo12_raw: s[11],
            servo13_raw: s[12],
            servo14_raw: s[13],
            servo15_raw: s[14],
            servo16_raw: s[15],
        })
    }
}
