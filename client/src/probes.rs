//! `geoloc probes`: the probe fleet known to a coordinator.
use clap::Args;
use geoloc_proto::v1 as pb;
use serde_json::{json, Value};

use crate::{Client, DEFAULT_COORDINATOR};

/// `geoloc probes`
#[derive(Debug, Args)]
pub struct ProbesArgs {
    /// Coordinator URL.
    #[arg(long, env = "GEOLOC_COORDINATOR", default_value = DEFAULT_COORDINATOR, value_name = "URL")]
    pub coordinator: String,
    #[command(flatten)]
    pub ca: crate::CaArg,
    /// Print a JSON array (schema: client/README.md).
    #[arg(long)]
    pub json: bool,
}

/// `geoloc probes`.
pub fn run_probes(args: ProbesArgs) -> anyhow::Result<()> {
    crate::runtime()?.block_on(async {
        let mut client = Client::connect_with(&args.coordinator, &args.ca.options()).await?;
        let probes = client
            .list_probes()
            .await
            .map_err(|s| anyhow::anyhow!("listing probes: {}", client.call_error(&s)))?;
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
            println!("{}", table_row(p, now));
        }
        eprintln!(
            "{} probes, {} healthy",
            probes.len(),
            probes.iter().filter(|p| p.healthy).count()
        );
        Ok(())
    })
}

/// One line of the `geoloc probes` table. Texts come from probes (hostile): control
/// characters are shown escaped, so a probe cannot move the cursor or forge a line.
pub fn table_row(p: &pb::ProbeInfo, now_unix_ms: i64) -> String {
    let seen = if p.last_seen_unix_ms == 0 {
        "never".to_string()
    } else {
        ago(now_unix_ms - p.last_seen_unix_ms)
    };
    format!(
        "{:<20} {:>9.4} {:>10.4} {:<12} {:>10} {:<10} {}",
        crate::printable(&p.probe_id),
        p.lat,
        p.lon,
        probe_status(p),
        seen,
        crate::printable(&p.agent_version),
        crate::printable(&p.flag_reason)
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_probe_texts_cannot_reach_the_terminal_raw() {
        let p = pb::ProbeInfo {
            probe_id: "p1\x1b[2J".into(),
            agent_version: "1.0\n2026-11-29 INFO forged line\x1b]0;owned\x07".into(),
            flag_reason: "x\r\u{9b}31m".into(),
            last_seen_unix_ms: 1_000,
            ..Default::default()
        };
        let row = table_row(&p, 61_000);
        assert!(!row.chars().any(char::is_control), "{row:?}");
        assert!(row.contains("p1\\u{1b}[2J"), "{row}");
        assert!(row.contains("\\n2026-11-29"), "{row}");
        assert!(row.contains("60 s ago"), "{row}");
    }
}
