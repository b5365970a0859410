//! The example config is valid, and typos and bad values are named by field.

use drone_agent::config::DroneConfig;
use std::path::Path;

fn example() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/drone-agent.example.toml"
    ))
    .unwrap()
}

fn parse(text: &str) -> Result<DroneConfig, daemon::config::ConfigError> {
    daemon::config::parse(text, Path::new("drone-agent.toml"))
}

#[test]
fn example_config_is_valid() {
    let cfg = parse(&example()).unwrap();
    assert_eq!(cfg.flight.cruise_alt_m, 30.0);
    assert_eq!(cfg.limits().drop_wait.as_secs(), 120);
}

#[test]
fn typo_names_the_key() {
    let text = example().replace("cruise_alt_m = 30.0", "cruise_altitude = 30.0");
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.contains("cruise_altitude"), "{e}");
}

#[test]
fn bad_values_name_their_fields() {
    let text = example()
        .replace("critical_percent = 10.0", "critical_percent = 30.0")
        .replace("interval_s = 3.0 ", "interval_s = 0.01 ")
        .replace("wss://relay", "https://relay");
    let e = parse(&text).unwrap_err();
    let fields = e.fields();
    for f in [
        "battery.return_percent",
        "telemetry.interval_s",
        "cloud.url",
    ] {
        assert!(fields.contains(&f), "{f} not named in {e}");
    }
}

#[test]
fn bad_connection_string_is_named() {
    let text = example().replace(
        "serial:/dev/serial/by-id/usb-ArduPilot_fmuv3-if00:921600",
        "carrier-pigeon:7",
    );
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.contains("flight_controller.connection"), "{e}");
}
