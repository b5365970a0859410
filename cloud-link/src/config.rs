//! The `[cloud]` section of an agent's TOML config.

use daemon::config::{Validate, Validator};
use serde::Deserialize;
use std::time::Duration;

/// How an agent reaches the relay. Every field is documented in the agents' example configs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    /// `ws://host:port/ws/drone` or `wss://…` (TLS through rustls with the webpki roots).
    /// One relay; give `urls` instead for several.
    #[serde(default)]
    pub url: Option<String>,
    /// Several relays (a cluster): the agent dials the first, and on a failed dial or a lost
    /// connection the next one (round the list), with the same backoff as for one relay.
    #[serde(default)]
    pub urls: Vec<String>,
    /// The device token the relay knows this agent by (sent as `Authorization: Bearer …`).
    pub token: String,
    /// First reconnect delay, seconds; doubles per failed attempt up to `backoff_max_s`.
    #[serde(default = "defaults::backoff_initial_s")]
    pub backoff_initial_s: f64,
    /// Longest reconnect delay, seconds.
    #[serde(default = "defaults::backoff_max_s")]
    pub backoff_max_s: f64,
    /// Random spread added to each delay, as a fraction of it (0.2 = up to +20 %), so a fleet that
    /// lost the relay together does not come back in lockstep.
    #[serde(default = "defaults::backoff_jitter")]
    pub backoff_jitter: f64,
    /// Give up on a connection attempt after this many seconds.
    #[serde(default = "defaults::connect_timeout_s")]
    pub connect_timeout_s: f64,
    /// Send a WebSocket ping this often, seconds; two intervals without any frame from the relay
    /// means the link is dead (a 4G link can vanish without a TCP reset).
    #[serde(default = "defaults::ping_interval_s")]
    pub ping_interval_s: f64,
    /// Re-send an event not acknowledged after this many seconds on the same connection.
    #[serde(default = "defaults::event_resend_s")]
    pub event_resend_s: f64,
    /// Most unacknowledged events kept on disk; past it the oldest is evicted (logged, counted).
    #[serde(default = "defaults::outbox_capacity")]
    pub outbox_capacity: usize,
}

mod defaults {
    pub fn backoff_initial_s() -> f64 {
        1.0
    }
    pub fn backoff_max_s() -> f64 {
        16.0
    }
    pub fn backoff_jitter() -> f64 {
        0.2
    }
    pub fn connect_timeout_s() -> f64 {
        10.0
    }
    pub fn ping_interval_s() -> f64 {
        30.0
    }
    pub fn event_resend_s() -> f64 {
        10.0
    }
    pub fn outbox_capacity() -> usize {
        10_000
    }
}

impl CloudConfig {
    /// A config with every default, for tests and tools.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            url: Some(url.into()),
            urls: Vec::new(),
            token: token.into(),
            backoff_initial_s: defaults::backoff_initial_s(),
            backoff_max_s: defaults::backoff_max_s(),
            backoff_jitter: defaults::backoff_jitter(),
            connect_timeout_s: defaults::connect_timeout_s(),
            ping_interval_s: defaults::ping_interval_s(),
            event_resend_s: defaults::event_resend_s(),
            outbox_capacity: defaults::outbox_capacity(),
        }
    }

    /// The relays to dial, in order: `urls`, or the one `url`.
    pub fn relays(&self) -> Vec<&str> {
        if self.urls.is_empty() {
            self.url.as_deref().into_iter().collect()
        } else {
            self.urls.iter().map(String::as_str).collect()
        }
    }

    pub(crate) fn secs(v: f64) -> Duration {
        Duration::from_secs_f64(v.max(0.0))
    }

    /// Validates this section under the dotted prefix `at` (e.g. `"cloud"`).
    pub fn validate_at(&self, at: &str, v: &mut Validator) {
        v.nested(at, |v| self.validate_fields(v));
    }

    fn validate_fields(&self, v: &mut Validator) {
        let ws_url = |u: &str| u.starts_with("ws://") || u.starts_with("wss://");
        match (&self.url, self.urls.is_empty()) {
            (Some(_), false) => v.fail("urls", "give `url` or `urls`, not both"),
            (None, true) => v.fail("url", "needs `url` (one relay) or `urls` (several)"),
            (Some(u), true) => v.check(
                ws_url(u),
                "url",
                format_args!("{u:?} must start with ws:// or wss://"),
            ),
            (None, false) => {
                for (i, u) in self.urls.iter().enumerate() {
                    v.check(
                        ws_url(u),
                        &format!("urls[{i}]"),
                        format_args!("{u:?} must start with ws:// or wss://"),
                    );
                }
            }
        }
        v.check(!self.token.trim().is_empty(), "token", "must not be empty");
        v.range("backoff_initial_s", self.backoff_initial_s, 0.001, 60.0);
        v.range(
            "backoff_max_s",
            self.backoff_max_s,
            self.backoff_initial_s,
            600.0,
        );
        v.range("backoff_jitter", self.backoff_jitter, 0.0, 1.0);
        v.range("connect_timeout_s", self.connect_timeout_s, 0.01, 120.0);
        v.range("ping_interval_s", self.ping_interval_s, 0.01, 600.0);
        v.range("event_resend_s", self.event_resend_s, 0.01, 3600.0);
        v.range("outbox_capacity", self.outbox_capacity, 1, 1_000_000);
    }
}

impl Validate for CloudConfig {
    fn validate(&self, v: &mut Validator) {
        self.validate_at("cloud", v);
    }
}
