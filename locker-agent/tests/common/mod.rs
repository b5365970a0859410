//! Test harness: a locker agent (in-process) on a simulated board on a real pty, its HTTP API on a
//! real socket, and a scripted backend behind the uplink trait that answers `qr_validate`.

#![allow(dead_code)]

use hal::display::TerminalDisplay;
use hal::lockboard::{SerialLockBoard, SerialLockBoardConfig};
use locker_agent::cells::CellStore;
use locker_agent::locker::{Locker, Settings};
use locker_agent::uplink::{BoxFuture, CloudValidator, QrValidator, Uplink, UplinkError};
use protocol::ws::{Envelope, Event, EventType, LockerResponse, Message, QrValidation};
use serde_json::Value;
use sim::lockboard::{BoardSnapshot, SimBoard, SimBoardConfig};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

pub const TOKEN: &str = "test-token-0123456789abcdef";
/// Upper bound for any wait in these tests: generous, never a sleep.
pub const WAIT: Duration = Duration::from_secs(10);

/// The backend's side: what it thinks of each code, every event the locker sent, every
/// `locker_response`.
pub struct Backend {
    pub codes: Mutex<HashMap<String, QrValidation>>,
    pub events: watch::Sender<Vec<Event>>,
    pub responses: mpsc::UnboundedSender<LockerResponse>,
    inbound: mpsc::Sender<Envelope>,
    pub online: std::sync::atomic::AtomicBool,
    /// While set, events cannot be queued (the outbox's disk is full).
    pub refuse_events: std::sync::atomic::AtomicBool,
    /// `qr_validate` requests received.
    pub validations: std::sync::atomic::AtomicUsize,
}

impl Uplink for Backend {
    fn publish_event(&self, event: Event) -> BoxFuture<'_, Result<(), UplinkError>> {
        if self
            .refuse_events
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Box::pin(async {
                Err(UplinkError::Outbox(
                    "No space left on device (os error 28)".into(),
                ))
            });
        }
        self.events.send_modify(|v| v.push(event));
        Box::pin(async { Ok(()) })
    }

    fn send(&self, env: Envelope) -> bool {
        if !self.online.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        match env.message {
            Message::QrValidate(q) => {
                self.validations
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let verdict = self.codes.lock().unwrap().get(&q.qr_data).cloned();
                let v = match verdict {
                    Some(mut v) => {
                        v.request_id = q.request_id;
                        v
                    }
                    None => QrValidation {
                        request_id: q.request_id,
                        valid: false,
                        cell_uuid: None,
                        order_id: None,
                        reason: Some("Unknown code".into()),
                    },
                };
                // Back through the same inbound path the relay link feeds.
                let _ = self.inbound.try_send(Envelope::new(v));
                true
            }
            Message::LockerResponse(r) => {
                let _ = self.responses.send(r);
                true
            }
            _ => true,
        }
    }

    fn connected(&self) -> bool {
        self.online.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Backend {
    pub fn allow(&self, code: &str, cell: Uuid, order: Uuid) {
        self.codes.lock().unwrap().insert(
            code.into(),
            QrValidation {
                request_id: Uuid::nil(),
                valid: true,
                cell_uuid: Some(cell),
                order_id: Some(order),
                reason: None,
            },
        );
    }

    pub fn reject(&self, code: &str, reason: &str) {
        self.codes.lock().unwrap().insert(
            code.into(),
            QrValidation {
                request_id: Uuid::nil(),
                valid: false,
                cell_uuid: None,
                order_id: None,
                reason: Some(reason.into()),
            },
        );
    }

    /// Waits until an event of this type for this cell has been sent; returns the latest.
    pub async fn wait_event(&self, kind: EventType, cell: u16) -> Event {
        self.wait_events(kind, cell, 1).await
    }

    /// Waits until an event of this type (for any cell, or none) that `f` accepts has been
    /// sent; returns it.
    pub async fn wait_event_where(&self, kind: EventType, f: impl Fn(&Event) -> bool) -> Event {
        let matches = |e: &Event| e.event_type == kind && f(e);
        let mut rx = self.events.subscribe();
        let found = tokio::time::timeout(WAIT, rx.wait_for(|v| v.iter().any(matches)))
            .await
            .is_ok();
        let ev = self.events.borrow().iter().find(|e| matches(e)).cloned();
        assert!(
            found,
            "no such {kind:?} event; sent: {:?}",
            self.events.borrow()
        );
        ev.unwrap()
    }

    /// Waits until `n` events of this type for this cell have been sent; returns the latest.
    pub async fn wait_events(&self, kind: EventType, cell: u16, n: usize) -> Event {
        let matches = |e: &Event| e.event_type == kind && e.cell_id == Some(cell);
        let mut rx = self.events.subscribe();
        let r = tokio::time::timeout(
            WAIT,
            rx.wait_for(|v| v.iter().filter(|e| matches(e)).count() >= n),
        )
        .await;
        if r.is_err() {
            let seen: Vec<_> = self
                .events
                .borrow()
                .iter()
                .map(|e| (e.event_type, e.cell_id, e.reason.clone()))
                .collect();
            panic!("fewer than {n} {kind:?} events for cell {cell}; sent: {seen:?}");
        }
        let latest = self
            .events
            .borrow()
            .iter()
            .rev()
            .find(|e| matches(e))
            .cloned();
        latest.unwrap()
    }

    pub fn count(&self, kind: EventType) -> usize {
        self.events
            .borrow()
            .iter()
            .filter(|e| e.event_type == kind)
            .count()
    }
}

/// A board on a pty that the agent can be pointed at: `sim lockboard` or the firmware's harness.
pub trait TestBoard: Send + Sync + 'static {
    fn path(&self) -> &Path;
    /// The driver's settings for this board.
    fn serial_config(&self) -> SerialLockBoardConfig {
        board_cfg(self.path())
    }
}

impl TestBoard for SimBoard {
    fn path(&self) -> &Path {
        SimBoard::path(self)
    }
}

impl TestBoard for sim::firmware_board::FirmwareBoard {
    fn path(&self) -> &Path {
        sim::firmware_board::FirmwareBoard::path(self)
    }

    fn serial_config(&self) -> SerialLockBoardConfig {
        firmware_board_cfg(self.path())
    }
}

/// For the firmware on an emulated AVR: its bolts are timed in emulated milliseconds (the
/// emulation runs 3-6x faster than real time on an idle machine, slower on a loaded one), so
/// the timeouts leave room for a busy CI machine.
pub fn firmware_board_cfg(link: &Path) -> SerialLockBoardConfig {
    let mut c = SerialLockBoardConfig::new(link);
    c.travel_timeout = Duration::from_secs(5);
    c.status_timeout = Duration::from_secs(2);
    c.reopen_interval = Duration::from_millis(50);
    c
}

pub struct Harness<B = SimBoard> {
    pub dir: tempfile::TempDir,
    pub board: B,
    pub locker: Arc<Locker<SerialLockBoard>>,
    pub backend: Arc<Backend>,
    pub addr: SocketAddr,
    pub responses: mpsc::UnboundedReceiver<LockerResponse>,
    pub inbound: mpsc::Sender<Envelope>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

pub fn board_cfg(link: &Path) -> SerialLockBoardConfig {
    let mut c = SerialLockBoardConfig::new(link);
    c.travel_timeout = Duration::from_millis(600);
    c.status_timeout = Duration::from_millis(300);
    c.reopen_interval = Duration::from_millis(50);
    c.max_timeouts = 3;
    c
}

/// How many times the agent tries to lock a jammed bolt before it gives up (test settings).
pub const LOCK_ATTEMPTS: usize = 4;

/// Failed QR scans a source may make before it backs off (test settings).
pub const FREE_FAILED_SCANS: u32 = 3;

pub fn settings() -> Settings {
    Settings {
        locker_id: Uuid::from_u128(7),
        open_timeout: Duration::from_secs(30),
        poll_interval: Duration::from_millis(100),
        version: "test".into(),
        lock_retry: Duration::from_millis(20),
        lock_retry_max: Duration::from_millis(80),
        lock_attempts: LOCK_ATTEMPTS as u32,
        scan_limit: locker_agent::locker::ScanLimit {
            free: FREE_FAILED_SCANS,
            window: Duration::from_secs(60),
            backoff: Duration::from_secs(30),
            backoff_max: Duration::from_secs(60),
        },
    }
}

impl Harness {
    pub async fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let board = SimBoard::start(SimBoardConfig {
            cells: 4,
            travel: Duration::from_millis(40),
            link: dir.path().join("lockboard"),
        })
        .unwrap();
        Self::start_on(dir, board).await
    }

    /// A locker agent on an existing state dir and board (used to "restart" the agent).
    pub async fn start_on(dir: tempfile::TempDir, board: SimBoard) -> Harness {
        Self::start_with(dir, board, settings()).await
    }

    pub async fn start_with(
        dir: tempfile::TempDir,
        board: SimBoard,
        settings: Settings,
    ) -> Harness {
        Self::start_full(dir, board, settings, None).await
    }

    /// A locker whose QR codes are judged by `qr` instead of the scripted backend on the link.
    pub async fn start_validated_by(qr: Arc<dyn QrValidator>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let board = SimBoard::start(SimBoardConfig {
            cells: 4,
            travel: Duration::from_millis(40),
            link: dir.path().join("lockboard"),
        })
        .unwrap();
        Self::start_full(dir, board, settings(), Some(qr)).await
    }

    pub async fn start_full(
        dir: tempfile::TempDir,
        board: SimBoard,
        settings: Settings,
        qr: Option<Arc<dyn QrValidator>>,
    ) -> Harness {
        Harness::start_any(dir, board, settings, qr).await
    }

    pub async fn wait_board(&self, what: &str, f: impl Fn(&BoardSnapshot) -> bool) {
        let mut rx = self.board.watch();
        tokio::time::timeout(WAIT, rx.wait_for(|s| f(s)))
            .await
            .unwrap_or_else(|_| panic!("board never reached: {what}; {:?}", self.board.snapshot()))
            .unwrap();
    }

    /// A drone drop in cell `n`, all the way to "parcel recorded".
    pub async fn drop_parcel(&self, cell: Uuid, n: u8) {
        let (status, v) = self.open(cell, Some(Uuid::new_v4())).await;
        assert_eq!(status, 200, "{v}");
        self.board.open_door(n).await.unwrap();
        self.board.close_door(n).await.unwrap();
        self.backend
            .wait_event(EventType::ParcelLoaded, u16::from(n))
            .await;
    }
}

impl<B: TestBoard> Harness<B> {
    /// A locker agent on `board`, whichever kind it is.
    pub async fn start_any(
        dir: tempfile::TempDir,
        board: B,
        settings: Settings,
        qr: Option<Arc<dyn QrValidator>>,
    ) -> Harness<B> {
        // RUST_LOG=debug shows the agent's and the board's logs for a failing test.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let (responses_tx, responses) = mpsc::unbounded_channel();
        let (inbound, inbound_rx) = mpsc::channel(16);
        let backend = Arc::new(Backend {
            codes: Mutex::new(HashMap::new()),
            events: watch::channel(Vec::new()).0,
            responses: responses_tx,
            inbound: inbound.clone(),
            online: true.into(),
            refuse_events: false.into(),
            validations: 0.into(),
        });
        let uplink: Arc<dyn Uplink> = backend.clone();
        let validator = Arc::new(CloudValidator::new(
            uplink.clone(),
            Uuid::from_u128(7),
            Duration::from_secs(2),
        ));
        let store = CellStore::open(&dir.path().join("cells.json"), 4, 100, true).unwrap();
        let serial = SerialLockBoard::spawn(board.serial_config());
        let display =
            Arc::new(TerminalDisplay::open(&dir.path().join("screen.txt"), false).unwrap());
        let locker = Arc::new(Locker::new(
            serial,
            store,
            settings,
            uplink.clone(),
            Some(qr.unwrap_or_else(|| validator.clone() as Arc<dyn QrValidator>)),
            display,
        ));
        let mut tasks = vec![tokio::spawn(locker.clone().run_monitor())];
        tasks.push(tokio::spawn(locker_agent::inbound::dispatch(
            locker.clone(),
            uplink,
            Some(validator),
            inbound_rx,
        )));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = locker_agent::api::router(locker.clone(), TOKEN.into())
            .into_make_service_with_connect_info::<SocketAddr>();
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
        let h = Harness {
            dir,
            board,
            locker,
            backend,
            addr,
            responses,
            inbound,
            tasks,
        };
        let mut health = h.locker.board().health_rx();
        tokio::time::timeout(WAIT, health.wait_for(|x| x.connected))
            .await
            .expect("agent never connected to the pty board")
            .unwrap();
        h
    }

    /// Stops the agent (its tasks and board connection) and hands back the state dir and board.
    pub async fn stop(self) -> (tempfile::TempDir, B) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        drop(self.locker);
        (self.dir, self.board)
    }

    pub fn screen(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("screen.txt")).unwrap_or_default()
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.path().join("cells.json")
    }

    /// Makes every write of the cell state fail (as on a full disk) or work again: the state
    /// file's temporary name becomes a directory, so creating it fails; the outbox refuses
    /// events too.
    pub fn disk_full(&self, full: bool) {
        let blocker = self.dir.path().join("cells.tmp");
        if full {
            std::fs::create_dir(&blocker).unwrap();
        } else {
            std::fs::remove_dir(&blocker).unwrap();
        }
        self.backend
            .refuse_events
            .store(full, std::sync::atomic::Ordering::Relaxed);
    }

    pub async fn health(&self) -> Value {
        let (status, v) = http(self.addr, "GET", "/health", None, "").await;
        assert_eq!(status, 200, "{v}");
        v
    }

    /// Waits until `GET /health` says `status`.
    pub async fn wait_health(&self, status: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut changes = self.backend.events.subscribe();
        loop {
            let v = self.health().await;
            if v["status"] == status {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "health never became {status}: {v}"
            );
            // re-checked on every event the locker sends, and at least every poll interval
            let _ = tokio::time::timeout(settings().poll_interval, changes.changed()).await;
        }
    }

    pub async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        http(self.addr, "POST", path, Some(TOKEN), body).await
    }

    pub async fn sync(&self, cells: &[(Uuid, u16)]) {
        let body = serde_json::json!({
            "cells": cells.iter().map(|(u, n)| serde_json::json!({"cell_uuid": u, "cell_id": n})).collect::<Vec<_>>()
        });
        let (status, v) = self.post("/api/cells/sync", &body.to_string()).await;
        assert_eq!(status, 200, "{v}");
    }

    pub async fn open(&self, cell: Uuid, delivery: Option<Uuid>) -> (u16, Value) {
        let mut body = serde_json::json!({ "cell_uuid": cell });
        if let Some(d) = delivery {
            body["delivery_id"] = serde_json::json!(d);
        }
        self.post("/api/cells/open", &body.to_string()).await
    }
}

/// Extension so tests can watch health without knowing the trait.
pub trait HealthRx {
    fn health_rx(&self) -> watch::Receiver<hal::lockboard::BoardHealth>;
}

impl HealthRx for SerialLockBoard {
    fn health_rx(&self) -> watch::Receiver<hal::lockboard::BoardHealth> {
        hal::lockboard::LockBoard::health(self)
    }
}

/// A minimal HTTP/1.1 client over a real TCP socket (one request per connection).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    http_auth(addr, method, path, auth.as_deref(), body).await
}

/// [`http`] with the whole `Authorization` header value given.
pub async fn http_auth(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = authorization
        .map(|t| format!("Authorization: {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: locker\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // Written beside the read: a server refusing an oversized body answers (and may close)
    // before it has read it all, and a blocked writer would then never see the answer.
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(req.as_bytes()).await;
        wr
    });
    let mut out = Vec::new();
    let read = tokio::time::timeout(WAIT, rd.read_to_end(&mut out))
        .await
        .expect("HTTP response timed out");
    // a reset after the whole answer arrived is the server dropping an unread body
    if out.is_empty() {
        read.unwrap();
    }
    drop(writer.await);
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let v = serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()));
    (status, v)
}

/// Asserts the seed's error body and code.
pub fn assert_error(v: &Value, code: &str) {
    assert_eq!(v["success"], Value::Bool(false), "{v}");
    assert!(v["data"].is_null(), "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
}
