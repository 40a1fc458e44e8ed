//! The kchaos harness: plans the scenario × kernel matrix, boots one disposable QEMU VM
//! per cell, speaks the control protocol with the runner inside, reads the console as the
//! kernel's witness, and records one verdict per cell.

pub mod analyze;
pub mod bundle;
pub mod cell;
pub mod channel;
pub mod compare;
pub mod console;
pub mod images;
pub mod junit;
pub mod matrix;
pub mod merge;
pub mod process;
pub mod progress;
pub mod qemu;
pub mod qmp;
pub mod report;
pub mod repro;
pub mod requirements;
pub mod results;
pub mod run;
pub mod runner_bin;
pub mod scenarios;
pub mod sources;
pub mod store;
#[cfg(test)]
mod test_support;
