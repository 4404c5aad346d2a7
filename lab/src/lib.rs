//! The lab: an emulated Internet on one machine.
//!
//! One emulator thread holds a TUN device per emulated host; each host lives in its own
//! network namespace with that TUN as its only interface. Packets are delayed by the
//! path's one-way delay, TTLs are lowered at four virtual routers per path, and routers
//! answer expired packets with ICMP Time Exceeded, so real `ping` and `traceroute` see a
//! geographic Internet. See `README.md`.
pub mod cli;
pub mod demo;
pub mod emulator;
pub mod error;
pub mod geo;
pub mod lab;
pub mod netns;
pub mod packet;
pub mod signals;
mod sys;
pub mod topology;
pub mod world;

pub use error::{LabError, Result};
pub use lab::{Lab, LabHost};
pub use topology::{Behaviour, HostSpec, Topology};
