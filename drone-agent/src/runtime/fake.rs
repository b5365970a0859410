//! In-memory stand-ins for the runtime's tests: an autopilot that flies instantly (or after a
//! delay) and refuses or fails on request, a payload release, and a cloud link that records.
//! Nothing here opens a socket; the runtime's tests run on tokio's paused clock.

use super::Cloud;
use cloud_link::LinkStatus;
use hal::flight::{
    Autopilot, FcError, FcSnapshot, FlightController, GeoPoint, GlobalPosition, GpsFixType,
    GripperAction, LandedState, LandingTarget, LinkState, PreflightCheck, PreflightReport,
};
use hal::payload::{PayloadError, PayloadRelease, PayloadState};
use protocol::Envelope;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

pub const HOME: (f64, f64) = (55.0, 37.0);

/// What the fake autopilot answers to one command.
#[derive(Debug, Clone)]
pub enum Answer {
    Accept,
    /// Refused with this error.
    Refuse(FcError),
    /// Accepted after this long (the operation is in progress meanwhile).
    Delay(Duration),
    /// Never answers (superseded operations are aborted by the runtime).
    Hang,
}

pub struct FakeFc {
    snap: watch::Sender<FcSnapshot>,
    /// Scripted answers per command (`arm`, `takeoff`, `goto`, ...); accepted when empty.
    script: Mutex<HashMap<&'static str, VecDeque<Answer>>>,
    /// Every command received, in order, with its argument.
    pub calls: Mutex<Vec<String>>,
}

impl FakeFc {
    /// Linked, 3D fix, home known, on the ground at home, disarmed.
    pub fn new() -> Self {
        let mut s = FcSnapshot::initial();
        s.link = LinkState::Connected {
            since: SystemTime::now(),
        };
        s.autopilot = Autopilot::ArduPilot;
        s.gps_fix = GpsFixType::Fix3d;
        s.battery_percent = Some(90.0);
        s.healthy = true;
        let home = GlobalPosition {
            lat_deg: HOME.0,
            lon_deg: HOME.1,
            alt_msl_m: 100.0,
            alt_rel_m: 0.0,
        };
        s.home = Some(home);
        s.position = Some(home);
        s.landed = LandedState::OnGround;
        s.velocity_ned_mps = Some([0.0; 3]);
        Self {
            snap: watch::Sender::new(s),
            script: Mutex::default(),
            calls: Mutex::default(),
        }
    }

    /// The next `command` gets `answer` (answers queue up per command).
    pub fn script(&self, command: &'static str, answer: Answer) {
        self.script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(command)
            .or_default()
            .push_back(answer);
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn count(&self, command: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.split(' ').next() == Some(command))
            .count()
    }

    pub fn update(&self, f: impl FnOnce(&mut FcSnapshot)) {
        self.snap.send_modify(f);
    }

    async fn answer(&self, command: &'static str, arg: String) -> Result<(), FcError> {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{command} {arg}").trim().to_owned());
        let next = self
            .script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(command)
            .and_then(|q| q.pop_front());
        match next.unwrap_or(Answer::Accept) {
            Answer::Accept => Ok(()),
            Answer::Refuse(e) => Err(e),
            Answer::Delay(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Answer::Hang => std::future::pending().await,
        }
    }

    fn move_to(&self, lat: f64, lon: f64, alt: f64) {
        self.update(|s| {
            if let Some(p) = s.position.as_mut() {
                p.lat_deg = lat;
                p.lon_deg = lon;
                p.alt_rel_m = alt;
            }
        });
    }
}

pub fn denied(command: &'static str, why: &str) -> FcError {
    FcError::Denied {
        command,
        reason: Some(why.into()),
    }
}

pub fn not_yet(command: &'static str, why: &str) -> FcError {
    FcError::TemporarilyRejected {
        command,
        reason: Some(why.into()),
    }
}

impl FlightController for FakeFc {
    fn snapshot(&self) -> watch::Receiver<FcSnapshot> {
        self.snap.subscribe()
    }

    async fn preflight_check(&self, _min: f64) -> Result<PreflightReport, FcError> {
        self.answer("preflight", String::new()).await?;
        Ok(PreflightReport {
            checks: vec![PreflightCheck {
                name: "link",
                passed: true,
                detail: "fake".into(),
            }],
        })
    }

    /// Records the fence as `fence <zones> <ceiling>` (scriptable like any command).
    async fn set_fence(&self, fence: &hal::flight::Fence) -> Result<(), FcError> {
        self.answer(
            "fence",
            format!("{} {}", fence.zones.len(), fence.max_alt_m),
        )
        .await
    }

    async fn arm(&self) -> Result<(), FcError> {
        self.answer("arm", String::new()).await?;
        self.update(|s| s.armed = true);
        Ok(())
    }

    async fn disarm(&self) -> Result<(), FcError> {
        self.answer("disarm", String::new()).await?;
        self.update(|s| s.armed = false);
        Ok(())
    }

    async fn takeoff(&self, alt: f64) -> Result<(), FcError> {
        self.answer("takeoff", format!("{alt}")).await?;
        self.update(|s| {
            s.landed = LandedState::InAir;
            if let Some(p) = s.position.as_mut() {
                p.alt_rel_m = alt;
            }
        });
        Ok(())
    }

    async fn goto(&self, t: GeoPoint) -> Result<(), FcError> {
        self.answer(
            "goto",
            format!("{:.4},{:.4},{}", t.lat_deg, t.lon_deg, t.alt_rel_m),
        )
        .await?;
        self.move_to(t.lat_deg, t.lon_deg, t.alt_rel_m);
        Ok(())
    }

    async fn hover_at(&self, alt: f64) -> Result<(), FcError> {
        self.answer("hover_at", format!("{alt}")).await?;
        let (lat, lon) = self
            .snap
            .borrow()
            .position
            .map_or(HOME, |p| (p.lat_deg, p.lon_deg));
        self.move_to(lat, lon, alt);
        Ok(())
    }

    async fn hold(&self) -> Result<(), FcError> {
        self.answer("hold", String::new()).await
    }

    async fn return_to_launch(&self) -> Result<(), FcError> {
        self.answer("rtl", String::new()).await?;
        self.move_to(HOME.0, HOME.1, 0.0);
        self.update(|s| {
            s.armed = false;
            s.landed = LandedState::OnGround;
        });
        Ok(())
    }

    async fn land(&self) -> Result<(), FcError> {
        self.answer("land", String::new()).await?;
        self.update(|s| {
            if let Some(p) = s.position.as_mut() {
                p.alt_rel_m = 0.0;
            }
            s.armed = false;
            s.landed = LandedState::OnGround;
        });
        Ok(())
    }

    async fn set_gripper(&self, a: GripperAction) -> Result<(), FcError> {
        self.answer("gripper", format!("{a:?}")).await
    }

    async fn set_servo(&self, ch: u8, pwm: u16) -> Result<(), FcError> {
        self.answer("servo", format!("{ch} {pwm}")).await
    }

    async fn send_landing_target(&self, _t: LandingTarget) -> Result<(), FcError> {
        Ok(())
    }
}

/// A payload release that opens after `delay` (or fails, on request).
#[derive(Default)]
pub struct FakePayload {
    pub fail: Mutex<Option<String>>,
    pub delay: Mutex<Duration>,
    pub releases: Mutex<u32>,
    pub closes: Mutex<u32>,
    /// What `state()` reports (`None`: unknown).
    pub reports: Mutex<Option<PayloadState>>,
}

impl PayloadRelease for FakePayload {
    async fn release(&self) -> Result<(), PayloadError> {
        *self.releases.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        let delay = *self.delay.lock().unwrap_or_else(|p| p.into_inner());
        tokio::time::sleep(delay).await;
        match self.fail.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            Some(why) => Err(PayloadError::Pin(why)),
            None => Ok(()),
        }
    }

    async fn close(&self) -> Result<(), PayloadError> {
        *self.closes.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        Ok(())
    }

    async fn state(&self) -> Result<PayloadState, PayloadError> {
        Ok(self
            .reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or(PayloadState::Unknown))
    }
}

/// A cloud link that keeps what the agent sends.
pub struct FakeCloud {
    pub events: Mutex<Vec<protocol::ws::Event>>,
    pub frames: Mutex<Vec<Envelope>>,
    pub status: watch::Sender<LinkStatus>,
    /// Tells a test an event arrived.
    pub notify: tokio::sync::Notify,
}

impl FakeCloud {
    pub fn new() -> Self {
        Self {
            events: Mutex::default(),
            frames: Mutex::default(),
            status: watch::Sender::new(LinkStatus::Connected {
                since: SystemTime::now(),
            }),
            notify: tokio::sync::Notify::new(),
        }
    }

    pub fn event_types(&self) -> Vec<protocol::ws::EventType> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|e| e.event_type)
            .collect()
    }
}

impl Cloud for FakeCloud {
    async fn publish_event(&self, event: protocol::ws::Event) -> Result<(), String> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event);
        self.notify.notify_waiters();
        Ok(())
    }
    fn send(&self, env: Envelope) {
        self.frames
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(env);
    }
    fn set_telemetry(&self, _env: Envelope) {}
    fn set_hello(&self, _env: Envelope) {}
    fn status(&self) -> watch::Receiver<LinkStatus> {
        self.status.subscribe()
    }
    async fn close(&self) {}
}
