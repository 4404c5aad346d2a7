//! The coordinator (server) and the client side of `geoloc locate|audit|probes`.
pub mod client;
