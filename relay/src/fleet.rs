//! The fleet file: which agents may connect, in a file of its own that the relay reloads while
//! it runs (SIGHUP, or a change to the file seen by polling).
//!
//! ```toml
//! [[agents]]
//! id = "6f1d3c1e-2a4b-4c5d-8e9f-0a1b2c3d4e5f"
//! kind = "drone"            # or "locker"
//! token_sha256 = "…"        # hex SHA-256 of the device token: the file holds no secret
//! disabled = true           # optional: listed, but refused (and disconnected on reload)
//! ```
//!
//! A file that does not parse or validate is refused as a whole, with the line of the first
//! problem, and the list in force stays as it was: a typo must never lock the fleet out.

use crate::auth::AgentKind;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// An agent's token digest (SHA-256).
pub type Digest = [u8; 32];

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("cannot read fleet file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("fleet file {path}, line {line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

impl FleetError {
    /// The line the problem is on (0 when the file could not be read at all).
    pub fn line(&self) -> usize {
        match self {
            FleetError::Read { .. } => 0,
            FleetError::Invalid { line, .. } => *line,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFile {
    #[serde(default)]
    agents: Vec<toml::Spanned<Entry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: Uuid,
    kind: Kind,
    token_sha256: String,
    #[serde(default)]
    disabled: bool,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Drone,
    Locker,
}

/// One agent as the fleet file lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub digest: Digest,
    pub disabled: bool,
}

/// The agents the relay knows, enabled or not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fleet {
    pub members: HashMap<(AgentKind, Uuid), Member>,
}

impl Fleet {
    /// Reads and checks a fleet file.
    pub fn load(path: &Path) -> Result<Self, FleetError> {
        let text = std::fs::read_to_string(path).map_err(|source| FleetError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks fleet text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, FleetError> {
        let invalid = |offset: usize, message: String| FleetError::Invalid {
            path: origin.to_owned(),
            line: line_of(text, offset),
            // toml draws the line with carets over several lines; one line is enough here
            message: message.lines().next().unwrap_or_default().trim().to_owned(),
        };
        let file: FleetFile = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| s.start).unwrap_or(0);
            invalid(at, e.message().to_owned())
        })?;
        let mut members = HashMap::new();
        for spanned in file.agents {
            let at = spanned.span().start;
            let e = spanned.into_inner();
            let digest = parse_digest(&e.token_sha256).ok_or_else(|| {
                invalid(
                    at,
                    format!(
                        "agent {}: token_sha256 must be 64 hex digits (the SHA-256 of the token)",
                        e.id
                    ),
                )
            })?;
            let kind = match e.kind {
                Kind::Drone => AgentKind::Drone,
                Kind::Locker => AgentKind::Locker,
            };
            let member = Member {
                digest,
                disabled: e.disabled,
            };
            if members.insert((kind, e.id), member).is_some() {
                return Err(invalid(
                    at,
                    format!("{} {} is listed twice", kind.as_str(), e.id),
                ));
            }
        }
        Ok(Self { members })
    }

    /// The digests of the agents allowed to connect (disabled ones left out).
    pub fn enabled(&self) -> HashMap<(AgentKind, Uuid), Digest> {
        self.members
            .iter()
            .filter(|(_, m)| !m.disabled)
            .map(|(k, m)| (*k, m.digest))
            .collect()
    }
}

/// Why an agent that was allowed is not any more (the close reason it is given, code 4401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    Removed,
    Disabled,
    TokenChanged,
}

impl Revocation {
    pub fn reason(self) -> &'static str {
        match self {
            Revocation::Removed => "removed from the fleet",
            Revocation::Disabled => "disabled in the fleet",
            Revocation::TokenChanged => "token changed in the fleet",
        }
    }
}

/// The agents `before` allowed that `after` does not (with the same token), and why.
pub fn revoked(
    before: &HashMap<(AgentKind, Uuid), Digest>,
    after: &Fleet,
) -> Vec<((AgentKind, Uuid), Revocation)> {
    let mut out = Vec::new();
    for (key, digest) in before {
        let why = match after.members.get(key) {
            None => Some(Revocation::Removed),
            Some(m) if m.disabled => Some(Revocation::Disabled),
            Some(m) if m.digest != *digest => Some(Revocation::TokenChanged),
            Some(_) => None,
        };
        if let Some(why) = why {
            out.push((*key, why));
        }
    }
    out
}

fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Lowercase or uppercase hex, exactly 64 digits.
pub fn parse_digest(hex: &str) -> Option<Digest> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "00000000-0000-4000-8000-00000000000a";
    const B: &str = "00000000-0000-4000-8000-00000000000b";
    const H1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const H2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    fn parse(text: &str) -> Result<Fleet, FleetError> {
        Fleet::parse(text, Path::new("fleet.toml"))
    }

    #[test]
    fn entries_parse_with_kind_and_disabled() {
        let f = parse(&format!(
            "[[agents]]\nid = \"{A}\"\nkind = \"drone\"\ntoken_sha256 = \"{H1}\"\n\n\
             [[agents]]\nid = \"{B}\"\nkind = \"locker\"\ntoken_sha256 = \"{H2}\"\ndisabled = true\n"
        ))
        .unwrap();
        assert_eq!(f.members.len(), 2);
        assert_eq!(f.enabled().len(), 1);
    }

    #[test]
    fn problems_name_their_line() {
        // a duplicate: the second entry starts on line 5
        let text = format!(
            "[[agents]]\nid = \"{A}\"\nkind = \"drone\"\ntoken_sha256 = \"{H1}\"\n[[agents]]\nid = \"{A}\"\nkind = \"drone\"\ntoken_sha256 = \"{H2}\"\n"
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line(), 5, "{e}");
        assert!(e.to_string().contains("listed twice"), "{e}");
        // a bad digest on the entry that starts on line 1
        let e = parse(&format!(
            "[[agents]]\nid = \"{A}\"\nkind = \"drone\"\ntoken_sha256 = \"abc\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.line(), 1, "{e}");
        // a syntax error on line 3
        let e = parse(&format!("[[agents]]\nid = \"{A}\"\nkind = drone\n")).unwrap_err();
        assert_eq!(e.line(), 3, "{e}");
        // an unknown key on line 4
        let e = parse(&format!(
            "[[agents]]\nid = \"{A}\"\nkind = \"drone\"\ntokn = \"x\"\n"
        ))
        .unwrap_err();
        assert!(e.line() >= 1 && e.to_string().contains("tokn"), "{e}");
    }

    #[test]
    fn revocations_say_why() {
        let before: HashMap<_, _> = [
            ((AgentKind::Drone, Uuid::parse_str(A).unwrap()), [1u8; 32]),
            ((AgentKind::Drone, Uuid::parse_str(B).unwrap()), [2u8; 32]),
        ]
        .into();
        let after = parse(&format!(
            "[[agents]]\nid = \"{A}\"\nkind = \"drone\"\ntoken_sha256 = \"{H2}\"\n"
        ))
        .unwrap();
        let mut r = revoked(&before, &after);
        r.sort_by_key(|(k, _)| k.1);
        assert_eq!(r[0].1, Revocation::TokenChanged);
        assert_eq!(r[1].1, Revocation::Removed);
    }
}
