//! Name resolution on sandboxd networks (issue 15): containers find each other by name.
//!
//! Every network but the built-ins `bridge`, `host` and `none` gets a name service. It listens
//! on the network's gateway address(es) in the daemon's own namespace, UDP and TCP port 53 (the
//! Podman/aardvark-dns placement; why not Docker's 127.0.0.11 inside each sandbox is in
//! docs/decisions.md), and each sandbox's resolv.conf names it. A query is answered from the
//! endpoints of the networks the asking sandbox (found by the source address) is connected to:
//! its name, aliases, hostname and 12-digit short id, also as `name.<network>`; PTR gives the
//! first name. Other names go to the host's resolvers ([`upstream`]), except from internal
//! networks.
//!
//! The owner is the only writer: after every change of its records it calls
//! [`Service::publish`], which builds a new [`Table`] and swaps it in whole before the owner
//! replies to the client. So a name exists when connect returns and is gone when disconnect
//! returns, and a query never waits for, or is dropped by, an update.

pub mod handoff;
pub mod server;
pub mod table;
pub mod upstream;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::task::JoinHandle;

use crate::model::{NetworkRec, SandboxRec};
pub use table::{local_names, nameservers, Answer, RemoteName, RemoteNames, Table};

/// What serves one listening address: a thread for UDP ([`server::serve_udp`]) and a tokio
/// task for TCP. Dropping it stops both and closes the sockets before it returns, so the
/// address can be bound again at once (a network removed and created again).
struct Listener {
    tcp: JoinHandle<()>,
    /// A second handle on the TCP listener, for [`Service::export`].
    tcp_keep: std::net::TcpListener,
    udp: Option<std::thread::JoinHandle<()>>,
    udp_sock: Arc<std::net::UdpSocket>,
    stop: Arc<AtomicBool>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.tcp.abort();
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the thread's blocked receive (Linux: a UDP socket's shutdown wakes its readers
        // even though it reports ENOTCONN); the read timeout is the fallback.
        let _ = socket2::SockRef::from(self.udp_sock.as_ref()).shutdown(std::net::Shutdown::Read);
        if let Some(t) = self.udp.take() {
            let _ = t.join();
        }
    }
}

/// The name service: the shared snapshot and the listeners.
pub struct Service {
    shared: Arc<server::Shared>,
    rt: tokio::runtime::Handle,
    port: u16,
    /// The host's resolv.conf (upstream servers), re-read at each publish.
    resolv_conf: PathBuf,
    listeners: Mutex<HashMap<(String, IpAddr), Listener>>,
    /// Sockets taken over from a previous daemon ([`handoff`]), by label, until used.
    adopted: Mutex<HashMap<String, std::os::fd::OwnedFd>>,
}

impl Service {
    /// A service with an empty table; nothing listens until [`Service::publish`].
    pub fn new(rt: tokio::runtime::Handle, resolv_conf: PathBuf, port: u16) -> Service {
        Service {
            shared: Arc::new(server::Shared {
                table: RwLock::new(Arc::new(Table::default())),
                inflight: Arc::new(tokio::sync::Semaphore::new(1024)),
            }),
            rt,
            port,
            resolv_conf,
            listeners: Mutex::new(HashMap::new()),
            adopted: Mutex::new(HashMap::new()),
        }
    }

    /// Serve these sockets (from [`handoff::adopt`]) instead of binding new ones, for the
    /// addresses the first [`Service::publish`] wants; the others are closed then.
    pub fn adopt(&self, fds: HashMap<String, std::os::fd::OwnedFd>) {
        if !fds.is_empty() {
            tracing::info!(
                sockets = fds.len(),
                "DNS sockets taken over from the previous daemon"
            );
        }
        match self.adopted.lock() {
            Ok(mut a) => *a = fds,
            Err(p) => *p.into_inner() = fds,
        }
    }

    /// Every listening socket with its label, for [`handoff::spawn_holder`].
    pub fn export(&self) -> Vec<(String, std::os::fd::RawFd)> {
        use std::os::fd::AsRawFd;
        let ls = match self.listeners.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        ls.iter()
            .flat_map(|((_, ip), l)| {
                let a = std::net::SocketAddr::new(*ip, self.port);
                [
                    (format!("udp {a}"), l.udp_sock.as_raw_fd()),
                    (format!("tcp {a}"), l.tcp_keep.as_raw_fd()),
                ]
            })
            .collect()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Table> {
        self.shared.snapshot()
    }

    /// Build the table from the owner's records, swap it in, and open or close listeners so
    /// that exactly the DNS-enabled networks' gateways are served. Binding happens here, before
    /// the caller replies, so a network's service exists when its creation returns.
    pub fn publish(
        &self,
        networks: &BTreeMap<String, NetworkRec>,
        sandboxes: &BTreeMap<String, SandboxRec>,
        remote: &RemoteNames,
    ) {
        let text = std::fs::read_to_string(&self.resolv_conf).unwrap_or_default();
        let mut table = Table::build(networks, sandboxes, upstream::parse_resolv_conf(&text));
        table.add_remote(remote);
        let want = table.listeners();
        match self.shared.table.write() {
            Ok(mut t) => *t = Arc::new(table),
            Err(p) => *p.into_inner() = Arc::new(table),
        }
        let mut ls = match self.listeners.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        ls.retain(|k, _| want.iter().any(|(w, _)| w == k));
        for (key, freebind) in want {
            if ls.contains_key(&key) {
                continue;
            }
            match self.start(&key.0, key.1, freebind) {
                Ok(l) => {
                    tracing::info!(network = %key.0, address = %key.1, port = self.port, "DNS listening");
                    ls.insert(key, l);
                }
                // A `cni` network's gateway that is not a host address cannot be served (its
                // sandboxes keep the host's resolvers).
                Err(e) if !freebind && e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {}
                // Retried at the next publish.
                Err(e) => {
                    tracing::warn!(network = %key.0, address = %key.1, error = %e, "DNS cannot listen")
                }
            }
        }
        drop(ls);
        // Sockets of the previous daemon that no network wants any more.
        match self.adopted.lock() {
            Ok(mut a) => a.clear(),
            Err(p) => p.into_inner().clear(),
        }
    }

    /// The sockets of one address: taken over from the previous daemon, else bound now.
    fn sockets(
        &self,
        ip: IpAddr,
        freebind: bool,
    ) -> std::io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
        let mut a = match self.adopted.lock() {
            Ok(a) => a,
            Err(p) => p.into_inner(),
        };
        // The port is in the label: a daemon started with another --dns-port binds anew.
        let addr = std::net::SocketAddr::new(ip, self.port);
        let (u, t) = (format!("udp {addr}"), format!("tcp {addr}"));
        if a.contains_key(&u) && a.contains_key(&t) {
            if let (Some(u), Some(t)) = (a.remove(&u), a.remove(&t)) {
                let tcp = std::net::TcpListener::from(t);
                tcp.set_nonblocking(true)?;
                return Ok((std::net::UdpSocket::from(u), tcp));
            }
        }
        server::bind(ip, self.port, freebind)
    }

    /// Whether an address is served now.
    pub fn serving(&self, ip: IpAddr) -> bool {
        let ls = match self.listeners.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        ls.keys().any(|(_, a)| *a == ip)
    }

    fn start(&self, net: &str, ip: IpAddr, freebind: bool) -> std::io::Result<Listener> {
        let (udp, tcp) = self.sockets(ip, freebind)?;
        let tcp_keep = tcp.try_clone()?;
        let _guard = self.rt.enter();
        let tcp = tokio::net::TcpListener::from_std(tcp)?;
        udp.set_nonblocking(false)?;
        udp.set_read_timeout(Some(std::time::Duration::from_secs(1)))?;
        let udp = Arc::new(udp);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (sock, shared, rt, stop) = (
                udp.clone(),
                self.shared.clone(),
                self.rt.clone(),
                stop.clone(),
            );
            let net = net.to_string();
            std::thread::Builder::new()
                .name("sandboxd-dns".into())
                .spawn(move || server::serve_udp(&sock, &net, &shared, &rt, &stop))?
        };
        Ok(Listener {
            tcp: self
                .rt
                .spawn(server::serve_tcp(tcp, net.to_string(), self.shared.clone())),
            tcp_keep,
            udp: Some(thread),
            udp_sock: udp,
            stop,
        })
    }
}
