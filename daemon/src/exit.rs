//! One table of exit codes for every SkyPost binary (`drone-agent`, `locker-agent`, `relay`), so
//! a script or a technician reads the same failure the same way on every machine.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | could not run, or failed while running (no runtime, a port or device that cannot be opened, a state file refused) |
//! | 2 | bad command line or bad config: the file cannot be read, does not parse, or breaks a rule (`run` and `config check` alike; clap also exits 2 on a bad command line) |
//! | 3 | the running agent is not reachable (technician commands: not running, or no permission on its socket) |
//! | 4 | a garbled exchange with the agent |
//! | 5 | the agent refused, or the operation or a check failed |

use std::process::ExitCode;

pub const OK: u8 = 0;
pub const FAILED: u8 = 1;
pub const BAD_CONFIG: u8 = 2;
pub const UNREACHABLE: u8 = 3;
pub const GARBLED: u8 = 4;
pub const REFUSED: u8 = 5;

/// The table above, for `--help` texts.
pub const TABLE: &str = "\
Exit codes (the same for drone-agent, locker-agent and relay):
  0  done
  1  could not run, or failed while running
  2  bad command line or bad config (cannot be read, does not parse, breaks a rule)
  3  the running agent is not reachable (not running, or no permission on its socket)
  4  a garbled exchange with the agent
  5  the agent refused, or the operation or a check failed";

/// The exit code for an error that ended a command: [`BAD_CONFIG`] if a config error is
/// anywhere in its chain, else [`FAILED`].
pub fn for_error(e: &(dyn std::error::Error + 'static)) -> u8 {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<crate::config::ConfigError>() {
            return BAD_CONFIG;
        }
        cur = err.source();
    }
    FAILED
}

/// [`for_error`] as an [`ExitCode`].
pub fn code(e: &(dyn std::error::Error + 'static)) -> ExitCode {
    ExitCode::from(for_error(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[derive(Debug, thiserror::Error)]
    #[error("starting: {0}")]
    struct Wrapper(#[source] crate::config::ConfigError);

    #[test]
    fn a_config_error_anywhere_in_the_chain_is_2() {
        let cfg = crate::config::ConfigError::Syntax {
            path: PathBuf::from("/etc/x.toml"),
            message: "bad".into(),
        };
        assert_eq!(for_error(&Wrapper(cfg)), BAD_CONFIG);
        let io = std::io::Error::other("port busy");
        assert_eq!(for_error(&io), FAILED);
    }
}
