//! What the cluster test binaries share: a real RabbitMQ ([`broker`]) and two relays in one
//! cluster on it, with the clients that talk to them.
#![allow(dead_code)] // each test binary uses a part

pub mod broker;

pub use broker::broker;

use relay::{Config, Relay};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const BACKEND_TOKEN: &str = "backend-secret-0123456789";

/// The longest any one wait of these helpers lasts.
const WAIT: Duration = Duration::from_secs(20);

/// An agent's device token in these tests.
pub fn token(id: Uuid) -> String {
    format!("token-for-{id}")
}

/// A clustered relay's config: `ns` names the test's exchanges, `relay_id` the relay; heartbeat
/// every 0.2 s, a relay not heard from for `lease_s` is gone, quick broker reconnects.
pub fn config_text(
    ns: &str,
    relay_id: &str,
    url: &str,
    drones: &[Uuid],
    lockers: &[Uuid],
    lease_s: f64,
) -> String {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout_s = 1.0\n[backend]\ntoken = \"{BACKEND_TOKEN}\"\n\
         [cluster]\nurl = \"{url}\"\nrelay_id = \"{relay_id}\"\nagents_exchange = \"{ns}.agents\"\n\
         to_agents_exchange = \"{ns}.to-agents\"\nheartbeat_interval_s = 0.2\nlease_s = {lease_s:?}\n\
         reconnect_initial_s = 0.05\nreconnect_max_s = 0.3\n"
    );
    for id in drones {
        text += &format!("[[drones]]\nid = \"{id}\"\ntoken = \"{}\"\n", token(*id));
    }
    for id in lockers {
        text += &format!("[[lockers]]\nid = \"{id}\"\ntoken = \"{}\"\n", token(*id));
    }
    text
}

/// [`config_text`] on this binary's broker, parsed.
pub fn config(ns: &str, relay_id: &str, drones: &[Uuid], lockers: &[Uuid], lease_s: f64) -> Config {
    let text = config_text(ns, relay_id, &broker().amqp_url, drones, lockers, lease_s);
    daemon::config::parse(&text, std::path::Path::new("cluster.toml")).unwrap()
}

/// Relays `ids.0` and `ids.1` in one cluster (exchanges named by `ns`), each knowing the same
/// agents, returned once both are on the broker.
pub async fn relay_pair(
    ns: &str,
    ids: (&str, &str),
    drones: &[Uuid],
    lockers: &[Uuid],
    lease_s: f64,
) -> (Relay, Relay) {
    let a = Relay::start(&config(ns, ids.0, drones, lockers, lease_s))
        .await
        .unwrap();
    let b = Relay::start(&config(ns, ids.1, drones, lockers, lease_s))
        .await
        .unwrap();
    until_up(&a).await;
    until_up(&b).await;
    (a, b)
}

/// Waits until the relay's broker connection is up.
pub async fn until_up(relay: &Relay) {
    let c = relay.hub().cluster().unwrap().clone();
    until("the relay is on the broker", || c.is_up()).await;
}

/// Waits (bounded) until `cond` holds, looking every 20 ms.
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while !cond() {
            tick.tick().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

/// A WebSocket to `path` on `addr` with `auth` as its bearer token (and an agent's id).
pub async fn dial(addr: &str, path: &str, auth: &str, id: Option<Uuid>) -> Ws {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {auth}")).unwrap(),
    );
    if let Some(id) = id {
        req.headers_mut().insert(
            "x-skypost-agent-id",
            HeaderValue::from_str(&id.to_string()).unwrap(),
        );
    }
    tokio_tungstenite::connect_async(req).await.unwrap().0
}
