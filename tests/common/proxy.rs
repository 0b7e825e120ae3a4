//! A TCP proxy on 127.0.0.1 between a store and its database server that can
//! be frozen: it then stops forwarding bytes in either direction but keeps
//! every socket open, as a black-holed network path or a half-open connection
//! does. The kernel still accepts (and acknowledges) what the client sends, so
//! nothing on the client side notices: its next read waits indefinitely.
//!
//! It can also reset every connection: the client's kernel gets a TCP RST
//! before the client sends again, as from a load balancer that resets the
//! flows it expires (Azure's "TCP reset on idle") or a keepalive probe
//! answered by a server host that restarted.
//!
//! In front of several servers it sends each new connection to the next one
//! in turn, as a load balancer in front of replicas does.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// At most this many client connections; later ones are refused (closed).
const MAX_CONNECTIONS: usize = 32;
/// How long a forwarding thread blocks in a read before it looks at the flags.
const POLL: Duration = Duration::from_millis(5);
/// How long [`Proxy::run_frozen`] waits for its work: a hang guard far beyond
/// the timeouts the tests set, not a timing assertion.
const HANG_GUARD: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Shared {
    frozen: AtomicBool,
    stopped: AtomicBool,
    /// Every connection forwarded, until the proxy stops or resets it.
    links: Mutex<Vec<Link>>,
    /// Server connections of links whose client was reset alone, kept open
    /// and silent until the proxy is dropped.
    orphans: Mutex<Vec<TcpStream>>,
}

/// One client connection, its connection to the server and their threads.
struct Link {
    client: TcpStream,
    server: TcpStream,
    /// Set to end this link's threads without a FIN to the client.
    cut: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Forwards `127.0.0.1:<port>` to the server a database URL names.
/// Dropping it closes every connection and joins every thread.
pub struct Proxy {
    addr: SocketAddr,
    url: String,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// A proxy in front of `url`'s server (`scheme://[user@]127.0.0.1:port/db`).
    pub fn start(url: &str) -> Proxy {
        Proxy::start_between(&[url])
    }

    /// A proxy in front of the servers of `urls`, which differ only in their
    /// server: connections go to each in turn. Its URL is the first's.
    pub fn start_between(urls: &[&str]) -> Proxy {
        let url = urls[0];
        let upstreams: Vec<SocketAddr> = urls.iter().map(|url| server_of(url)).collect();
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || accept(&listener, &upstreams, &shared))
        };
        Proxy {
            addr,
            url: with_server(url, addr),
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The database URL with the proxy in place of the server.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Stops forwarding; sockets stay open.
    pub fn freeze(&self) {
        self.shared.frozen.store(true, Ordering::SeqCst);
    }

    /// Forwards again, starting with what was held back.
    pub fn thaw(&self) {
        self.shared.frozen.store(false, Ordering::SeqCst);
    }

    /// Runs `work` on a thread of its own with the proxy frozen (if it is not
    /// already), then thaws it: what `work` returned, or `None` when it was
    /// still waiting after the hang guard, so a test of "does not wait on a
    /// server that stopped answering" fails instead of hanging.
    pub fn run_frozen<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        self.freeze();
        let (sender, done) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(work());
        });
        let result = done.recv_timeout(HANG_GUARD).ok();
        self.thaw();
        result
    }

    /// Resets every connection open now (a RST to each client, closed to
    /// the server); later connections are forwarded as before.
    pub fn reset(&self) {
        self.cut_clients(true);
    }

    /// Resets every client connection open now (a RST to each) and keeps
    /// its server connection open and silent: a cut the server does not
    /// see, as when the path between them fails, until its own keepalive
    /// or timeout notices.
    pub fn reset_clients(&self) {
        self.cut_clients(false);
    }

    /// Sends a RST to every client connection open now; shuts its server
    /// connection too when `server_too`, else keeps it open and silent.
    fn cut_clients(&self, server_too: bool) {
        let links: Vec<Link> = self.shared.links.lock().unwrap().drain(..).collect();
        for link in links {
            // Closing a socket that lingers zero seconds sends a RST.
            socket2::SockRef::from(&link.client)
                .set_linger(Some(Duration::ZERO))
                .expect("SO_LINGER");
            link.cut.store(true, Ordering::SeqCst);
            if server_too {
                let _ = link.server.shutdown(Shutdown::Both);
            }
            for thread in link.threads {
                let _ = thread.join();
            }
            if !server_too {
                self.shared.orphans.lock().unwrap().push(link.server);
            }
            // Otherwise the last descriptors of both sockets close here.
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.thaw();
        let links: Vec<Link> = self.shared.links.lock().unwrap().drain(..).collect();
        for link in &links {
            let _ = link.client.shutdown(Shutdown::Both);
            let _ = link.server.shutdown(Shutdown::Both);
        }
        // Wakes the acceptor, which then sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for link in links {
            for thread in link.threads {
                let _ = thread.join();
            }
        }
    }
}

fn accept(listener: &TcpListener, upstreams: &[SocketAddr], shared: &Arc<Shared>) {
    for (n, client) in listener.incoming().enumerate() {
        let upstream = upstreams[n % upstreams.len()];
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let full = shared.links.lock().unwrap().len() >= MAX_CONNECTIONS;
        let Some(server) = (!full)
            .then(|| TcpStream::connect_timeout(&upstream, Duration::from_secs(5)).ok())
            .flatten()
        else {
            continue; // dropping `client` closes it
        };
        let cut = Arc::new(AtomicBool::new(false));
        let pairs = [
            (client.try_clone(), server.try_clone()),
            (server.try_clone(), client.try_clone()),
        ];
        let mut threads = Vec::new();
        for (from, to) in pairs {
            let (Ok(from), Ok(to)) = (from, to) else {
                continue;
            };
            let (shared, cut) = (Arc::clone(shared), Arc::clone(&cut));
            threads.push(std::thread::spawn(move || forward(from, to, &shared, &cut)));
        }
        shared.links.lock().unwrap().push(Link {
            client,
            server,
            cut,
            threads,
        });
    }
}

/// Copies `from` to `to` until either closes, the proxy stops or the link
/// is cut; while the proxy is frozen, reads nothing (the bytes wait in the
/// kernel's buffers).
fn forward(mut from: TcpStream, mut to: TcpStream, shared: &Shared, cut: &AtomicBool) {
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = [0u8; 16 * 1024];
    while !shared.stopped.load(Ordering::SeqCst) && !cut.load(Ordering::SeqCst) {
        if shared.frozen.load(Ordering::SeqCst) {
            std::thread::sleep(POLL);
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    if !cut.load(Ordering::SeqCst) {
        let _ = to.shutdown(Shutdown::Write);
    }
}

/// `host:port` of a server URL (`scheme://[userinfo@]host:port[/…]`).
fn server_of(url: &str) -> SocketAddr {
    let (_, rest) = url.split_once("://").expect("a server URL");
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host_port = host_port.replace("localhost", "127.0.0.1");
    host_port
        .parse()
        .unwrap_or_else(|e| panic!("the proxy needs host:port as an IP address: {e}"))
}

/// `url` with its `host:port` replaced by `addr`.
fn with_server(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("a server URL");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let userinfo = authority
        .rsplit_once('@')
        .map_or(String::new(), |(u, _)| format!("{u}@"));
    format!("{scheme}://{userinfo}{addr}{tail}")
}
