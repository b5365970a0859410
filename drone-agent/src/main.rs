//! `drone-agent`: the program on the drone's companion computer.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "drone-agent",
    version,
    about = "SkyPost drone agent: flies deliveries through a PX4 or ArduPilot flight controller"
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drone-agent: {e:#}");
            ExitCode::FAILURE
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
