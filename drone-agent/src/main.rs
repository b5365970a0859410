//! `drone-agent`: the program on the drone's companion computer.

use clap::{Parser, Subcommand};

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
    /// Print the delivery state machine as a Mermaid diagram (generated from the transition table).
    Diagram,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Diagram => {
            print!("{}", drone_agent::machine::mermaid());
            Ok(())
        }
    }
}
