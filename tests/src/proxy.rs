//! A TCP proxy between the gateway and ingest that a test controls: it can cut every connection
//! (both ends closed at once, as when a modem drops), black-hole the link (bytes are read and
//! thrown away in both directions while both connections stay open, as on a dead mobile link),
//! and be pointed at a new upstream (ingest restarted on another port). A frame filter can drop
//! chosen HJ 212 frames on their way up (a lossy link that loses one upload).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Decides, for one whole frame sent by the gateway (`##` … CR LF), whether the proxy drops it.
pub type FrameFilter = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

struct State {
    upstream: Mutex<SocketAddr>,
    blackhole: AtomicBool,
    cut: Mutex<CancellationToken>,
    connections: AtomicU64,
    filter: Mutex<Option<FrameFilter>>,
    dropped: AtomicU64,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("blackhole", &self.blackhole)
            .field("connections", &self.connections)
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

/// A running proxy; it stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    ///
    /// # Errors
    /// The listener cannot bind.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            upstream: Mutex::new(upstream),
            blackhole: AtomicBool::new(false),
            cut: Mutex::new(CancellationToken::new()),
            connections: AtomicU64::new(0),
            filter: Mutex::new(None),
            dropped: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, state.clone(), stop.clone()));
        Ok(Self { addr, state, stop })
    }

    /// The address the gateway connects to.
    #[must_use]
    pub const fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every open connection (both sides); new connections are accepted as before.
    pub fn cut(&self) {
        let fresh = CancellationToken::new();
        let old = std::mem::replace(&mut *self.state.cut.lock().unwrap_or_else(PoisonError::into_inner), fresh);
        old.cancel();
    }

    /// While on, every byte is dropped in both directions and connections stay open.
    pub fn set_blackhole(&self, on: bool) {
        self.state.blackhole.store(on, Ordering::SeqCst);
    }

    /// Points new connections at `upstream`.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.state.upstream.lock().unwrap_or_else(PoisonError::into_inner) = upstream;
    }

    /// Drops every upstream frame (gateway → ingest) for which `filter` returns true, on
    /// connections opened from now on; `None` forwards everything again. While a filter is set,
    /// upstream bytes are forwarded frame by frame (up to each CR LF).
    pub fn set_frame_filter(&self, filter: Option<FrameFilter>) {
        *self.state.filter.lock().unwrap_or_else(PoisonError::into_inner) = filter;
    }

    /// Frames dropped by the frame filter so far.
    #[must_use]
    pub fn frames_dropped(&self) -> u64 {
        self.state.dropped.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    #[must_use]
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((client, _)) = accepted else { continue };
        state.connections.fetch_add(1, Ordering::Relaxed);
        let upstream = *state.upstream.lock().unwrap_or_else(PoisonError::into_inner);
        let token = state.cut.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let state = state.clone();
        tokio::spawn(async move {
            // An upstream that is down: the client sees its connection close, as with a refused
            // connection behind a NAT.
            let Ok(server) = TcpStream::connect(upstream).await else { return };
            let (crd, cwr) = client.into_split();
            let (srd, swr) = server.into_split();
            let both = token.child_token();
            tokio::spawn(pump(crd, swr, state.clone(), both.clone(), true));
            tokio::spawn(pump(srd, cwr, state, both, false));
        });
    }
}

/// Copies one direction until either side closes or the connection is cut; closing one direction
/// closes the other too. `upstream` is the gateway → ingest direction (where the frame filter
/// applies).
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    state: Arc<State>,
    token: CancellationToken,
    upstream: bool,
) {
    let mut buf = vec![0u8; 8192];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = tokio::select! {
            () = token.cancelled() => break,
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        if state.blackhole.load(Ordering::SeqCst) {
            continue;
        }
        let filter = if upstream { state.filter.lock().unwrap_or_else(PoisonError::into_inner).clone() } else { None };
        let Some(filter) = filter else {
            let held = std::mem::take(&mut pending);
            if (!held.is_empty() && to.write_all(&held).await.is_err()) || to.write_all(&buf[..n]).await.is_err() {
                break;
            }
            continue;
        };
        pending.extend_from_slice(&buf[..n]);
        let mut out = Vec::new();
        while let Some(end) = pending.windows(2).position(|w| w == b"\r\n") {
            let frame: Vec<u8> = pending.drain(..end + 2).collect();
            if filter(&frame) {
                state.dropped.fetch_add(1, Ordering::Relaxed);
            } else {
                out.extend_from_slice(&frame);
            }
        }
        if !out.is_empty() && to.write_all(&out).await.is_err() {
            break;
        }
    }
    token.cancel();
}
