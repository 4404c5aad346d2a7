//! Configuration files of both daemons: TOML text, then the layered resolution and the
//! range checks, then the redacted print-out (`--print-config`). Errors, never panics.
#![no_main]

use std::collections::HashMap;

use geoloc_coordinator::config::{Config, Settings};
use geoloc_probe_agent::config::{AgentConfig, ConfigFlags, FileConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env: HashMap<String, String> = HashMap::new();
    if let Ok(file) = FileConfig::parse(text, "fuzz.toml") {
        if let Ok(c) = AgentConfig::resolve(&ConfigFlags::default(), &file, &env) {
            let _ = c.to_redacted_toml();
            let _ = c.identity();
        }
    }
    if let Ok(file) = toml::from_str::<Settings>(text) {
        if let Ok(c) = Config::resolve(&Settings::default(), &file, Some("fuzz.toml"), &env) {
            let _ = c.to_redacted_toml();
        }
    }
});
