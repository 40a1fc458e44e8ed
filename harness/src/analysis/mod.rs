//! Reasoning over results: comparing a candidate against a baseline, classifying it for
//! the CI gate ([`classify`]), how often an outcome reproduces ([`reproduction`]: repro,
//! bisect), whether the kill matrix's scenarios detect their defects ([`detection`]),
//! and reading a crashed guest's memory dump. It computes; `report/` draws.

pub mod bisect;
pub mod classify;
pub mod compare;
pub mod crash;
pub mod detection;
pub mod known;
pub mod reproduction;
