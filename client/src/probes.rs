//! `geoloc probes`: the probe fleet known to a coordinator.
use clap::Args;
use geoloc_proto::v1 as pb;
use serde_json::{json, Value};

use crate::{status_msg, Client, DEFAULT_COORDINATOR};

/// `geoloc probes`
#[derive(Debug, Args)]
pub struct ProbesArgs {
    /// Coordinator URL.
    #[arg(long, env = "GEOLOC_COORDINATOR", default_value = DEFAULT_COORDINATOR, value_name = "URL")]
    pub coordinator: String,
    /// Print a JSON array (schema: client/README.md).
    #[arg(long)]
    pub json: bool,
}

/// `geoloc probes`.
pub fn run_probes(args: ProbesArgs) -> anyhow::Result<()> {
    crate::runtime()?.block_on(async {
        let mut client = Client::connect(&args.coordinator).await?;
        let probes = client
            .list_probes()
            .await
            .map_err(|s| anyhow::anyhow!("listing probes: {}", status_msg(&s)))?;
        let now = crate::unix_ms();
        if args.json {
            println!("{}", serde_json::to_string_pretty(&probes_json(&probes))?);
            return Ok(());
        }
        println!(
            "{:<20} {:>9} {:>10} {:<12} {:>10} {:<10} note",
            "probe", "lat", "lon", "status", "last seen", "version"
        );
        for p in &probes {
            let status = probe_status(p);
            let seen = if p.last_seen_unix_ms == 0 {
                "never".to_string()
            } else {
                ago(now - p.last_seen_unix_ms)
            };
            println!(
                "{:<20} {:>9.4} {:>10.4} {:<12} {:>10} {:<10} {}",
                crate::printable(&p.probe_id),
                p.lat,
                p.lon,
                status,
                seen,
                crate::printable(&p.agent_version),
                crate::printable(&p.flag_reason)
            );
        }
        eprintln!(
            "{} probes, {} healthy",
            probes.len(),
            probes.iter().filter(|p| p.healthy).count()
        );
        Ok(())
    })
}

/// One word for a probe's state: healthy, flagged, stale (connected, heartbeats late) or
/// disconnected.
pub fn probe_status(p: &pb::ProbeInfo) -> &'static str {
    if p.flagged {
        "flagged"
    } else if p.healthy {
        "healthy"
    } else if p.connected {
        "stale"
    } else {
        "disconnected"
    }
}

/// The JSON printed by `geoloc probes --json`.
pub fn probes_json(ps: &[pb::ProbeInfo]) -> Value {
    Value::Array(
        ps.iter()
            .map(|p| {
                json!({
                    "probe_id": p.probe_id, "lat": p.lat, "lon": p.lon, "status": probe_status(p),
                    "healthy": p.healthy, "connected": p.connected, "flagged": p.flagged,
                    "flag_reason": p.flag_reason, "last_seen_unix_ms": p.last_seen_unix_ms,
                    "agent_version": p.agent_version, "ipv4": p.ipv4, "ipv6": p.ipv6,
                })
            })
            .collect(),
    )
}

fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s < 120 {
        format!("{s} s ago")
    } else if s < 7200 {
        format!("{} min ago", s / 60)
    } else {
        format!("{} h ago", s / 3600)
    }
}
