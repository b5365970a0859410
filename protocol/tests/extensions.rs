//! Our optional additions to the seed's messages (`tests/extensions/`) parse, round-trip, and
//! mean what they say.

use protocol::volume::{Breach, Inclusion, LatLon};
use protocol::{Envelope, Message};
use std::path::Path;

fn read(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/extensions")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn task_with_an_operational_volume() {
    let text = read("cloud_task_with_volume.json");
    let env = Envelope::from_json(&text).expect("parses");
    let Message::Task(task) = &env.message else {
        panic!("not a task: {env:?}")
    };
    let volume = task.volume.as_ref().expect("the volume");
    assert!(
        matches!(volume.inclusion(), Inclusion::Corridor { width_m, route } if *width_m == 80.0 && route.len() == 3)
    );
    assert_eq!(volume.max_alt_m(), 60.0);
    assert_eq!(volume.exclusions().len(), 1);
    // the destination is on the route; the exclusion (a yard the corridor crosses) is not
    let dest = LatLon::new(55.7558, 37.6173).unwrap();
    assert_eq!(volume.check(dest, 30.0), Ok(()));
    assert!(matches!(
        volume.check(dest, 80.0),
        Err(Breach::AboveCeiling { .. })
    ));
    assert_eq!(
        volume.check(LatLon::new(55.7549, 37.61465).unwrap(), 30.0),
        Err(Breach::InsideExclusion { index: 0 })
    );
    // round trip: the same JSON value again
    let original: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(serde_json::to_value(&env).unwrap(), original);
}

#[test]
fn a_broken_volume_names_its_field() {
    let text = read("cloud_task_with_volume.json").replace("\"width_m\": 80.0", "\"width_m\": -5");
    let err = Envelope::from_json(&text).unwrap_err().to_string();
    assert!(err.contains("volume.inclusion.width_m"), "{err}");
}
