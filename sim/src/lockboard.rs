//! A simulated Arduino lock board on a pseudo-terminal.
//!
//! The agent opens the pty's slave side as a serial port, exactly as it opens `/dev/ttyUSB0` on a
//! locker, so the driver under test is the field driver. The board speaks
//! [`protocol::lockboard`]: `READY` on power-up, `OK`/`ERR` after each command, `STATUS` with
//! every cell, unsolicited `DOOR <n> OPEN|CLOSED` when a door sensor changes.
//!
//! What it models, and why:
//! - **Bolts take time to move** (`travel`), and the board reads nothing while one moves, like the
//!   seed's firmware that blocks for ~11 s: a second command waits in the serial buffer.
//! - **Doors move only when someone moves them**: a test (or a person at the control prompt)
//!   opens a door, which only works once its bolt is pulled, and closes it. `CLOSE_<n>` with the
//!   door open is refused with `DOOR_OPEN`.
//! - **A stable path**: the pty's name changes every time it is created, so the board publishes a
//!   symlink (like udev's `/dev/serial/by-id/...`); unplugging removes it, replugging points it at
//!   a fresh pty. The agent is configured with the symlink.
//! - **Faults** ([`Fault`]): silence, garbage instead of replies, noise before replies, extra
//!   delay, a jammed bolt; plus unplug/replug and reboot (`READY` mid-command).
//!
//! Control, in-process: the [`SimBoard`] methods. Out of process (`sim lockboard`): one command
//! per line on stdin, or on a Unix socket given with `--control`; see [`SimBoard::control_line`]
//! for the words (`door 3 open`, `fault silence`, `unplug`, `status`, ...).

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
use protocol::lockboard::{
    BoardCommand, BoardErrorCode, BoardReply, BoltState, CellNumber, CellStatus, DoorState,
    ResetReason,
};
use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Firmware string the simulated board announces in `READY`.
pub const FIRMWARE: &str = "skypost-sim-lockboard/1";

#[derive(Debug, Clone)]
pub struct SimBoardConfig {
    /// Cells 1..=cells.
    pub cells: u8,
    /// How long a bolt takes to move (the seed's hardware: ~11 s; tests: a few ms).
    pub travel: Duration,
    /// Where to publish the symlink to the pty's slave side.
    pub link: PathBuf,
}

/// A misbehaviour to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// Reads commands, answers nothing, reports no door changes.
    Silence,
    /// Answers every command with a line of noise instead of its reply.
    Garbage,
    /// Sends a line of noise before every reply (the reply itself is good).
    Noise,
    /// Every reply comes this much later.
    Delay(Duration),
    /// This cell's bolt does not move: `ERR OPEN_<n> JAMMED` after the travel time.
    Jam(u8),
}

/// What the board looks like now; published after every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoardSnapshot {
    pub bolts: Vec<BoltState>,
    pub doors: Vec<DoorState>,
    pub fault: Fault,
    pub plugged: bool,
    /// Every line received, in order (as text, garbage included).
    pub received: Vec<String>,
    /// Every bolt that was pulled, in order: a test checks no wrong cell was ever opened.
    pub unlocked: Vec<u8>,
    /// Path of the current pty slave (changes on replug).
    pub tty: Option<PathBuf>,
}

impl BoardSnapshot {
    pub fn bolt(&self, cell: u8) -> Option<BoltState> {
        self.bolts.get(usize::from(cell).checked_sub(1)?).copied()
    }
    pub fn door(&self, cell: u8) -> Option<DoorState> {
        self.doors.get(usize::from(cell).checked_sub(1)?).copied()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("no cell {0}")]
    NoSuchCell(u8),
    #[error("cell {0}'s bolt is locked: the door cannot open")]
    Locked(u8),
    #[error("the board is unplugged")]
    Unplugged,
    #[error("the board is already plugged in")]
    AlreadyPlugged,
    #[error("pty: {0}")]
    Io(String),
    #[error("the simulated board has stopped")]
    Stopped,
}

enum Ctl {
    Door(u8, DoorState, oneshot::Sender<Result<(), SimError>>),
    Fault(Fault),
    Unplug(oneshot::Sender<Result<(), SimError>>),
    Replug(oneshot::Sender<Result<(), SimError>>),
    Reset,
}

/// Handle on a running simulated board. Dropping every handle stops it and removes the symlink.
#[derive(Clone)]
pub struct SimBoard {
    ctl: mpsc::Sender<Ctl>,
    state: watch::Receiver<BoardSnapshot>,
    link: PathBuf,
}

impl SimBoard {
    /// Creates the pty, publishes the symlink and starts the board (it says `READY` at once).
    pub fn start(cfg: SimBoardConfig) -> Result<SimBoard, SimError> {
        let cells = usize::from(cfg.cells);
        let pty = Pty::create(&cfg.link)?;
        let snapshot = BoardSnapshot {
            bolts: vec![BoltState::Locked; cells],
            doors: vec![DoorState::Closed; cells],
            plugged: true,
            tty: Some(pty.tty.clone()),
            ..Default::default()
        };
        let (state_tx, state) = watch::channel(snapshot.clone());
        let (ctl, ctl_rx) = mpsc::channel(16);
        let link = cfg.link.clone();
        let board = Board {
            cfg,
            s: snapshot,
            state: state_tx,
            busy: None,
            inbox: VecDeque::new(),
            partial: Vec::new(),
        };
        info!(link = %link.display(), tty = %pty.tty.display(), cells, "simulated lock board on a pty");
        board.write(
            &mut Some(&pty),
            &BoardReply::Ready {
                firmware: FIRMWARE.into(),
                reason: Some(ResetReason::PowerOn),
            },
        );
        tokio::spawn(board.run(Some(pty), ctl_rx));
        Ok(SimBoard { ctl, state, link })
    }

    /// The stable path the agent opens (the symlink).
    pub fn path(&self) -> &Path {
        &self.link
    }

    pub fn snapshot(&self) -> BoardSnapshot {
        self.state.borrow().clone()
    }

    /// Changes as they happen; `wait_for` on it is how tests wait for the board.
    pub fn watch(&self) -> watch::Receiver<BoardSnapshot> {
        self.state.clone()
    }

    pub async fn open_door(&self, cell: u8) -> Result<(), SimError> {
        self.door(cell, DoorState::Open).await
    }

    pub async fn close_door(&self, cell: u8) -> Result<(), SimError> {
        self.door(cell, DoorState::Closed).await
    }

    async fn door(&self, cell: u8, door: DoorState) -> Result<(), SimError> {
        let (tx, rx) = oneshot::channel();
        self.send(Ctl::Door(cell, door, tx)).await?;
        rx.await.map_err(|_| SimError::Stopped)?
    }

    pub async fn set_fault(&self, fault: Fault) -> Result<(), SimError> {
        self.send(Ctl::Fault(fault)).await
    }

    /// Pulls the USB cable: the pty closes (the agent's reads fail) and the symlink disappears.
    pub async fn unplug(&self) -> Result<(), SimError> {
        let (tx, rx) = oneshot::channel();
        self.send(Ctl::Unplug(tx)).await?;
        rx.await.map_err(|_| SimError::Stopped)?
    }

    /// Plugs it back: a new pty behind the same symlink, and the board boots (`READY`).
    pub async fn replug(&self) -> Result<(), SimError> {
        let (tx, rx) = oneshot::channel();
        self.send(Ctl::Replug(tx)).await?;
        rx.await.map_err(|_| SimError::Stopped)?
    }

    /// The board reboots: whatever it was doing is dropped and it says `READY`.
    pub async fn reset(&self) -> Result<(), SimError> {
        self.send(Ctl::Reset).await
    }

    async fn send(&self, c: Ctl) -> Result<(), SimError> {
        self.ctl.send(c).await.map_err(|_| SimError::Stopped)
    }

    /// One control command in words; the answer starts with `ok` or `err`.
    ///
    /// | line | does |
    /// |---|---|
    /// | `door <n> open` / `door <n> close` | a person opens or closes door `n` |
    /// | `fault none\|silence\|garbage\|noise` | set the fault mode |
    /// | `fault delay <ms>` / `fault jam <n>` | replies late / cell `n`'s bolt is stuck |
    /// | `unplug` / `replug` / `reset` | cable out, cable in, reboot |
    /// | `status` | `ok bolts=LLU doors=CCO plugged=true tty=/dev/pts/7` |
    pub async fn control_line(&self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        let result = match words.as_slice() {
            ["door", n, "open"] => match n.parse() {
                Ok(n) => self.open_door(n).await.map(|_| String::new()),
                Err(_) => return format!("err bad cell number {n:?}"),
            },
            ["door", n, "close"] => match n.parse() {
                Ok(n) => self.close_door(n).await.map(|_| String::new()),
                Err(_) => return format!("err bad cell number {n:?}"),
            },
            ["fault", rest @ ..] => {
                let fault = match rest {
                    ["none"] => Fault::None,
                    ["silence"] => Fault::Silence,
                    ["garbage"] => Fault::Garbage,
                    ["noise"] => Fault::Noise,
                    ["delay", ms] => match ms.parse() {
                        Ok(ms) => Fault::Delay(Duration::from_millis(ms)),
                        Err(_) => return format!("err bad delay {ms:?}"),
                    },
                    ["jam", n] => match n.parse() {
                        Ok(n) => Fault::Jam(n),
                        Err(_) => return format!("err bad cell number {n:?}"),
                    },
                    _ => return "err fault none|silence|garbage|noise|delay <ms>|jam <n>".into(),
                };
                self.set_fault(fault).await.map(|_| String::new())
            }
            ["unplug"] => self.unplug().await.map(|_| String::new()),
            ["replug"] => self.replug().await.map(|_| String::new()),
            ["reset"] => self.reset().await.map(|_| String::new()),
            ["status"] => {
                let s = self.snapshot();
                let bolts: String = s
                    .bolts
                    .iter()
                    .map(|b| if *b == BoltState::Locked { 'L' } else { 'U' })
                    .collect();
                let doors: String = s
                    .doors
                    .iter()
                    .map(|d| if *d == DoorState::Closed { 'C' } else { 'O' })
                    .collect();
                let tty = s
                    .tty
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "-".into());
                Ok(format!(
                    "bolts={bolts} doors={doors} plugged={} fault={:?} tty={tty}",
                    s.plugged, s.fault
                ))
            }
            _ => return format!("err unknown control command {line:?}"),
        };
        match result {
            Ok(s) if s.is_empty() => "ok".into(),
            Ok(s) => format!("ok {s}"),
            Err(e) => format!("err {e}"),
        }
    }
}

/// The pty: the master side the board reads and writes, and a slave fd the board keeps open
/// itself so that the master never sees a hang-up while the agent is reopening its side.
struct Pty {
    master: AsyncFd<OwnedFd>,
    _keepalive: OwnedFd,
    tty: PathBuf,
    link: PathBuf,
}

impl Pty {
    fn create(link: &Path) -> Result<Pty, SimError> {
        let io = |e: nix::Error| SimError::Io(e.to_string());
        let pty = nix::pty::openpty(None, None).map_err(io)?;
        // Raw mode from the start: no echo, no CR/LF translation, no line editing, as a UART.
        let mut t = tcgetattr(&pty.slave).map_err(io)?;
        cfmakeraw(&mut t);
        tcsetattr(&pty.slave, SetArg::TCSANOW, &t).map_err(io)?;
        let tty = nix::unistd::ttyname(pty.slave.as_fd()).map_err(io)?;
        let flags = fcntl(&pty.master, FcntlArg::F_GETFL).map_err(io)?;
        fcntl(
            &pty.master,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        )
        .map_err(io)?;
        // Publish atomically: a symlink beside the final name, renamed over it.
        let tmp = link.with_extension("new-link");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&tty, &tmp).map_err(|e| SimError::Io(e.to_string()))?;
        std::fs::rename(&tmp, link).map_err(|e| SimError::Io(e.to_string()))?;
        // SAFETY: `pty.master` is an `OwnedFd` moved into the `AsyncFd`: nothing else can close
        // or reuse the descriptor while it is registered.
        let master =
            unsafe { AsyncFd::register(pty.master) }.map_err(|e| SimError::Io(e.to_string()))?;
        Ok(Pty {
            master,
            _keepalive: pty.slave,
            tty,
            link: link.to_owned(),
        })
    }

    fn unpublish(&self) {
        // Only remove the link if it still points at this pty (a replug may have replaced it).
        if std::fs::read_link(&self.link).ok().as_deref() == Some(self.tty.as_path()) {
            let _ = std::fs::remove_file(&self.link);
        }
    }

    async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.master.readable().await?;
            match guard
                .try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(std::io::Error::from))
            {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    fn write(&self, bytes: &[u8]) {
        // Non-blocking: if nobody drains the pty, output is lost, as on a UART nobody listens to.
        if let Err(e) = nix::unistd::write(self.master.get_ref(), bytes) {
            debug!(error = %e, "pty write dropped");
        }
    }
}

/// A command being carried out (the board reads nothing meanwhile).
struct Busy {
    until: Instant,
    command: BoardCommand,
}

struct Board {
    cfg: SimBoardConfig,
    s: BoardSnapshot,
    state: watch::Sender<BoardSnapshot>,
    busy: Option<Busy>,
    inbox: VecDeque<String>,
    partial: Vec<u8>,
}

enum Wake {
    Ctl(Option<Ctl>),
    Read(std::io::Result<Vec<u8>>),
    Done,
}

impl Board {
    async fn run(mut self, mut pty: Option<Pty>, mut ctl: mpsc::Receiver<Ctl>) {
        loop {
            let busy_until = self.busy.as_ref().map(|b| b.until);
            let wake = tokio::select! {
                c = ctl.recv() => Wake::Ctl(c),
                r = read_some(pty.as_ref()) => Wake::Read(r),
                _ = sleep_until_opt(busy_until) => Wake::Done,
            };
            match wake {
                Wake::Ctl(None) => break,
                Wake::Ctl(Some(c)) => self.control(c, &mut pty),
                Wake::Read(Ok(bytes)) => self.bytes(&bytes),
                Wake::Read(Err(e)) => {
                    warn!(error = %e, "pty read failed");
                    // Keep running: the keepalive slave fd means this should not happen; if it
                    // does, treat the cable as pulled.
                    if let Some(p) = pty.take() {
                        p.unpublish();
                    }
                    self.s.plugged = false;
                    self.s.tty = None;
                }
                Wake::Done => self.finish(&mut pty.as_ref()),
            }
            // Like the firmware's loop(): read the next command only when not moving a bolt.
            while self.busy.is_none() {
                let Some(line) = self.inbox.pop_front() else {
                    break;
                };
                self.command(&line, &mut pty.as_ref());
            }
            self.publish();
        }
        if let Some(p) = pty {
            p.unpublish();
        }
    }

    fn publish(&self) {
        if *self.state.borrow() != self.s {
            self.state.send_replace(self.s.clone());
        }
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                if !self.partial.is_empty() {
                    let line = String::from_utf8_lossy(&self.partial).into_owned();
                    self.partial.clear();
                    self.s.received.push(line.clone());
                    self.inbox.push_back(line);
                }
            } else if self.partial.len() < 1024 {
                self.partial.push(b);
            }
        }
    }

    fn cell_index(&self, cell: CellNumber) -> Option<usize> {
        let i = usize::from(cell.get()).checked_sub(1)?;
        (i < self.s.bolts.len()).then_some(i)
    }

    fn command(&mut self, line: &str, pty: &mut Option<&Pty>) {
        if self.s.fault == Fault::Silence {
            debug!(line, "silent board swallowed a command");
            return;
        }
        let command = match BoardCommand::parse(line) {
            Ok(c) => c,
            Err(e) => {
                self.write(
                    pty,
                    &BoardReply::Err {
                        command: None,
                        code: BoardErrorCode::BadCommand,
                        message: e.kind.to_string(),
                    },
                );
                return;
            }
        };
        let delay = match self.s.fault {
            Fault::Delay(d) => d,
            _ => Duration::ZERO,
        };
        match command {
            BoardCommand::Status if delay.is_zero() => {
                let status = self.status();
                self.write(pty, &status);
            }
            BoardCommand::Status => {
                self.busy = Some(Busy {
                    until: Instant::now() + delay,
                    command,
                });
            }
            BoardCommand::Open(cell) | BoardCommand::Close(cell) => {
                let Some(i) = self.cell_index(cell) else {
                    self.write(
                        pty,
                        &BoardReply::Err {
                            command: Some(command),
                            code: BoardErrorCode::BadCell,
                            message: format!("board has {} cells", self.s.bolts.len()),
                        },
                    );
                    return;
                };
                if matches!(command, BoardCommand::Close(_)) && self.s.doors[i] == DoorState::Open {
                    self.write(
                        pty,
                        &BoardReply::Err {
                            command: Some(command),
                            code: BoardErrorCode::DoorOpen,
                            message: "close the door first".into(),
                        },
                    );
                    return;
                }
                self.busy = Some(Busy {
                    until: Instant::now() + self.cfg.travel + delay,
                    command,
                });
            }
        }
    }

    /// The bolt reached its end stop (or did not: jammed); answer the command.
    fn finish(&mut self, pty: &mut Option<&Pty>) {
        let Some(busy) = self.busy.take() else {
            return;
        };
        let reply = match busy.command {
            BoardCommand::Status => self.status(),
            BoardCommand::Open(cell) | BoardCommand::Close(cell) => {
                let Some(i) = self.cell_index(cell) else {
                    return;
                };
                let jammed = matches!(self.s.fault, Fault::Jam(n) if u16::from(n) == cell.get());
                if jammed {
                    BoardReply::Err {
                        command: Some(busy.command),
                        code: BoardErrorCode::Jammed,
                        message: "bolt did not reach its end stop".into(),
                    }
                } else {
                    if matches!(busy.command, BoardCommand::Open(_)) {
                        self.s.bolts[i] = BoltState::Unlocked;
                        self.s.unlocked.push(cell.get() as u8);
                    } else {
                        self.s.bolts[i] = BoltState::Locked;
                    }
                    BoardReply::Ok(busy.command)
                }
            }
        };
        self.write(pty, &reply);
    }

    fn status(&self) -> BoardReply {
        BoardReply::Status(
            self.s
                .bolts
                .iter()
                .zip(&self.s.doors)
                .enumerate()
                .filter_map(|(i, (bolt, door))| {
                    Some(CellStatus {
                        cell: CellNumber::new(u16::try_from(i + 1).ok()?).ok()?,
                        bolt: *bolt,
                        door: *door,
                    })
                })
                .collect(),
        )
    }

    fn write(&self, pty: &mut Option<&Pty>, reply: &BoardReply) {
        let Some(pty) = pty else { return };
        match self.s.fault {
            Fault::Silence => {}
            Fault::Garbage if !matches!(reply, BoardReply::Ready { .. }) => {
                pty.write(b"\xfe\x13OK OPEN_\x00\x7f#?\r\n");
            }
            Fault::Noise => {
                pty.write(b"~~\xff\x01 line noise \x80\r\n");
                pty.write(reply.encode().as_bytes());
            }
            _ => pty.write(reply.encode().as_bytes()),
        }
    }

    fn control(&mut self, c: Ctl, pty: &mut Option<Pty>) {
        match c {
            Ctl::Door(cell, door, reply) => {
                let i = usize::from(cell).wrapping_sub(1);
                let r = if i >= self.s.doors.len() {
                    Err(SimError::NoSuchCell(cell))
                } else if door == DoorState::Open && self.s.bolts[i] == BoltState::Locked {
                    Err(SimError::Locked(cell))
                } else {
                    if self.s.doors[i] != door {
                        self.s.doors[i] = door;
                        if let Ok(n) = CellNumber::new(u16::from(cell)) {
                            self.write(&mut pty.as_ref(), &BoardReply::Door { cell: n, door });
                        }
                    }
                    Ok(())
                };
                // Publish before answering: a caller that awaited the change sees it in the snapshot.
                self.publish();
                let _ = reply.send(r);
            }
            Ctl::Fault(f) => {
                info!(fault = ?f, "fault injected");
                self.s.fault = f;
            }
            Ctl::Unplug(reply) => {
                let r = match pty.take() {
                    Some(p) => {
                        info!("unplugged");
                        p.unpublish();
                        self.busy = None;
                        self.inbox.clear();
                        self.partial.clear();
                        self.s.plugged = false;
                        self.s.tty = None;
                        Ok(())
                    }
                    None => Err(SimError::Unplugged),
                };
                // Publish before answering: a caller that awaited the change sees it in the snapshot.
                self.publish();
                let _ = reply.send(r);
            }
            Ctl::Replug(reply) => {
                let r = if pty.is_some() {
                    Err(SimError::AlreadyPlugged)
                } else {
                    Pty::create(&self.cfg.link).map(|p| {
                        info!(tty = %p.tty.display(), "plugged back in");
                        self.s.plugged = true;
                        self.s.tty = Some(p.tty.clone());
                        *pty = Some(p);
                        self.write(
                            &mut pty.as_ref(),
                            // opening the port pulses DTR, which resets an Uno
                            &BoardReply::Ready {
                                firmware: FIRMWARE.into(),
                                reason: Some(ResetReason::External),
                            },
                        );
                    })
                };
                // Publish before answering: a caller that awaited the change sees it in the snapshot.
                self.publish();
                let _ = reply.send(r);
            }
            Ctl::Reset => {
                info!("board reset");
                self.busy = None;
                self.inbox.clear();
                self.write(
                    &mut pty.as_ref(),
                    &BoardReply::Ready {
                        firmware: FIRMWARE.into(),
                        reason: Some(ResetReason::External),
                    },
                );
            }
        }
    }
}

async fn read_some(pty: Option<&Pty>) -> std::io::Result<Vec<u8>> {
    match pty {
        None => std::future::pending().await,
        Some(p) => {
            let mut buf = [0u8; 256];
            let n = p.read(&mut buf).await?;
            Ok(buf[..n].to_vec())
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// `sim lockboard`: run a simulated board until stdin closes or Ctrl-C.
#[derive(Debug, Clone, clap::Args)]
pub struct LockboardArgs {
    /// Number of cells.
    #[arg(long, default_value_t = 8)]
    pub cells: u8,
    /// Bolt travel time in milliseconds (the seed's locks: about 11000).
    #[arg(long, default_value_t = 500)]
    pub travel_ms: u64,
    /// Symlink to publish for the pty (configure the agent's `board.path` with it).
    #[arg(long, default_value = "/tmp/skypost-lockboard")]
    pub link: PathBuf,
    /// Also accept control lines on this Unix socket (one connection at a time per line).
    #[arg(long)]
    pub control: Option<PathBuf>,
}

/// Runs `sim lockboard`: prints `LOCKBOARD_PATH=<link>` on stdout, then answers control lines
/// from stdin (and the control socket) until stdin closes or SIGINT/SIGTERM.
pub async fn run(args: LockboardArgs) -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let board = SimBoard::start(SimBoardConfig {
        cells: args.cells,
        travel: Duration::from_millis(args.travel_ms),
        link: args.link.clone(),
    })?;
    println!("LOCKBOARD_PATH={}", args.link.display());
    if let Some(tty) = board.snapshot().tty {
        println!("LOCKBOARD_TTY={}", tty.display());
    }
    if let Some(sock) = &args.control {
        let _ = std::fs::remove_file(sock);
        let listener = tokio::net::UnixListener::bind(sock)?;
        println!("LOCKBOARD_CONTROL={}", sock.display());
        let b = board.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let b = b.clone();
                tokio::spawn(async move {
                    let (r, mut w) = stream.into_split();
                    let mut lines = BufReader::new(r).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let answer = b.control_line(&line).await;
                        if w.write_all(format!("{answer}\n").as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
    }
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            line = stdin.next_line() => match line? {
                Some(line) if line.trim().is_empty() => {}
                Some(line) => println!("{}", board.control_line(&line).await),
                // stdin closed: a script piping commands in is done; keep serving until a signal.
                None => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => break,
                        _ = term.recv() => break,
                    }
                }
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    if let Some(sock) = &args.control {
        let _ = std::fs::remove_file(sock);
    }
    let _ = std::fs::remove_file(&args.link);
    Ok(())
}
