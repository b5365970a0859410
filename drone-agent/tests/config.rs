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

/// The commented `[[flight_controller.endpoints]]` block of the example, switched on, with its
/// key file at `key`.
fn example_with_endpoint(key: &Path) -> String {
    let ex = example();
    let (head, rest) = ex.split_once("# BEGIN endpoints\n").unwrap();
    let (block, tail) = rest.split_once("# END endpoints").unwrap();
    let block: String = block
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    let block = block.replace("/etc/skypost/qgc.key", &key.display().to_string());
    format!("{head}{block}{tail}")
}

#[test]
fn ground_station_endpoints_parse_and_bad_ones_are_named() {
    use hal::flight::router::EndpointMode;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("qgc.key");
    std::fs::write(
        &key,
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
    )
    .unwrap();
    assert!(
        parse(&example())
            .unwrap()
            .flight_controller
            .endpoints
            .is_empty(),
        "none by default"
    );
    let text = example_with_endpoint(&key);
    let cfg = parse(&text).unwrap();
    let e = &cfg.flight_controller.endpoints[0];
    assert_eq!(
        (e.name.as_str(), e.mode, e.queue),
        ("qgc", EndpointMode::Full, 256)
    );
    assert_eq!(e.connection.to_string(), "udpout:10.8.0.1:14550");

    let bad = text
        .replace("udpout:10.8.0.1:14550", "tcpout:10.8.0.1:5760")
        .replace("name = \"qgc\"", "name = \"q g c\"")
        .replace("queue = 256", "queue = 1")
        .replace(&key.display().to_string(), "/nonexistent/qgc.key");
    let e = parse(&bad).unwrap_err();
    for f in [
        "flight_controller.endpoints.0.connection",
        "flight_controller.endpoints.0.name",
        "flight_controller.endpoints.0.queue",
        "flight_controller.endpoints.0.signing_key_file",
    ] {
        assert!(e.fields().contains(&f), "{f} not named in {e}");
    }
    let e = parse(&text.replace("mode = \"full\"", "mode = \"admin\"")).unwrap_err();
    assert!(e.to_string().contains("mode"), "{e}");
    // a short key is refused and the message does not print it
    std::fs::write(&key, "0011").unwrap();
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.contains("expected 32 bytes or 64 hex digits"), "{e}");
}

#[test]
fn geofence_fields_are_checked_by_name() {
    assert!(parse(&example()).unwrap().geofence.is_some());
    // a ceiling under the cruise altitude would be breached by every flight
    let low = example().replace("max_alt_m = 120.0 ", "max_alt_m = 10.0 ");
    let e = parse(&low).unwrap_err();
    assert!(e.fields().contains(&"geofence.max_alt_m"), "{e}");
    let wide = example().replace("radius_m = 2000.0 ", "radius_m = 1.0 ");
    let e = parse(&wide).unwrap_err();
    assert!(e.fields().contains(&"geofence.radius_m"), "{e}");
    let loiter = example().replace("action = \"rtl\"", "action = \"loiter\"");
    let e = parse(&loiter).unwrap_err().to_string();
    assert!(e.contains("geofence.action"), "{e}");
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
