//! Who may connect: device tokens for agents, one credential for the backend.
//!
//! Every secret is kept as its SHA-256 digest (the config may give either form) and a presented
//! token is hashed and compared in constant time, so neither the comparison's timing nor a memory
//! dump of the relay gives a token away.

use crate::config::{Config, Credential};
use crate::fleet::{revoked, Fleet, Revocation};
use axum::http::HeaderMap;
use protocol::ws::PeerKind;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use uuid::Uuid;

/// The header an agent names itself with.
pub const AGENT_ID_HEADER: &str = "x-skypost-agent-id";

/// The two kinds of agent that dial in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentKind {
    Drone,
    Locker,
}

impl AgentKind {
    pub fn peer_kind(self) -> PeerKind {
        match self {
            AgentKind::Drone => PeerKind::Drone,
            AgentKind::Locker => PeerKind::Locker,
        }
    }

    pub fn from_peer_kind(kind: PeerKind) -> Option<Self> {
        match kind {
            PeerKind::Drone => Some(AgentKind::Drone),
            PeerKind::Locker => Some(AgentKind::Locker),
            PeerKind::Backend | PeerKind::Relay => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::Drone => "drone",
            AgentKind::Locker => "locker",
        }
    }
}

type Digest = [u8; 32];

/// Why a connection or an HTTP call was refused (a metric label; never sent to the client, which
/// only learns "401").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MissingCredentials,
    UnknownAgent,
    BadToken,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [
        Refusal::MissingCredentials,
        Refusal::UnknownAgent,
        Refusal::BadToken,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MissingCredentials => "missing_credentials",
            Refusal::UnknownAgent => "unknown_agent",
            Refusal::BadToken => "bad_token",
        }
    }
}

type AgentMap = HashMap<(AgentKind, Uuid), Digest>;

/// The token an agent's upgrade was accepted with, as the first 8 bytes of its digest: checked
/// again when the agent registers with the hub, since a fleet reload may land between the two
/// (8 bytes, not the digest, because every agent's task holds it; both digests it is compared
/// with are the operator's, so a chance match of 8 bytes is the only way to miss a change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenMark(u64);

impl TokenMark {
    fn of(digest: &Digest) -> Self {
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Self(u64::from_le_bytes(first))
    }
}

/// The credentials from the config (and the fleet file), ready to check.
#[derive(Debug)]
pub struct Authenticator {
    backend: Digest,
    /// Swapped whole on a fleet reload; readers clone the `Arc` and never wait on a reload.
    agents: RwLock<Arc<AgentMap>>,
}

impl Authenticator {
    /// The agents are the fleet file's when there is one, else the config's inline lists.
    pub fn new(config: &Config, fleet: Option<&Fleet>) -> Self {
        let agents = match fleet {
            Some(f) => f.enabled(),
            None => {
                let mut agents = HashMap::new();
                for (kind, list) in [
                    (AgentKind::Drone, &config.drones),
                    (AgentKind::Locker, &config.lockers),
                ] {
                    for entry in list {
                        agents.insert((kind, entry.id), digest_of(&entry.credential()));
                    }
                }
                agents
            }
        };
        Self {
            backend: digest_of(&config.backend),
            agents: RwLock::new(Arc::new(agents)),
        }
    }

    fn agents(&self) -> Arc<AgentMap> {
        self.agents
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts a new fleet in force; returns the agents that were allowed and are not any more.
    pub fn replace_fleet(&self, fleet: &Fleet) -> Vec<((AgentKind, Uuid), Revocation)> {
        let mut agents = self.agents.write().unwrap_or_else(PoisonError::into_inner);
        let gone = revoked(&agents, fleet);
        *agents = Arc::new(fleet.enabled());
        gone
    }

    /// How many agents may connect (drones, lockers).
    pub fn counts(&self) -> (usize, usize) {
        let agents = self.agents();
        let drones = agents
            .keys()
            .filter(|(k, _)| *k == AgentKind::Drone)
            .count();
        (drones, agents.len() - drones)
    }

    /// Is this agent allowed at all (whatever its token)?
    pub fn knows(&self, kind: AgentKind, id: Uuid) -> bool {
        self.agents().contains_key(&(kind, id))
    }

    /// Is this agent still allowed with the token it was accepted with? `Err` says why not: a
    /// reload removed or disabled it (both leave it out of the map: `Removed`), or changed its
    /// token.
    pub fn still_allows(
        &self,
        kind: AgentKind,
        id: Uuid,
        mark: TokenMark,
    ) -> Result<(), Revocation> {
        match self.agents().get(&(kind, id)) {
            None => Err(Revocation::Removed),
            Some(digest) if TokenMark::of(digest) != mark => Err(Revocation::TokenChanged),
            Some(_) => Ok(()),
        }
    }

    /// Checks an agent's upgrade request: the id header names a configured agent of this kind
    /// and the bearer token is its token. Returns the id and the mark of the token, for
    /// [`Authenticator::still_allows`] at registration.
    pub fn agent(
        &self,
        kind: AgentKind,
        headers: &HeaderMap,
    ) -> Result<(Uuid, TokenMark), Refusal> {
        let token = bearer(headers).ok_or(Refusal::MissingCredentials)?;
        let id = headers
            .get(AGENT_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or(Refusal::MissingCredentials)?;
        let id = Uuid::parse_str(id.trim()).map_err(|_| Refusal::UnknownAgent)?;
        let agents = self.agents();
        let expected = agents.get(&(kind, id)).ok_or(Refusal::UnknownAgent)?;
        if ct_eq(&sha256(token.as_bytes()), expected) {
            Ok((id, TokenMark::of(expected)))
        } else {
            Err(Refusal::BadToken)
        }
    }

    /// Checks the backend's bearer token (WebSocket upgrade and HTTP bridge alike).
    pub fn backend(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let token = bearer(headers).ok_or(Refusal::MissingCredentials)?;
        if ct_eq(&sha256(token.as_bytes()), &self.backend) {
            Ok(())
        } else {
            Err(Refusal::BadToken)
        }
    }
}

/// `Authorization: Bearer <token>`; the scheme is case-insensitive (RFC 7235).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn sha256(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}

fn digest_of(c: &Credential) -> Digest {
    if let Some(hex) = &c.token_sha256 {
        // validated as 64 hex digits; a config that bypassed validation matches nothing
        crate::fleet::parse_digest(hex).unwrap_or([0; 32])
    } else {
        sha256(c.token.as_deref().unwrap_or_default().as_bytes())
    }
}

/// Compares without an early exit, so timing says nothing about how many bytes matched.
fn ct_eq(a: &Digest, b: &Digest) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: Option<&str>, id: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert("authorization", HeaderValue::from_str(a).unwrap());
        }
        if let Some(i) = id {
            h.insert(AGENT_ID_HEADER, HeaderValue::from_str(i).unwrap());
        }
        h
    }

    fn auth() -> Authenticator {
        let hashed: String = sha256(b"locker-secret-0123456789")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
[backend]
token = "backend-secret-0123456789"
[[drones]]
id = "00000000-0000-4000-8000-000000000001"
token = "drone-secret-0123456789"
[[lockers]]
id = "00000000-0000-4000-8000-000000000002"
token_sha256 = "{hashed}"
"#
        );
        let c: Config = daemon::config::parse(&text, std::path::Path::new("t.toml")).unwrap();
        Authenticator::new(&c, None)
    }

    const DRONE: &str = "00000000-0000-4000-8000-000000000001";
    const LOCKER: &str = "00000000-0000-4000-8000-000000000002";

    #[test]
    fn plaintext_and_hashed_tokens_both_work() {
        let a = auth();
        let h = headers(Some("Bearer drone-secret-0123456789"), Some(DRONE));
        assert!(a.agent(AgentKind::Drone, &h).is_ok());
        let h = headers(Some("bearer locker-secret-0123456789"), Some(LOCKER));
        assert!(a.agent(AgentKind::Locker, &h).is_ok());
    }

    fn hex(token: &[u8]) -> String {
        sha256(token).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The fleet of `auth()` after a reload: the drone with `drone_token`, the locker as before
    /// or left out.
    fn reloaded(drone_token: &[u8], locker: bool) -> Fleet {
        let mut text = format!(
            "[[agents]]\nid = \"{DRONE}\"\nkind = \"drone\"\ntoken_sha256 = \"{}\"\n",
            hex(drone_token)
        );
        if locker {
            text += &format!(
                "[[agents]]\nid = \"{LOCKER}\"\nkind = \"locker\"\ntoken_sha256 = \"{}\"\n",
                hex(b"locker-secret-0123456789")
            );
        }
        Fleet::parse(&text, std::path::Path::new("fleet.toml")).unwrap()
    }

    #[test]
    fn a_reload_between_upgrade_and_registration_is_seen_at_registration() {
        let a = auth();
        let drone = Uuid::parse_str(DRONE).unwrap();
        let locker = Uuid::parse_str(LOCKER).unwrap();
        let h = headers(Some("Bearer drone-secret-0123456789"), Some(DRONE));
        let (id, drone_mark) = a.agent(AgentKind::Drone, &h).unwrap();
        assert_eq!(id, drone);
        let h = headers(Some("Bearer locker-secret-0123456789"), Some(LOCKER));
        let (_, locker_mark) = a.agent(AgentKind::Locker, &h).unwrap();
        assert_eq!(a.still_allows(AgentKind::Drone, drone, drone_mark), Ok(()));

        // the same tokens reloaded: both still allowed
        a.replace_fleet(&reloaded(b"drone-secret-0123456789", true));
        assert_eq!(a.still_allows(AgentKind::Drone, drone, drone_mark), Ok(()));
        assert_eq!(
            a.still_allows(AgentKind::Locker, locker, locker_mark),
            Ok(())
        );

        // the drone's token changed and the locker removed while both were upgrading
        a.replace_fleet(&reloaded(b"a-new-drone-secret-0123456789", false));
        assert_eq!(
            a.still_allows(AgentKind::Drone, drone, drone_mark),
            Err(Revocation::TokenChanged)
        );
        assert_eq!(
            a.still_allows(AgentKind::Locker, locker, locker_mark),
            Err(Revocation::Removed)
        );
        // the id alone is still known: the check `register_agent` made before missed this
        assert!(a.knows(AgentKind::Drone, drone));
    }

    #[test]
    fn wrong_token_kind_or_id_is_refused() {
        let a = auth();
        let h = headers(Some("Bearer locker-secret-0123456789"), Some(DRONE));
        assert_eq!(a.agent(AgentKind::Drone, &h), Err(Refusal::BadToken));
        let h = headers(Some("Bearer drone-secret-0123456789"), Some(DRONE));
        assert_eq!(a.agent(AgentKind::Locker, &h), Err(Refusal::UnknownAgent));
        let h = headers(Some("Bearer drone-secret-0123456789"), None);
        assert_eq!(
            a.agent(AgentKind::Drone, &h),
            Err(Refusal::MissingCredentials)
        );
        let h = headers(Some("Basic drone-secret-0123456789"), Some(DRONE));
        assert_eq!(
            a.agent(AgentKind::Drone, &h),
            Err(Refusal::MissingCredentials)
        );
        assert_eq!(
            a.backend(&headers(Some("Bearer drone-secret-0123456789"), None)),
            Err(Refusal::BadToken)
        );
        assert!(a
            .backend(&headers(Some("Bearer backend-secret-0123456789"), None))
            .is_ok());
    }
}
