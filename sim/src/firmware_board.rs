//! The lock board's own firmware (`locker-agent/firmware/`) on an emulated ATmega328P: the same
//! role as [`crate::lockboard::SimBoard`], but the other side of the wire is the AVR machine code
//! that ships on the board, not our Rust idea of it.
//!
//! [`FirmwareBoard`] starts `lockboard-harness` (C, simavr; built by the firmware's Makefile) as a
//! child process. The harness emulates the MCU and the board around it (shift registers, bolt
//! motors with end stops, door switches), shows UART0 as a pty behind a stable symlink, takes the
//! same control words as `sim lockboard` on a Unix socket (plus `hang` and `garble`), and prints
//! one `EVENT` line per thing that happened, which [`FirmwareBoard::watch`] turns into a
//! [`FirmwareSnapshot`] that tests wait on.
//!
//! Where the build lives: [`firmware_dir`] (`locker-agent/firmware/build/`, or
//! `$SKYPOST_LOCKBOARD_FIRMWARE_DIR`); [`ensure_built`] runs `make` there when it is missing.

use protocol::lockboard::{BoltState, DoorState};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// Cells on the firmware's board.
pub const CELLS: usize = 16;

#[derive(Debug, Clone, thiserror::Error)]
pub enum FirmwareError {
    #[error("cannot build the lock board firmware and harness: {0}")]
    Build(String),
    #[error("lockboard-harness: {0}")]
    Harness(String),
    #[error("control `{line}` refused: {answer}")]
    Refused { line: String, answer: String },
}

/// Where `make` in `locker-agent/firmware/` puts `lockboard.elf` and `lockboard-harness`.
pub fn firmware_dir() -> PathBuf {
    match std::env::var_os("SKYPOST_LOCKBOARD_FIRMWARE_DIR") {
        Some(d) => PathBuf::from(d),
        None => source_dir().join("build"),
    }
}

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../locker-agent/firmware")
}

/// The firmware's ELF and the harness binary, built if missing (once per process). Fails, never
/// falls back to anything, when the AVR toolchain or simavr is not installed.
pub fn ensure_built() -> Result<(PathBuf, PathBuf), FirmwareError> {
    static BUILT: OnceLock<Result<(), FirmwareError>> = OnceLock::new();
    let dir = firmware_dir();
    let (elf, harness) = (dir.join("lockboard.elf"), dir.join("lockboard-harness"));
    if !(elf.exists() && harness.exists()) {
        BUILT
            .get_or_init(|| {
                let dir = std::path::absolute(&dir).unwrap_or_else(|_| dir.clone());
                let out = std::process::Command::new("make")
                    .arg("-C")
                    .arg(source_dir())
                    .arg(format!("BUILD={}", dir.display()))
                    .output()
                    .map_err(|e| FirmwareError::Build(format!("make: {e}")))?;
                if out.status.success() {
                    Ok(())
                } else {
                    let err = String::from_utf8_lossy(&out.stderr);
                    let tail: Vec<&str> = err.lines().rev().take(5).collect();
                    Err(FirmwareError::Build(
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
                    ))
                }
            })
            .clone()?;
        if !(elf.exists() && harness.exists()) {
            return Err(FirmwareError::Build(format!(
                "make ran but {} or {} is missing",
                elf.display(),
                harness.display()
            )));
        }
    }
    Ok((elf, harness))
}

/// A bolt as the harness's mechanics see it (not as the firmware reports it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bolt {
    Locked,
    Moving,
    Unlocked,
}

/// Everything the harness reported so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareSnapshot {
    pub bolts: Vec<Bolt>,
    pub doors: Vec<DoorState>,
    /// Every line the board's UART received, in order (non-printable bytes as `?`).
    pub received: Vec<String>,
    /// Every line the firmware sent.
    pub sent: Vec<String>,
    /// Every bolt that reached its unlocked end stop, in order.
    pub unlocked: Vec<u8>,
    /// (cell, ms) for every time a coil was switched off: how long it had been energised.
    pub energised: Vec<(u8, u32)>,
    /// Cells whose H-bridge had both directions on at once (a firmware bug: must stay empty).
    pub shorts: Vec<u8>,
    /// Resets the harness caused (`external`, `power-on`) and hangs it injected.
    pub resets: Vec<String>,
    pub plugged: bool,
    /// Every event, in order (`tx READY ...`, `bolt 2 moving`, ...): for "this before that".
    pub log: Vec<String>,
}

impl FirmwareSnapshot {
    fn new() -> Self {
        Self {
            bolts: vec![Bolt::Locked; CELLS],
            doors: vec![DoorState::Closed; CELLS],
            received: Vec::new(),
            sent: Vec::new(),
            unlocked: Vec::new(),
            energised: Vec::new(),
            shorts: Vec::new(),
            resets: Vec::new(),
            plugged: true,
            log: Vec::new(),
        }
    }

    pub fn bolt(&self, cell: u8) -> Option<Bolt> {
        self.bolts.get(usize::from(cell).checked_sub(1)?).copied()
    }

    /// As the protocol names it: locked only at the locked end stop.
    pub fn bolt_state(&self, cell: u8) -> Option<BoltState> {
        self.bolt(cell).map(|b| match b {
            Bolt::Locked => BoltState::Locked,
            _ => BoltState::Unlocked,
        })
    }

    pub fn door(&self, cell: u8) -> Option<DoorState> {
        self.doors.get(usize::from(cell).checked_sub(1)?).copied()
    }

    /// How many times the board received exactly this line.
    pub fn received_count(&self, line: &str) -> usize {
        self.received.iter().filter(|l| l.as_str() == line).count()
    }

    /// Position of the first event equal to `event` in [`FirmwareSnapshot::log`].
    pub fn first(&self, event: &str) -> Option<usize> {
        self.log.iter().position(|e| e == event)
    }

    fn apply(&mut self, line: &str, words: &[&str], rest: &str) {
        self.log.push(line.to_owned());
        let cell = |w: Option<&&str>| -> Option<usize> {
            w.and_then(|w| w.parse::<usize>().ok())
                .filter(|n| (1..=CELLS).contains(n))
        };
        match words {
            ["rx", ..] => self.received.push(rest.to_owned()),
            ["tx", ..] => self.sent.push(rest.to_owned()),
            ["bolt", n, state] => {
                if let Some(n) = cell(Some(n)) {
                    self.bolts[n - 1] = match *state {
                        "locked" => Bolt::Locked,
                        "unlocked" => {
                            self.unlocked.push(n as u8);
                            Bolt::Unlocked
                        }
                        _ => Bolt::Moving,
                    };
                }
            }
            ["door", n, state] => {
                if let Some(n) = cell(Some(n)) {
                    self.doors[n - 1] = if *state == "open" {
                        DoorState::Open
                    } else {
                        DoorState::Closed
                    };
                }
            }
            ["energised", n, ms] => {
                if let (Some(n), Ok(ms)) = (cell(Some(n)), ms.parse()) {
                    self.energised.push((n as u8, ms));
                }
            }
            ["short", n] => {
                if let Some(n) = cell(Some(n)) {
                    self.shorts.push(n as u8);
                }
            }
            ["reset", why] => self.resets.push((*why).to_owned()),
            ["hang"] => self.resets.push("hang".into()),
            ["plugged", ..] => self.plugged = true,
            ["unplugged"] => self.plugged = false,
            _ => {}
        }
    }
}

/// The harness, running. Dropping it kills the process (and the pty with it).
pub struct FirmwareBoard {
    child: Child,
    link: PathBuf,
    control: PathBuf,
    state: watch::Receiver<FirmwareSnapshot>,
}

impl FirmwareBoard {
    /// Starts the harness with the pty's symlink at `link` and the control socket beside it.
    /// `travel_ms`: how long the emulated bolts take to move (emulated time).
    pub async fn start(link: &Path, travel_ms: u32) -> Result<FirmwareBoard, FirmwareError> {
        let (elf, harness) = ensure_built()?;
        let control = link.with_extension("ctl");
        let mut child = Command::new(&harness)
            .arg("--elf")
            .arg(&elf)
            .arg("--link")
            .arg(link)
            .arg("--control")
            .arg(&control)
            .arg("--travel-ms")
            .arg(travel_ms.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| FirmwareError::Harness(format!("{}: {e}", harness.display())))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| FirmwareError::Harness("no stdout".into()))?;
        let (tx, state) = watch::channel(FirmwareSnapshot::new());
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut ready_tx = Some(ready_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.strip_prefix("EVENT ") {
                    let words: Vec<&str> = rest.split(' ').collect();
                    let text = rest.split_once(' ').map(|(_, r)| r).unwrap_or("");
                    tx.send_modify(|s| s.apply(rest, &words, text));
                } else if line.starts_with("LOCKBOARD_CONTROL=") {
                    if let Some(r) = ready_tx.take() {
                        let _ = r.send(());
                    }
                }
            }
        });
        tokio::time::timeout(std::time::Duration::from_secs(20), ready)
            .await
            .map_err(|_| FirmwareError::Harness("did not come up within 20 s".into()))?
            .map_err(|_| FirmwareError::Harness("exited before it came up".into()))?;
        Ok(FirmwareBoard {
            child,
            link: link.to_owned(),
            control,
            state,
        })
    }

    /// The stable path the agent opens (the symlink).
    pub fn path(&self) -> &Path {
        &self.link
    }

    /// The harness's control socket.
    pub fn control_path(&self) -> &Path {
        &self.control
    }

    pub fn snapshot(&self) -> FirmwareSnapshot {
        self.state.borrow().clone()
    }

    /// Changes as the harness reports them; `wait_for` on it is how tests wait for the board.
    pub fn watch(&self) -> watch::Receiver<FirmwareSnapshot> {
        self.state.clone()
    }

    /// One control line; `Ok` with the answer after `ok`, `Err` on `err ...`.
    pub async fn control(&self, line: &str) -> Result<String, FirmwareError> {
        let answer = control_line(&self.control, line)
            .await
            .map_err(FirmwareError::Harness)?;
        match answer.strip_prefix("ok") {
            Some(rest) => Ok(rest.trim().to_owned()),
            None => Err(FirmwareError::Refused {
                line: line.to_owned(),
                answer,
            }),
        }
    }

    pub async fn open_door(&self, cell: u8) -> Result<(), FirmwareError> {
        self.control(&format!("door {cell} open")).await.map(drop)
    }

    pub async fn close_door(&self, cell: u8) -> Result<(), FirmwareError> {
        self.control(&format!("door {cell} close")).await.map(drop)
    }

    /// Pulls the USB cable: the pty closes and the symlink disappears.
    pub async fn unplug(&self) -> Result<(), FirmwareError> {
        self.control("unplug").await.map(drop)
    }

    /// A new pty behind the same symlink; the board resets (DTR) and says `READY`.
    pub async fn replug(&self) -> Result<(), FirmwareError> {
        self.control("replug").await.map(drop)
    }

    /// The firmware freezes with interrupts off; only its watchdog gets it out.
    pub async fn hang(&self) -> Result<(), FirmwareError> {
        self.control("hang").await.map(drop)
    }

    /// The next line from the host reaches the board with every byte corrupted.
    pub async fn garble_next_line(&self) -> Result<(), FirmwareError> {
        self.control("garble").await.map(drop)
    }

    /// Stops the harness.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// One line to a lock board control socket (`sim lockboard --control` or the harness's); its
/// one-line answer.
pub async fn control_line(socket: &Path, line: &str) -> Result<String, String> {
    let mut s = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("lock board control {}: {e}", socket.display()))?;
    s.write_all(format!("{line}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    BufReader::new(s)
        .read_line(&mut reply)
        .await
        .map_err(|e| e.to_string())?;
    Ok(reply.trim().to_owned())
}
