//! The demo's picture of a flight: an SVG a person can take in at a glance. Left, the ground
//! track seen from above (home, the locker's marker, the way out and back); right, the altitude
//! against time; on both, the drone's events as labelled marks. Plain SVG text, no dependencies.

use crate::backend::Report;
use protocol::geo::LatLon;
use protocol::ws::PeerKind;
use std::fmt::Write as _;
use std::path::Path;

const W: f64 = 1100.0;
const H: f64 = 520.0;
/// Ground-track panel and altitude panel, (x, y, width, height).
const TRACK: (f64, f64, f64, f64) = (60.0, 70.0, 400.0, 400.0);
const ALT: (f64, f64, f64, f64) = (540.0, 70.0, 520.0, 400.0);

/// Metres north and east of `home` (a local flat projection: a delivery spans a few hundred
/// metres, where it is exact to centimetres).
fn local(home: (f64, f64), lat: f64, lon: f64) -> (f64, f64) {
    let d = LatLon::new(home.0, home.1).north_east_to(LatLon::new(lat, lon));
    (d.north_m, d.east_m)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Writes the picture of `report`'s flight from `home` to the locker at `locker` (degrees).
pub fn write(
    report: &Report,
    home: (f64, f64, f64),
    locker: (f64, f64),
    path: &Path,
) -> Result<(), String> {
    if report.track.len() < 2 {
        return Err("no telemetry track to draw".into());
    }
    let svg = render(report, (home.0, home.1), locker);
    std::fs::write(path, svg).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn render(report: &Report, home: (f64, f64), locker: (f64, f64)) -> String {
    let pts: Vec<(f64, f64, f64, f64)> = report
        .track
        .iter()
        .map(|&(t, lat, lon, alt)| {
            let (n, e) = local(home, lat, lon);
            (t, n, e, alt)
        })
        .collect();
    let marker = local(home, locker.0, locker.1);
    // ground track: one scale for both axes (north up), with a margin
    let (mut n0, mut n1, mut e0, mut e1) = (marker.0.min(0.0), marker.0.max(0.0), 0.0f64, 0.0f64);
    e0 = e0.min(marker.1);
    e1 = e1.max(marker.1);
    for p in &pts {
        n0 = n0.min(p.1);
        n1 = n1.max(p.1);
        e0 = e0.min(p.2);
        e1 = e1.max(p.2);
    }
    let span = (n1 - n0).max(e1 - e0).max(20.0) * 1.15;
    let (nc, ec) = ((n0 + n1) / 2.0, (e0 + e1) / 2.0);
    let gx = |e: f64| TRACK.0 + TRACK.2 / 2.0 + (e - ec) / span * TRACK.2;
    let gy = |n: f64| TRACK.1 + TRACK.3 / 2.0 - (n - nc) / span * TRACK.3;
    // altitude against time
    let (t0, t1) = (pts[0].0, pts[pts.len() - 1].0.max(pts[0].0 + 1.0));
    let amax = pts.iter().map(|p| p.3).fold(5.0f64, f64::max) * 1.15;
    let ax = |t: f64| ALT.0 + (t - t0) / (t1 - t0) * ALT.2;
    let ay = |a: f64| ALT.1 + ALT.3 - a.max(0.0) / amax * ALT.3;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    let title = format!(
        "SkyPost demo flight — {} ({:.0} m flown, {:.0} s)",
        if report.ok { "delivered" } else { "FAILED" },
        report.distance_m,
        report.duration.as_secs_f64()
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="30" font-size="18" font-weight="bold">{}</text>"##,
        TRACK.0,
        esc(&title)
    );
    for (x, y, w, h, label) in [
        (
            TRACK.0,
            TRACK.1,
            TRACK.2,
            TRACK.3,
            "ground track (north up)",
        ),
        (
            ALT.0,
            ALT.1,
            ALT.2,
            ALT.3,
            "altitude above home (m) against time (s)",
        ),
    ] {
        let _ = writeln!(
            s,
            r##"<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="#f6f8fa" stroke="#999"/><text x="{x}" y="{}" fill="#333">{label}</text>"##,
            y - 8.0
        );
    }
    // scale bar on the ground track
    let bar = nice(span / 4.0);
    let (bx, by) = (TRACK.0 + 12.0, TRACK.1 + TRACK.3 - 14.0);
    let _ = writeln!(
        s,
        r##"<line x1="{bx}" y1="{by}" x2="{}" y2="{by}" stroke="#333" stroke-width="2"/><text x="{bx}" y="{}" fill="#333">{bar:.0} m</text>"##,
        bx + bar / span * TRACK.2,
        by - 5.0
    );
    // the track, home and the marker
    let track: Vec<String> = pts
        .iter()
        .map(|p| format!("{:.1},{:.1}", gx(p.2), gy(p.1)))
        .collect();
    let _ = writeln!(
        s,
        r##"<polyline points="{}" fill="none" stroke="#1f6feb" stroke-width="2"/>"##,
        track.join(" ")
    );
    let _ = writeln!(
        s,
        r##"<circle cx="{:.1}" cy="{:.1}" r="6" fill="#2da44e"/><text x="{:.1}" y="{:.1}">home</text>"##,
        gx(0.0),
        gy(0.0),
        gx(0.0) + 9.0,
        gy(0.0) + 4.0
    );
    let (mx, my) = (gx(marker.1), gy(marker.0));
    let _ = writeln!(
        s,
        r##"<rect x="{:.1}" y="{:.1}" width="12" height="12" fill="#000"/><rect x="{:.1}" y="{:.1}" width="4" height="4" fill="#fff"/><text x="{:.1}" y="{:.1}">locker (marker)</text>"##,
        mx - 6.0,
        my - 6.0,
        mx - 2.0,
        my - 2.0,
        mx + 10.0,
        my + 4.0
    );
    // altitude profile and its axes
    let prof: Vec<String> = pts
        .iter()
        .map(|p| format!("{:.1},{:.1}", ax(p.0), ay(p.3)))
        .collect();
    let _ = writeln!(
        s,
        r##"<polyline points="{}" fill="none" stroke="#1f6feb" stroke-width="2"/>"##,
        prof.join(" ")
    );
    let astep = nice(amax / 4.0);
    let mut a = 0.0;
    while a <= amax {
        let _ = writeln!(
            s,
            r##"<line x1="{}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{a:.0}</text>"##,
            ALT.0,
            ALT.0 + ALT.2,
            ALT.0 - 4.0,
            ay(a) + 4.0,
            y = ay(a)
        );
        a += astep;
    }
    let tstep = nice((t1 - t0) / 6.0);
    let mut t = (t0 / tstep).ceil() * tstep;
    while t <= t1 {
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{}" text-anchor="middle">{t:.0}</text>"##,
            ax(t),
            ALT.1 + ALT.3 + 14.0
        );
        t += tstep;
    }
    // the events: a mark on the track where the drone was, a line on the profile when
    let mut row = 0usize;
    for (e, &at) in report.events.iter().zip(&report.event_times) {
        let label = format!("{:?}", e.event);
        let colour = if e.source == PeerKind::Drone {
            "#cf222e"
        } else {
            "#8250df"
        };
        let x = ax(at.clamp(t0, t1));
        let ly = ALT.1 + 14.0 + (row % 12) as f64 * 14.0;
        row += 1;
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="{colour}" stroke-dasharray="3,3"/><text x="{:.1}" y="{ly:.1}" fill="{colour}">{}</text>"##,
            ALT.1,
            ALT.1 + ALT.3,
            x + 3.0,
            esc(&label)
        );
        if e.source == PeerKind::Drone {
            let p = pts
                .iter()
                .min_by(|a, b| (a.0 - at).abs().total_cmp(&(b.0 - at).abs()))
                .copied()
                .unwrap_or(pts[0]);
            let _ = writeln!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{colour}"/><text x="{:.1}" y="{:.1}" fill="{colour}" font-size="11">{}</text>"##,
                gx(p.2),
                gy(p.1),
                gx(p.2) + 7.0,
                gy(p.1) - 4.0 + ((row % 3) as f64 - 1.0) * 11.0,
                esc(&label)
            );
        }
    }
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" fill="#555">red: drone events, purple: locker events</text>"##,
        ALT.0,
        H - 12.0
    );
    s.push_str("</svg>\n");
    s
}

/// A round step near `x` (1, 2 or 5 times a power of ten).
fn nice(x: f64) -> f64 {
    let x = x.max(1e-3);
    let p = 10f64.powf(x.log10().floor());
    let m = x / p;
    p * if m < 1.5 {
        1.0
    } else if m < 3.5 {
        2.0
    } else if m < 7.5 {
        5.0
    } else {
        10.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::geo::NorthEast;
    use protocol::ws::EventType;

    #[test]
    fn the_picture_has_the_track_the_marker_and_every_event() {
        let home = (47.0, 8.0);
        let locker = (
            LatLon::new(47.0, 8.0)
                .offset(NorthEast::new(300.0, 0.0))
                .lat_deg,
            8.0,
        );
        let report = Report {
            ok: true,
            track: (0..=60)
                .map(|i| {
                    let f = f64::from(i) / 60.0;
                    let out = if f < 0.5 { f * 2.0 } else { (1.0 - f) * 2.0 };
                    (
                        f64::from(i),
                        home.0 + out * (locker.0 - home.0),
                        8.0,
                        20.0 * out.min(0.2) * 5.0,
                    )
                })
                .collect(),
            events: [
                (PeerKind::Drone, EventType::TookOff),
                (PeerKind::Locker, EventType::CellOpened),
                (PeerKind::Drone, EventType::ArrivedBase),
            ]
            .into_iter()
            .map(|(source, event)| crate::backend::ReportedEvent {
                source,
                event,
                to_state: None,
                event_id: None,
                seq: None,
            })
            .collect(),
            event_times: vec![1.0, 30.0, 59.0],
            ..Report::default()
        };
        let svg = render(&report, home, locker);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for label in [
            "TookOff",
            "CellOpened",
            "ArrivedBase",
            "locker (marker)",
            "home",
        ] {
            assert!(svg.contains(label), "{label} missing");
        }
        assert_eq!(
            svg.matches("<polyline").count(),
            2,
            "track and altitude profile"
        );
    }

    #[test]
    fn steps_are_round() {
        assert_eq!(nice(0.9), 1.0);
        assert_eq!(nice(23.0), 20.0);
        assert_eq!(nice(61.0), 50.0);
        assert_eq!(nice(80.0), 100.0);
    }
}
