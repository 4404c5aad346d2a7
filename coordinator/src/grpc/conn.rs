//! Accepted TCP connections before they reach gRPC: at most `max_connections` open at a time
//! (one more is closed at once), a connection that sends nothing within the handshake
//! timeout is closed, and accept errors (such as running out of file descriptors) pause the
//! accept loop instead of spinning a core.
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// Limits on connections.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at a time (probes and clients together).
    pub max_connections: usize,
    /// A new connection must send its first bytes this soon.
    pub handshake_timeout: Duration,
    /// An HTTP/2 connection whose peer does not answer a keepalive ping this soon is closed.
    pub keepalive_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: default_max_connections(),
            handshake_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// File descriptors kept for the database, logs and the listener.
const RESERVED_FDS: usize = 64;
/// Most connections even with a generous descriptor limit.
const MAX_CONNECTIONS: usize = 10_000;

/// The connection cap that fits the process's open-file limit (`LimitNOFILE`).
pub fn default_max_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        })
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1024);
    soft.saturating_sub(RESERVED_FDS).clamp(16, MAX_CONNECTIONS)
}

/// An accepted connection holding one of the `max_connections` slots until it closes.
pub struct Limited {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl Connected for Limited {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts on `listener` and yields the connections that are within the cap and sent their
/// first bytes in time. The accept task ends when the returned stream is dropped.
pub fn accept(
    listener: tokio::net::TcpListener,
    limits: &Limits,
) -> impl futures::Stream<Item = io::Result<Limited>> + Send + 'static {
    // TCP_NODELAY: without it, Nagle holds a request to a probe behind the previous
    // unacknowledged one for a whole round trip (measured: +1.1 s on a 1.1 s lab path).
    // TCP keepalive: a peer that vanished without a FIN is noticed by the kernel.
    let mut incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)))
        .with_keepalive_interval(Some(Duration::from_secs(15)))
        .with_keepalive_retries(Some(4));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let handshake = limits.handshake_timeout;
    let max = limits.max_connections;
    let (tx, rx) = mpsc::channel::<io::Result<Limited>>(64);
    tokio::spawn(async move {
        let mut refused: u64 = 0;
        let mut last_report = tokio::time::Instant::now();
        loop {
            let stream = tokio::select! {
                _ = tx.closed() => return,
                s = incoming.next() => s,
            };
            let stream = match stream {
                None => return,
                Some(Ok(s)) => s,
                Some(Err(e)) => {
                    // EMFILE and friends: retrying at once would spin a core.
                    tracing::warn!(error = %e, "accepting a connection failed; pausing");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                refused += 1;
                if last_report.elapsed() >= Duration::from_secs(10) {
                    tracing::warn!(
                        refused,
                        max,
                        "connection cap reached: new connections closed"
                    );
                    last_report = tokio::time::Instant::now();
                    refused = 0;
                }
                drop(stream);
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut b = [0u8; 1];
                match tokio::time::timeout(handshake, stream.peek(&mut b)).await {
                    Ok(Ok(n)) if n > 0 => {
                        let _ = tx
                            .send(Ok(Limited {
                                stream,
                                _slot: slot,
                            }))
                            .await;
                    }
                    // Closed, failed or silent: the slot is freed with the stream.
                    _ => {}
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
