//! `sim`: the SkyPost software-in-the-loop world, one subcommand per simulated device.
//!
//! ```text
//! sim vehicle --flavour px4 --speedup 20 --seed 7 --home 47.397742,8.545594,488
//! sim vehicle --flavour ardupilot --listen 0.0.0.0:5760 --control 127.0.0.1:5799
//! sim lockboard --cells 16 --travel-ms 500 --link /tmp/lockboard --control /tmp/lockboard.ctl
//! sim demo [--flavour ardupilot] [--variant cloud-drop|locker-offline|wrong-qr|qr-twice]
//! ```

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sim", about = "SkyPost software-in-the-loop world")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A MAVLink quadcopter that behaves like PX4 or ArduPilot SITL.
    Vehicle(sim::vehicle::cli::VehicleArgs),
    /// An Arduino lock board on a pseudo-terminal (prints LOCKBOARD_PATH=...).
    Lockboard(sim::lockboard::LockboardArgs),
    /// The whole delivery: relay, sim vehicle, sim lock board, both agents and the scripted
    /// backend, each a real process; exits non-zero if the delivery did not complete.
    Demo(sim::demo::DemoArgs),
    /// The scripted backend alone, against a relay and agents started elsewhere.
    Backend(sim::backend::BackendArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    daemon::logging::init("sim");
    let cli = Cli::parse();
    match cli.command {
        Command::Vehicle(args) => sim::vehicle::cli::run(args).await,
        Command::Lockboard(args) => sim::lockboard::run(args).await,
        Command::Backend(args) => match sim::backend::run_cli(args).await {
            Ok(true) => Ok(()),
            Ok(false) => std::process::exit(1),
            Err(e) => anyhow::bail!(e),
        },
        Command::Demo(args) => {
            if sim::demo::run(args).await? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
    }
}
