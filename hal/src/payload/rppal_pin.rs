//! An embedded-hal 1.0 [`SetDutyCycle`] pin on a Raspberry Pi hardware PWM channel.
//!
//! rppal 0.22 implements only the embedded-hal 0.2 `PwmPin` for its `Pwm`, so this thin adapter
//! gives the 1.0 trait the payload driver is written against. It compiles everywhere; opening a
//! channel fails cleanly (an error, not a panic) on a machine without the Pi's PWM peripheral.

use embedded_hal::pwm::{ErrorKind, ErrorType, SetDutyCycle};
use std::time::Duration;

/// A hardware PWM channel of a Raspberry Pi (GPIO 12/18 = channel 0, GPIO 13/19 = channel 1 with
/// the `pwm-2chan` overlay).
pub struct RppalPwm {
    pwm: rppal::pwm::Pwm,
}

#[derive(Debug, thiserror::Error)]
#[error("Raspberry Pi PWM: {0}")]
pub struct RppalPwmError(#[from] rppal::pwm::Error);

impl embedded_hal::pwm::Error for RppalPwmError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

impl RppalPwm {
    /// Opens PWM `channel` (0 or 1) with `period`, output initially at `initial_pulse`, enabled.
    pub fn open(
        channel: u8,
        period: Duration,
        initial_pulse: Duration,
    ) -> Result<Self, RppalPwmError> {
        let ch = if channel == 0 {
            rppal::pwm::Channel::Pwm0
        } else {
            rppal::pwm::Channel::Pwm1
        };
        let pwm = rppal::pwm::Pwm::with_period(
            ch,
            period,
            initial_pulse,
            rppal::pwm::Polarity::Normal,
            true,
        )?;
        Ok(Self { pwm })
    }
}

impl ErrorType for RppalPwm {
    type Error = RppalPwmError;
}

impl SetDutyCycle for RppalPwm {
    fn max_duty_cycle(&self) -> u16 {
        u16::MAX
    }

    fn set_duty_cycle(&mut self, duty: u16) -> Result<(), Self::Error> {
        Ok(self
            .pwm
            .set_duty_cycle(f64::from(duty) / f64::from(u16::MAX))?)
    }
}
