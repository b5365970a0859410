//! The serial link survives an unplug/replug: the flight controller sits behind a pseudo-terminal
//! (as a USB serial adapter would), reached through a stable symlink (as `/dev/serial/by-id/…` is).
//! Unplugging closes the pty (reads fail, the device node goes away); replugging creates a new pty
//! behind the same symlink. The hal must report the link lost, keep reopening, and come back.

use crate::common;

use common::{link_config, WAIT};
use hal::flight::mavlink::MavlinkFc;
use hal::flight::{Autopilot, FlightController, LinkState};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::termios;
use sim::vehicle::{self, Flavour, Transport, VehicleConfig};
use std::os::fd::OwnedFd;
use std::path::Path;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// One "plugged-in adapter": a pty whose master side is bridged to the sim vehicle over TCP.
struct Plug {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _slave: OwnedFd,
}

impl Plug {
    async fn insert(link: &Path, sim: std::net::SocketAddr) -> Plug {
        let mut raw = termios::tcgetattr(nix::pty::openpty(None, None).unwrap().slave).unwrap();
        termios::cfmakeraw(&mut raw);
        let pty = nix::pty::openpty(None, Some(&raw)).unwrap();
        let name = nix::unistd::ttyname(&pty.slave).unwrap();
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(&name, link).unwrap();
        let flags = OFlag::from_bits_truncate(fcntl(&pty.master, FcntlArg::F_GETFL).unwrap());
        fcntl(&pty.master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).unwrap();
        let tcp = TcpStream::connect(sim).await.unwrap();
        let (stop, stopped) = oneshot::channel();
        // AsyncFd::new is deprecated for fds that might be closed behind its back; this OwnedFd is
        // moved in and owned by the AsyncFd alone, so that cannot happen here
        #[allow(deprecated)]
        let master = AsyncFd::new(pty.master).unwrap();
        let task = tokio::spawn(bridge(master, tcp, stopped));
        Plug {
            stop: Some(stop),
            task,
            _slave: pty.slave,
        }
    }

    /// Pulls the adapter out: the bridge ends and the pty's master closes.
    async fn remove(mut self, link: &Path) {
        let _ = std::fs::remove_file(link);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

async fn bridge(master: AsyncFd<OwnedFd>, mut tcp: TcpStream, mut stop: oneshot::Receiver<()>) {
    let mut from_pty = [0u8; 4096];
    let mut from_tcp = [0u8; 4096];
    loop {
        tokio::select! {
            _ = &mut stop => return,
            r = master.readable() => {
                let Ok(mut guard) = r else { return };
                match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), &mut from_pty).map_err(std::io::Error::from)) {
                    Ok(Ok(n)) if n > 0 => {
                        if tcp.write_all(&from_pty[..n]).await.is_err() {
                            return;
                        }
                    }
                    // EIO while nobody has the device open: wait for the next readiness
                    Ok(_) => guard.clear_ready(),
                    Err(_would_block) => {}
                }
            }
            r = tcp.read(&mut from_tcp) => {
                let Ok(n) = r else { return };
                if n == 0 {
                    return;
                }
                let mut off = 0;
                while off < n {
                    let Ok(mut guard) = master.writable().await else { return };
                    match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), &from_tcp[off..n]).map_err(std::io::Error::from)) {
                        Ok(Ok(w)) => off += w,
                        Ok(Err(_)) => return,
                        Err(_would_block) => {}
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_unplug_and_replug_recovers() {
    let mut vc = VehicleConfig::standard(Flavour::ArduPilot);
    vc.speedup = common::SPEEDUP;
    vc.transport = Transport::Tcp {
        listen: "127.0.0.1:0".parse().unwrap(),
    };
    let v = vehicle::spawn(vc).await.unwrap();
    let dir = tempfile_dir();
    let link = dir.join("usb-Holybro_Pixhawk6C-if00");

    let plug = Plug::insert(&link, v.local_addr()).await;
    let fc = MavlinkFc::start(link_config(&format!("serial:{}:921600", link.display())));
    let s = fc
        .wait_for(WAIT, |s| s.link.is_connected())
        .await
        .expect("connected over serial");
    assert_eq!(s.autopilot, Autopilot::ArduPilot);

    plug.remove(&link).await;
    fc.wait_for(WAIT, |s| matches!(s.link, LinkState::Lost { .. }))
        .await
        .expect("unplug noticed");

    // plugged back in: a new pty behind the same stable name
    let _plug = Plug::insert(&link, v.local_addr()).await;
    fc.wait_for(WAIT, |s| s.link.is_connected())
        .await
        .expect("link back after replug");
    // and it works: a command round-trips
    fc.set_gripper(hal::flight::GripperAction::Grab)
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("skypost-serial-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
