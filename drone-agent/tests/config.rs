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

/// A runtime value, so the assertions on it read as what they check.
static OPENCV_BUILD: bool = cfg!(feature = "opencv");

/// The commented camera sections of the example, switched on.
fn example_with_camera() -> String {
    let ex = example();
    let (head, rest) = ex.split_once("# BEGIN camera\n").unwrap();
    let (block, tail) = rest.split_once("# END camera").unwrap();
    let block: String = block
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
        .map(|l| format!("{l}\n"))
        .collect();
    format!("{head}{block}{tail}")
}

#[test]
fn camera_sections_parse_and_precision_needs_the_opencv_build() {
    let text = example_with_camera();
    match parse(&text) {
        Ok(cfg) => {
            assert!(OPENCV_BUILD, "accepted without a marker detector");
            assert_eq!(cfg.precision.unwrap().marker_size_m, 0.4);
            assert!(!cfg.video.enabled, "video off by default");
        }
        Err(e) => {
            assert!(!OPENCV_BUILD, "{e}");
            let fields = e.fields();
            assert!(fields.contains(&"precision"), "{fields:?}");
            assert!(fields.contains(&"camera.source"), "{fields:?}");
        }
    }
}

#[test]
fn video_and_precision_without_a_camera_name_the_field() {
    let text = example_with_camera().replace("[camera]", "[unused_camera]");
    let cut = text.split_once("[unused_camera]").unwrap();
    // drop the whole [camera] section
    let after = cut.1.split_once("[precision]").unwrap().1;
    let text =
        format!("{}[precision]{}", cut.0, after).replace("enabled = false", "enabled = true");
    let e = parse(&text).unwrap_err();
    let fields = e.fields();
    assert!(fields.contains(&"video.enabled"), "{fields:?}");
    assert!(fields.contains(&"precision"), "{fields:?}");
}

/// `[energy]` as the example documents it, switched on: valid, and a bad value is named.
#[test]
fn energy_section_is_documented_and_checked() {
    let start = example()
        .find("# [energy]")
        .expect("[energy] in the example");
    let mut text = example();
    let section: String = text[start..]
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| {
            // "# key = value   # comment" → "key = value"; comment lines stay comments
            let l = l.trim_start_matches("# ");
            if l.starts_with('[') || l.contains(" = ") {
                format!("{}\n", l.split("  #").next().unwrap_or(l).trim_end())
            } else {
                format!("# {l}\n")
            }
        })
        .collect();
    text.push('\n');
    text.push_str(&section);
    let cfg = parse(&text).unwrap();
    let e = cfg.energy.as_ref().expect("[energy] parsed");
    assert_eq!(e.reserve_percent, 15.0);
    assert_eq!(e.return_alt_m, Some(30.0));
    assert!(cfg.limits().energy.is_some());
    let bad = text.replace("reserve_percent = 15.0", "reserve_percent = 95.0");
    let err = parse(&bad).unwrap_err();
    assert!(err.fields().contains(&"energy.reserve_percent"), "{err}");
}
