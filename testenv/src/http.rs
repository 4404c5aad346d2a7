//! A plain HTTP/1.1 `GET` on loopback for tests of `/metrics` and `/healthz` endpoints,
//! and the reading of one Prometheus sample, without an HTTP client dependency.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// `GET path` with `Connection: close`: (status, body). A chunked body is decoded. Blocking:
/// from async code call it inside `tokio::task::spawn_blocking`. Panics on any I/O or
/// protocol error (it is for tests).
#[track_caller]
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .unwrap_or_else(|e| panic!("read GET {path} from {addr}: {e}"));
    let text = String::from_utf8(buf).expect("a UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP head");
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    )
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    loop {
        let (len, tail) = rest.split_once("\r\n").expect("a chunk size line");
        let n = usize::from_str_radix(len.trim(), 16).expect("a hex chunk size");
        if n == 0 {
            return out;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
}

/// The value of the sample named exactly `series` (name and labels as printed) in a
/// Prometheus text exposition, if any.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn dechunks_and_reads_samples() {
        assert_eq!(
            super::dechunk("5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n"),
            "hello!"
        );
        let t = "# HELP x y\nx_total{a=\"1\"} 3\nx_total 4.5\n";
        assert_eq!(super::sample(t, "x_total"), Some(4.5));
        assert_eq!(super::sample(t, "x_total{a=\"1\"}"), Some(3.0));
        assert_eq!(super::sample(t, "x"), None);
    }
}
