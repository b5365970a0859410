//! Filled by a later issue: see the workspace README's crate map.

pub mod lockboard;
pub mod vehicle;
