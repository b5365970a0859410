//! `locker-agent run --config FILE`, `locker-agent config check FILE`, and the technician's
//! commands, which talk to the running agent over its Unix socket ([`locker_agent::technician`]).

use clap::{Args, Parser, Subcommand};
use locker_agent::config::Config;
use locker_agent::locker::{BoardTest, TechAction};
use locker_agent::technician::{
    self as tech, render, ActionReport, CameraTest, CellsReport, ClientError, EventsReport,
    Request, StatusReport,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The suite's one table (`daemon::exit`); here 3 means: be root or in group skypost-locker,
/// and 5 includes a cell holding a parcel without --force, the board not answering, no camera,
/// the frame file not writable.
const EXIT_CODES: &str = daemon::exit::TABLE;

#[derive(Parser)]
#[command(
    name = "locker-agent",
    version,
    about = "SkyPost parcel locker agent",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Conn {
    /// The running agent's technician socket.
    #[arg(long, default_value = tech::DEFAULT_SOCKET)]
    socket: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent.
    Run {
        #[arg(long, default_value = "/etc/skypost/locker-agent.toml")]
        config: PathBuf,
        /// First boot: a missing cell state file (`state_dir/cells.json`) starts with no cells.
        /// Without it (or the `first-boot` marker in `state_dir`) a missing file is refused: the
        /// locker would forget which cell holds which parcel.
        #[arg(long)]
        init: bool,
    },
    /// Config file tools.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// State, links (cloud, lock board, camera), cells summary, last errors.
    Status {
        /// One JSON object, for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Bolt and door of every cell as the board reports them, with what each holds.
    Cells {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Open a cell (a technician action: logged and reported to the backend).
    Open {
        /// The cell's number on the board.
        cell: u16,
        /// Open it even though it holds a parcel.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Lock a cell (a technician action: logged and reported to the backend).
    Close {
        cell: u16,
        /// Lock it even though it holds a parcel (e.g. during a customer's pickup).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Put a cell back in service after looking at it: a jammed bolt freed, or the contents of
    /// a cell whose record was behind the board checked (logged and reported to the backend).
    Service {
        cell: u16,
        /// The cell holds no parcel (record it empty).
        #[arg(long)]
        empty: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Hardware checks.
    Test {
        #[command(subcommand)]
        what: TestCmd,
    },
    /// The agent's recent events, oldest first.
    Events {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
enum TestCmd {
    /// A STATUS round trip to the lock board, timed, and the board's health.
    Board {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Grab a frame, save it as PNG, and show what the QR decoder found in it.
    Camera {
        /// Where to save the frame (default: locker-camera-<time>.png in the temp directory).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Parse and validate a config file; print every problem.
    Check { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let paint = render::Paint::for_stdout();
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
                ExitCode::from(daemon::exit::BAD_CONFIG)
            }
        },
        Cmd::Run { config, init } => run(&config, init),
        Cmd::Status { json, conn } => client(&conn.socket, Request::Status, |v| {
            Ok(if json {
                format!("{v}\n")
            } else {
                render::status(&serde_json::from_value::<StatusReport>(v)?, paint)
            })
        }),
        Cmd::Cells { json, conn } => client(&conn.socket, Request::Cells, |v| {
            Ok(if json {
                format!("{v}\n")
            } else {
                render::cells(&serde_json::from_value::<CellsReport>(v)?, paint)
            })
        }),
        Cmd::Events { json, conn } => client(&conn.socket, Request::Events, |v| {
            Ok(if json {
                format!("{v}\n")
            } else {
                render::events(&serde_json::from_value::<EventsReport>(v)?)
            })
        }),
        Cmd::Open { cell, force, conn } => cell_action(&conn.socket, TechAction::Open, cell, force),
        Cmd::Close { cell, force, conn } => {
            cell_action(&conn.socket, TechAction::Close, cell, force)
        }
        Cmd::Service { cell, empty, conn } => client(
            &conn.socket,
            Request::Service {
                number: cell,
                empty,
            },
            |v| {
                Ok(format!(
                    "{}\n",
                    serde_json::from_value::<ActionReport>(v)?.done
                ))
            },
        ),
        Cmd::Test {
            what: TestCmd::Board { json, conn },
        } => client(&conn.socket, Request::TestBoard, |v| {
            let t: BoardTest = serde_json::from_value(v.clone())?;
            let text = if json {
                format!("{v}\n")
            } else {
                render::board(&t, paint)
            };
            match t.round_trip_ms {
                Some(_) => Ok(text),
                None => {
                    print!("{text}");
                    Err(ClientError::Local(
                        "the lock board did not answer STATUS".into(),
                    ))
                }
            }
        }),
        Cmd::Test {
            what: TestCmd::Camera { out, json, conn },
        } => client(&conn.socket, Request::TestCamera, |v| {
            let t: CameraTest = serde_json::from_value(v)?;
            let path = out.clone().unwrap_or_else(|| {
                std::env::temp_dir().join(format!(
                    "locker-camera-{}.png",
                    t.grabbed_at.format("%Y%m%d-%H%M%S")
                ))
            });
            save_png(&t.png_base64, &path)?;
            Ok(if json {
                let mut v = serde_json::to_value(&t)?;
                if let Some(o) = v.as_object_mut() {
                    o.remove("png_base64");
                    o.insert("saved_to".into(), path.display().to_string().into());
                }
                format!("{v}\n")
            } else {
                render::camera(&t, &path)
            })
        }),
    }
}

fn save_png(b64: &str, path: &Path) -> Result<(), ClientError> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| ClientError::Reply(serde::de::Error::custom(e)))?;
    std::fs::write(path, bytes)
        .map_err(|e| ClientError::Local(format!("cannot write {}: {e}", path.display())))
}

fn cell_action(socket: &Path, action: TechAction, number: u16, force: bool) -> ExitCode {
    let req = Request::Cell {
        action,
        number,
        force,
    };
    client(socket, req, |v| {
        Ok(format!(
            "{}\n",
            serde_json::from_value::<ActionReport>(v)?.done
        ))
    })
}

/// One request to the running agent; `show` turns the reply into what is printed.
fn client(
    socket: &Path,
    req: Request,
    show: impl FnOnce(serde_json::Value) -> Result<String, ClientError>,
) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("locker-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(tech::request(socket, &req)).and_then(show) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("locker-agent: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(config: &Path, init: bool) -> ExitCode {
    daemon::logging::init("locker-agent");
    let cfg = match daemon::config::load::<Config>(config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "bad config");
            eprintln!("{e}");
            return ExitCode::from(daemon::exit::BAD_CONFIG);
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
    match rt.block_on(locker_agent::agent::run(cfg, init)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "locker agent failed");
            eprintln!("locker-agent: {e:#}");
            daemon::exit::code(e.as_ref())
        }
    }
}
