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

pub mod server;
pub mod table;
pub mod upstream;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use tokio::task::JoinHandle;

use crate::model::{NetworkRec, SandboxRec};
pub use table::{nameservers, Answer, Table};

/// Tasks reading one UDP socket. Two (one per runtime worker) were measured with bench/dns.sh:
/// the one-client p50 went from 17 to 23 us (both tasks wake for each datagram) and 16-client
/// throughput stayed within the run-to-run noise, so one it is.
const UDP_TASKS: usize = 1;

/// The tasks of one listening address; aborted (and the sockets closed) on drop.
struct Listener {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
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
        }
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
    ) {
        let text = std::fs::read_to_string(&self.resolv_conf).unwrap_or_default();
        let table = Table::build(networks, sandboxes, upstream::parse_resolv_conf(&text));
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
        let (udp, tcp) = server::bind(ip, self.port, freebind)?;
        let _guard = self.rt.enter();
        let udp = Arc::new(tokio::net::UdpSocket::from_std(udp)?);
        let tcp = tokio::net::TcpListener::from_std(tcp)?;
        let mut tasks: Vec<JoinHandle<()>> = (0..UDP_TASKS)
            .map(|_| {
                self.rt.spawn(server::serve_udp(
                    udp.clone(),
                    net.to_string(),
                    self.shared.clone(),
                ))
            })
            .collect();
        tasks.push(
            self.rt
                .spawn(server::serve_tcp(tcp, net.to_string(), self.shared.clone())),
        );
        Ok(Listener { tasks })
    }
}
