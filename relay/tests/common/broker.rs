//! A real RabbitMQ for the cluster tests (Debian's `rabbitmq-server`), one per test binary.
//!
//! Started on first use, in a directory under the target dir, on free ports, and killed when
//! the test process ends (PR_SET_PDEATHSIG on a thread that lives as long as the process;
//! `RUNNING_UNDER_SYSTEMD=1` makes the start script exec the Erlang VM, so the signal reaches
//! the broker itself). It listens for `amqp://` and, with the test certificate of
//! `relay/tests/data` (`localhost`), for `amqps://`.
#![allow(dead_code)] // each test binary uses a part

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use uuid::Uuid;

// -- the broker --------------------------------------------------------------------------------

pub struct Broker {
    pub amqp_url: String,
    /// The same broker over TLS (`localhost`, trusted through `relay/tests/data/localhost.crt`).
    pub amqps_url: String,
    node: String,
    dir: PathBuf,
    home: PathBuf,
}

impl Broker {
    /// Runs `rabbitmqctl` against this broker (`stop_app`, `start_app`, ...); panics if it fails.
    pub fn ctl(&self, args: &[&str]) {
        let mut c = std::process::Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl");
        broker_env(&mut c, &self.home, &self.node, &self.dir);
        let out = c.arg("-n").arg(&self.node).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn broker_env(
    c: &mut std::process::Command,
    home: &std::path::Path,
    node: &str,
    dir: &std::path::Path,
) {
    c.env("HOME", home)
        .env("RABBITMQ_NODENAME", node)
        .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", dir.join("log"))
        .env("RABBITMQ_PID_FILE", dir.join("pid"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
        .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
        .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"));
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn broker() -> &'static Broker {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    BROKER.get_or_init(start_broker)
}

fn start_broker() -> Broker {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    // brokers of earlier runs died with their test process; their directories did not
    for old in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = old.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("rabbitmq-") {
            if !std::path::Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(old.path());
            }
        }
    }
    let dir = tmp.join(format!("rabbitmq-{}", std::process::id()));
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    // the Erlang cookie the node and rabbitmqctl share: private to this broker
    let cookie = home.join(".erlang.cookie");
    std::fs::write(&cookie, format!("skypost{}", Uuid::new_v4().simple())).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400)).unwrap();
    std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
    let node = format!("skypost-test-{}@localhost", std::process::id());
    let port = free_port();
    let tls_port = free_port();
    let dist = free_port();
    // the TLS listener (RABBITMQ_CONFIG_FILE below names this file without its `.conf`)
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../relay/tests/data");
    let (cert, key) = (data.join("localhost.crt"), data.join("localhost.key"));
    std::fs::write(
        dir.join("rabbitmq.conf"),
        format!(
            "listeners.ssl.1 = 127.0.0.1:{tls_port}\nssl_options.cacertfile = {}\n\
             ssl_options.certfile = {}\nssl_options.keyfile = {}\n\
             ssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n",
            cert.display(),
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let env = |c: &mut std::process::Command| broker_env(c, &home, &node, &dir);
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let server_dir = dir.clone();
    let node_for_server = node.clone();
    let home_for_server = home.clone();
    // the thread that spawns the broker never ends: PR_SET_PDEATHSIG fires when the spawning
    // *thread* exits, and this one lives as long as the test process
    std::thread::spawn(move || {
        use std::os::unix::process::CommandExt as _;
        let mut c = std::process::Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
        c.env("HOME", &home_for_server)
            .env("RABBITMQ_NODENAME", &node_for_server)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            // only the server gets the distribution port: rabbitmqctl would take it first
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("RUNNING_UNDER_SYSTEMD", "1")
            .env("RABBITMQ_MNESIA_BASE", server_dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", server_dir.join("log"))
            .env("RABBITMQ_PID_FILE", server_dir.join("pid"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                server_dir.join("enabled_plugins"),
            )
            .env("RABBITMQ_CONFIG_FILE", server_dir.join("rabbitmq"))
            .env(
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                server_dir.join("advanced.config"),
            )
            .stdout(std::fs::File::create(server_dir.join("server.out")).unwrap())
            .stderr(Stdio::null());
        // SAFETY: prctl in the child between fork and exec, async-signal-safe.
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = c
            .spawn()
            .expect("rabbitmq-server (apt install rabbitmq-server)");
        started_tx.send(()).unwrap();
        let _keep = child;
        loop {
            std::thread::park();
        }
    });
    started_rx.recv().unwrap();
    let mut wait = std::process::Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl");
    env(&mut wait);
    let out = wait
        .args(["-n", &node, "wait", "--timeout", "120"])
        .arg(dir.join("pid"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "broker did not start: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(dir.join("server.out")).unwrap_or_default()
    );
    Broker {
        amqp_url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        amqps_url: format!("amqps://guest:guest@localhost:{tls_port}/%2f"),
        node,
        dir,
        home,
    }
}
