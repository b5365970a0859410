//! Relay load benchmark: N drone agents each sending telemetry at 1 Hz, one backend receiving
//! everything, all on loopback against a relay started here as a separate process (so its CPU
//! and memory can be read from /proc without the generator's in them).
//!
//! ```text
//! cargo build --profile loadtest -p relay --bins
//! target/loadtest/relay-load --agents 19900 --seconds 30
//! # two relays through RabbitMQ (a broker of its own is started, on free loopback ports):
//! target/loadtest/relay-load --agents 10000 --relays 2 --seconds 30
//! ```
//!
//! With `--relays N` the agents are dealt round the N relays (agent i on relay i mod N), every
//! relay is in one cluster on the broker (`--amqp-url`, or a `rabbitmq-server` started here and
//! stopped at the end), and the one backend is on relay 0: the frames of the agents on the
//! other relays reach it through the broker. The report gives each relay's and the broker's
//! CPU and RSS.
//!
//! It stops by itself and prints messages per second, loss, agent-to-backend latency (p50, p99,
//! max; from the envelope's send timestamp to the backend's receipt, same host clock), and the
//! relay's resident memory and CPU over the measured window. Traffic goes to 127.0.0.1 only.
//!
//! On a machine busy with other work (builds), the end-to-end tail is mostly the kernel making
//! the relay and the generator wait for a core. The report also gives the relay's own share (its
//! `/metrics` histogram), and a run under `chrt -f 10 target/release/relay-load ...` (root; the
//! relay inherits the policy) shows the latency when both get the CPU as soon as they ask.

use anyhow::{bail, Context as _};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use uuid::Uuid;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "relay-load",
    about = "Load benchmark for the SkyPost relay (loopback only)"
)]
struct Args {
    /// Simulated drone agents, one WebSocket each.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Length of the measured window, seconds (after every agent is connected).
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Telemetry per agent per second.
    #[arg(long, default_value_t = 1.0)]
    rate_hz: f64,
    /// The relay binary (default: `relay` next to this one).
    #[arg(long)]
    relay_bin: Option<PathBuf>,
    /// The relay's tokio worker threads (0 = one per CPU).
    #[arg(long, default_value_t = 0)]
    relay_threads: usize,
    /// Connections being opened at once during the ramp-up.
    #[arg(long, default_value_t = 200)]
    ramp_concurrency: usize,
    /// Threads of the agents' runtime (the backend has a thread of its own). One thread could
    /// not ramp 19,900 agents on a busy machine while also sending the connected ones' 1 Hz.
    #[arg(long, default_value_t = 2)]
    generator_threads: usize,
    /// Seconds of traffic before the measured window starts.
    #[arg(long, default_value_t = 3)]
    warmup_seconds: u64,
    /// Serve wss:// (rustls, the test certificate in relay/tests/data) and dial it from every
    /// client: shows what TLS in the relay process costs.
    #[arg(long)]
    tls: bool,
    /// Relays in one cluster through RabbitMQ (1: a relay alone, no broker).
    #[arg(long, default_value_t = 1)]
    relays: usize,
    /// The broker of the cluster (`amqp://...`); without it, with `--relays` over 1, a
    /// `rabbitmq-server` is started for the run.
    #[arg(long)]
    amqp_url: Option<String>,
    /// The broker's start script (Debian's rabbitmq-server package).
    #[arg(long, default_value = "/usr/lib/rabbitmq/bin/rabbitmq-server")]
    rabbitmq_server: PathBuf,
}

const TEST_CERT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/localhost.crt");
const TEST_KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/localhost.key");

/// A rustls client (ring provider) that trusts the test certificate only.
fn tls_connector() -> anyhow::Result<tokio_tungstenite::Connector> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(TEST_CERT)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_tungstenite::Connector::Rustls(Arc::new(client)))
}

/// Opens one client WebSocket, over TLS when `connector` is given.
async fn dial(
    req: tokio_tungstenite::tungstenite::handshake::client::Request,
    cfg: WebSocketConfig,
    connector: Option<tokio_tungstenite::Connector>,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::Error,
> {
    let (ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(req, Some(cfg), true, connector).await?;
    Ok(ws)
}

const BACKEND_TOKEN: &str = "load-backend-token-0123456789";

fn agent_id(i: usize) -> Uuid {
    Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0000 | (i as u128 + 1))
}

fn agent_token(i: usize) -> String {
    format!("load-agent-token-{i:010}")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.agents == 0 || args.seconds == 0 || args.rate_hz <= 0.0 || args.relays == 0 {
        bail!("--agents, --seconds, --rate-hz and --relays must be positive");
    }
    if args.tls && args.relays > 1 {
        bail!("--tls is for one relay (the cluster's health is read over plain HTTP)");
    }
    let nofile = relay::limits::raise_nofile_limit().context("raising the open-file limit")?;
    if nofile < args.agents as u64 + 64 {
        bail!(
            "open-file limit is {nofile}: too low for {} agents (raise the hard limit, `ulimit -Hn`)",
            args.agents
        );
    }

    let dir = std::env::temp_dir().join(format!("relay-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = with_processes(&args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let report = result?;
    print!("{report}");
    Ok(())
}

/// Starts the broker (if one is needed) and the relays, runs the load, stops them all.
fn with_processes(args: &Args, dir: &std::path::Path) -> anyhow::Result<String> {
    let mut broker = None;
    let amqp_url = match (&args.amqp_url, args.relays) {
        (Some(url), _) => Some(url.clone()),
        (None, 1) => None,
        (None, _) => {
            let b = Broker::start(&args.rabbitmq_server, &dir.join("rabbitmq"))?;
            let url = b.url.clone();
            broker = Some(b);
            Some(url)
        }
    };
    let relay_bin = match &args.relay_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no parent directory of this binary")?
            .join("relay"),
    };
    // exchanges of this run only: a shared broker may carry a real fleet's
    let ns = format!("relay-load-{}", std::process::id());
    let mut relays = Vec::new();
    for r in 0..args.relays {
        let port = free_port()?;
        let config_path = dir.join(format!("relay-{r}.toml"));
        let cluster = amqp_url.as_deref().map(|url| (url, ns.as_str(), r));
        std::fs::write(&config_path, relay_config(args, port, cluster))?;
        // the relay inherits this process's scheduling (e.g. `chrt -f 10 relay-load ...`)
        let child = Command::new(&relay_bin)
            .args(["run", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", relay_bin.display()))?;
        relays.push((RelayProcess { child }, port));
    }
    let targets: Vec<(u32, u16)> = relays.iter().map(|(p, port)| (p.pid(), *port)).collect();
    let result = run(args, &targets, broker.as_ref().map(Broker::pid));
    for (mut relay, _) in relays {
        relay.stop();
    }
    if let Some(mut b) = broker {
        b.stop();
    }
    result
}

fn relay_config(args: &Args, port: u16, cluster: Option<(&str, &str, usize)>) -> String {
    let mut c = String::new();
    let _ = writeln!(
        c,
        // every simulated agent dials from 127.0.0.1: lift the per-source cap on dials in flight
        "[server]\nlisten = \"127.0.0.1:{port}\"\nworker_threads = {}\nmax_unauthenticated_per_source = 20000\nmax_unauthenticated = 20000\n",
        args.relay_threads
    );
    if args.tls {
        let _ = writeln!(
            c,
            "[server.tls]\ncert = \"{TEST_CERT}\"\nkey = \"{TEST_KEY}\"\n"
        );
    }
    if let Some((url, ns, r)) = cluster {
        let _ = writeln!(
            c,
            "[cluster]\nurl = \"{url}\"\nrelay_id = \"load-{r}\"\nagents_exchange = \"{ns}.agents\"\nto_agents_exchange = \"{ns}.to-agents\"\n"
        );
    }
    let _ = writeln!(c, "[backend]\ntoken = \"{BACKEND_TOKEN}\"\n");
    for i in 0..args.agents {
        let _ = writeln!(
            c,
            "[[drones]]\nid = \"{}\"\ntoken = \"{}\"",
            agent_id(i),
            agent_token(i)
        );
    }
    c
}

fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

struct RelayProcess {
    child: Child,
}

impl RelayProcess {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, as systemd would, then wait for it to exit.
    fn stop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let _ = self.child.wait();
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A RabbitMQ node of the run's own: a private directory, free loopback ports, its own Erlang
/// cookie; stopped (SIGTERM, then SIGKILL) at the end, and killed with this process if it dies
/// first (PR_SET_PDEATHSIG: it is spawned from the main thread, which lives as long as we do).
struct Broker {
    child: Child,
    url: String,
}

impl Broker {
    fn start(script: &std::path::Path, dir: &std::path::Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        use std::os::unix::process::CommandExt as _;
        let home = dir.join("home");
        std::fs::create_dir_all(&home)?;
        let cookie = home.join(".erlang.cookie");
        std::fs::write(&cookie, format!("relayload{}", Uuid::new_v4().simple()))?;
        std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400))?;
        std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
        let node = format!("relay-load-{}@localhost", std::process::id());
        let (port, dist) = (free_port()?, free_port()?);
        let env = |c: &mut Command| {
            c.env("HOME", &home)
                .env("RABBITMQ_NODENAME", &node)
                .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
                .env("RABBITMQ_LOG_BASE", dir.join("log"))
                .env("RABBITMQ_PID_FILE", dir.join("pid"))
                .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
                .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
                .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"));
        };
        let mut c = Command::new(script);
        env(&mut c);
        c.env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            // only the server gets the distribution port: rabbitmqctl would take it first
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            // the start script then execs the Erlang VM: our child is the broker itself
            .env("RUNNING_UNDER_SYSTEMD", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("server.out"))?)
            .stderr(Stdio::null());
        // SAFETY: prctl in the child between fork and exec, async-signal-safe.
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = c.spawn().with_context(|| {
            format!(
                "starting {} (apt install rabbitmq-server)",
                script.display()
            )
        })?;
        let mut broker = Broker {
            child,
            url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        };
        let ctl = script.with_file_name("rabbitmqctl");
        let mut wait = Command::new(&ctl);
        env(&mut wait);
        let out = wait
            .args(["-n", &node, "wait", "--timeout", "120"])
            .arg(dir.join("pid"))
            .output()
            .with_context(|| format!("running {}", ctl.display()))?;
        if !out.status.success() {
            broker.stop();
            bail!(
                "the broker did not start: {}{}",
                String::from_utf8_lossy(&out.stdout),
                std::fs::read_to_string(dir.join("server.out")).unwrap_or_default()
            );
        }
        Ok(broker)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        // a broker that takes long to stop is killed: its data is this run's only
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// -- /proc ------------------------------------------------------------------------------------

/// CPU time (user + system) of a process, seconds.
fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // fields after the `(comm)`, which may itself hold spaces
    let rest = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15
    let utime: f64 = f.get(11).context("no utime")?.parse()?;
    let stime: f64 = f.get(12).context("no stime")?.parse()?;
    // SAFETY: sysconf only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((utime + stime) / ticks)
}

/// (VmRSS, VmHWM) in KiB.
fn memory_kib(pid: &str) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// The relay's own forward-latency histogram (cumulative bucket counts by upper bound,
/// seconds), read from its `/metrics` over plain HTTP on loopback.
fn relay_histogram(addr: &str) -> anyhow::Result<Vec<(f64, u64)>> {
    let text = metrics_text(addr)?;
    let mut buckets = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("relay_forward_latency_seconds_bucket{le=\"") else {
            continue;
        };
        let Some((le, count)) = rest.split_once("\"} ") else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse()?
        };
        buckets.push((le, count.trim().parse()?));
    }
    Ok(buckets)
}

/// A relay's `/metrics`, over plain HTTP on loopback.
fn metrics_text(addr: &str) -> anyhow::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

/// The smallest bucket bound holding fraction `p` of the frames counted between two readings.
fn histogram_quantile(before: &[(f64, u64)], after: &[(f64, u64)], p: f64) -> Option<f64> {
    let delta: Vec<(f64, u64)> = after
        .iter()
        .zip(before)
        .map(|((le, a), (_, b))| (*le, a.saturating_sub(*b)))
        .collect();
    let total = delta.last()?.1;
    let want = (total as f64 * p).ceil() as u64;
    delta.iter().find(|(_, c)| *c >= want).map(|(le, _)| *le)
}

/// This process's scheduling policy, as the report should say it (a real-time run is not
/// comparable to a plain one).
fn scheduling() -> &'static str {
    // SAFETY: sched_getscheduler(0) only reads our own policy.
    match unsafe { libc::sched_getscheduler(0) } {
        libc::SCHED_FIFO => "SCHED_FIFO",
        libc::SCHED_RR => "SCHED_RR",
        _ => "normal scheduling",
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

// -- the run ----------------------------------------------------------------------------------

/// What the backend saw.
#[derive(Default)]
struct BackendView {
    up: AtomicBool,
    connected: AtomicU64,
    received: AtomicU64,
    errors: AtomicU64,
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow, default)]
    timestamp: Option<&'a str>,
}

/// `relays`: (pid, port) of each relay; the backend is on the first. `broker`: its pid.
fn run(args: &Args, relays: &[(u32, u16)], broker: Option<u32>) -> anyhow::Result<String> {
    let pids: Vec<String> = relays.iter().map(|(pid, _)| pid.to_string()).collect();
    let addrs: Vec<String> = relays
        .iter()
        .map(|(_, port)| format!("127.0.0.1:{port}"))
        .collect();
    let port = relays.first().context("no relay")?.1;
    let addr = addrs[0].clone();
    for a in &addrs {
        wait_for_listener(a)?;
    }
    if broker.is_some() || args.amqp_url.is_some() {
        for a in &addrs {
            wait_for_broker(a)?;
        }
    }
    // the relay trims its heap just after binding: read its idle size after that
    std::thread::sleep(Duration::from_millis(500));
    let mut idle_rss = Vec::new();
    for pid in &pids {
        idle_rss.push(memory_kib(pid)?.0);
    }

    // The window is defined on send timestamps; latencies are recorded for frames sent in it.
    let window: Arc<std::sync::OnceLock<(DateTime<Utc>, DateTime<Utc>)>> = Default::default();
    let view = Arc::new(BackendView::default());
    let done = Arc::new(AtomicBool::new(false));
    let (bases, connector) = if args.tls {
        // the test certificate is for `localhost`
        let bases = relays
            .iter()
            .map(|(_, port)| format!("wss://localhost:{port}"))
            .collect::<Vec<_>>();
        (bases, Some(tls_connector()?))
    } else {
        (addrs.iter().map(|a| format!("ws://{a}")).collect(), None)
    };
    let _ = port;

    // The backend on its own thread and runtime, so its receive times are not delayed by the
    // agents' sending work.
    let backend = {
        let (url, view, window, done, connector) = (
            format!("{}/ws/backend", bases[0]),
            view.clone(),
            window.clone(),
            done.clone(),
            connector.clone(),
        );
        std::thread::Builder::new().name("backend".into()).spawn(
            move || -> anyhow::Result<Vec<u32>> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(backend_loop(url, view, window, done, connector))
            },
        )?
    };
    while !view.up.load(Relaxed) && view.errors.load(Relaxed) == 0 {
        std::thread::sleep(Duration::from_millis(10));
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.generator_threads.max(1))
        .enable_all()
        .build()?;
    let sent_in_window = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    // telemetry starts once every agent is connected: the ramp is handshakes only
    let (origin_tx, origin_rx) = watch::channel(None);
    let ramp_started = Instant::now();
    let outcome = rt.block_on(async {
        let period = Duration::from_secs_f64(1.0 / args.rate_hz);
        let ramp = Arc::new(Semaphore::new(args.ramp_concurrency));
        let mut tasks = Vec::with_capacity(args.agents);
        for i in 0..args.agents {
            // spread the agents evenly over one period, as real drones are
            let phase = period.mul_f64(i as f64 / args.agents as f64);
            tasks.push(tokio::spawn(agent(
                format!("{}/ws/drone", bases[i % bases.len()]),
                connector.clone(),
                i,
                (origin_rx.clone(), phase),
                period,
                ramp.clone(),
                window.clone(),
                sent_in_window.clone(),
                stop_rx.clone(),
            )));
        }
        // every agent connected (the backend has seen its presence)
        let deadline = Instant::now() + Duration::from_secs(120);
        while (view.connected.load(Relaxed) as usize) < args.agents {
            if Instant::now() > deadline {
                bail!(
                    "only {} of {} agents connected in 120 s",
                    view.connected.load(Relaxed),
                    args.agents
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ramp_s = ramp_started.elapsed().as_secs_f64();
        let _ = origin_tx.send(Some(
            tokio::time::Instant::now() + Duration::from_millis(100),
        ));
        tokio::time::sleep(Duration::from_secs(args.warmup_seconds)).await;

        let start = Utc::now();
        let end = start + chrono::Duration::seconds(args.seconds as i64);
        let _ = window.set((start, end));
        // (plain HTTP only: with --tls the relay's own histogram is not read)
        let hist0 = if args.tls {
            Vec::new()
        } else {
            relay_histogram(&addr)?
        };
        // every relay, then the broker
        let mut watched: Vec<(String, String, u64)> = pids
            .iter()
            .zip(&idle_rss)
            .enumerate()
            .map(|(r, (pid, idle))| (format!("relay {r}"), pid.clone(), *idle))
            .collect();
        if let Some(b) = broker {
            watched.push(("broker".to_owned(), b.to_string(), 0));
        }
        let mut cpu0 = Vec::new();
        for (_, pid, _) in &watched {
            cpu0.push(cpu_seconds(pid)?);
        }
        let own0 = cpu_seconds("self")?;
        let t0 = Instant::now();
        let mut peak_rss = vec![0; watched.len()];
        while t0.elapsed() < Duration::from_secs(args.seconds) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for ((_, pid, _), peak) in watched.iter().zip(&mut peak_rss) {
                *peak = (*peak).max(memory_kib(pid)?.0);
            }
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let mut procs = Vec::new();
        for (((name, pid, idle), c0), peak) in watched.into_iter().zip(cpu0).zip(peak_rss) {
            let cpu = (cpu_seconds(&pid)? - c0) / elapsed;
            let (rss, hwm) = memory_kib(&pid)?;
            procs.push(ProcStats {
                name,
                cpu,
                rss,
                hwm,
                peak_rss: peak.max(rss),
                idle_rss: idle,
            });
        }
        let own = (cpu_seconds("self")? - own0) / elapsed;
        let hist1 = if args.tls {
            Vec::new()
        } else {
            relay_histogram(&addr)?
        };
        let load = load_average();
        // frames sent just before the end are still in flight: give them time to land
        tokio::time::sleep(Duration::from_secs(2)).await;
        // what each relay counted: drops, and its broker traffic (where a cluster falls behind)
        let mut counters = Vec::new();
        if !args.tls {
            for (r, a) in addrs.iter().enumerate() {
                for line in metrics_text(a)?.lines() {
                    let counted = line.starts_with("relay_dropped_frames_total")
                        || line.starts_with("relay_queue_full_total")
                        || (line.starts_with("relay_cluster_")
                            && !line.starts_with("relay_cluster_broker_up"));
                    if counted && !line.ends_with(" 0") {
                        counters.push(format!("relay {r}: {line}"));
                    }
                }
            }
        }
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = t.await;
        }
        anyhow::Ok(Measured {
            ramp_s,
            elapsed,
            procs,
            own,
            relay_p50: histogram_quantile(&hist0, &hist1, 0.50),
            relay_p99: histogram_quantile(&hist0, &hist1, 0.99),
            load,
            counters,
        })
    });
    done.store(true, Relaxed);
    let mut lat = backend
        .join()
        .map_err(|_| anyhow::anyhow!("backend thread panicked"))??;
    let m = outcome?;

    let sent = sent_in_window.load(Relaxed);
    let received = lat.len() as u64;
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        f64::from(lat[i]) / 1000.0
    };
    let max = lat.last().map_or(f64::NAN, |v| f64::from(*v) / 1000.0);
    let loss = sent.saturating_sub(received);
    let mut r = String::new();
    let _ = writeln!(
        r,
        "relay-load: {} agents at {} Hz, {:.1} s measured (ramp-up {:.1} s, warm-up {} s, {})",
        args.agents,
        args.rate_hz,
        m.elapsed,
        m.ramp_s,
        args.warmup_seconds,
        scheduling()
    );
    let _ = writeln!(
        r,
        "  messages: sent {sent}, received {received}, lost {loss} ({:.4} %), {:.0} msg/s",
        100.0 * loss as f64 / sent.max(1) as f64,
        received as f64 / m.elapsed
    );
    let _ = writeln!(
        r,
        "  latency agent->backend: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        pct(0.50),
        pct(0.99),
        pct(0.999),
        max
    );
    let per_relay = args.agents as f64 / args.relays as f64;
    for p in &m.procs {
        let _ = write!(
            r,
            "  {}: CPU {:.1} % of one core, RSS {:.1} MiB (peak {:.1} MiB, high-water {:.1} MiB",
            p.name,
            100.0 * p.cpu,
            p.rss as f64 / 1024.0,
            p.peak_rss as f64 / 1024.0,
            p.hwm as f64 / 1024.0,
        );
        if p.name.starts_with("relay") {
            // what the connections cost: RSS over the relay's idle size, per agent it holds
            let _ = write!(
                r,
                ", idle before agents {:.1} MiB, {:.2} KiB per agent connection",
                p.idle_rss as f64 / 1024.0,
                p.rss.saturating_sub(p.idle_rss) as f64 / per_relay
            );
        }
        let _ = writeln!(r, ")");
    }
    let bound = |b: Option<f64>| b.map_or("?".to_owned(), |s| format!("<= {:.3} ms", s * 1e3));
    let _ = writeln!(
        r,
        "  inside relay 0 (read -> written to the backend socket, its /metrics histogram): p50 {}, p99 {}",
        bound(m.relay_p50),
        bound(m.relay_p99)
    );
    let _ = writeln!(
        r,
        "  load generator: CPU {:.1} % of one core; backend errors {}; machine load average {}",
        100.0 * m.own,
        view.errors.load(Relaxed),
        m.load
    );
    for c in &m.counters {
        let _ = writeln!(r, "  {c}");
    }
    let procs_json: Vec<String> = m
        .procs
        .iter()
        .map(|p| {
            format!(
                "{{\"name\":\"{}\",\"cpu_pct\":{:.1},\"rss_mib\":{:.1},\"peak_rss_mib\":{:.1}}}",
                p.name,
                100.0 * p.cpu,
                p.rss as f64 / 1024.0,
                p.peak_rss as f64 / 1024.0
            )
        })
        .collect();
    let _ = writeln!(
        r,
        "  json: {{\"agents\":{},\"relays\":{},\"msgs_per_s\":{:.1},\"sent\":{sent},\"received\":{received},\"lost\":{loss},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"processes\":[{}]}}",
        args.agents,
        args.relays,
        received as f64 / m.elapsed,
        pct(0.5),
        pct(0.99),
        max,
        procs_json.join(",")
    );
    Ok(r)
}

/// CPU (share of one core) and memory (KiB) of one process over the window.
struct ProcStats {
    name: String,
    cpu: f64,
    rss: u64,
    hwm: u64,
    peak_rss: u64,
    idle_rss: u64,
}

struct Measured {
    ramp_s: f64,
    elapsed: f64,
    procs: Vec<ProcStats>,
    own: f64,
    /// Bucket bounds (seconds) from the relay's own histogram: its share of the latency.
    relay_p50: Option<f64>,
    relay_p99: Option<f64>,
    /// The machine's 1-minute load average at the end of the window (other work skews latency).
    load: String,
    /// Non-zero drop and broker counters of every relay, read after the window.
    counters: Vec<String>,
}

/// Waits until the relay at `addr` says, in `/health`, that its broker connection is up.
fn wait_for_broker(addr: &str) -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut s = std::net::TcpStream::connect(addr)?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        if text.contains("\"broker\":\"up\"") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the relay on {addr} did not reach the broker in 30 s: {text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for_listener(addr: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("the relay did not start listening on {addr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Small client buffers too: the generator holds as many sockets as the relay.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

async fn backend_loop(
    url: String,
    view: Arc<BackendView>,
    window: Arc<std::sync::OnceLock<(DateTime<Utc>, DateTime<Utc>)>>,
    done: Arc<AtomicBool>,
    connector: Option<tokio_tungstenite::Connector>,
) -> anyhow::Result<Vec<u32>> {
    let mut req = url.into_client_request()?;
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {BACKEND_TOKEN}"))?,
    );
    let cfg = WebSocketConfig::default().read_buffer_size(256 * 1024);
    let mut ws = match dial(req, cfg, connector).await {
        Ok(x) => x,
        Err(e) => {
            view.errors.fetch_add(1, Relaxed);
            return Err(e).context("backend connect");
        }
    };
    // the backend is up before any agent connects, so it sees every `connected`
    view.up.store(true, Relaxed);
    let mut latencies_us = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_millis(200), ws.next()).await;
        let msg = match next {
            Err(_) => {
                if done.load(Relaxed) {
                    break;
                }
                continue;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                view.errors.fetch_add(1, Relaxed);
                eprintln!("backend: {e}");
                break;
            }
            Ok(Some(Ok(m))) => m,
        };
        let WsMessage::Text(text) = msg else { continue };
        let now = Utc::now();
        let Ok(frame) = serde_json::from_str::<Frame<'_>>(&text) else {
            view.errors.fetch_add(1, Relaxed);
            continue;
        };
        match frame.kind {
            "presence" if text.contains("\"connected\"") => {
                view.connected.fetch_add(1, Relaxed);
            }
            "telemetry" => {
                view.received.fetch_add(1, Relaxed);
                let (Some(ts), Some((start, end))) = (frame.timestamp, window.get()) else {
                    continue;
                };
                let Ok(sent) = DateTime::parse_from_rfc3339(ts) else {
                    view.errors.fetch_add(1, Relaxed);
                    continue;
                };
                let sent = sent.with_timezone(&Utc);
                if sent >= *start && sent < *end {
                    let us = (now - sent).num_microseconds().unwrap_or(i64::MAX);
                    latencies_us.push(u32::try_from(us.max(0)).unwrap_or(u32::MAX));
                }
            }
            "error" => {
                view.errors.fetch_add(1, Relaxed);
            }
            _ => {}
        }
        if done.load(Relaxed) {
            break;
        }
    }
    let _ = ws.close(None).await;
    Ok(latencies_us)
}

#[allow(clippy::too_many_arguments)]
async fn agent(
    url: String,
    connector: Option<tokio_tungstenite::Connector>,
    i: usize,
    // when the first telemetry goes (once every agent is connected), and this agent's phase
    (mut origin, phase): (watch::Receiver<Option<tokio::time::Instant>>, Duration),
    period: Duration,
    ramp: Arc<Semaphore>,
    window: Arc<std::sync::OnceLock<(DateTime<Utc>, DateTime<Utc>)>>,
    sent_in_window: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ws = {
        let Ok(_permit) = ramp.acquire().await else {
            return;
        };
        let Ok(mut req) = url.into_client_request() else {
            return;
        };
        let h = req.headers_mut();
        if let (Ok(auth), Ok(id)) = (
            HeaderValue::from_str(&format!("Bearer {}", agent_token(i))),
            HeaderValue::from_str(&agent_id(i).to_string()),
        ) {
            h.insert("authorization", auth);
            h.insert("x-skypost-agent-id", id);
        }
        match dial(req, client_config(), connector).await {
            Ok(ws) => ws,
            Err(e) => {
                eprintln!("agent {i}: {e}");
                return;
            }
        }
    };
    // replaced when the origin is known; until then its branch is off
    let mut tick = tokio::time::interval(period);
    let mut sending = false;
    let mut battery = 100.0_f64;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            changed = origin.changed(), if !sending => {
                if changed.is_err() {
                    break;
                }
                if let Some(first) = *origin.borrow_and_update() {
                    tick = tokio::time::interval_at(first + phase, period);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                    sending = true;
                }
            }
            _ = tick.tick(), if sending => {
                let now = Utc::now();
                battery = (battery - 0.01).max(5.0);
                let frame = format!(
                    r#"{{"type":"telemetry","payload":{{"battery_level":{battery:.2},"position":{{"lat":55.7512,"lon":37.6184,"alt":42.0}},"status":"flying","heading":181.0,"ground_speed":11.2,"armed":true,"state":"NAVIGATING"}},"timestamp":"{}"}}"#,
                    now.to_rfc3339_opts(SecondsFormat::Micros, true)
                );
                if ws.send(WsMessage::text(frame)).await.is_err() {
                    break;
                }
                if let Some((start, end)) = window.get() {
                    if now >= *start && now < *end {
                        sent_in_window.fetch_add(1, Relaxed);
                    }
                }
            }
            // read meanwhile too: the relay's pings must be answered during a long ramp
            incoming = ws.next() => match incoming {
                // pings are answered by tungstenite while we poll; nothing else is expected
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
    let _ = ws.close(None).await;
}
