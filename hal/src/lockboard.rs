//! The locker's lock board: the Arduino that pulls the bolts and reads the door sensors.
//!
//! [`LockBoard`] is what the locker agent is written against: `open`, `close` and `status`, each
//! answering only with what the board said. [`SerialLockBoard`] is the implementation for a board
//! on a serial port (real hardware, or `sim lockboard` on a pseudo-terminal: the same code path).
//!
//! How the serial driver behaves, and why:
//! - **One command on the wire at a time.** The Arduino reads one line, moves a bolt for up to
//!   ~11 s, then answers; a second line sent meanwhile would sit in its 64-byte buffer and its
//!   answer could be mistaken for the first one's. Callers queue on a channel; one task owns the
//!   port and sends the next command only after the reply to the last (or its timeout). Our own
//!   firmware (`locker-agent/firmware/`) answers while bolts move, but a host that runs ahead of
//!   the replies still overflows its 64-byte receive buffer, so the rule stays.
//! - **Every command waits for its own acknowledgement**, paired by the echo in `OK <cmd>` /
//!   `ERR <cmd> ...`, with a timeout that covers the bolt's travel (config). A late `OK` for an
//!   earlier command is never taken for the current one.
//! - **Door state comes from the board** (`STATUS` replies and unsolicited `DOOR` lines, passed
//!   on as [`BoardEvent`]s), never from what was last asked for.
//! - **Faults are reported, then recovered from.** Garbage lines are counted and skipped; silence
//!   is a timeout; after `max_timeouts` timeouts in a row, or a read error (unplugged), the port is
//!   closed and reopened every `reopen_interval` until it is back. Health is a `watch` channel.
//! - **It never falls back to a simulation.** If the port cannot be opened, every request fails
//!   with [`BoardError::Unavailable`] naming the path and the OS error, and the driver keeps trying.

use protocol::lockboard::{
    BoardCommand, BoardErrorCode, BoardReply, CellNumber, CellStatus, DoorState, LineError,
    ResetReason, MAX_LINE,
};
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, info_span, warn, Instrument};

/// What the locker agent needs from a lock board. Every answer is the board's own word.
pub trait LockBoard: Send + Sync + 'static {
    /// Pulls the bolt of `cell`; `Ok` only once the board acknowledged `OK OPEN_<n>`.
    fn open(&self, cell: CellNumber) -> impl Future<Output = Result<(), BoardError>> + Send;
    /// Pushes the bolt of `cell` home; `Ok` only on `OK CLOSE_<n>`.
    fn close(&self, cell: CellNumber) -> impl Future<Output = Result<(), BoardError>> + Send;
    /// Every cell's bolt and door, as the board reports them now.
    fn status(&self) -> impl Future<Output = Result<Vec<CellStatus>, BoardError>> + Send;
    /// Connection health, updated as it changes.
    fn health(&self) -> watch::Receiver<BoardHealth>;
    /// Door changes, board restarts and connection changes, as they happen.
    fn events(&self) -> broadcast::Receiver<BoardEvent>;
}

/// Why a board operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoardError {
    #[error("lock board unavailable: {0}")]
    Unavailable(String),
    #[error("lock board did not answer {command} within {after:?}")]
    Timeout {
        command: BoardCommand,
        after: Duration,
    },
    #[error("lock board refused {command}: {code} {message}")]
    Refused {
        command: BoardCommand,
        code: BoardErrorCode,
        message: String,
    },
    #[error("lock board restarted while {command} was in flight (firmware {firmware:?})")]
    Reset {
        command: BoardCommand,
        firmware: String,
    },
    #[error("lock board connection lost while {command} was in flight: {reason}")]
    Disconnected {
        command: BoardCommand,
        reason: String,
    },
    #[error("lock board queue is full ({0} commands waiting)")]
    QueueFull(usize),
    #[error("lock board driver has stopped")]
    Stopped,
    #[error("lock board answered {command} with an unexpected reply: {reply}")]
    Unexpected {
        command: BoardCommand,
        reply: String,
    },
}

impl BoardError {
    /// True when the board itself answered and said no (as opposed to not answering at all).
    pub fn is_refusal(&self) -> bool {
        matches!(self, BoardError::Refused { .. })
    }
}

/// Something the board did on its own, or a change in the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoardEvent {
    /// `DOOR <n> OPEN|CLOSED`, or a door that changed between two `STATUS` replies.
    Door {
        cell: CellNumber,
        door: DoorState,
    },
    /// A full `STATUS` reply arrived (from any caller's `status()`).
    Status(Vec<CellStatus>),
    /// `READY <firmware> [reset=<reason>]`: the board (re)started; whatever it was doing is lost
    /// and every cell should be read again. `reason` is `None` when the board does not say.
    Ready {
        firmware: String,
        reason: Option<ResetReason>,
    },
    Connected,
    Disconnected {
        reason: String,
    },
    /// A line that is not in the protocol.
    Garbage {
        error: String,
    },
}

/// The driver's view of the connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoardHealth {
    pub connected: bool,
    /// The last thing that went wrong, in words, cleared by the next good reply.
    pub last_error: Option<String>,
    pub consecutive_timeouts: u32,
    pub garbage_lines: u64,
    pub reopens: u64,
    pub firmware: Option<String>,
    /// Why the board last (re)started, when it said (`READY ... reset=<reason>`).
    pub last_reset: Option<ResetReason>,
}

impl BoardHealth {
    /// Healthy: connected and the last command was answered.
    pub fn ok(&self) -> bool {
        self.connected && self.last_error.is_none()
    }
}

/// Settings for [`SerialLockBoard`]. The locker agent fills this from its TOML config.
#[derive(Debug, Clone)]
pub struct SerialLockBoardConfig {
    /// Prefer a stable `/dev/serial/by-id/...` path: `/dev/ttyUSB0` can change name on replug.
    pub path: PathBuf,
    pub baud: u32,
    /// How long `OPEN`/`CLOSE` may take: must cover the bolt's travel (~11 s on the seed's locks).
    pub travel_timeout: Duration,
    /// How long `STATUS` may take.
    pub status_timeout: Duration,
    /// Pause between attempts to (re)open the port.
    pub reopen_interval: Duration,
    /// Timeouts in a row after which the port is closed and reopened (a wedged USB adapter).
    pub max_timeouts: u32,
    /// Commands that may wait for the wire; more are refused with [`BoardError::QueueFull`].
    pub queue_depth: usize,
}

impl SerialLockBoardConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            baud: 9600,
            travel_timeout: Duration::from_secs(15),
            status_timeout: Duration::from_secs(2),
            reopen_interval: Duration::from_secs(2),
            max_timeouts: 3,
            queue_depth: 32,
        }
    }
}

struct Request {
    command: BoardCommand,
    reply: oneshot::Sender<Result<BoardReply, BoardError>>,
}

/// A lock board on a serial port. Cheap to clone: every clone talks to the same driver task.
#[derive(Clone)]
pub struct SerialLockBoard {
    tx: mpsc::Sender<Request>,
    health: watch::Receiver<BoardHealth>,
    events: broadcast::Sender<BoardEvent>,
    queue_depth: usize,
}

impl SerialLockBoard {
    /// Starts the driver task. Returns at once: the port is opened (and reopened) in the
    /// background, and requests made before it is open fail with [`BoardError::Unavailable`].
    pub fn spawn(cfg: SerialLockBoardConfig) -> Self {
        Self::spawn_with(cfg, open_serial)
    }

    /// As [`SerialLockBoard::spawn`], with the way to open the port given (tests and benches can
    /// hand it any byte stream; the agent always uses [`SerialLockBoard::spawn`]).
    pub fn spawn_with<S, F>(cfg: SerialLockBoardConfig, opener: F) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
        F: Fn(&SerialLockBoardConfig) -> std::io::Result<S> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(cfg.queue_depth.max(1));
        let (health_tx, health) = watch::channel(BoardHealth::default());
        let (events, _) = broadcast::channel(256);
        let queue_depth = cfg.queue_depth;
        let span = info_span!("lockboard", path = %cfg.path.display());
        let driver = Driver {
            cfg,
            rx,
            health: health_tx,
            events: events.clone(),
        };
        tokio::spawn(driver.run(opener).instrument(span));
        Self {
            tx,
            health,
            events,
            queue_depth,
        }
    }

    async fn request(&self, command: BoardCommand) -> Result<BoardReply, BoardError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Request { command, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => BoardError::QueueFull(self.queue_depth),
                mpsc::error::TrySendError::Closed(_) => BoardError::Stopped,
            })?;
        rx.await.map_err(|_| BoardError::Stopped)?
    }

    async fn move_bolt(&self, command: BoardCommand) -> Result<(), BoardError> {
        match self.request(command).await? {
            BoardReply::Ok(c) if c == command => Ok(()),
            other => Err(BoardError::Unexpected {
                command,
                reply: other.to_string(),
            }),
        }
    }
}

impl LockBoard for SerialLockBoard {
    async fn open(&self, cell: CellNumber) -> Result<(), BoardError> {
        self.move_bolt(BoardCommand::Open(cell)).await
    }

    async fn close(&self, cell: CellNumber) -> Result<(), BoardError> {
        self.move_bolt(BoardCommand::Close(cell)).await
    }

    async fn status(&self) -> Result<Vec<CellStatus>, BoardError> {
        match self.request(BoardCommand::Status).await? {
            BoardReply::Status(cells) => Ok(cells),
            other => Err(BoardError::Unexpected {
                command: BoardCommand::Status,
                reply: other.to_string(),
            }),
        }
    }

    fn health(&self) -> watch::Receiver<BoardHealth> {
        self.health.clone()
    }

    fn events(&self) -> broadcast::Receiver<BoardEvent> {
        self.events.subscribe()
    }
}

fn open_serial(cfg: &SerialLockBoardConfig) -> std::io::Result<tokio_serial::SerialStream> {
    use tokio_serial::SerialPortBuilderExt as _;
    let path = cfg.path.to_string_lossy();
    tokio_serial::new(path, cfg.baud)
        .data_bits(tokio_serial::DataBits::Eight)
        .parity(tokio_serial::Parity::None)
        .stop_bits(tokio_serial::StopBits::One)
        .flow_control(tokio_serial::FlowControl::None)
        .open_native_async()
        .map_err(std::io::Error::from)
}

/// One line from the reader task.
type Line = Result<BoardReply, LineError>;

/// Why a connection ended.
enum Ended {
    /// Every handle was dropped: stop for good.
    Stop,
    /// The port failed or went silent: reopen it.
    Lost(String),
}

struct Driver {
    cfg: SerialLockBoardConfig,
    rx: mpsc::Receiver<Request>,
    health: watch::Sender<BoardHealth>,
    events: broadcast::Sender<BoardEvent>,
}

impl Driver {
    async fn run<S, F>(mut self, opener: F)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
        F: Fn(&SerialLockBoardConfig) -> std::io::Result<S> + Send + 'static,
    {
        let mut first = true;
        loop {
            let stream = match opener(&self.cfg) {
                Ok(s) => s,
                Err(e) => {
                    let why = format!("cannot open {}: {e}", self.cfg.path.display());
                    // Loud on purpose: a locker without its board cannot open a single cell.
                    error!(error = %e, retry_in = ?self.cfg.reopen_interval, "lock board port will not open; retrying");
                    self.health.send_modify(|h| {
                        h.connected = false;
                        h.last_error = Some(why.clone());
                    });
                    if !self
                        .refuse_until(Instant::now() + self.cfg.reopen_interval, &why)
                        .await
                    {
                        return;
                    }
                    continue;
                }
            };
            if !first {
                self.health.send_modify(|h| h.reopens += 1);
            }
            first = false;
            info!("lock board port open");
            self.health.send_modify(|h| {
                h.connected = true;
                h.last_error = None;
                h.consecutive_timeouts = 0;
            });
            let _ = self.events.send(BoardEvent::Connected);

            let (read_half, write_half) = tokio::io::split(stream);
            let (line_tx, lines) = mpsc::channel(64);
            let reader = tokio::spawn(read_lines(read_half, line_tx).in_current_span());
            let ended = self.serve(write_half, lines).await;
            reader.abort();
            match ended {
                Ended::Stop => return,
                Ended::Lost(reason) => {
                    warn!(%reason, "lock board connection lost; reopening");
                    self.health.send_modify(|h| {
                        h.connected = false;
                        h.last_error = Some(reason.clone());
                    });
                    let _ = self.events.send(BoardEvent::Disconnected {
                        reason: reason.clone(),
                    });
                    if !self
                        .refuse_until(Instant::now() + self.cfg.reopen_interval, &reason)
                        .await
                    {
                        return;
                    }
                }
            }
        }
    }

    /// While the port is closed, answer every request at once rather than let callers hang.
    /// Returns false when every handle has been dropped.
    async fn refuse_until(&mut self, until: Instant, why: &str) -> bool {
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                req = self.rx.recv() => match req {
                    Some(req) => {
                        let _ = req.reply.send(Err(BoardError::Unavailable(why.to_owned())));
                    }
                    None => return false,
                },
            }
        }
    }

    async fn serve<W: AsyncWrite + Unpin>(
        &mut self,
        mut writer: W,
        mut lines: mpsc::Receiver<Line>,
    ) -> Ended {
        loop {
            tokio::select! {
                req = self.rx.recv() => {
                    let Some(req) = req else { return Ended::Stop };
                    let (result, ended) = self.execute(&mut writer, &mut lines, req.command).await;
                    let _ = req.reply.send(result);
                    if let Some(ended) = ended {
                        return ended;
                    }
                }
                line = lines.recv() => match line {
                    Some(line) => self.unsolicited(line),
                    None => return Ended::Lost("port closed (read error or unplugged)".into()),
                },
            }
        }
    }

    /// Sends one command and waits for its reply. A `BAD_COMMAND` with no echo means the board
    /// did not understand the line (noise on the wire), and a `READY` means it rebooted: either
    /// way the command is sent once more.
    async fn execute<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
        lines: &mut mpsc::Receiver<Line>,
        command: BoardCommand,
    ) -> (Result<BoardReply, BoardError>, Option<Ended>) {
        let mut resent = false;
        loop {
            let (result, ended) = self.exchange(writer, lines, command).await;
            match &result {
                Err(BoardError::Refused {
                    code: BoardErrorCode::BadCommand,
                    message,
                    ..
                }) if !resent && message == UNECHOED => {
                    warn!(%command, "board did not understand the command; sending it again");
                    resent = true;
                    continue;
                }
                // The board (re)started while we waited: a command sent during its boot is lost,
                // and we cannot tell whether it got ours. Every command is idempotent (pulling a
                // pulled bolt is a no-op), so ask once more for a definite answer.
                Err(BoardError::Reset { .. }) if !resent => {
                    warn!(%command, "board restarted during the command; sending it again");
                    resent = true;
                    continue;
                }
                _ => return (result, ended),
            }
        }
    }

    async fn exchange<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
        lines: &mut mpsc::Receiver<Line>,
        command: BoardCommand,
    ) -> (Result<BoardReply, BoardError>, Option<Ended>) {
        let timeout = match command {
            BoardCommand::Status => self.cfg.status_timeout,
            BoardCommand::Open(_) | BoardCommand::Close(_) => self.cfg.travel_timeout,
        };
        let started = Instant::now();
        debug!(%command, "sending");
        let write = async {
            writer.write_all(command.encode().as_bytes()).await?;
            writer.flush().await
        };
        match tokio::time::timeout(self.cfg.status_timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let reason = format!("write failed: {e}");
                return (
                    Err(BoardError::Disconnected {
                        command,
                        reason: reason.clone(),
                    }),
                    Some(Ended::Lost(reason)),
                );
            }
            Err(_) => {
                let reason = "write blocked (board not reading)".to_owned();
                return (
                    Err(BoardError::Disconnected {
                        command,
                        reason: reason.clone(),
                    }),
                    Some(Ended::Lost(reason)),
                );
            }
        }
        let deadline = started + timeout;
        loop {
            let line = match tokio::time::timeout_at(deadline, lines.recv()).await {
                Err(_) => return self.timed_out(command, timeout),
                Ok(None) => {
                    let reason = "port closed (read error or unplugged)".to_owned();
                    return (
                        Err(BoardError::Disconnected {
                            command,
                            reason: reason.clone(),
                        }),
                        Some(Ended::Lost(reason)),
                    );
                }
                Ok(Some(line)) => line,
            };
            let reply = match line {
                Ok(reply) => reply,
                Err(e) => {
                    self.garbage(&e);
                    continue;
                }
            };
            if reply.answers(&command) {
                let elapsed = started.elapsed();
                self.health.send_modify(|h| {
                    h.consecutive_timeouts = 0;
                    h.last_error = None;
                });
                debug!(%command, %reply, ?elapsed, "answered");
                return match reply {
                    BoardReply::Err {
                        command: echoed,
                        code,
                        message,
                    } => (
                        Err(BoardError::Refused {
                            command,
                            code,
                            message: if echoed.is_none() {
                                UNECHOED.to_owned()
                            } else {
                                message
                            },
                        }),
                        None,
                    ),
                    BoardReply::Status(cells) => {
                        let _ = self.events.send(BoardEvent::Status(cells.clone()));
                        (Ok(BoardReply::Status(cells)), None)
                    }
                    other => (Ok(other), None),
                };
            }
            if let BoardReply::Ready { firmware, reason } = &reply {
                // The board rebooted: whatever it was doing for us is lost, and its bolts are in
                // their power-on state. Say so rather than keep waiting.
                self.ready(firmware, *reason);
                return (
                    Err(BoardError::Reset {
                        command,
                        firmware: firmware.clone(),
                    }),
                    None,
                );
            }
            self.unsolicited(Ok(reply));
        }
    }

    fn timed_out(
        &mut self,
        command: BoardCommand,
        after: Duration,
    ) -> (Result<BoardReply, BoardError>, Option<Ended>) {
        let mut count = 0;
        self.health.send_modify(|h| {
            h.consecutive_timeouts += 1;
            count = h.consecutive_timeouts;
            h.last_error = Some(format!("no answer to {command} within {after:?}"));
        });
        warn!(%command, ?after, consecutive = count, "lock board did not answer");
        let ended = (count >= self.cfg.max_timeouts.max(1))
            .then(|| Ended::Lost(format!("{count} commands in a row went unanswered")));
        (Err(BoardError::Timeout { command, after }), ended)
    }

    fn garbage(&mut self, e: &LineError) {
        warn!(error = %e, "lock board sent a line that is not in the protocol");
        self.health.send_modify(|h| h.garbage_lines += 1);
        let _ = self.events.send(BoardEvent::Garbage {
            error: e.to_string(),
        });
    }

    fn ready(&mut self, firmware: &str, reason: Option<ResetReason>) {
        let why = reason.map(ResetReason::as_str).unwrap_or("not given");
        if reason == Some(ResetReason::Watchdog) {
            // The firmware hung and its watchdog restarted it: a bug on the board to look into.
            warn!(
                firmware,
                reason = why,
                "lock board restarted by its watchdog"
            );
        } else {
            info!(firmware, reason = why, "lock board (re)started");
        }
        self.health.send_modify(|h| {
            h.firmware = Some(firmware.to_owned());
            h.last_reset = reason;
        });
        let _ = self.events.send(BoardEvent::Ready {
            firmware: firmware.to_owned(),
            reason,
        });
    }

    fn unsolicited(&mut self, line: Line) {
        match line {
            Err(e) => self.garbage(&e),
            Ok(BoardReply::Door { cell, door }) => {
                debug!(%cell, ?door, "door sensor changed");
                let _ = self.events.send(BoardEvent::Door { cell, door });
            }
            Ok(BoardReply::Ready { firmware, reason }) => self.ready(&firmware, reason),
            Ok(other) => {
                // A reply to a command that already timed out. It is never paired with a later
                // command (pairing is by echo); the caller's next STATUS shows its effect.
                warn!(reply = %other, "late or unexpected reply from the lock board");
            }
        }
    }
}

/// The message we put on a `BAD_COMMAND` that echoed no command (`ERR - BAD_COMMAND`).
const UNECHOED: &str = "board could not parse the line it received";

/// Splits the byte stream into lines and parses them. Over-long lines are cut and reported as
/// garbage rather than buffered without bound. Ends (dropping `tx`) on EOF or a read error.
async fn read_lines<R: AsyncRead>(reader: R, tx: mpsc::Sender<Line>) {
    let mut reader = std::pin::pin!(reader);
    let mut buf = [0u8; 256];
    let mut line: Vec<u8> = Vec::with_capacity(MAX_LINE + 2);
    let mut overflow = false;
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) => {
                debug!("lock board port reached end of file");
                return;
            }
            Ok(n) => n,
            Err(e) => {
                debug!(error = %e, "lock board port read failed");
                return;
            }
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                let parsed = if overflow {
                    BoardReply::parse(&"X".repeat(MAX_LINE + 1))
                } else {
                    let text = String::from_utf8_lossy(&line);
                    if text.trim_end_matches('\r').is_empty() {
                        line.clear();
                        continue;
                    }
                    BoardReply::parse(&text)
                };
                line.clear();
                overflow = false;
                if tx.send(parsed).await.is_err() {
                    return;
                }
            } else if line.len() <= MAX_LINE + 1 {
                line.push(b);
            } else {
                overflow = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    fn cell(n: u16) -> CellNumber {
        CellNumber::new(n).unwrap()
    }

    /// A board on an in-memory pipe, scripted line by line (the pty tests live in locker-agent).
    async fn scripted() -> (SerialLockBoard, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(4096);
        let slot = std::sync::Mutex::new(Some(ours));
        let mut cfg = SerialLockBoardConfig::new("/dev/null");
        cfg.travel_timeout = Duration::from_millis(300);
        cfg.status_timeout = Duration::from_millis(300);
        cfg.reopen_interval = Duration::from_millis(50);
        let board = SerialLockBoard::spawn_with(cfg, move |_| {
            slot.lock()
                .unwrap()
                .take()
                .ok_or_else(|| std::io::Error::other("already taken"))
        });
        let mut health = board.health();
        health.wait_for(|h| h.connected).await.unwrap();
        (board, theirs)
    }

    #[tokio::test]
    async fn pairs_replies_by_echo_and_skips_noise() {
        let (board, theirs) = scripted().await;
        let (r, mut w) = tokio::io::split(theirs);
        let mut r = BufReader::new(r).lines();
        let task = tokio::spawn({
            let board = board.clone();
            async move { board.open(cell(5)).await }
        });
        assert_eq!(r.next_line().await.unwrap().unwrap(), "OPEN_5");
        w.write_all(b"OK OPEN_3\r\n\xff\xfegarbage\r\nDOOR 2 OPEN\r\nOK OPEN_5\r\n")
            .await
            .unwrap();
        assert_eq!(task.await.unwrap(), Ok(()));
        assert_eq!(board.health().borrow().garbage_lines, 1);
    }

    #[tokio::test]
    async fn silence_is_a_timeout_and_refusal_is_reported() {
        let (board, theirs) = scripted().await;
        let (r, mut w) = tokio::io::split(theirs);
        let mut r = BufReader::new(r).lines();
        let err = board.status().await.unwrap_err();
        assert!(matches!(err, BoardError::Timeout { .. }), "{err}");
        assert_eq!(r.next_line().await.unwrap().unwrap(), "STATUS");
        let task = tokio::spawn({
            let board = board.clone();
            async move { board.close(cell(2)).await }
        });
        assert_eq!(r.next_line().await.unwrap().unwrap(), "CLOSE_2");
        w.write_all(b"ERR CLOSE_2 DOOR_OPEN door is open\n")
            .await
            .unwrap();
        let err = task.await.unwrap().unwrap_err();
        assert!(err.is_refusal(), "{err}");
    }
}
