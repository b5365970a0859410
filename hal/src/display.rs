//! The locker's screen.
//!
//! [`Display`] shows a [`Screen`]: a title and a few lines of text. What the text *says* is not
//! decided here (the locker agent keeps all its wording in one module); this is only how it gets
//! onto the glass.
//!
//! - [`TerminalDisplay`]: a text terminal: the Orange Pi's console (`/dev/tty1`, a framebuffer
//!   console), any tty, or a plain file (tests read it back). Each screen clears the terminal
//!   (ANSI `ESC[2J ESC[H`) and draws the title then the lines.
//! - [`SerialDisplay`]: the seed's serial display option: a character display behind a
//!   microcontroller on a serial port. Our line protocol (the seed names none): `CLR`, then
//!   `T <title>`, then `L<i> <text>` for each line, each ending in `\n`; non-ASCII is replaced by
//!   `?` because such displays have a ROM character set.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One screenful.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screen {
    pub title: String,
    pub lines: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    #[error("display {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("display {path}: {message}")]
    Serial { path: PathBuf, message: String },
}

/// Something that can show a screen. Writes are small and synchronous: a screen is a few hundred
/// bytes to a tty.
pub trait Display: Send + Sync {
    fn show(&self, screen: &Screen) -> Result<(), DisplayError>;
}

/// A text terminal (or a file standing in for one).
pub struct TerminalDisplay {
    path: Option<PathBuf>,
    out: Mutex<Box<dyn Write + Send>>,
    /// Whether to send ANSI clear-screen codes (off for a plain log file).
    ansi: bool,
}

impl TerminalDisplay {
    /// Opens `path` for writing (a tty or a file; created if missing).
    pub fn open(path: &Path, ansi: bool) -> Result<Self, DisplayError> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| DisplayError::Io {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            path: Some(path.to_owned()),
            out: Mutex::new(Box::new(f)),
            ansi,
        })
    }

    /// Draws on this process's standard output.
    pub fn stdout() -> Self {
        Self {
            path: None,
            out: Mutex::new(Box::new(std::io::stdout())),
            ansi: true,
        }
    }
}

impl Display for TerminalDisplay {
    fn show(&self, screen: &Screen) -> Result<(), DisplayError> {
        let mut text = String::new();
        if self.ansi {
            text.push_str("\x1b[2J\x1b[H");
        }
        text.push_str(&screen.title);
        text.push('\n');
        for l in &screen.lines {
            text.push_str(l);
            text.push('\n');
        }
        if !self.ansi {
            text.push_str("--\n");
        }
        let path = self
            .path
            .clone()
            .unwrap_or_else(|| PathBuf::from("<stdout>"));
        let mut out = self.out.lock().map_err(|_| DisplayError::Serial {
            path: path.clone(),
            message: "display writer poisoned".into(),
        })?;
        out.write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .map_err(|source| DisplayError::Io { path, source })
    }
}

/// A character display on a serial port.
pub struct SerialDisplay {
    path: PathBuf,
    port: Mutex<Box<dyn tokio_serial::SerialPort>>,
}

impl SerialDisplay {
    pub fn open(path: &Path, baud: u32) -> Result<Self, DisplayError> {
        let port = tokio_serial::new(path.to_string_lossy(), baud)
            .timeout(std::time::Duration::from_millis(500))
            .open()
            .map_err(|e| DisplayError::Serial {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        Ok(Self {
            path: path.to_owned(),
            port: Mutex::new(port),
        })
    }
}

/// The serial display's bytes for one screen.
pub fn serial_frame(screen: &Screen) -> String {
    let ascii = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .collect()
    };
    let mut out = String::from("CLR\n");
    out.push_str(&format!("T {}\n", ascii(&screen.title)));
    for (i, l) in screen.lines.iter().enumerate() {
        out.push_str(&format!("L{} {}\n", i + 1, ascii(l)));
    }
    out
}

impl Display for SerialDisplay {
    fn show(&self, screen: &Screen) -> Result<(), DisplayError> {
        let mut port = self.port.lock().map_err(|_| DisplayError::Serial {
            path: self.path.clone(),
            message: "display port poisoned".into(),
        })?;
        port.write_all(serial_frame(screen).as_bytes())
            .and_then(|_| port.flush())
            .map_err(|source| DisplayError::Io {
                path: self.path.clone(),
                source,
            })
    }
}

/// No screen fitted.
pub struct NoDisplay;

impl Display for NoDisplay {
    fn show(&self, _screen: &Screen) -> Result<(), DisplayError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_frame_is_ascii_lines() {
        let s = Screen {
            title: "Ячейка 3".into(),
            lines: vec!["Cell 3 is open".into()],
        };
        assert_eq!(serial_frame(&s), "CLR\nT ?????? 3\nL1 Cell 3 is open\n");
    }

    #[test]
    fn terminal_writes_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("screen");
        let d = TerminalDisplay::open(&p, false).unwrap();
        d.show(&Screen {
            title: "Hello".into(),
            lines: vec!["a".into()],
        })
        .unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "Hello\na\n--\n");
    }
}
