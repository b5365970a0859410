//! `relay run --config FILE` serves until SIGTERM/SIGINT; `relay config check FILE` validates a
//! config (and loads its TLS files) without serving.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use relay::{Config, Relay};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "relay",
    version,
    about = "The SkyPost cloud relay",
    after_help = daemon::exit::TABLE
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve agents and the backend.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Config file commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Parse and validate a config file; exit 0 if it is good.
    Check { file: PathBuf },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run { config } => match run(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                eprintln!("relay: {e:#}");
                daemon::exit::code(e.as_ref())
            }
        },
        Command::Config {
            command: ConfigCommand::Check { file },
        } => match check(&file) {
            Ok(summary) => {
                println!("{}: ok ({summary})", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e:#}");
                daemon::exit::code(e.as_ref())
            }
        },
    }
}

fn check(path: &std::path::Path) -> anyhow::Result<String> {
    let mut config: Config = daemon::config::load(path)?;
    config.resolve_paths(path);
    let fleet = match &config.fleet {
        Some(f) => Some(relay::fleet::Fleet::load(&f.file)?),
        None => None,
    };
    if let Some(tls) = &config.server.tls {
        relay::tls::acceptor(tls)?;
    }
    let (drones, lockers) = match &fleet {
        Some(f) => {
            let enabled = f.enabled();
            let drones = enabled
                .keys()
                .filter(|(k, _)| *k == relay::auth::AgentKind::Drone)
                .count();
            (drones, enabled.len() - drones)
        }
        None => (config.drones.len(), config.lockers.len()),
    };
    Ok(format!(
        "{} drone(s), {} locker(s), listen {}{}",
        drones,
        lockers,
        config.server.listen,
        if config.server.tls.is_some() {
            ", TLS"
        } else {
            ""
        }
    ))
}

fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let mut config: Config = daemon::config::load(path)?;
    config.resolve_paths(path);
    daemon::logging::init("relay");
    match relay::limits::raise_nofile_limit() {
        Ok(n) => tracing::info!(open_files = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if config.server.worker_threads > 0 {
        rt.worker_threads(config.server.worker_threads);
    }
    let rt = rt
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async move {
        // Poll the signal future once before listening, so its handlers are installed: a
        // SIGTERM that comes right after the relay is up must still shut it down in order.
        let mut signal = std::pin::pin!(daemon::shutdown::wait());
        let early = tokio::select! {
            biased;
            s = &mut signal => Some(s),
            _ = std::future::ready(()) => None,
        };
        if let Some(s) = early {
            let s = s.context("installing signal handlers")?;
            tracing::info!(signal = ?s, "stopped before starting");
            return Ok(());
        }
        let hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot install the SIGHUP handler: the fleet reloads only on file changes");
                None
            }
        };
        let relay = Relay::start(&config).await?;
        // The config (thousands of agents) was parsed into temporary trees; nothing needs it
        // now that the hub holds the digests. Give that memory back to the OS.
        drop(config);
        relay::limits::release_freed_memory();
        // Under systemd (Type=notify): ready once listening; the watchdog is fed from the
        // relay's own loop while it is healthy. Outside systemd these do nothing.
        let mut systemd = daemon::systemd::Service::from_env();
        let signal = relay
            .supervise(&mut systemd, hangup, signal)
            .await
            .context("installing signal handlers")?;
        tracing::info!(?signal, "shutting down");
        systemd.stopping();
        relay.shutdown().await?;
        tracing::info!("stopped");
        Ok(())
    })
}
