//! The audit input (`geoloc audit --input FILE`): a CSV or plain list of addresses from
//! whoever wrote the file. `client::audit::read_inputs` must return rows or an error.
#![no_main]

use geoloc_client::audit;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = audit::read_inputs(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = audit::parse_columns(Some(text));
    }
});
