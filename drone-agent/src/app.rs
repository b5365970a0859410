//! Wiring: from a validated config to a running agent. Hardware is chosen here, from the config,
//! and nowhere else.

use crate::camera::{self, CameraRig};
use crate::config::{CameraConfig, DroneConfig, PayloadConfig};
use crate::machine::Machine;
use crate::persist::StateFile;
use crate::runtime::Agent;
use anyhow::Context as _;
use cloud_link::CloudLink;
use hal::flight::mavlink::MavlinkFc;
use hal::flight::FlightController;
use hal::payload::rppal_pin::RppalPwm;
use hal::payload::{
    FcPayload, FcReleaseMethod, PayloadError, PayloadRelease, PwmPayload, ServoPulses,
};
use protocol::ws::PeerKind;
use protocol::Envelope;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

/// The payload release the config names.
pub enum AnyPayload<F: FlightController> {
    Fc(FcPayload<F>),
    PiPwm(PwmPayload<RppalPwm>),
}

impl<F: FlightController> PayloadRelease for AnyPayload<F> {
    async fn release(&self) -> Result<(), PayloadError> {
        match self {
            AnyPayload::Fc(p) => p.release().await,
            AnyPayload::PiPwm(p) => p.release().await,
        }
    }

    async fn close(&self) -> Result<(), PayloadError> {
        match self {
            AnyPayload::Fc(p) => p.close().await,
            AnyPayload::PiPwm(p) => p.close().await,
        }
    }

    async fn state(&self) -> Result<hal::payload::PayloadState, PayloadError> {
        match self {
            AnyPayload::Fc(p) => p.state().await,
            AnyPayload::PiPwm(p) => p.state().await,
        }
    }
}

pub fn payload<F: FlightController>(
    cfg: &PayloadConfig,
    fc: Arc<F>,
) -> anyhow::Result<AnyPayload<F>> {
    Ok(match cfg {
        PayloadConfig::Gripper => AnyPayload::Fc(FcPayload::new(fc, FcReleaseMethod::Gripper)?),
        PayloadConfig::FcServo {
            channel,
            release_pwm_us,
            hold_pwm_us,
            confirm_timeout_ms,
        } => AnyPayload::Fc(FcPayload::new(
            fc,
            FcReleaseMethod::Servo {
                channel: *channel,
                release_pwm_us: *release_pwm_us,
                hold_pwm_us: *hold_pwm_us,
                confirm_timeout_ms: *confirm_timeout_ms,
            },
        )?),
        PayloadConfig::PiPwm {
            pwm_channel,
            period_us,
            release_us,
            hold_us,
        } => {
            // Real hardware configured: failing to open it is fatal, never a silent fallback.
            let pin = RppalPwm::open(
                *pwm_channel,
                Duration::from_micros(u64::from(*period_us)),
                Duration::from_micros(u64::from(*hold_us)),
            )
            .with_context(|| {
                format!(
                    "payload.pwm_channel {pwm_channel}: cannot open the Raspberry Pi PWM channel"
                )
            })?;
            let pulses = ServoPulses {
                period_us: *period_us,
                release_us: *release_us,
                hold_us: *hold_us,
            };
            AnyPayload::PiPwm(PwmPayload::new(pin, pulses)?)
        }
    })
}

/// Starts the camera worker `[camera]` describes, with the ArUco detector when `[precision]` is
/// configured and video frames going to `link`.
pub fn start_camera(
    cfg: &DroneConfig,
    cam: &CameraConfig,
    link: Arc<CloudLink>,
    pose: tokio::sync::watch::Receiver<hal::flight::FcSnapshot>,
) -> anyhow::Result<(CameraRig, hal::marker::MarkerConfig)> {
    let precision = cfg.precision.clone().unwrap_or_default();
    let marker = precision.marker_config(&cam.lens());
    let detector: Option<Box<dyn hal::marker::MarkerDetector>> = match &cfg.precision {
        #[cfg(feature = "opencv")]
        Some(_) => Some(Box::new(
            hal::marker::ArucoDetector::new(&marker)
                .context("precision: cannot start the ArUco detector")?,
        )),
        #[cfg(not(feature = "opencv"))]
        Some(_) => anyhow::bail!(
            "precision: this build has no marker detector (build with the `opencv` feature)"
        ),
        None => None,
    };
    let source = cam.source.clone();
    let describe = format!("{source:?}");
    let worker = camera::WorkerConfig {
        fps: cam.fps,
        lost_after: Duration::from_secs_f64(cam.lost_after_s),
        video: cfg.video.clone(),
    };
    let rig = camera::spawn(
        Box::new(move || source.open()),
        pose,
        detector,
        worker,
        Box::new(move |frame| link.send_video(Envelope::new(frame))),
        describe,
    )
    .context("camera: cannot start the worker thread")?;
    Ok((rig, marker))
}

/// Runs the agent from `cfg` until `shutdown` resolves.
pub async fn run(cfg: DroneConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let state_dir = cfg.drone.state_dir.clone();
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("drone.state_dir {}: cannot create", state_dir.display()))?;
    let state_file = StateFile::new(&state_dir);
    // With no flight on record the agent starts IDLE, and says why to the machine: if the
    // autopilot turns out to be flying, `[restart] unknown_airborne` makes it safe.
    let (mut machine, commands, restored, lost) = match state_file.load() {
        Ok(Some(saved)) => match Machine::from_json(saved.machine, cfg.limits()) {
            Ok(m) => {
                info!(state = ?m.state(), delivery = ?m.delivery().map(|d| d.delivery_id), "state restored");
                (m, saved.commands, true, None)
            }
            Err(e) => {
                error!(error = %e, "saved machine state unreadable; starting IDLE");
                let why = format!("saved machine state unreadable: {e}");
                (Machine::new(cfg.limits()), saved.commands, false, Some(why))
            }
        },
        Ok(None) => {
            let why = format!("no state file at {}", state_file.path().display());
            (
                Machine::new(cfg.limits()),
                Default::default(),
                false,
                Some(why),
            )
        }
        Err(e) => {
            error!(error = %e, "state file unreadable (moved aside); starting IDLE");
            let why = format!("state file unreadable, moved aside: {e}");
            (
                Machine::new(cfg.limits()),
                Default::default(),
                false,
                Some(why),
            )
        }
    };
    if let Some(why) = lost {
        machine.set_lost_record(why);
    }

    // the flight recorder: every frame on the autopilot link, arm to disarm plus the margin
    let recorder = (cfg.logs.max_mb > 0).then(|| hal::flight::tlog::RecorderConfig {
        dir: cfg.logs_dir(),
        max_bytes: cfg.logs.max_mb.saturating_mul(1024 * 1024),
        margin: crate::config::secs(cfg.logs.margin_s),
    });
    // ground stations sharing the autopilot's link: none unless configured
    let router = if cfg.flight_controller.endpoints.is_empty() {
        None
    } else {
        Some(
            hal::flight::router::Router::start(&cfg.flight_controller.endpoints, Some(&state_dir))
                .await
                .context("flight_controller.endpoints")?,
        )
    };
    let fc = MavlinkFc::start_with(cfg.flight_controller.clone(), recorder, router.clone());
    let payload = Arc::new(payload(&cfg.payload, fc.clone())?);
    let hello = crate::report::register(
        cfg.drone.id,
        &cfg.drone.model,
        &fc.snapshot().borrow(),
        &machine,
    );
    let (link, incoming) = CloudLink::spawn(
        cfg.cloud.clone(),
        PeerKind::Drone,
        cfg.drone.id.to_string(),
        &state_dir.join("outbox"),
        Envelope::new(hello),
    )?;
    if restored && machine.state() != protocol::ws::DroneState::Idle {
        warn!(state = ?machine.state(), "agent restarted in the middle of a delivery");
    }
    let (fc_snapshots, cloud_status) = (fc.snapshot(), link.status());
    let link = Arc::new(link);
    let camera = match &cfg.camera {
        Some(cam) => Some(start_camera(&cfg, cam, link.clone(), fc.snapshot())?),
        None => None,
    };
    let (has_camera, min_takeoff_percent) = (cfg.camera.is_some(), cfg.battery.min_takeoff_percent);
    let controller = fc.clone();
    let fetch_logs = cfg
        .logs
        .fetch_autopilot_log
        .then(|| (fc.clone(), cfg.logs_dir()));
    let (mut agent, internal) = Agent::new(cfg, fc, payload, link, machine, commands, restored);
    let log_fetcher = fetch_logs.map(|(fc, dir)| {
        let report = agent.event_sender();
        tokio::spawn(crate::flightlog::fetch_after_flights(fc, dir, report))
    });
    // the technician's acting requests go to the agent's task (through the machine)
    let (tech_tx, tech_rx) = tokio::sync::mpsc::channel(4);
    if let Some((rig, marker)) = camera {
        agent = agent.with_camera(rig, marker);
    }
    if let Some(router) = &router {
        agent = agent.with_routed_commands(router.routed_commands());
    }
    // The technician's socket: a missing runtime directory is logged, never fatal to flying.
    let socket = crate::technician::socket_path(&state_dir);
    let technician = match crate::technician::bind(&socket) {
        Ok(listener) => {
            let sources = crate::technician::Sources {
                view: agent.technician_view(),
                fc: fc_snapshots,
                cloud: cloud_status,
                controller,
                min_takeoff_percent,
                has_camera,
                agent: tech_tx,
                router,
            };
            Some(tokio::spawn(crate::technician::serve(listener, sources)))
        }
        Err(e) => {
            warn!(socket = %socket.display(), error = %e, "technician socket unavailable");
            None
        }
    };
    agent.run(incoming, internal, tech_rx, shutdown).await;
    if let Some(t) = log_fetcher {
        t.abort();
    }
    if let Some(t) = technician {
        t.abort();
        let _ = std::fs::remove_file(&socket);
    }
    Ok(())
}
