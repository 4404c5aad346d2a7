//! The lab: an emulated Internet on one machine.
pub mod cli;
