//! The kchaos harness: plans the scenario × kernel matrix, boots one disposable QEMU VM
//! per cell, speaks the control protocol with the runner inside, reads the console as the
//! kernel's witness, and records one verdict per cell.
//!
//! The modules follow the data flow: [`scenario`] files are loaded and validated, a
//! [`plan`] lays out the matrix, [`run`] schedules its cells, each [`cell`] drives one
//! [`vm`] to a verdict, [`results`] records it, [`analysis`] compares and reasons over
//! results, [`report`] renders them.

pub mod analysis;
pub mod cell;
#[cfg(test)]
mod fixtures;
pub mod plan;
pub mod report;
pub mod results;
pub mod run;
pub mod scenario;
#[cfg(test)]
mod test_support;
pub mod vm;
