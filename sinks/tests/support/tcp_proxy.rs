//! A TCP proxy on 127.0.0.1 in front of a real server, which a test can take down and bring
//! back: an outage as a client sees it, without touching the server.
//!
//! While down, the proxy cuts every connection it forwards and closes each new one at once;
//! it counts those refusals, so a test can wait until a client has tried (and retried)
//! before it brings the proxy back up: synchronisation on an event, not on time. While
//! silent, it cuts forwarded connections too, but keeps each new one open, reading requests
//! and never answering (a server that stopped responding), and counts those.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long [`TcpProxy::wait_for_refused`] waits before failing the test.
const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// A handle on the proxy; clones control the same proxy.
#[derive(Clone)]
pub struct TcpProxy {
    pub port: u16,
    state: Arc<State>,
}

impl std::fmt::Debug for TcpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TcpProxy(127.0.0.1:{})", self.port)
    }
}

#[derive(Default)]
struct State {
    inner: Mutex<Inner>,
    changed: Condvar,
}

#[derive(Default)]
struct Inner {
    down: bool,
    silent: bool,
    /// Connections held open without an answer because the proxy was silent.
    held: u64,
    /// Connections closed at once because the proxy was down.
    refused: u64,
    /// Both ends of every forwarded connection, to cut them when going down.
    live: Vec<TcpStream>,
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl TcpProxy {
    /// Forwards connections to `target` from a fresh loopback port.
    pub fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("its address").port();
        let state = Arc::new(State::default());
        let accepting = Arc::clone(&state);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                accept(&accepting, client, target);
            }
        });
        TcpProxy { port, state }
    }

    /// Cuts every forwarded connection and refuses new ones until [`come_up`](Self::come_up).
    pub fn go_down(&self) {
        let mut inner = self.state.lock();
        inner.down = true;
        for stream in inner.live.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    pub fn come_up(&self) {
        let mut inner = self.state.lock();
        inner.down = false;
        inner.silent = false;
    }

    /// Cuts every forwarded connection and answers nothing on new ones until
    /// [`come_up`](Self::come_up).
    pub fn go_silent(&self) {
        self.go_down();
        let mut inner = self.state.lock();
        inner.down = false;
        inner.silent = true;
    }

    /// Connections held without an answer so far.
    pub fn held(&self) -> u64 {
        self.state.lock().held
    }

    /// Waits until `n` connections have been held without an answer in all.
    pub fn wait_for_held(&self, n: u64) {
        self.wait_until(|inner| inner.held >= n, "held");
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.state.lock().refused
    }

    /// Waits until `n` connections have been refused in all.
    pub fn wait_for_refused(&self, n: u64) {
        self.wait_until(|inner| inner.refused >= n, "refused");
    }

    fn wait_until(&self, done: impl Fn(&Inner) -> bool, what: &str) {
        let deadline = Instant::now() + WAIT_LIMIT;
        let mut inner = self.state.lock();
        while !done(&inner) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "not enough connections {what}");
            inner = self
                .state
                .changed
                .wait_timeout(inner, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

fn accept(state: &Arc<State>, client: TcpStream, target: SocketAddr) {
    let mut inner = state.lock();
    if inner.down {
        inner.refused += 1;
        drop(inner);
        let _ = client.shutdown(Shutdown::Both);
        state.changed.notify_all();
        return;
    }
    if inner.silent {
        inner.held += 1;
        drop(inner);
        state.changed.notify_all();
        std::thread::spawn(move || {
            let mut client = client;
            let mut request = [0u8; 64 << 10];
            while matches!(client.read(&mut request), Ok(n) if n > 0) {}
        });
        return;
    }
    let Ok(server) = TcpStream::connect(target) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    for stream in [&client, &server] {
        if let Ok(clone) = stream.try_clone() {
            inner.live.push(clone);
        }
    }
    drop(inner);
    let (client_in, server_in) = (client.try_clone(), server.try_clone());
    if let (Ok(client_in), Ok(server_in)) = (client_in, server_in) {
        std::thread::spawn(move || pump(client_in, server));
        std::thread::spawn(move || pump(server_in, client));
    }
}

/// Copies `from` to `to` until either side ends, then ends both.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
