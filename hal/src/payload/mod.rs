//! Payload release: drop the parcel, and say so only once it is done.
//!
//! Two implementations, chosen by the agent's config:
//! - [`FcPayload`]: through the flight controller, either its gripper (`MAV_CMD_DO_GRIPPER`, confirmed
//!   by the final `COMMAND_ACK`) or one of its servo outputs (`MAV_CMD_DO_SET_SERVO`, confirmed when
//!   `SERVO_OUTPUT_RAW` shows the commanded pulse width);
//! - [`PwmPayload`]: a servo on a companion-computer PWM pin, generic over embedded-hal's
//!   [`SetDutyCycle`]; [`rppal_pin::RppalPwm`] provides the pin on a Raspberry Pi (it compiles on every
//!   target and only touches hardware when constructed).

pub mod rppal_pin;

use crate::flight::{FcError, FlightController, GripperAction};
use embedded_hal::pwm::SetDutyCycle;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Why a release (or re-arm) did not happen or was not confirmed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload release through the flight controller: {0}")]
    Fc(#[from] FcError),
    #[error("servo output {channel} did not show {expected_us} µs within {after:?} (last seen: {seen_us:?})")]
    NotConfirmed {
        channel: u8,
        expected_us: u16,
        seen_us: Option<u16>,
        after: Duration,
    },
    #[error("PWM pin: {0}")]
    Pin(String),
    #[error("invalid payload configuration: {0}")]
    Config(String),
}

/// Something that holds a parcel and can let it go.
pub trait PayloadRelease: Send + Sync + 'static {
    /// Open the release; resolves only once the release is confirmed.
    fn release(&self) -> impl Future<Output = Result<(), PayloadError>> + Send;
    /// Close the release again (load the next parcel).
    fn close(&self) -> impl Future<Output = Result<(), PayloadError>> + Send;

    /// Where the release is now, as far as anything reports it, without moving it (after a restart
    /// mid-release: was the parcel already let go?). The default knows nothing.
    fn state(&self) -> impl Future<Output = Result<PayloadState, PayloadError>> + Send {
        std::future::ready(Ok(PayloadState::Unknown))
    }
}

/// Where a release is, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadState {
    Released,
    Closed,
    /// Nothing reports it (a bare PWM servo, a gripper the autopilot has not reported since the
    /// link came up, an output at neither pulse width).
    Unknown,
}

/// How the flight controller releases the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FcReleaseMethod {
    /// The autopilot's gripper (ArduPilot `GRIP_*`, PX4 payload deliverer).
    Gripper,
    /// A servo output of the autopilot.
    Servo {
        /// 1..=16 (AUX outputs on PX4 start after the main ones).
        channel: u8,
        release_pwm_us: u16,
        hold_pwm_us: u16,
        /// How long to wait for `SERVO_OUTPUT_RAW` to show the new pulse width.
        #[serde(default = "default_confirm_timeout_ms")]
        confirm_timeout_ms: u64,
    },
}

fn default_confirm_timeout_ms() -> u64 {
    2000
}

/// Payload release through the flight controller.
pub struct FcPayload<F: FlightController> {
    fc: Arc<F>,
    method: FcReleaseMethod,
}

impl<F: FlightController> FcPayload<F> {
    pub fn new(fc: Arc<F>, method: FcReleaseMethod) -> Result<Self, PayloadError> {
        if let FcReleaseMethod::Servo { channel, .. } = method {
            if !(1..=16).contains(&channel) {
                return Err(PayloadError::Config(format!(
                    "servo channel {channel} is not 1 to 16"
                )));
            }
        }
        Ok(Self { fc, method })
    }

    async fn servo_to(
        &self,
        channel: u8,
        pwm_us: u16,
        timeout: Duration,
    ) -> Result<(), PayloadError> {
        self.fc.set_servo(channel, pwm_us).await?;
        // The ACK says the autopilot took the command; the output report says the servo moved.
        let mut rx = self.fc.snapshot();
        let idx = usize::from(channel - 1);
        let mut seen = None;
        let wait = async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if let Some(outs) = s.servo_outputs_us {
                        seen = Some(outs[idx]);
                        // a few µs of quantisation on real outputs
                        if outs[idx].abs_diff(pwm_us) <= 5 {
                            return true;
                        }
                    }
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(true) => Ok(()),
            _ => Err(PayloadError::NotConfirmed {
                channel,
                expected_us: pwm_us,
                seen_us: seen,
                after: timeout,
            }),
        }
    }
}

impl<F: FlightController> PayloadRelease for FcPayload<F> {
    async fn release(&self) -> Result<(), PayloadError> {
        match self.method {
            FcReleaseMethod::Gripper => Ok(self.fc.set_gripper(GripperAction::Release).await?),
            FcReleaseMethod::Servo {
                channel,
                release_pwm_us,
                confirm_timeout_ms,
                ..
            } => {
                self.servo_to(
                    channel,
                    release_pwm_us,
                    Duration::from_millis(confirm_timeout_ms),
                )
                .await
            }
        }
    }

    async fn state(&self) -> Result<PayloadState, PayloadError> {
        let s = self.fc.snapshot().borrow().clone();
        Ok(match self.method {
            FcReleaseMethod::Gripper => match s.gripper {
                Some(GripperAction::Release) => PayloadState::Released,
                Some(GripperAction::Grab) => PayloadState::Closed,
                None => PayloadState::Unknown,
            },
            FcReleaseMethod::Servo {
                channel,
                release_pwm_us,
                hold_pwm_us,
                ..
            } => match s.servo_outputs_us.map(|o| o[usize::from(channel - 1)]) {
                Some(us) if us.abs_diff(release_pwm_us) <= 5 => PayloadState::Released,
                Some(us) if us.abs_diff(hold_pwm_us) <= 5 => PayloadState::Closed,
                _ => PayloadState::Unknown,
            },
        })
    }

    async fn close(&self) -> Result<(), PayloadError> {
        match self.method {
            FcReleaseMethod::Gripper => Ok(self.fc.set_gripper(GripperAction::Grab).await?),
            FcReleaseMethod::Servo {
                channel,
                hold_pwm_us,
                confirm_timeout_ms,
                ..
            } => {
                self.servo_to(
                    channel,
                    hold_pwm_us,
                    Duration::from_millis(confirm_timeout_ms),
                )
                .await
            }
        }
    }
}

/// Pulse widths and period of a hobby servo on a PWM pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServoPulses {
    /// PWM period, µs (20 000 = 50 Hz, the hobby-servo standard).
    pub period_us: u16,
    pub release_us: u16,
    pub hold_us: u16,
}

/// A servo on a companion-computer PWM pin, generic over the pin (embedded-hal 1.0).
///
/// "Confirmed" here means the pin accepted the new duty cycle: a bare hobby servo has no feedback.
pub struct PwmPayload<P: SetDutyCycle> {
    pin: std::sync::Mutex<P>,
    pulses: ServoPulses,
}

impl<P: SetDutyCycle + Send + 'static> PwmPayload<P> {
    pub fn new(pin: P, pulses: ServoPulses) -> Result<Self, PayloadError> {
        if pulses.period_us == 0
            || pulses.release_us >= pulses.period_us
            || pulses.hold_us >= pulses.period_us
        {
            return Err(PayloadError::Config(format!(
                "pulse widths {} / {} µs must be shorter than the period {} µs",
                pulses.release_us, pulses.hold_us, pulses.period_us
            )));
        }
        Ok(Self {
            pin: std::sync::Mutex::new(pin),
            pulses,
        })
    }

    fn set_pulse(&self, width_us: u16) -> Result<(), PayloadError> {
        let mut pin = self
            .pin
            .lock()
            .map_err(|_| PayloadError::Pin("pin lock poisoned by an earlier panic".into()))?;
        pin.set_duty_cycle_fraction(width_us, self.pulses.period_us)
            .map_err(|e| PayloadError::Pin(format!("{:?}", embedded_hal::pwm::Error::kind(&e))))
    }
}

impl<P: SetDutyCycle + Send + 'static> PayloadRelease for PwmPayload<P> {
    async fn release(&self) -> Result<(), PayloadError> {
        self.set_pulse(self.pulses.release_us)
    }

    async fn close(&self) -> Result<(), PayloadError> {
        self.set_pulse(self.pulses.hold_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::pwm::{ErrorKind, ErrorType};
    use std::sync::{Arc as StdArc, Mutex as StdMutex};

    /// A simulated PWM pin: records every duty cycle written, can be told to fail.
    #[derive(Clone, Default)]
    struct SimPin {
        written: StdArc<StdMutex<Vec<u16>>>,
        broken: bool,
    }
    #[derive(Debug)]
    struct PinFault;
    impl embedded_hal::pwm::Error for PinFault {
        fn kind(&self) -> ErrorKind {
            ErrorKind::Other
        }
    }
    impl ErrorType for SimPin {
        type Error = PinFault;
    }
    impl SetDutyCycle for SimPin {
        fn max_duty_cycle(&self) -> u16 {
            20_000
        }
        fn set_duty_cycle(&mut self, duty: u16) -> Result<(), PinFault> {
            if self.broken {
                return Err(PinFault);
            }
            self.written.lock().unwrap().push(duty);
            Ok(())
        }
    }

    const SERVO: ServoPulses = ServoPulses {
        period_us: 20_000,
        release_us: 2000,
        hold_us: 1000,
    };

    #[tokio::test]
    async fn pwm_release_and_close_write_the_pulse_widths() {
        let pin = SimPin::default();
        let p = PwmPayload::new(pin.clone(), SERVO).unwrap();
        p.release().await.unwrap();
        p.close().await.unwrap();
        // max duty 20 000 over a 20 000 µs period: duty == pulse width in µs
        assert_eq!(*pin.written.lock().unwrap(), vec![2000, 1000]);
    }

    #[tokio::test]
    async fn pwm_errors_and_bad_config_are_reported() {
        let p = PwmPayload::new(
            SimPin {
                broken: true,
                ..SimPin::default()
            },
            SERVO,
        )
        .unwrap();
        assert!(matches!(p.release().await, Err(PayloadError::Pin(_))));
        let bad = ServoPulses {
            release_us: 25_000,
            ..SERVO
        };
        assert!(matches!(
            PwmPayload::new(
                SimPin::default(),
                ServoPulses {
                    period_us: 20_000,
                    ..bad
                }
            ),
            Err(PayloadError::Config(_))
        ));
    }
}
