//! Reasoning over results: comparing a candidate against a baseline, trials until a
//! wanted outcome (repro, bisect), and reading a crashed guest's memory dump.

pub mod bisect;
pub mod compare;
pub mod crash;
pub mod detect;
pub mod gate;
pub mod known;
pub mod trials;
