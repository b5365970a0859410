//! Cameras: where the locker's QR scanner gets its frames.
//!
//! [`Camera::grab`] blocks until the next frame and returns it in greyscale (QR decoding needs
//! nothing else, and a grey 640×480 frame is 300 KB instead of 900 KB). Cameras are blocking by
//! nature (V4L2, OpenCV), so the scanner runs them on a thread of their own.
//!
//! - [`DirectoryCamera`]: image files in a directory, in name order, round and round; an empty
//!   directory is a camera that sees nothing (a blank frame). Tests "show" a code by writing an
//!   image into the directory and take it away by deleting it.
//! - [`OpenCvCamera`] (feature `opencv`): OpenCV `VideoCapture` on a device path or index, with
//!   the resolution asked for.

use image::GrayImage;
use std::path::{Path, PathBuf};

pub type Frame = GrayImage;

#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    #[error("camera {source_name}: {message}")]
    Device {
        source_name: String,
        message: String,
    },
    #[error("frame {path}: {message}")]
    BadFrame { path: PathBuf, message: String },
    #[error("camera {0} is closed")]
    Closed(String),
}

/// A source of frames.
pub trait Camera: Send {
    /// The next frame. Blocks at most about one frame time.
    fn grab(&mut self) -> Result<Frame, CameraError>;
    /// What this camera is, for logs and health (`/dev/video0 640x480`, a directory path).
    fn describe(&self) -> String;
}

/// Frames from image files in a directory.
pub struct DirectoryCamera {
    dir: PathBuf,
    next: usize,
    blank: (u32, u32),
}

impl DirectoryCamera {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            next: 0,
            blank: (640, 480),
        }
    }

    fn files(&self) -> Result<Vec<PathBuf>, CameraError> {
        let rd = std::fs::read_dir(&self.dir).map_err(|e| CameraError::Device {
            source_name: self.dir.display().to_string(),
            message: e.to_string(),
        })?;
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    matches!(
                        e.to_ascii_lowercase().as_str(),
                        "png" | "jpg" | "jpeg" | "pgm"
                    )
                })
            })
            .collect();
        files.sort();
        Ok(files)
    }
}

impl Camera for DirectoryCamera {
    fn grab(&mut self) -> Result<Frame, CameraError> {
        let files = self.files()?;
        if files.is_empty() {
            return Ok(GrayImage::from_pixel(
                self.blank.0,
                self.blank.1,
                image::Luma([128]),
            ));
        }
        let path = &files[self.next % files.len()];
        self.next = self.next.wrapping_add(1);
        let img = image::open(path).map_err(|e| CameraError::BadFrame {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let grey = img.to_luma8();
        self.blank = grey.dimensions();
        Ok(grey)
    }

    fn describe(&self) -> String {
        format!("image files in {}", self.dir.display())
    }
}

/// Where an agent's frames come from, as its TOML says it:
/// `{ kind = "device", device = "/dev/video0", width = 640, height = 480 }` or
/// `{ kind = "directory", path = "/var/lib/…/frames" }`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CameraSource {
    /// A V4L2 device path or index, through OpenCV (feature `opencv`).
    Device {
        device: String,
        #[serde(default = "default_width")]
        width: u32,
        #[serde(default = "default_height")]
        height: u32,
    },
    /// Image files in a directory ([`DirectoryCamera`]): the sim's frames, or a bench's.
    Directory { path: PathBuf },
}

fn default_width() -> u32 {
    640
}
fn default_height() -> u32 {
    480
}

impl CameraSource {
    /// Opens the camera. A device in a build without OpenCV is an error, never a stand-in.
    pub fn open(&self) -> Result<Box<dyn Camera>, CameraError> {
        match self {
            CameraSource::Directory { path } => Ok(Box::new(DirectoryCamera::new(path))),
            #[cfg(feature = "opencv")]
            CameraSource::Device {
                device,
                width,
                height,
            } => Ok(Box::new(OpenCvCamera::open(device, *width, *height)?)),
            #[cfg(not(feature = "opencv"))]
            CameraSource::Device { device, .. } => Err(CameraError::Device {
                source_name: device.clone(),
                message: "this build has no camera driver (built without the `opencv` feature)"
                    .into(),
            }),
        }
    }

    /// True when this build can open the source (for config checks).
    pub fn supported(&self) -> bool {
        matches!(self, CameraSource::Directory { .. }) || cfg!(feature = "opencv")
    }
}

#[cfg(feature = "opencv")]
pub use self::cv::OpenCvCamera;

#[cfg(feature = "opencv")]
mod cv {
    use super::{Camera, CameraError, Frame};
    use opencv::core::{Mat, MatTraitConst, MatTraitConstManual};
    use opencv::imgproc;
    use opencv::videoio::{self, VideoCapture, VideoCaptureTrait, VideoCaptureTraitConst};

    /// A V4L2 (or any OpenCV-supported) camera.
    pub struct OpenCvCamera {
        cap: VideoCapture,
        name: String,
        frame: Mat,
        grey: Mat,
    }

    impl OpenCvCamera {
        /// `device` is a path (`/dev/video0`) or an index (`0`).
        pub fn open(device: &str, width: u32, height: u32) -> Result<Self, CameraError> {
            let err = |e: opencv::Error| CameraError::Device {
                source_name: device.to_owned(),
                message: e.to_string(),
            };
            let mut cap = match device.parse::<i32>() {
                Ok(i) => VideoCapture::new(i, videoio::CAP_ANY).map_err(err)?,
                Err(_) => VideoCapture::from_file(device, videoio::CAP_ANY).map_err(err)?,
            };
            if !cap.is_opened().map_err(err)? {
                return Err(CameraError::Device {
                    source_name: device.to_owned(),
                    message: "cannot open".into(),
                });
            }
            cap.set(videoio::CAP_PROP_FRAME_WIDTH, f64::from(width))
                .map_err(err)?;
            cap.set(videoio::CAP_PROP_FRAME_HEIGHT, f64::from(height))
                .map_err(err)?;
            Ok(Self {
                cap,
                name: format!("{device} {width}x{height}"),
                frame: Mat::default(),
                grey: Mat::default(),
            })
        }
    }

    impl Camera for OpenCvCamera {
        fn grab(&mut self) -> Result<Frame, CameraError> {
            let name = self.name.clone();
            let err = move |e: opencv::Error| CameraError::Device {
                source_name: name.clone(),
                message: e.to_string(),
            };
            if !self.cap.read(&mut self.frame).map_err(err.clone())? {
                return Err(CameraError::Closed(self.name.clone()));
            }
            if self.frame.channels() == 1 {
                self.frame.copy_to(&mut self.grey).map_err(err.clone())?;
            } else {
                imgproc::cvt_color_def(&self.frame, &mut self.grey, imgproc::COLOR_BGR2GRAY)
                    .map_err(err.clone())?;
            }
            let (w, h) = (self.grey.cols(), self.grey.rows());
            let bytes = self.grey.data_bytes().map_err(err)?.to_vec();
            Frame::from_raw(w as u32, h as u32, bytes).ok_or_else(|| CameraError::Device {
                source_name: self.name.clone(),
                message: "frame size mismatch".into(),
            })
        }

        fn describe(&self) -> String {
            self.name.clone()
        }
    }
}
