//! Fiducial markers: where the drone finds the locker's drop hatch.
//!
//! A [`MarkerDetector`] takes a greyscale [`Frame`] from a downward-looking [`crate::camera::Camera`]
//! and returns every marker it sees: the id, the four corners in pixels, and where the marker is
//! relative to the vehicle ([`MarkerDetection::target`]), from a pinhole model of the camera
//! ([`Intrinsics`]) and the marker's known side length. The geometry is plain Rust and needs no
//! OpenCV, so it is checked everywhere; the detector itself is OpenCV's ArUco module
//! ([`ArucoDetector`], feature `opencv`).
//!
//! Frames: the camera looks straight down, the top of the image towards the vehicle's nose, the
//! right of the image towards its right side. So image +x is body +y (right), image −y is body +x
//! (forward), and the optical axis is body +z (down). Angles are what MAVLink `LANDING_TARGET`
//! carries in `MAV_FRAME_BODY_FRD`: `angle_x` about the image x axis, `angle_y` about the image y
//! axis, in radians.

use crate::camera::Frame;
use serde::Deserialize;

/// The ArUco dictionaries the detector knows (ids printed on the locker come from one of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dictionary {
    /// 4×4 bits, 50 ids: big cells, so the marker reads from higher up.
    #[serde(rename = "4x4_50")]
    Dict4x4_50,
    #[serde(rename = "4x4_100")]
    Dict4x4_100,
    #[serde(rename = "5x5_50")]
    Dict5x5_50,
    #[serde(rename = "6x6_50")]
    Dict6x6_50,
}

/// Camera intrinsics: focal lengths and principal point in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Intrinsics {
    pub fx: f64,
    pub fy: f64,
    pub cx: f64,
    pub cy: f64,
}

impl Intrinsics {
    /// An ideal camera (square pixels, centred principal point) from its horizontal field of view.
    pub fn from_hfov(hfov_deg: f64, width: u32, height: u32) -> Self {
        let f = f64::from(width) / 2.0 / (hfov_deg.to_radians() / 2.0).tan();
        Self {
            fx: f,
            fy: f,
            cx: f64::from(width) / 2.0,
            cy: f64::from(height) / 2.0,
        }
    }
}

/// How the camera and the marker are described in the agent's TOML (`[camera]` / `[precision]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkerConfig {
    pub dictionary: Dictionary,
    /// Side of the black square (outer edge of the border), metres.
    pub marker_size_m: f64,
    /// Horizontal field of view, degrees (used when `fx` is not given).
    #[serde(default)]
    pub hfov_deg: Option<f64>,
    /// Calibrated focal lengths and principal point, pixels (all four, or none).
    #[serde(default)]
    pub fx: Option<f64>,
    #[serde(default)]
    pub fy: Option<f64>,
    #[serde(default)]
    pub cx: Option<f64>,
    #[serde(default)]
    pub cy: Option<f64>,
}

impl MarkerConfig {
    /// The intrinsics for frames of this size: calibrated values if given, else from `hfov_deg`
    /// (70° if neither: a typical small board camera).
    pub fn intrinsics(&self, width: u32, height: u32) -> Intrinsics {
        match (self.fx, self.fy, self.cx, self.cy) {
            (Some(fx), Some(fy), Some(cx), Some(cy)) => Intrinsics { fx, fy, cx, cy },
            _ => Intrinsics::from_hfov(self.hfov_deg.unwrap_or(70.0), width, height),
        }
    }
}

impl daemon::config::Validate for MarkerConfig {
    fn validate(&self, v: &mut daemon::config::Validator) {
        v.range("marker_size_m", self.marker_size_m, 0.01, 10.0);
        if let Some(h) = self.hfov_deg {
            v.range("hfov_deg", h, 10.0, 170.0);
        }
        let given = [self.fx, self.fy, self.cx, self.cy]
            .iter()
            .filter(|x| x.is_some())
            .count();
        v.check(
            given == 0 || given == 4,
            "fx",
            "give all of fx, fy, cx, cy or none of them",
        );
    }
}

/// Where a marker is, relative to the camera (body FRD axes, see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TargetGeometry {
    /// Angular offsets of the marker centre from the optical axis, radians.
    pub angle_x: f64,
    pub angle_y: f64,
    /// Distance along the optical axis (height above the marker for a level vehicle), metres.
    pub distance_m: f64,
    /// Marker centre in body FRD metres: forward, right, down.
    pub forward_m: f64,
    pub right_m: f64,
    pub down_m: f64,
    /// Apparent side length, pixels (for logs: how well the marker is resolved).
    pub size_px: f64,
}

impl TargetGeometry {
    /// Horizontal distance from the point straight below the camera to the marker centre.
    pub fn horizontal_offset_m(&self) -> f64 {
        self.forward_m.hypot(self.right_m)
    }
}

/// Pinhole geometry of a marker seen with its corners in image order (any rotation).
///
/// The distance comes from the apparent size (mean side length, so a rotated marker gives the
/// same answer), the offsets from back-projecting the centre at that distance. Good for a camera
/// that looks roughly straight down; tilt appears as offset, which the descent corrects for anyway.
pub fn target_geometry(
    corners: &[(f32, f32); 4],
    intr: &Intrinsics,
    marker_size_m: f64,
) -> TargetGeometry {
    let pts: Vec<(f64, f64)> = corners
        .iter()
        .map(|&(x, y)| (f64::from(x), f64::from(y)))
        .collect();
    let (mut u, mut v) = (0.0, 0.0);
    for p in &pts {
        u += p.0 / 4.0;
        v += p.1 / 4.0;
    }
    let mut side = 0.0;
    for i in 0..4 {
        let (a, b) = (pts[i], pts[(i + 1) % 4]);
        side += (a.0 - b.0).hypot(a.1 - b.1) / 4.0;
    }
    let f = (intr.fx + intr.fy) / 2.0;
    let distance = if side > 0.0 {
        f * marker_size_m / side
    } else {
        f64::INFINITY
    };
    let nx = (u - intr.cx) / intr.fx;
    let ny = (v - intr.cy) / intr.fy;
    TargetGeometry {
        angle_x: nx.atan(),
        angle_y: ny.atan(),
        distance_m: distance,
        forward_m: -ny * distance,
        right_m: nx * distance,
        down_m: distance,
        size_px: side,
    }
}

/// One marker in one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkerDetection {
    pub id: u32,
    /// Corners in pixels, in the dictionary's order (top-left, top-right, bottom-right,
    /// bottom-left of the marker itself, wherever that lands in the image).
    pub corners: [(f32, f32); 4],
    pub target: TargetGeometry,
}

#[derive(Debug, thiserror::Error)]
pub enum MarkerError {
    #[error("marker detector: {0}")]
    Detector(String),
}

/// Finds markers in frames. Blocking and CPU-bound: run it next to the camera, on its own thread.
pub trait MarkerDetector: Send {
    fn detect(&mut self, frame: &Frame) -> Result<Vec<MarkerDetection>, MarkerError>;
}

#[cfg(feature = "opencv")]
pub use self::cv::ArucoDetector;

#[cfg(feature = "opencv")]
mod cv {
    use super::{
        target_geometry, Dictionary, MarkerConfig, MarkerDetection, MarkerDetector, MarkerError,
    };
    use crate::camera::Frame;
    use opencv::aruco;
    use opencv::core::{Mat, Point2f, Ptr, Vector, CV_8UC1};
    use opencv::prelude::*;

    /// OpenCV's ArUco detector (contrib module `aruco`).
    pub struct ArucoDetector {
        cfg: MarkerConfig,
        dict: Ptr<aruco::Dictionary>,
        params: Ptr<aruco::DetectorParameters>,
        corners: Vector<Vector<Point2f>>,
        rejected: Vector<Vector<Point2f>>,
        ids: Vector<i32>,
        half: Mat,
    }

    fn err(e: opencv::Error) -> MarkerError {
        MarkerError::Detector(e.to_string())
    }

    impl ArucoDetector {
        pub fn new(cfg: &MarkerConfig) -> Result<Self, MarkerError> {
            let which = match cfg.dictionary {
                Dictionary::Dict4x4_50 => aruco::PREDEFINED_DICTIONARY_NAME::DICT_4X4_50,
                Dictionary::Dict4x4_100 => aruco::PREDEFINED_DICTIONARY_NAME::DICT_4X4_100,
                Dictionary::Dict5x5_50 => aruco::PREDEFINED_DICTIONARY_NAME::DICT_5X5_50,
                Dictionary::Dict6x6_50 => aruco::PREDEFINED_DICTIONARY_NAME::DICT_6X6_50,
            };
            let dict = aruco::get_predefined_dictionary(which).map_err(err)?;
            let mut params = aruco::DetectorParameters::create().map_err(err)?;
            // Two adaptive-threshold passes (7 and 17 px windows) instead of OpenCV's three (3, 13,
            // 23): the 3 px pass finds nothing a downward camera needs and costs a third of
            // the time. Markers smaller than 5 % of the frame's perimeter are ignored: below
            // about 8 px a side the id does not decode reliably anyway.
            params.set_adaptive_thresh_win_size_min(7);
            params.set_adaptive_thresh_win_size_max(17);
            params.set_adaptive_thresh_win_size_step(10);
            params.set_min_marker_perimeter_rate(0.05);
            Ok(Self {
                cfg: cfg.clone(),
                dict,
                params,
                corners: Vector::new(),
                rejected: Vector::new(),
                ids: Vector::new(),
                half: Mat::default(),
            })
        }
    }

    impl ArucoDetector {
        fn run_on(&mut self, img: &impl opencv::core::ToInputArray) -> Result<(), MarkerError> {
            self.corners.clear();
            self.rejected.clear();
            self.ids.clear();
            aruco::detect_markers(
                img,
                &self.dict,
                &mut self.corners,
                &mut self.ids,
                &self.params,
                &mut self.rejected,
            )
            .map_err(err)
        }
    }

    impl MarkerDetector for ArucoDetector {
        fn detect(&mut self, frame: &Frame) -> Result<Vec<MarkerDetection>, MarkerError> {
            let (w, h) = frame.dimensions();
            // a Mat that borrows the frame's bytes: no copy per frame
            let mat =
                Mat::new_rows_cols_with_data(h as i32, w as i32, frame.as_raw()).map_err(err)?;
            debug_assert_eq!(mat.typ(), CV_8UC1);
            // Half resolution first: a quarter of the pixels, and a marker close enough to land
            // on is still tens of pixels wide there. Only a frame where nothing shows at half
            // size (a marker still small, far below) pays for the full-size pass.
            opencv::imgproc::pyr_down_def(&mat, &mut self.half).map_err(err)?;
            let half = std::mem::take(&mut self.half);
            let found = self.run_on(&half);
            self.half = half;
            found?;
            if self.ids.is_empty() {
                self.run_on(&mat)?;
            } else {
                // back to full-size pixels, then sharpened on the full frame: the apparent size
                // (hence the distance) needs the full frame's corner precision
                let criteria = opencv::core::TermCriteria::new(
                    opencv::core::TermCriteria_COUNT + opencv::core::TermCriteria_EPS,
                    20,
                    0.01,
                )
                .map_err(err)?;
                let mut refined = Vector::<Vector<Point2f>>::new();
                for quad in self.corners.iter() {
                    let mut q: Vector<Point2f> = quad
                        .iter()
                        // pyrDown's pixel (x, y) is centred on the full frame's (2x, 2y)
                        .map(|p| Point2f::new(p.x * 2.0, p.y * 2.0))
                        .collect();
                    opencv::imgproc::corner_sub_pix(
                        &mat,
                        &mut q,
                        opencv::core::Size::new(3, 3),
                        opencv::core::Size::new(-1, -1),
                        criteria,
                    )
                    .map_err(err)?;
                    refined.push(q);
                }
                self.corners = refined;
            }
            let intr = self.cfg.intrinsics(w, h);
            let mut out = Vec::with_capacity(self.ids.len());
            for (id, quad) in self.ids.iter().zip(self.corners.iter()) {
                if quad.len() != 4 || id < 0 {
                    continue;
                }
                let mut corners = [(0f32, 0f32); 4];
                for (c, p) in corners.iter_mut().zip(quad.iter()) {
                    *c = (p.x, p.y);
                }
                out.push(MarkerDetection {
                    id: id as u32,
                    corners,
                    target: target_geometry(&corners, &intr, self.cfg.marker_size_m),
                });
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(cx: f32, cy: f32, half: f32) -> [(f32, f32); 4] {
        [
            (cx - half, cy - half),
            (cx + half, cy - half),
            (cx + half, cy + half),
            (cx - half, cy + half),
        ]
    }

    #[test]
    fn centred_marker_is_straight_below_at_its_size_distance() {
        let intr = Intrinsics::from_hfov(90.0, 640, 480);
        assert!((intr.fx - 320.0).abs() < 1e-9);
        // 0.2 m marker, 64 px wide at f = 320 px → 1 m away
        let g = target_geometry(&square(320.0, 240.0, 32.0), &intr, 0.2);
        assert!((g.distance_m - 1.0).abs() < 1e-6);
        assert!(g.horizontal_offset_m() < 1e-9);
        assert!(g.angle_x.abs() < 1e-12 && g.angle_y.abs() < 1e-12);
    }

    #[test]
    fn offsets_follow_the_body_frame() {
        let intr = Intrinsics::from_hfov(90.0, 640, 480);
        // marker to the right of and above the image centre: right and forward of the vehicle
        let g = target_geometry(&square(480.0, 80.0, 32.0), &intr, 0.2);
        assert!((g.right_m - 0.5).abs() < 1e-6, "{g:?}");
        assert!((g.forward_m - 0.5).abs() < 1e-6, "{g:?}");
        assert!((g.angle_x - 0.5f64.atan()).abs() < 1e-9);
        assert!((g.angle_y + 0.5f64.atan()).abs() < 1e-9);
    }

    #[test]
    fn rotated_marker_gives_the_same_distance() {
        let intr = Intrinsics::from_hfov(90.0, 640, 480);
        let r = 32.0f32 * std::f32::consts::SQRT_2;
        let diamond = [
            (320.0, 240.0 - r),
            (320.0 + r, 240.0),
            (320.0, 240.0 + r),
            (320.0 - r, 240.0),
        ];
        let g = target_geometry(&diamond, &intr, 0.2);
        assert!((g.distance_m - 1.0).abs() < 1e-4, "{g:?}");
    }

    #[test]
    fn config_parses_and_validates() {
        let cfg: MarkerConfig =
            toml::from_str("dictionary = \"4x4_50\"\nmarker_size_m = 0.3\nhfov_deg = 62.2\n")
                .unwrap();
        assert_eq!(cfg.dictionary, Dictionary::Dict4x4_50);
        let mut v = daemon::config::Validator::default();
        daemon::config::Validate::validate(&cfg, &mut v);
        assert!(v.problems().is_empty());
        let bad: MarkerConfig =
            toml::from_str("dictionary = \"4x4_50\"\nmarker_size_m = 0.3\nfx = 500.0\n").unwrap();
        let mut v = daemon::config::Validator::default();
        daemon::config::Validate::validate(&bad, &mut v);
        assert_eq!(v.problems().len(), 1);
    }
}
