//! Target address policy: what may be measured. The table itself is the workspace's one
//! policy (`geoloc-policy`), shared with the probe agent and the client; this module only
//! names it the way the coordinator calls it.
pub use geoloc_policy::{canonical, parse_target as check, Refused, MAX_ADDRESS_LEN};
