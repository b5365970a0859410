//! `locker-agent run --config FILE` and `locker-agent config check FILE`.

use clap::{Parser, Subcommand};
use locker_agent::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "locker-agent", version, about = "SkyPost parcel locker agent")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent.
    Run {
        #[arg(long, default_value = "/etc/skypost/locker-agent.toml")]
        config: PathBuf,
    },
    /// Config file tools.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Parse and validate a config file; print every problem.
    Check { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Config {
            cmd: ConfigCmd::Check { file },
        } => match daemon::config::load::<Config>(&file) {
            Ok(_) => {
                println!("{}: OK", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Cmd::Run { config } => {
            daemon::logging::init("locker-agent");
            let cfg = match daemon::config::load::<Config>(&config) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "bad config");
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(locker_agent::agent::run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "locker agent failed");
                    eprintln!("locker-agent: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
