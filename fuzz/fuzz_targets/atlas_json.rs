//! RIPE Atlas JSON (results of a measurement and probe lists), as the Atlas API or a
//! downloaded file gives it: `parse_results` and `parse_probe_file` return data or an error.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use geoloc_atlas::probes::parse_probe_file;
use geoloc_atlas::{parse_results, Expect};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    if which & 1 == 0 {
        let expect = if which & 2 == 0 {
            Expect::default()
        } else {
            Expect {
                target: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
                msm_ids: vec![1001, u64::from(which)],
            }
        };
        let _ = parse_results(bytes, "fuzz.json", &expect);
    } else {
        let _ = parse_probe_file(bytes, "fuzz.json");
    }
});
