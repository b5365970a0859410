//! The state file: the machine (state, delivery, parcel on board) and the recent command ids,
//! written atomically after every transition so a restart — SIGKILL or power cut included —
//! resumes where the drone stood.

use crate::commands::CommandLog;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct Saved {
    pub version: u32,
    pub machine: serde_json::Value,
    #[serde(default)]
    pub commands: CommandLog,
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not readable state: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("state file: {0}")]
    Write(#[from] daemon::fs::WriteError),
}

pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join("drone-state.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `Ok(None)` on first start. A corrupt file is moved aside (kept for a technician) and
    /// reported as an error; the caller decides how to start.
    pub fn load(&self) -> Result<Option<Saved>, PersistError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(PersistError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        match serde_json::from_slice::<Saved>(&bytes) {
            Ok(s) if s.version == VERSION => Ok(Some(s)),
            Ok(s) => Err(self.set_aside(format!(
                "version {} (this agent reads {VERSION})",
                s.version
            ))),
            Err(e) => Err(self.set_aside(e.to_string())),
        }
    }

    fn set_aside(&self, reason: String) -> PersistError {
        let aside = self.path.with_extension("json.corrupt");
        let _ = std::fs::rename(&self.path, &aside);
        PersistError::Corrupt {
            path: aside,
            reason,
        }
    }

    pub fn save(
        &self,
        machine: serde_json::Value,
        commands: &CommandLog,
    ) -> Result<(), PersistError> {
        let saved = Saved {
            version: VERSION,
            machine,
            commands: commands.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&saved).map_err(|e| PersistError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| PersistError::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        // called from the runtime's synchronous transition code, on a tokio worker
        daemon::fs::write_atomic_blocking(&self.path, &bytes)?;
        Ok(())
    }
}
