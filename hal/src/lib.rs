//! Filled by a later issue: see the workspace README's crate map.

pub mod flight;
pub mod payload;

// locker side: lock board, camera, QR decoding, display
pub mod camera;
pub mod display;
pub mod lockboard;
pub mod qr;
