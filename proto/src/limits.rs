//! The size limits of the gRPC API, set explicitly on both ends of every connection (the
//! coordinator's two services, the probe agent's session, the clients). Every other limit
//! of the daemons (connections, streams, batches, HTTP bodies) is listed with these in
//! `docs/limits.md`.

/// Largest gRPC message between a probe agent and the coordinator, bytes, both ways (an
/// honest answer is a few KiB: 1000 RTTs or 255 hops stay far below it).
pub const MAX_PROBE_MESSAGE: usize = 256 * 1024;
/// Largest gRPC message a client may send to the coordinator, bytes (a `LocateBatch` of
/// 100,000 IPv6 addresses).
pub const MAX_CLIENT_MESSAGE: usize = 8 * 1024 * 1024;
/// Largest gRPC message the coordinator sends to a client, bytes (a fleet list or a
/// result with its region and every measurement).
pub const MAX_REPLY_MESSAGE: usize = 64 * 1024 * 1024;
/// Largest HTTP/2 header list the coordinator accepts, bytes (metadata included).
pub const MAX_HEADER_LIST: u32 = 16 * 1024;
/// Calls open at a time on one connection to the coordinator.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;
