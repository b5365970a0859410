//! `locker-agent run`: wires the parts together from the config, and stops them in order.

use crate::cells::CellStore;
use crate::cloud::CloudUplink;
use crate::config::{secs, Config, DisplayConfig};
use crate::locker::{Locker, Settings};
use crate::orchestrator::HttpValidator;
use crate::uplink::{CloudValidator, LogUplink, QrValidator, Uplink};
use crate::{api, scanner, technician};
use anyhow::Context as _;
use cloud_link::CloudLink;
use hal::display::{Display, NoDisplay, SerialDisplay, TerminalDisplay};
use hal::lockboard::{SerialLockBoard, SerialLockBoardConfig};
use hal::qr::QrDecoder;
use protocol::ws::{Envelope, LockerRegister, PeerKind};
use protocol::PROTOCOL_VERSION;
use std::sync::Arc;
use tracing::{info, warn};

pub fn board_config(cfg: &Config) -> SerialLockBoardConfig {
    let b = &cfg.board;
    let mut c = SerialLockBoardConfig::new(&b.path);
    c.baud = b.baud;
    c.travel_timeout = secs(b.travel_timeout_s);
    c.status_timeout = secs(b.status_timeout_s);
    c.reopen_interval = secs(b.reopen_interval_s);
    c.max_timeouts = b.max_timeouts;
    c
}

pub fn settings(cfg: &Config) -> Settings {
    Settings {
        locker_id: cfg.locker_id,
        open_timeout: secs(cfg.cells.open_timeout_s),
        poll_interval: secs(cfg.board.poll_interval_s),
        version: format!("locker-agent {}", env!("CARGO_PKG_VERSION")),
        lock_retry: secs(cfg.board.lock_retry_s),
        lock_retry_max: secs(cfg.board.lock_retry_max_s),
        lock_attempts: cfg.board.lock_attempts,
        scan_limit: crate::locker::ScanLimit {
            free: cfg.qr.failed_scans_free,
            window: secs(cfg.qr.failed_scans_window_s),
            backoff: secs(cfg.qr.scan_backoff_s),
            backoff_max: secs(cfg.qr.scan_backoff_max_s),
        },
    }
}

pub fn display(cfg: &DisplayConfig) -> anyhow::Result<Arc<dyn Display>> {
    Ok(match cfg {
        DisplayConfig::None => Arc::new(NoDisplay),
        DisplayConfig::Terminal {
            path: Some(p),
            ansi,
        } => Arc::new(TerminalDisplay::open(p, *ansi)?),
        DisplayConfig::Terminal { path: None, .. } => Arc::new(TerminalDisplay::stdout()),
        DisplayConfig::Serial { path, baud } => Arc::new(SerialDisplay::open(path, *baud)?),
    })
}

/// Runs the agent until SIGTERM/SIGINT.
/// `init`: a first boot (`run --init`): a missing cell state file starts empty.
pub async fn run(cfg: Config, init: bool) -> anyhow::Result<()> {
    let state_path = cfg.state_dir.join("cells.json");
    let store = CellStore::open(
        &state_path,
        cfg.board.cells,
        cfg.cells.used_codes_kept,
        init,
    )
    .with_context(|| format!("cell state {}", state_path.display()))?;
    let token = cfg.http.token().context("http token")?;
    let board = SerialLockBoard::spawn(board_config(&cfg));
    let display = display(&cfg.display).context("display")?;

    // The cloud link: events with the no-loss outbox, backend requests, QR validation.
    let mut inbound = None;
    let (uplink, validator): (Arc<dyn Uplink>, Option<Arc<CloudValidator>>) = match &cfg.cloud {
        Some(cloud) => {
            let hello = Envelope::new(LockerRegister {
                locker_id: cfg.locker_id,
                protocol_version: PROTOCOL_VERSION,
                agent_version: Some(format!("locker-agent {}", env!("CARGO_PKG_VERSION"))),
                cells: cfg.board.cells,
            });
            let (link, rx) = CloudLink::spawn(
                cloud.clone(),
                PeerKind::Locker,
                cfg.locker_id.to_string(),
                &cfg.state_dir.join("outbox"),
                hello,
            )
            .context("cloud link")?;
            inbound = Some(rx);
            let uplink: Arc<dyn Uplink> = Arc::new(CloudUplink(link));
            let validator = Arc::new(CloudValidator::new(
                uplink.clone(),
                cfg.locker_id,
                secs(cfg.qr.validate_timeout_s),
            ));
            (uplink, Some(validator))
        }
        None => {
            warn!("no [cloud] section: events are logged only (and QR pickups are refused unless [orchestrator] is set)");
            (Arc::new(LogUplink), None)
        }
    };

    // Who judges a scanned code: the orchestrator over HTTP when configured (the seed's way),
    // else the backend over the relay link, else nobody (pickups refused).
    let qr_validator: Option<Arc<dyn QrValidator>> = match &cfg.orchestrator {
        Some(o) => {
            info!(url = %o.url, "QR codes are validated by the orchestrator over HTTP");
            Some(Arc::new(
                HttpValidator::new(o, cfg.locker_id).context("orchestrator")?,
            ))
        }
        None => validator.clone().map(|v| v as Arc<dyn QrValidator>),
    };
    let locker = Arc::new(Locker::new(
        board,
        store,
        settings(&cfg),
        uplink.clone(),
        qr_validator,
        display,
    ));
    let monitor = tokio::spawn(locker.clone().run_monitor());
    if let Some(rx) = inbound {
        tokio::spawn(crate::inbound::dispatch(
            locker.clone(),
            uplink,
            validator,
            rx,
        ));
    }

    let scanner = match &cfg.camera {
        Some(c) => {
            // A camera that cannot be opened now is retried by the loop (and reported in
            // /health), never fatal: the lockers work without it.
            let decoder = QrDecoder::new(c.second_opinion)?;
            let (handle, codes) = scanner::spawn(&c.source, decoder, c.fps, secs(c.debounce_s))?;
            locker.attach_camera(handle.probe());
            tokio::spawn(crate::locker::run_pickups(locker.clone(), codes));
            Some(handle)
        }
        None => None,
    };

    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("http.listen {}", cfg.http.listen))?;
    info!(listen = %cfg.http.listen, "locker HTTP API listening");
    // The technician's socket: unavailable is logged, never fatal (the lockers keep working).
    // Bound before readiness is announced, so READY=1 means the technician can connect.
    let socket = technician::socket_path(cfg.technician.socket.as_deref(), &cfg.state_dir);
    let technician = match technician::bind(&socket) {
        Ok(listener) => Some(tokio::spawn(technician::serve(listener, locker.clone()))),
        Err(e) => {
            warn!(socket = %socket.display(), error = %e, "technician socket unavailable");
            None
        }
    };
    // systemd (Type=notify): READY=1 once the lock board answers, watchdog fed while the door
    // monitor runs; no-ops outside systemd.
    let (stop_systemd, stopping) = tokio::sync::oneshot::channel();
    let systemd = tokio::spawn(systemd_supervisor(
        hal::lockboard::LockBoard::health(locker.board()),
        monitor.abort_handle(),
        stopping,
    ));
    let app = api::router(locker.clone(), token)
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            match daemon::shutdown::wait().await {
                Ok(sig) => info!(?sig, "shutting down"),
                Err(e) => warn!(error = %e, "cannot wait for signals"),
            }
        })
        .await?;
    // STOPPING=1 (the supervisor holds the service; it may have ended, with the board driver)
    if stop_systemd.send(()).is_ok() {
        let _ = systemd.await;
    } else {
        daemon::systemd::Service::from_env().stopping();
    }
    if let Some(s) = scanner {
        s.stop();
    }
    monitor.abort();
    if let Some(t) = technician {
        t.abort();
        let _ = std::fs::remove_file(&socket);
    }
    // Cell state is saved on every change: nothing more to write.
    Ok(())
}

/// READY=1 when the lock board first answers (until then the start-up timeout is extended while
/// this task runs); after that WATCHDOG=1 only while the door monitor, the locker's main loop,
/// is still running. A board unplugged later is not a reason to restart: the driver reopens it.
/// STOPPING=1 when `stop` fires.
async fn systemd_supervisor(
    mut board: tokio::sync::watch::Receiver<hal::lockboard::BoardHealth>,
    monitor: tokio::task::AbortHandle,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut systemd = daemon::systemd::Service::from_env();
    systemd.status("waiting for the lock board");
    loop {
        if !systemd.is_ready() && board.borrow_and_update().ok() {
            systemd.ready("lock board reached");
        }
        tokio::select! {
            changed = board.changed(), if !systemd.is_ready() => {
                if changed.is_err() {
                    return; // the board driver ended: let the watchdog restart us
                }
            }
            _ = systemd.watchdog_due() => {
                if !monitor.is_finished() {
                    systemd.alive();
                }
            }
            _ = &mut stop => {
                systemd.stopping();
                return;
            }
        }
    }
}
