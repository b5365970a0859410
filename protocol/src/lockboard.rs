//! The lock board's serial protocol: the Arduino that drives the locker's bolts and reads its door
//! sensors.
//!
//! The seed names the three commands and nothing else; the replies are ours. ASCII, one message per
//! line. The host ends lines with `\n`; the board ends them with `\r\n` (Arduino's `println`), and
//! both sides accept either. Lines longer than [`MAX_LINE`] bytes are refused.
//!
//! ## Host → board
//!
//! | line | meaning |
//! |---|---|
//! | `OPEN_<n>` | pull the bolt of cell `n` (1–255) and answer when it has moved |
//! | `CLOSE_<n>` | push the bolt of cell `n` home |
//! | `STATUS` | report every cell's bolt and door |
//!
//! ## Board → host
//!
//! | line | meaning |
//! |---|---|
//! | `READY <firmware> [reset=<reason>]` | the board has (re)started; any command in flight was lost. `reason` (optional, [`ResetReason`]): `power-on`, `external`, `watchdog`, `brown-out` or `unknown`; a board that gives none is read as not saying |
//! | `OK OPEN_<n>` / `OK CLOSE_<n>` | the bolt finished moving. Sent after the travel, which takes up to ~11 s on the seed's hardware, so the host waits for it with a timeout that covers that |
//! | `ERR <command> <CODE> [text]` | the command failed; `<command>` echoes it, or is `-` when the board could not parse what it got |
//! | `STATUS <n>:<bolt><door>,…` | every cell: bolt `L` locked / `U` unlocked, door `C` closed / `O` open; e.g. `STATUS 1:LC,2:UO,3:LC` |
//! | `DOOR <n> OPEN` / `DOOR <n> CLOSED` | unsolicited: a door sensor changed |
//!
//! Error codes: `BAD_COMMAND`, `BAD_CELL` (no such cell), `JAMMED` (the bolt did not reach its end
//! stop), `DOOR_OPEN` (cannot lock: the door is open), `BUSY`.
//!
//! One command is on the wire at a time: the host sends the next only after the reply to the last
//! (or its timeout), and pairs a reply with its command by the echo. An `OK` never arrives unless
//! the bolt moved, so a cell is reported open only on the board's word. (Our own firmware,
//! `locker-agent/firmware/`, answers commands while bolts travel and moves several at once; the
//! host still sends one at a time, because the seed's board blocks and its 64-byte receive
//! buffer overflows if the host runs ahead.)

use std::fmt;

/// Longest line either side sends or accepts, in bytes (excluding the line ending).
pub const MAX_LINE: usize = 512;

/// A cell as the board numbers it, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CellNumber(u8);

impl CellNumber {
    pub fn new(n: u16) -> Result<Self, LineError> {
        match u8::try_from(n) {
            Ok(v) if v >= 1 => Ok(Self(v)),
            _ => Err(LineError::new(LineErrorKind::BadCell, n.to_string())),
        }
    }

    pub fn get(self) -> u16 {
        u16::from(self.0)
    }
}

impl fmt::Display for CellNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What the host sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BoardCommand {
    Open(CellNumber),
    Close(CellNumber),
    Status,
}

impl BoardCommand {
    /// The line to write, with its `\n`.
    pub fn encode(&self) -> String {
        format!("{self}\n")
    }

    /// Parses a command line (what the board, or the simulated board, reads).
    pub fn parse(line: &str) -> Result<Self, LineError> {
        let line = checked_line(line)?;
        if line == "STATUS" {
            return Ok(BoardCommand::Status);
        }
        let (verb, n) = line
            .split_once('_')
            .ok_or_else(|| LineError::new(LineErrorKind::UnknownCommand, line))?;
        let n: u16 = n
            .parse()
            .map_err(|_| LineError::new(LineErrorKind::BadCell, line))?;
        let cell = CellNumber::new(n).map_err(|_| LineError::new(LineErrorKind::BadCell, line))?;
        match verb {
            "OPEN" => Ok(BoardCommand::Open(cell)),
            "CLOSE" => Ok(BoardCommand::Close(cell)),
            _ => Err(LineError::new(LineErrorKind::UnknownCommand, line)),
        }
    }
}

impl fmt::Display for BoardCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoardCommand::Open(n) => write!(f, "OPEN_{n}"),
            BoardCommand::Close(n) => write!(f, "CLOSE_{n}"),
            BoardCommand::Status => f.write_str("STATUS"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BoltState {
    Locked,
    Unlocked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DoorState {
    Closed,
    Open,
}

/// One cell in a `STATUS` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CellStatus {
    pub cell: CellNumber,
    pub bolt: BoltState,
    pub door: DoorState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BoardErrorCode {
    BadCommand,
    BadCell,
    Jammed,
    DoorOpen,
    Busy,
}

impl BoardErrorCode {
    fn as_str(self) -> &'static str {
        match self {
            BoardErrorCode::BadCommand => "BAD_COMMAND",
            BoardErrorCode::BadCell => "BAD_CELL",
            BoardErrorCode::Jammed => "JAMMED",
            BoardErrorCode::DoorOpen => "DOOR_OPEN",
            BoardErrorCode::Busy => "BUSY",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "BAD_COMMAND" => BoardErrorCode::BadCommand,
            "BAD_CELL" => BoardErrorCode::BadCell,
            "JAMMED" => BoardErrorCode::Jammed,
            "DOOR_OPEN" => BoardErrorCode::DoorOpen,
            "BUSY" => BoardErrorCode::Busy,
            _ => return None,
        })
    }
}

impl fmt::Display for BoardErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the board (re)started, as its `READY` line says (`reset=<reason>`), from the MCU's reset
/// flags. `Watchdog` means the firmware hung and the hardware watchdog restarted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResetReason {
    PowerOn,
    External,
    Watchdog,
    BrownOut,
    Unknown,
}

impl ResetReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::PowerOn => "power-on",
            ResetReason::External => "external",
            ResetReason::Watchdog => "watchdog",
            ResetReason::BrownOut => "brown-out",
            ResetReason::Unknown => "unknown",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "power-on" => ResetReason::PowerOn,
            "external" => ResetReason::External,
            "watchdog" => ResetReason::Watchdog,
            "brown-out" => ResetReason::BrownOut,
            _ => ResetReason::Unknown,
        }
    }
}

impl fmt::Display for ResetReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the board sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoardReply {
    Ready {
        firmware: String,
        /// `None` when the board does not say (the seed's sketch, `sim lockboard` before v2).
        reason: Option<ResetReason>,
    },
    Ok(BoardCommand),
    Err {
        command: Option<BoardCommand>,
        code: BoardErrorCode,
        message: String,
    },
    Status(Vec<CellStatus>),
    Door {
        cell: CellNumber,
        door: DoorState,
    },
}

impl BoardReply {
    /// The line to write, with the board's `\r\n`.
    pub fn encode(&self) -> String {
        format!("{self}\r\n")
    }

    /// Whether this reply answers `cmd` (an `OK`/`ERR` echoing it, or a `STATUS` for `STATUS`).
    pub fn answers(&self, cmd: &BoardCommand) -> bool {
        match self {
            BoardReply::Ok(c) => c == cmd,
            BoardReply::Err {
                command: Some(c), ..
            } => c == cmd,
            BoardReply::Err { command: None, .. } => true,
            BoardReply::Status(_) => *cmd == BoardCommand::Status,
            BoardReply::Ready { .. } | BoardReply::Door { .. } => false,
        }
    }

    /// Parses one line from the board. Garbage is an error naming what was wrong, never a panic.
    pub fn parse(line: &str) -> Result<Self, LineError> {
        let line = checked_line(line)?;
        let (head, rest) = line.split_once(' ').unwrap_or((line, ""));
        match head {
            "READY" => {
                // `reset=` is the last word when present; older boards send the firmware only.
                let (firmware, reason) = match rest.rsplit_once(' ') {
                    Some((fw, r)) if r.starts_with("reset=") => (fw, Some(r)),
                    _ if rest.starts_with("reset=") => ("", Some(rest)),
                    _ => (rest, None),
                };
                Ok(BoardReply::Ready {
                    firmware: firmware.to_owned(),
                    reason: reason.map(|r| ResetReason::parse(&r["reset=".len()..])),
                })
            }
            "OK" => BoardCommand::parse(rest)
                .map(BoardReply::Ok)
                .map_err(|e| LineError::new(e.kind, line)),
            "ERR" => {
                let mut parts = rest.splitn(3, ' ');
                let cmd = parts.next().unwrap_or("");
                let code = parts.next().unwrap_or("");
                let message = parts.next().unwrap_or("").to_owned();
                let command = if cmd == "-" {
                    None
                } else {
                    Some(BoardCommand::parse(cmd).map_err(|e| LineError::new(e.kind, line))?)
                };
                let code = BoardErrorCode::parse(code)
                    .ok_or_else(|| LineError::new(LineErrorKind::UnknownErrorCode, line))?;
                Ok(BoardReply::Err {
                    command,
                    code,
                    message,
                })
            }
            "STATUS" => parse_status(rest).map_err(|kind| LineError::new(kind, line)),
            "DOOR" => {
                let (n, state) = rest
                    .split_once(' ')
                    .ok_or_else(|| LineError::new(LineErrorKind::BadDoor, line))?;
                let cell = n
                    .parse::<u16>()
                    .ok()
                    .and_then(|n| CellNumber::new(n).ok())
                    .ok_or_else(|| LineError::new(LineErrorKind::BadCell, line))?;
                let door = match state {
                    "OPEN" => DoorState::Open,
                    "CLOSED" => DoorState::Closed,
                    _ => return Err(LineError::new(LineErrorKind::BadDoor, line)),
                };
                Ok(BoardReply::Door { cell, door })
            }
            _ => Err(LineError::new(LineErrorKind::UnknownReply, line)),
        }
    }
}

fn parse_status(rest: &str) -> Result<BoardReply, LineErrorKind> {
    if rest.is_empty() {
        return Ok(BoardReply::Status(Vec::new()));
    }
    let mut cells = Vec::new();
    for item in rest.split(',') {
        let (n, flags) = item.split_once(':').ok_or(LineErrorKind::BadStatus)?;
        let n: u16 = n.parse().map_err(|_| LineErrorKind::BadCell)?;
        let cell = CellNumber::new(n).map_err(|_| LineErrorKind::BadCell)?;
        let mut chars = flags.chars();
        let bolt = match chars.next() {
            Some('L') => BoltState::Locked,
            Some('U') => BoltState::Unlocked,
            _ => return Err(LineErrorKind::BadStatus),
        };
        let door = match chars.next() {
            Some('C') => DoorState::Closed,
            Some('O') => DoorState::Open,
            _ => return Err(LineErrorKind::BadStatus),
        };
        if chars.next().is_some() {
            return Err(LineErrorKind::BadStatus);
        }
        if cells.iter().any(|c: &CellStatus| c.cell == cell) {
            return Err(LineErrorKind::DuplicateCell);
        }
        cells.push(CellStatus { cell, bolt, door });
    }
    Ok(BoardReply::Status(cells))
}

impl fmt::Display for BoardReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoardReply::Ready { firmware, reason } => {
                f.write_str("READY")?;
                if !firmware.is_empty() {
                    write!(f, " {firmware}")?;
                }
                if let Some(r) = reason {
                    write!(f, " reset={r}")?;
                }
                Ok(())
            }
            BoardReply::Ok(cmd) => write!(f, "OK {cmd}"),
            BoardReply::Err {
                command,
                code,
                message,
            } => {
                match command {
                    Some(c) => write!(f, "ERR {c} {code}")?,
                    None => write!(f, "ERR - {code}")?,
                }
                if !message.is_empty() {
                    write!(f, " {message}")?;
                }
                Ok(())
            }
            BoardReply::Status(cells) => {
                f.write_str("STATUS")?;
                for (i, c) in cells.iter().enumerate() {
                    let bolt = if c.bolt == BoltState::Locked {
                        'L'
                    } else {
                        'U'
                    };
                    let door = if c.door == DoorState::Closed {
                        'C'
                    } else {
                        'O'
                    };
                    let sep = if i == 0 { ' ' } else { ',' };
                    write!(f, "{sep}{}:{bolt}{door}", c.cell)?;
                }
                Ok(())
            }
            BoardReply::Door { cell, door } => {
                let s = if *door == DoorState::Open {
                    "OPEN"
                } else {
                    "CLOSED"
                };
                write!(f, "DOOR {cell} {s}")
            }
        }
    }
}

/// Strips the line ending and checks length and character set.
fn checked_line(line: &str) -> Result<&str, LineError> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.len() > MAX_LINE {
        return Err(LineError::new(
            LineErrorKind::TooLong,
            &line[..line.floor_char_boundary_compat(64)],
        ));
    }
    if line.is_empty() {
        return Err(LineError::new(LineErrorKind::Empty, line));
    }
    if !line.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(LineError::new(LineErrorKind::NotAscii, line));
    }
    Ok(line)
}

trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}

impl FloorCharBoundary for str {
    // `str::floor_char_boundary` is newer than our minimum Rust version.
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        i = i.min(self.len());
        while !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

/// A line that is not in the protocol, with what was wrong and (a prefix of) the line itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {line:?}")]
pub struct LineError {
    pub kind: LineErrorKind,
    pub line: String,
}

impl LineError {
    fn new(kind: LineErrorKind, line: impl Into<String>) -> Self {
        let mut line: String = line.into();
        if line.len() > 80 {
            let cut = line.as_str().floor_char_boundary_compat(80);
            line.truncate(cut);
        }
        Self { kind, line }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineErrorKind {
    #[error("empty line")]
    Empty,
    #[error("line longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("line has bytes that are not printable ASCII")]
    NotAscii,
    #[error("unknown command")]
    UnknownCommand,
    #[error("unknown reply")]
    UnknownReply,
    #[error("cell number must be 1 to 255")]
    BadCell,
    #[error("unknown error code")]
    UnknownErrorCode,
    #[error("status entry is not <n>:<L|U><C|O>")]
    BadStatus,
    #[error("status names a cell twice")]
    DuplicateCell,
    #[error("door report is not DOOR <n> OPEN|CLOSED")]
    BadDoor,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(n: u16) -> CellNumber {
        CellNumber::new(n).unwrap()
    }

    #[test]
    fn commands_encode_as_the_seed_writes_them() {
        assert_eq!(BoardCommand::Open(cell(5)).encode(), "OPEN_5\n");
        assert_eq!(BoardCommand::Close(cell(12)).encode(), "CLOSE_12\n");
        assert_eq!(BoardCommand::Status.encode(), "STATUS\n");
    }

    #[test]
    fn replies_parse() {
        assert_eq!(
            BoardReply::parse("OK OPEN_5\r\n").unwrap(),
            BoardReply::Ok(BoardCommand::Open(cell(5)))
        );
        assert_eq!(
            BoardReply::parse("STATUS 1:LC,2:UO").unwrap(),
            BoardReply::Status(vec![
                CellStatus {
                    cell: cell(1),
                    bolt: BoltState::Locked,
                    door: DoorState::Closed
                },
                CellStatus {
                    cell: cell(2),
                    bolt: BoltState::Unlocked,
                    door: DoorState::Open
                },
            ])
        );
        assert_eq!(
            BoardReply::parse("ERR OPEN_9 BAD_CELL no such cell").unwrap(),
            BoardReply::Err {
                command: Some(BoardCommand::Open(cell(9))),
                code: BoardErrorCode::BadCell,
                message: "no such cell".into()
            }
        );
        assert_eq!(
            BoardReply::parse("DOOR 3 OPEN").unwrap(),
            BoardReply::Door {
                cell: cell(3),
                door: DoorState::Open
            }
        );
    }

    #[test]
    fn ready_says_why_when_the_board_does() {
        assert_eq!(
            BoardReply::parse("READY skypost-lockboard/1.0.0 reset=watchdog\r\n").unwrap(),
            BoardReply::Ready {
                firmware: "skypost-lockboard/1.0.0".into(),
                reason: Some(ResetReason::Watchdog)
            }
        );
        // the seed's and older boards: no reason, the whole rest is the firmware
        assert_eq!(
            BoardReply::parse("READY v1 build 7").unwrap(),
            BoardReply::Ready {
                firmware: "v1 build 7".into(),
                reason: None
            }
        );
        assert_eq!(
            BoardReply::parse("READY reset=power-on").unwrap(),
            BoardReply::Ready {
                firmware: String::new(),
                reason: Some(ResetReason::PowerOn)
            }
        );
        // a reason from a newer firmware is still a restart, of unknown cause
        let r = BoardReply::parse("READY fw reset=cosmic-ray").unwrap();
        assert_eq!(
            r,
            BoardReply::Ready {
                firmware: "fw".into(),
                reason: Some(ResetReason::Unknown)
            }
        );
        assert_eq!(r.to_string(), "READY fw reset=unknown");
    }

    #[test]
    fn garbage_is_named() {
        assert_eq!(
            BoardReply::parse("").unwrap_err().kind,
            LineErrorKind::Empty
        );
        assert_eq!(
            BoardReply::parse("HELLO").unwrap_err().kind,
            LineErrorKind::UnknownReply
        );
        assert_eq!(
            BoardReply::parse("OK OPEN_0").unwrap_err().kind,
            LineErrorKind::BadCell
        );
        assert_eq!(
            BoardReply::parse("OK OPEN_300").unwrap_err().kind,
            LineErrorKind::BadCell
        );
        assert_eq!(
            BoardReply::parse("STATUS 1:XC").unwrap_err().kind,
            LineErrorKind::BadStatus
        );
        assert_eq!(
            BoardReply::parse("STATUS 1:LC,1:LC").unwrap_err().kind,
            LineErrorKind::DuplicateCell
        );
        assert_eq!(
            BoardReply::parse("OK \u{7f}").unwrap_err().kind,
            LineErrorKind::NotAscii
        );
        assert_eq!(
            BoardReply::parse(&"A".repeat(600)).unwrap_err().kind,
            LineErrorKind::TooLong
        );
    }

    #[test]
    fn reply_pairs_with_its_command() {
        let open5 = BoardCommand::Open(cell(5));
        assert!(BoardReply::Ok(open5).answers(&open5));
        assert!(!BoardReply::Ok(BoardCommand::Open(cell(6))).answers(&open5));
        assert!(!BoardReply::Door {
            cell: cell(5),
            door: DoorState::Open
        }
        .answers(&open5));
    }
}
