//! A TCP relay that a test can cut and heal: the "link" between an agent and one plane node.
//!
//! Cutting closes every relayed connection at once and refuses new ones (accepted, then closed
//! straight away, as a dead route behind a firewall that resets would); healing lets new
//! connections through again. The bytes are relayed untouched, so mutual TLS runs end to end
//! through it, and counted, so a benchmark can say what crossed the link.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Proxy {
    port: u16,
    cut: watch::Sender<bool>,
    accept: JoinHandle<()>,
    /// Bytes relayed towards the target, and back.
    counted: Arc<[AtomicU64; 2]>,
    /// Bytes per second each direction of each connection may carry (0: no limit), to stand
    /// for a thin inter-DC link.
    rate: Arc<AtomicU64>,
}

impl Proxy {
    /// Relays 127.0.0.1:<a free port> to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("local address").port();
        let (cut, cut_rx) = watch::channel(false);
        let counted: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let counters = counted.clone();
        let rate = Arc::new(AtomicU64::new(0));
        let limit = rate.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                if *cut_rx.borrow() {
                    drop(inbound);
                    continue;
                }
                tokio::spawn(relay(
                    inbound,
                    target,
                    cut_rx.clone(),
                    counters.clone(),
                    limit.load(Ordering::Relaxed),
                ));
            }
        });
        Self {
            port,
            cut,
            accept,
            counted,
            rate,
        }
    }

    /// Limits new connections to `bytes_per_second` in each direction (0: unlimited).
    pub fn limit_rate(&self, bytes_per_second: u64) {
        self.rate.store(bytes_per_second, Ordering::Relaxed);
    }

    /// Bytes relayed so far: (towards the target, back from it).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.counted[0].load(Ordering::Relaxed),
            self.counted[1].load(Ordering::Relaxed),
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes every connection through the relay and refuses new ones until [`Proxy::heal`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut.send_replace(true);
        self.accept.abort();
    }
}

async fn relay(
    mut inbound: TcpStream,
    target: SocketAddr,
    mut cut: watch::Receiver<bool>,
    counted: Arc<[AtomicU64; 2]>,
    rate: u64,
) {
    let Ok(mut outbound) = TcpStream::connect(target).await else {
        return;
    };
    let (mut in_read, mut in_write) = inbound.split();
    let (mut out_read, mut out_write) = outbound.split();
    let up = pump(&mut in_read, &mut out_write, &counted[0], rate);
    let down = pump(&mut out_read, &mut in_write, &counted[1], rate);
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = cut.wait_for(|c| *c) => {}
    }
}

/// Copies until EOF or an error, counting, at most `rate` bytes/s (0: unlimited); passes the
/// EOF on.
async fn pump(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    counter: &AtomicU64,
    rate: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let started = tokio::time::Instant::now();
    let mut sent = 0u64;
    loop {
        if rate > 0 {
            let due = started + std::time::Duration::from_secs_f64(sent as f64 / rate as f64);
            tokio::time::sleep_until(due).await;
        }
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                counter.fetch_add(n as u64, Ordering::Relaxed);
                sent += n as u64;
            }
        }
    }
    let _ = to.shutdown().await;
}
