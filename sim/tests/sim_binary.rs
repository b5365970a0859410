//! The `sim vehicle` binary as a process: the ready line, and the control socket that tests in
//! other processes (the whole-system tests) use to inject faults.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

#[test]
fn control_socket_injects_faults_and_reports_status() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args([
            "vehicle",
            "--flavour",
            "ardupilot",
            "--listen",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
            "--speedup",
            "10",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start sim");
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let control = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("control="))
        .unwrap_or_else(|| panic!("no control address in {ready:?}"))
        .to_owned();
    assert!(ready.contains("flavour=ArduPilot"), "{ready}");

    let stream = TcpStream::connect(&control).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut ask = |line: &str| {
        (&stream).write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        reply
    };
    let status = ask("status");
    assert!(
        status.starts_with("ok t=")
            && status.contains("armed=false")
            && status.contains("mode=STABILIZE"),
        "{status}"
    );
    assert_eq!(ask("battery_sag 40"), "ok\n");
    // the fault is applied by the vehicle loop: ask until the status shows it
    let mut shown = false;
    for _ in 0..1000 {
        let s = ask("status");
        let battery: f64 = s
            .split_whitespace()
            .find_map(|w| w.strip_prefix("battery="))
            .and_then(|b| b.parse().ok())
            .unwrap();
        if battery <= 60.0 {
            shown = true;
            break;
        }
    }
    assert!(shown, "battery sag never showed in status");
    assert!(ask("refuse 400 sometimes").starts_with("error "));
    assert!(ask("explode").starts_with("error unknown command"));
    let _ = child.kill();
    let _ = child.wait();
}
