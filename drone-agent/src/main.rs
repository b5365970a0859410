//! `drone-agent`: the program on the drone's companion computer.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "drone-agent",
    version,
    about = "SkyPost drone agent: flies deliveries through a PX4 or ArduPilot flight controller",
    after_help = daemon::exit::TABLE
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    Run {
        /// The TOML config (see drone-agent.example.toml).
        #[arg(long, short, default_value = "/etc/skypost/drone-agent.toml")]
        config: PathBuf,
    },
    /// Check a config file without starting anything; names every wrong field.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Print the delivery state machine as a Mermaid diagram (generated from the transition table).
    Diagram,
    /// Ask the running agent for its state, delivery, links, battery and last error.
    Status {
        /// One JSON object, for scripts.
        #[arg(long)]
        json: bool,
        /// The running agent's technician socket.
        #[arg(long, default_value = drone_agent::technician::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// The running agent's recent events (transitions and refusals), oldest first.
    Events {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = drone_agent::technician::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Run the pre-flight checks now (autopilot, cloud link, camera): each PASS or FAIL with
    /// what was seen. Exit 5 if any failed.
    Preflight {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = drone_agent::technician::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// A drone that landed away from home is back in service: LANDED_ELSEWHERE → IDLE (refused
    /// while the autopilot says armed or in the air, exit 5). Reported to the backend.
    Ready {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = drone_agent::technician::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// The flight logs on this drone (`.tlog` of the autopilot link, the autopilot's own `.bin`
    /// or `.ulg`), oldest first, from the config's `[logs] dir`; copy them with scp.
    Logs {
        #[arg(long)]
        json: bool,
        /// The TOML config (for `[logs] dir` and the state dir).
        #[arg(long, short, default_value = "/etc/skypost/drone-agent.toml")]
        config: PathBuf,
    },
    /// Hardware tests on the running agent.
    Test {
        #[command(subcommand)]
        what: TestWhat,
    },
}

#[derive(Subcommand)]
enum TestWhat {
    /// Open the payload release, hold it 2 s, close it. Only on the ground, disarmed, with no
    /// delivery on (refused otherwise, exit 5). Mind the parcel: it will drop.
    Release {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = drone_agent::technician::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    Check { file: PathBuf },
}

fn load(path: &std::path::Path) -> anyhow::Result<drone_agent::config::DroneConfig> {
    Ok(daemon::config::load(path)?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Diagram => {
            print!("{}", drone_agent::machine::mermaid());
            Ok(())
        }
        Command::Config {
            action: ConfigAction::Check { file },
        } => load(&file).map(|_| println!("{}: ok", file.display())),
        Command::Run { config } => run(config),
        Command::Logs { json, config } => logs(&config, json),
        Command::Status { json, socket } => return technician(&socket, "status", json),
        Command::Events { json, socket } => return technician(&socket, "events", json),
        Command::Preflight { json, socket } => return technician(&socket, "preflight", json),
        Command::Ready { json, socket } => return technician(&socket, "ready", json),
        Command::Test {
            what: TestWhat::Release { json, socket },
        } => return technician(&socket, "test release", json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drone-agent: {e:#}");
            daemon::exit::code(e.as_ref())
        }
    }
}

fn logs(config: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let cfg = load(config)?;
    let dir = cfg.logs_dir();
    let logs = drone_agent::technician::list_logs(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?;
    if json {
        println!("{}", serde_json::json!({ "dir": dir, "logs": logs }));
    } else {
        print!("{}", drone_agent::technician::render_logs(&dir, &logs));
    }
    Ok(())
}

/// The technician's client commands. Exit codes: 0 answered (and every check passed), 3 agent
/// not reachable (not running, or no permission on the socket), 4 a garbled exchange, 5 refused
/// or a check failed.
fn technician(socket: &std::path::Path, what: &str, json: bool) -> ExitCode {
    use drone_agent::technician::{self as tech, ChecksReply, EventsReport, StatusReport};
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("drone-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shown = rt.block_on(tech::request(socket, what)).and_then(|v| {
        // checks that ran but failed are an answer, and exit 5
        let failed = v.get("passed").and_then(|p| p.as_bool()) == Some(false);
        if json {
            return Ok((format!("{v}\n"), failed));
        }
        let text = match what {
            "status" => tech::render_status(&serde_json::from_value::<StatusReport>(v)?),
            "events" => tech::render_events(&serde_json::from_value::<EventsReport>(v)?),
            "ready" => format!(
                "ready: the drone is {}\n",
                v.get("state").and_then(|s| s.as_str()).unwrap_or("?")
            ),
            _ => tech::render_checks(&serde_json::from_value::<ChecksReply>(v)?),
        };
        Ok((text, failed))
    });
    match shown {
        Ok((text, failed)) => {
            print!("{text}");
            if failed {
                ExitCode::from(5)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("drone-agent: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(config: PathBuf) -> anyhow::Result<()> {
    let cfg = load(&config)?;
    daemon::logging::init("drone-agent");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let shutdown = async {
            match daemon::shutdown::wait().await {
                Ok(sig) => tracing::info!(?sig, "signal received"),
                Err(e) => {
                    tracing::error!(error = %e, "cannot install signal handlers; stop with SIGKILL only");
                    std::future::pending::<()>().await;
                }
            }
        };
        drone_agent::app::run(cfg, shutdown).await
    })
}
