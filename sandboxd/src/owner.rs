//! The single owner of the state (the pattern of cloud-hypervisor's VMM API: one task owns the
//! state and requests arrive as messages).
//!
//! Protocol, step by step:
//! 1. An HTTP handler decodes the request into a [`Request`] carrying a oneshot reply sender and
//!    sends it as [`Msg::Api`] over the owner's channel; then it awaits the reply and encodes it.
//! 2. The owner (one dedicated thread, no locks) validates the request against the whole state,
//!    so every conflict is refused before anything changes. Reads are answered at once.
//! 3. A mutation first records its intent durably (the record with state `creating`, `adding`,
//!    `removing` or `deleting`), marks the sandbox busy (conflicting requests get 409), and hands
//!    the plugin work to a blocking job ([`crate::cniops`]); the owner never waits for an exec.
//!    Jobs of different sandboxes run in parallel; one sandbox has at most one job.
//! 4. The job sends its outcome back as [`Msg::Done`] on the same channel. The owner records the
//!    outcome durably (state `ready`, or the record removed), emits an event and replies.
//!
//! A kill -9 between any two of these steps leaves an intent record that the reconcile at the
//! next start ([`reconcile`]) finishes or undoes; the same reconcile runs on `POST /v1/_repair`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use cni::{Attachment, CniResult, RuntimeConf};
use ipnet::IpNet;
use serde_json::{Map, Value};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::cniops::{self, Attach, Runner};
use crate::error::{bad, conflict, not_found, ApiError};
use crate::model::*;
use crate::store::Store;
use crate::util::{check_name, is_id_prefix, new_id, now_rfc3339};

/// A reply channel.
pub type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

/// One API operation with its reply channel.
#[derive(Debug)]
pub enum Request {
    /// GET /v1/networks.
    ListNetworks(Reply<Vec<Network>>),
    /// GET /v1/networks/{name}.
    GetNetwork(String, Reply<Network>),
    /// POST /v1/networks.
    CreateNetwork(NetworkCreate, Reply<Network>),
    /// DELETE /v1/networks/{name}.
    DeleteNetwork(String, Reply<()>),
    /// GET /v1/sandboxes.
    ListSandboxes(Reply<Vec<Sandbox>>),
    /// GET /v1/sandboxes/{name}.
    GetSandbox(String, Reply<Sandbox>),
    /// POST /v1/sandboxes.
    CreateSandbox(SandboxCreate, Reply<Sandbox>),
    /// DELETE /v1/sandboxes/{name}.
    DeleteSandbox(String, Reply<()>),
    /// POST /v1/sandboxes/{name}/endpoints.
    Connect(String, EndpointCreate, Reply<Endpoint>),
    /// DELETE /v1/sandboxes/{name}/endpoints/{network}.
    Disconnect(String, String, Reply<()>),
    /// POST /v1/_repair.
    Repair(Reply<RepairReport>),
    /// Stop accepting mutations; reply once no job runs.
    Shutdown(oneshot::Sender<()>),
}

/// What the owner's channel carries.
#[derive(Debug)]
pub enum Msg {
    /// A request from the API.
    Api(Request),
    /// A job finished.
    Done(Done),
    /// The overlay agent's view of the cluster store changed (layer 6).
    Overlay(crate::overlay::OwnerMsg),
}

/// A finished job.
#[derive(Debug)]
pub enum Done {
    /// Sandbox creation; `clean` tells whether a failure was fully rolled back.
    Created {
        /// Sandbox name.
        name: String,
        /// Results per endpoint, in order.
        result: Result<Vec<CniResult>, ApiError>,
        /// Rollback complete.
        clean: bool,
        /// Reply.
        reply: Reply<Sandbox>,
    },
    /// Sandbox removal.
    Deleted {
        /// Sandbox name.
        name: String,
        /// Outcome.
        result: Result<(), ApiError>,
        /// Reply.
        reply: Reply<()>,
    },
    /// Connect.
    Connected {
        /// Sandbox name.
        sandbox: String,
        /// Endpoint id.
        ep_id: String,
        /// Result.
        result: Result<CniResult, ApiError>,
        /// Rollback complete.
        clean: bool,
        /// Reply.
        reply: Reply<Endpoint>,
    },
    /// Disconnect.
    Disconnected {
        /// Sandbox name.
        sandbox: String,
        /// Endpoint id.
        ep_id: String,
        /// Outcome.
        result: Result<(), ApiError>,
        /// The endpoint that took over the default route, and its new ADD result.
        rerouted: Option<(String, Result<CniResult, ApiError>)>,
        /// Reply.
        reply: Reply<()>,
    },
    /// Network removal.
    NetworkDeleted {
        /// Network name.
        name: String,
        /// Outcome.
        result: Result<(), ApiError>,
        /// The failure came before anything was torn down (the cluster store refused or did
        /// not answer): the network stays as it was.
        untouched: bool,
        /// Reply.
        reply: Reply<()>,
    },
    /// An overlay network stored in the cluster store (or not).
    OverlayCreated {
        /// The planned record.
        rec: NetworkRec,
        /// The cluster store's answer.
        result: Result<(), ApiError>,
        /// Reply.
        reply: Reply<Network>,
    },
    /// The background CHECK of one sandbox after start.
    Checked {
        /// What the reconcile did to it.
        outcome: Box<SbOutcome>,
    },
    /// Repair.
    Repaired {
        /// What the reconcile did and the resulting records.
        outcome: Box<Outcome>,
        /// Reply.
        reply: Reply<RepairReport>,
    },
}

/// The result of a reconcile: records to keep (updated) and to forget.
#[derive(Debug, Default)]
pub struct Outcome {
    /// One line per repair.
    pub actions: Vec<String>,
    /// Sandboxes that still exist (possibly changed).
    pub sandboxes: Vec<SandboxRec>,
    /// Sandboxes to forget.
    pub removed_sandboxes: Vec<String>,
    /// Networks to forget.
    pub removed_networks: Vec<String>,
}

/// The state and everything the owner needs.
pub struct Owner {
    store: Store,
    conf_dir: std::path::PathBuf,
    runner: Arc<Runner>,
    networks: BTreeMap<String, NetworkRec>,
    sandboxes: BTreeMap<String, SandboxRec>,
    busy: HashMap<String, &'static str>,
    net_busy: HashSet<String>,
    repairing: bool,
    /// Sandboxes still to CHECK after start (the start-up reconcile skips CHECK so the socket
    /// answers at once; these run in the background, a few at a time).
    check_queue: std::collections::VecDeque<String>,
    checks_running: usize,
    /// Requests for a sandbox whose background CHECK runs: handled when it finishes (internal
    /// work must not turn a client's request into a 409).
    deferred: HashMap<String, Vec<Request>>,
    shutdown: Option<Option<oneshot::Sender<()>>>,
    /// Where per-sandbox hosts/resolv.conf go (`--etc-netns`); off when `None`.
    etc_netns: Option<std::path::PathBuf>,
    /// The name service ([`crate::dns`]), refreshed before every reply that changed names.
    dns: Option<Arc<crate::dns::Service>>,
    /// The endpoints other nodes publish on overlay networks (from the overlay agent).
    remote_names: crate::dns::RemoteNames,
    /// What [`Owner::share_overlay_names`] last handed the agent, per overlay network.
    names_shared: std::sync::Mutex<BTreeMap<String, Vec<crate::dns::RemoteName>>>,
    /// The host's resolv.conf (for the sandboxes' resolv.conf); /etc/resolv.conf when `None`.
    host_resolv: Option<std::path::PathBuf>,
    jobs: usize,
    /// The overlay agent (`--cluster-store`); overlay networks are refused without it.
    overlay: Option<crate::overlay::OverlayHandle>,
    tx: mpsc::UnboundedSender<Msg>,
    rt: tokio::runtime::Handle,
    events: broadcast::Sender<Event>,
}

fn ep_ref_of(sb: &SandboxRec, net: &str) -> Option<NetEndpointRef> {
    sb.endpoints
        .iter()
        .find(|e| e.endpoint.network == net)
        .map(|e| NetEndpointRef {
            sandbox: sb.name.clone(),
            endpoint_id: e.endpoint.id.clone(),
        })
}

/// Build the attachment (conflist + runtime conf) of one endpoint. `pin` re-requests the
/// endpoint's current address and MAC (a repair's DEL+ADD must give back the same identity).
pub fn attach_for(
    runner: &Runner,
    networks: &BTreeMap<String, NetworkRec>,
    sb: &SandboxRec,
    ep: &EndpointRec,
    pin: bool,
) -> Result<Attach, ApiError> {
    let e = &ep.endpoint;
    let label = format!("{}/{}", sb.name, e.network);
    let (list, netns) = match sb.mode.as_str() {
        "host" => (
            cniops::mode_conflist("host", None)?,
            runner.host_netns.clone(),
        ),
        "none" => (cniops::mode_conflist("none", None)?, sb.netns.clone()),
        "container" => (
            cniops::mode_conflist("container", Some(&sb.netns))?,
            sb.netns.clone(),
        ),
        _ => {
            let net = networks
                .get(&e.network)
                .ok_or_else(|| not_found(format!("network {:?} not found", e.network)))?;
            let list = match &net.conflist {
                Some(v) => {
                    let bytes = serde_json::to_vec(v)
                        .map_err(|err| ApiError::Internal(format!("conflist: {err}")))?;
                    cni::NetConfList::parse(&bytes)
                        .map_err(|err| ApiError::Internal(format!("conflist: {}", err.msg)))?
                }
                None if net.network.driver == "overlay" => {
                    cniops::overlay_conflist(&net.network, !e.ports.is_empty(), ep.default_route)?
                }
                None => cniops::bridge_conflist(
                    &net.network,
                    &runner.ipam_dir,
                    !e.ports.is_empty(),
                    ep.default_route,
                )?,
            };
            (list, sb.netns.clone())
        }
    };
    let mut caps = Map::new();
    if !e.ports.is_empty() {
        caps.insert("portMappings".into(), cniops::port_caps(&e.ports));
    }
    let mut ips: Vec<Value> = Vec::new();
    if pin {
        ips.extend(
            e.addresses
                .iter()
                .map(|a| Value::String(a.addr().to_string())),
        );
        if let Some(mac) = &e.mac {
            caps.insert("mac".into(), Value::String(mac.clone()));
        }
    } else if let Some(ip) = ep.static_ip {
        ips.push(Value::String(ip.to_string()));
    }
    if !ips.is_empty() && sb.mode == "network" {
        caps.insert("ips".into(), Value::Array(ips));
    }
    Ok(Attach {
        list,
        rt: RuntimeConf {
            container_id: sb.id.clone(),
            netns,
            ifname: e.ifname.clone(),
            args: Vec::new(),
            capability_args: caps,
        },
        label,
        slice: None,
    })
}

/// Copy addresses, gateways and MAC of `ifname` from an ADD result into an endpoint.
fn fill_endpoint(e: &mut Endpoint, r: &CniResult, own_iface: bool) {
    let idx = r
        .interfaces
        .iter()
        .position(|i| i.name == e.ifname && !i.sandbox.is_empty());
    let mine = |i: Option<usize>| !own_iface || idx.is_none() || i == idx;
    e.addresses = r
        .ips
        .iter()
        .filter(|ip| mine(ip.interface))
        .map(|ip| ip.address)
        .collect();
    e.gateway = r
        .ips
        .iter()
        .filter(|ip| mine(ip.interface))
        .filter_map(|ip| ip.gateway)
        .collect();
    e.mac = idx
        .and_then(|i| r.interfaces.get(i))
        .map(|i| i.mac.clone())
        .filter(|m| !m.is_empty());
}

fn check_port(p: &PortMapping) -> Result<(), ApiError> {
    for (what, v) in [
        ("host_port", p.host_port),
        ("container_port", p.container_port),
    ] {
        if !(1..=65535).contains(&v) {
            return Err(bad(format!(
                "invalid port mapping: {what} {v} is out of range 1-65535"
            )));
        }
    }
    if !matches!(p.protocol.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad(format!(
            "invalid port mapping: protocol {:?} (use tcp, udp or sctp)",
            p.protocol
        )));
    }
    Ok(())
}

fn ports_clash(a: &PortMapping, b: &PortMapping) -> bool {
    a.host_port == b.host_port
        && a.protocol == b.protocol
        && (a.host_ip.is_none() || b.host_ip.is_none() || a.host_ip == b.host_ip)
}

fn host_addr(n: &IpNet, offset: u128) -> Option<IpAddr> {
    match n {
        IpNet::V4(v) => u32::try_from(u128::from(u32::from(v.network())) + offset)
            .ok()
            .map(|x| IpAddr::V4(x.into())),
        IpNet::V6(v) => Some(IpAddr::V6((u128::from(v.network()) + offset).into())),
    }
}

fn conflist_subnets(v: &Value) -> Vec<Subnet> {
    let mut out = Vec::new();
    for p in v["plugins"].as_array().into_iter().flatten() {
        let ipam = &p["ipam"];
        let mut push = |s: &Value| {
            if let Some(n) = s.as_str().and_then(|s| s.parse::<IpNet>().ok()) {
                out.push(Subnet {
                    subnet: n.trunc(),
                    gateway: None,
                    ip_range: None,
                });
            }
        };
        push(&ipam["subnet"]);
        for set in ipam["ranges"].as_array().into_iter().flatten() {
            for r in set.as_array().into_iter().flatten() {
                push(&r["subnet"]);
            }
        }
    }
    out
}

impl Owner {
    /// An owner over loaded (and reconciled) state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        conf_dir: std::path::PathBuf,
        runner: Arc<Runner>,
        networks: Vec<NetworkRec>,
        sandboxes: Vec<SandboxRec>,
        tx: mpsc::UnboundedSender<Msg>,
        rt: tokio::runtime::Handle,
        events: broadcast::Sender<Event>,
    ) -> Owner {
        Owner {
            store,
            conf_dir,
            runner,
            networks: networks
                .into_iter()
                .map(|n| (n.network.name.clone(), n))
                .collect(),
            sandboxes: sandboxes.into_iter().map(|s| (s.name.clone(), s)).collect(),
            busy: HashMap::new(),
            net_busy: HashSet::new(),
            repairing: false,
            check_queue: std::collections::VecDeque::new(),
            checks_running: 0,
            deferred: HashMap::new(),
            shutdown: None,
            etc_netns: None,
            dns: None,
            remote_names: BTreeMap::new(),
            names_shared: std::sync::Mutex::new(BTreeMap::new()),
            host_resolv: None,
            jobs: 0,
            overlay: None,
            tx,
            rt,
            events,
        }
    }

    /// Write per-sandbox hosts/resolv.conf/hostname under `dir` (`--etc-netns`).
    pub fn with_etc_netns(mut self, dir: Option<std::path::PathBuf>) -> Owner {
        self.etc_netns = dir;
        self
    }

    /// Join a cluster store: overlay networks become available.
    pub fn with_overlay(mut self, h: Option<crate::overlay::OverlayHandle>) -> Owner {
        if let Some(h) = &h {
            let _ = self.runner.overlay.set(h.clone());
        }
        self.overlay = h;
        self
    }

    /// Serve names ([`crate::dns`]); `host_resolv` is the host's resolv.conf.
    pub fn with_dns(
        mut self,
        dns: Option<Arc<crate::dns::Service>>,
        host_resolv: std::path::PathBuf,
    ) -> Owner {
        self.dns = dns;
        self.host_resolv = Some(host_resolv);
        self
    }

    /// Swap in a name table built from the current records (called before replying to any
    /// request that changed names or networks, so the change is visible when the reply is).
    pub fn publish_dns(&self) {
        if let Some(d) = &self.dns {
            d.publish(&self.networks, &self.sandboxes, &self.remote_names);
        }
        self.share_overlay_names();
    }

    /// Hand the overlay agent this node's endpoints of each overlay network whose list changed
    /// since the last call (the other nodes' name services answer them).
    fn share_overlay_names(&self) {
        let Some(h) = &self.overlay else {
            return;
        };
        let mut sent = match self.names_shared.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        for name in self
            .networks
            .values()
            .filter(|n| n.network.driver == "overlay")
            .map(|n| &n.network.name)
        {
            let now = crate::dns::local_names(&self.sandboxes, name);
            if sent.get(name) != Some(&now) {
                h.share_names(name, now.clone());
                sent.insert(name.clone(), now);
            }
        }
        let gone: Vec<String> = sent
            .keys()
            .filter(|n| !self.networks.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            h.share_names(&name, Vec::new());
            sent.remove(&name);
        }
    }

    /// The API view of a sandbox, with the paths of its /etc files when sandboxd writes them.
    fn render_sb(&self, sb: &SandboxRec) -> Sandbox {
        let mut api = sb.to_api();
        if let (Some(dir), true) = (&self.etc_netns, sb.owns_netns) {
            let d = dir.join(&sb.name);
            api.resolv_conf_path = Some(d.join("resolv.conf").display().to_string());
            api.hosts_path = Some(d.join("hosts").display().to_string());
        }
        api
    }

    fn write_etc(
        &self,
        dir: &std::path::Path,
        written: &std::path::Path,
        sb: &SandboxRec,
    ) -> Result<(), crate::Error> {
        let servers = match &self.dns {
            Some(d) => {
                let want = crate::dns::nameservers(&self.networks, sb);
                // A `cni` network's gateway is only learnt from its first result: bind it now
                // (publish) so the file can name it. Name only servers that really listen.
                if want.iter().any(|ip| !d.serving(*ip)) {
                    self.publish_dns();
                }
                want.into_iter().filter(|ip| d.serving(*ip)).collect()
            }
            None => Vec::new(),
        };
        let input = crate::etcfiles::EtcInput {
            nameservers: &servers,
            host_resolv: self.host_resolv.as_deref(),
        };
        crate::etcfiles::write_with(dir, written, sb, &input)
    }

    /// Bring a sandbox's /etc files in line with its record (written, refreshed or removed).
    fn sync_etc(&self, name: &str) {
        let Some(dir) = &self.etc_netns else {
            return;
        };
        let written = self.store.dir().join("etc-written");
        match self.sandboxes.get(name) {
            Some(sb) if sb.state == SbState::Ready => {
                if let Err(e) = self.write_etc(dir, &written, sb) {
                    tracing::warn!(sandbox = %name, error = %e, "writing hosts/resolv.conf");
                }
            }
            Some(_) => {}
            None => crate::etcfiles::remove(dir, &written, name),
        }
    }

    /// The owner loop: runs on its own thread until every sender is gone.
    pub fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        self.pump_checks();
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                Msg::Api(r) => self.handle(r),
                Msg::Done(d) => {
                    self.jobs = self.jobs.saturating_sub(1);
                    self.done(d);
                }
                Msg::Overlay(m) => self.overlay_update(m),
            }
            self.pump_checks();
            if self.jobs == 0 {
                if let Some(slot) = self.shutdown.as_mut() {
                    if let Some(tx) = slot.take() {
                        let _ = tx.send(());
                    }
                }
            }
        }
    }

    fn event(
        &self,
        kind: &str,
        action: &str,
        name: &str,
        network: Option<&str>,
        sandbox: Option<&str>,
    ) {
        let _ = self.events.send(Event {
            time: now_rfc3339(),
            kind: kind.into(),
            action: action.into(),
            name: name.into(),
            network: network.map(str::to_string),
            sandbox: sandbox.map(str::to_string),
        });
    }

    fn spawn(&mut self, job: impl FnOnce() -> Done + Send + 'static) {
        self.jobs += 1;
        let tx = self.tx.clone();
        self.rt.spawn_blocking(move || {
            let _ = tx.send(Msg::Done(job()));
        });
    }

    fn mutable(&self) -> Result<(), ApiError> {
        if self.shutdown.is_some() {
            return Err(ApiError::Unavailable("sandboxd is shutting down".into()));
        }
        if self.repairing {
            return Err(conflict(
                "a repair is in progress; retry when it has finished",
            ));
        }
        Ok(())
    }

    fn handle(&mut self, r: Request) {
        let target = match &r {
            Request::DeleteSandbox(k, _)
            | Request::Connect(k, _, _)
            | Request::Disconnect(k, _, _) => self.find_sb(k).ok(),
            _ => None,
        };
        if let Some(name) = target {
            if self.busy.get(&name) == Some(&"check") {
                self.deferred.entry(name).or_default().push(r);
                return;
            }
        }
        match r {
            Request::ListNetworks(reply) => {
                let v = self.networks.values().map(|n| self.render_net(n)).collect();
                let _ = reply.send(Ok(v));
            }
            Request::GetNetwork(key, reply) => {
                let r = self
                    .find_net(&key)
                    .map(|n| self.render_net(&self.networks[&n]));
                let _ = reply.send(r);
            }
            Request::CreateNetwork(req, reply) => {
                if req.driver.as_deref() == Some("overlay") {
                    self.start_create_overlay(&req, reply);
                } else {
                    let r = self.mutable().and_then(|()| self.create_network(&req));
                    self.publish_dns();
                    let _ = reply.send(r);
                }
            }
            Request::DeleteNetwork(key, reply) => {
                match self
                    .mutable()
                    .and_then(|()| self.check_delete_network(&key))
                {
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                    Ok(name) => self.start_delete_network(&name, true, reply),
                }
            }
            Request::ListSandboxes(reply) => {
                let v = self.sandboxes.values().map(|s| self.render_sb(s)).collect();
                let _ = reply.send(Ok(v));
            }
            Request::GetSandbox(key, reply) => {
                let r = self
                    .find_sb(&key)
                    .map(|n| self.render_sb(&self.sandboxes[&n]));
                let _ = reply.send(r);
            }
            Request::CreateSandbox(req, reply) => {
                if let Err((e, reply)) = self.create_sandbox(&req, reply) {
                    let _ = reply.send(Err(e));
                }
            }
            Request::DeleteSandbox(key, reply) => {
                if let Err((e, reply)) = self.delete_sandbox(&key, reply) {
                    let _ = reply.send(Err(e));
                }
            }
            Request::Connect(key, req, reply) => {
                if let Err((e, reply)) = self.connect(&key, &req, reply) {
                    let _ = reply.send(Err(e));
                }
            }
            Request::Disconnect(key, net, reply) => {
                if let Err((e, reply)) = self.disconnect(&key, &net, reply) {
                    let _ = reply.send(Err(e));
                }
            }
            Request::Repair(reply) => {
                if let Err(e) = self.mutable() {
                    let _ = reply.send(Err(e));
                } else {
                    self.start_repair(reply);
                }
            }
            Request::Shutdown(tx) => {
                self.shutdown = Some(Some(tx));
            }
        }
    }

    fn render_net(&self, n: &NetworkRec) -> Network {
        let mut net = n.network.clone();
        net.endpoints = self
            .sandboxes
            .values()
            .filter_map(|s| ep_ref_of(s, &net.name))
            .collect();
        net
    }

    fn find_net(&self, key: &str) -> Result<String, ApiError> {
        if self.networks.contains_key(key) {
            return Ok(key.to_string());
        }
        if is_id_prefix(key) {
            let m: Vec<&String> = self
                .networks
                .iter()
                .filter(|(_, n)| n.network.id.starts_with(key))
                .map(|(k, _)| k)
                .collect();
            if m.len() == 1 {
                return Ok(m[0].clone());
            }
        }
        Err(not_found(format!("network {key:?} not found")))
    }

    fn find_sb(&self, key: &str) -> Result<String, ApiError> {
        if self.sandboxes.contains_key(key) {
            return Ok(key.to_string());
        }
        if is_id_prefix(key) {
            let m: Vec<&String> = self
                .sandboxes
                .iter()
                .filter(|(_, s)| s.id.starts_with(key))
                .map(|(k, _)| k)
                .collect();
            if m.len() == 1 {
                return Ok(m[0].clone());
            }
        }
        Err(not_found(format!("sandbox {key:?} not found")))
    }

    fn persist_sb(&self, name: &str) -> Result<(), ApiError> {
        match self.sandboxes.get(name) {
            Some(s) => self.store.save_sandbox(s).map_err(ApiError::from),
            None => self.store.remove_sandbox(name).map_err(ApiError::from),
        }
    }

    // ---- networks -------------------------------------------------------------------------

    fn create_network(&mut self, req: &NetworkCreate) -> Result<Network, ApiError> {
        check_name("network", &req.name)?;
        if req.name == "container" {
            return Err(bad(
                "network name \"container\" is reserved (container:<sandbox> mode)",
            ));
        }
        if self.networks.contains_key(&req.name) {
            return Err(conflict(format!("network {:?} already exists", req.name)));
        }
        let driver = req.driver.clone().unwrap_or_else(|| "bridge".into());
        let id = new_id();
        let rec = match driver.as_str() {
            "bridge" => self.plan_bridge(req, &id)?,
            "cni" => self.plan_cni(req, &id)?,
            "overlay" => {
                // Validated like the others, but stored in the cluster store first, by a job
                // (Owner::start_create_overlay): never recorded from here.
                self.plan_overlay(req, &id)?;
                return Err(ApiError::Internal(
                    "overlay networks are created through the cluster store".into(),
                ));
            }
            other => {
                return Err(bad(format!(
                    "unknown driver {other:?} (use \"bridge\", \"cni\" or \"overlay\")"
                )))
            }
        };
        self.store.save_network(&rec)?;
        let net = rec.network.clone();
        self.networks.insert(net.name.clone(), rec);
        self.event("network", "create", &net.name, Some(&net.name), None);
        tracing::info!(network = %net.name, driver = %net.driver, "network created");
        Ok(net)
    }

    fn used_subnets(&self) -> Vec<IpNet> {
        self.networks
            .values()
            .flat_map(|n| n.network.subnets.iter().map(|s| s.subnet))
            .collect()
    }

    fn plan_bridge(&self, req: &NetworkCreate, id: &str) -> Result<NetworkRec, ApiError> {
        for (k, v) in &req.options {
            match k.as_str() {
                "bridge_name" => {
                    cni::validate_ifname(v)
                        .map_err(|e| bad(format!("invalid option bridge_name {v:?}: {}", e.msg)))?;
                    if let Some(o) = self
                        .networks
                        .values()
                        .find(|n| n.network.bridge.as_deref() == Some(v.as_str()))
                    {
                        return Err(conflict(format!(
                            "bridge {v:?} is already used by network {:?}",
                            o.network.name
                        )));
                    }
                }
                "mtu" => match v.parse::<u32>() {
                    Ok(m) if (68..=65535).contains(&m) => {}
                    _ => return Err(bad(format!("invalid option mtu {v:?}: use 68-65535"))),
                },
                "icc" => match v.as_str() {
                    "true" | "false" => {}
                    _ => return Err(bad(format!("invalid option icc {v:?}: use true or false"))),
                },
                other => {
                    return Err(bad(format!(
                    "unknown option {other:?} for the bridge driver (known: bridge_name, mtu, icc)"
                )))
                }
            }
        }
        let mut subnets = Vec::new();
        let used = self.used_subnets();
        for s in &req.subnets {
            let n = s.subnet.trunc();
            if n.addr() != s.subnet.addr() {
                return Err(bad(format!(
                    "invalid subnet {}: host bits set (did you mean {n}?)",
                    s.subnet
                )));
            }
            let v6 = matches!(n, IpNet::V6(_));
            if v6 && !req.ipv6 {
                return Err(bad(format!("subnet {n} is IPv6 but ipv6 is not enabled")));
            }
            if (!v6 && n.prefix_len() > 30) || (v6 && n.prefix_len() > 126) {
                return Err(bad(format!("subnet {n} is too small")));
            }
            if let Some(gw) = s.gateway {
                if !n.contains(&gw) || gw == n.network() || (!v6 && gw == n.broadcast()) {
                    return Err(bad(format!(
                        "gateway {gw} is not a host address of subnet {n}"
                    )));
                }
            }
            if let Some(r) = s.ip_range {
                if !n.contains(&r) {
                    return Err(bad(format!("ip_range {r} is not inside subnet {n}")));
                }
            }
            if let Some(o) = subnets
                .iter()
                .find(|o: &&Subnet| cniops::overlaps(&o.subnet, &n))
            {
                return Err(bad(format!("subnets {} and {n} overlap", o.subnet)));
            }
            if let Some(u) = used.iter().find(|u| cniops::overlaps(u, &n)) {
                let owner = self
                    .networks
                    .values()
                    .find(|x| x.network.subnets.iter().any(|s| s.subnet == *u))
                    .map(|x| x.network.name.clone())
                    .unwrap_or_default();
                return Err(conflict(format!(
                    "subnet {n} overlaps subnet {u} of network {owner:?}"
                )));
            }
            subnets.push(Subnet {
                subnet: n,
                gateway: s.gateway.or_else(|| host_addr(&n, 1)),
                ip_range: s.ip_range.map(|r| r.trunc()),
            });
        }
        if req.ipv6 && !subnets.iter().any(|s| matches!(s.subnet, IpNet::V6(_))) {
            return Err(bad(
                "ipv6 needs an IPv6 subnet (there is no default IPv6 pool)",
            ));
        }
        if !subnets.iter().any(|s| matches!(s.subnet, IpNet::V4(_))) {
            let mut taken = used;
            taken.extend(cniops::host_prefixes());
            let pick = cniops::default_pool()
                .into_iter()
                .find(|p| !taken.iter().any(|t| cniops::overlaps(t, p)))
                .ok_or_else(|| conflict("no free subnet left in the default pool; give one"))?;
            subnets.insert(
                0,
                Subnet {
                    subnet: pick,
                    gateway: host_addr(&pick, 1),
                    ip_range: None,
                },
            );
        }
        let bridge = req
            .options
            .get("bridge_name")
            .cloned()
            .unwrap_or_else(|| format!("sbr-{}", &id[..10]));
        Ok(NetworkRec {
            network: Network {
                id: id.to_string(),
                name: req.name.clone(),
                driver: "bridge".into(),
                builtin: false,
                subnets,
                internal: req.internal,
                ipv6: req.ipv6,
                bridge: Some(bridge),
                options: req.options.clone(),
                labels: req.labels.clone(),
                created: now_rfc3339(),
                endpoints: vec![],
            },
            conflist: None,
            deleting: false,
        })
    }

    fn plan_cni(&self, req: &NetworkCreate, id: &str) -> Result<NetworkRec, ApiError> {
        if !req.subnets.is_empty() || req.internal || req.ipv6 {
            return Err(bad(
                "subnets, internal and ipv6 come from the conflist for driver \"cni\"",
            ));
        }
        if let Some(k) = req.options.keys().find(|k| *k != "conflist") {
            return Err(bad(format!(
                "unknown option {k:?} for the cni driver (known: conflist)"
            )));
        }
        let conflist = req
            .options
            .get("conflist")
            .cloned()
            .unwrap_or_else(|| req.name.clone());
        check_name("conflist", &conflist)?;
        let list = cni::runtime::load_conflist(&self.conf_dir, &conflist)
            .map_err(|e| bad(format!("conflist {conflist:?}: {}", e.msg)))?;
        if self.networks.values().any(|n| {
            n.conflist.as_ref().and_then(|c| c["name"].as_str()) == Some(list.name.as_str())
        }) || (self.networks.contains_key(&list.name) && list.name != req.name)
        {
            return Err(conflict(format!(
                "conflist {:?} is already used by another network",
                list.name
            )));
        }
        let value: Value = serde_json::from_slice(&list.bytes)
            .map_err(|e| bad(format!("conflist {conflist:?}: {e}")))?;
        Ok(NetworkRec {
            network: Network {
                id: id.to_string(),
                name: req.name.clone(),
                driver: "cni".into(),
                builtin: false,
                subnets: conflist_subnets(&value),
                internal: false,
                ipv6: false,
                bridge: None,
                options: req.options.clone(),
                labels: req.labels.clone(),
                created: now_rfc3339(),
                endpoints: vec![],
            },
            conflist: Some(value),
            deleting: false,
        })
    }

    fn check_delete_network(&self, key: &str) -> Result<String, ApiError> {
        let name = self.find_net(key)?;
        let n = &self.networks[&name];
        if n.network.builtin {
            return Err(conflict(format!(
                "network {name:?} is built in and cannot be removed"
            )));
        }
        if n.deleting || self.net_busy.contains(&name) {
            return Err(conflict(format!("network {name:?} is being removed")));
        }
        let users: Vec<String> = self
            .sandboxes
            .values()
            .filter(|s| s.endpoints.iter().any(|e| e.endpoint.network == name))
            .map(|s| s.name.clone())
            .collect();
        if !users.is_empty() {
            return Err(conflict(format!(
                "network {name:?} has active endpoints (sandboxes: {})",
                users.join(", ")
            )));
        }
        Ok(name)
    }

    /// Remove a network in a job; `from_store`: an overlay network is first deleted from the
    /// cluster store (refused while a node holds a slice of it), in the job, so the owner
    /// never waits for etcd.
    fn start_delete_network(&mut self, name: &str, from_store: bool, reply: Reply<()>) {
        let name = name.to_string();
        let Some(rec) = self.networks.get_mut(&name) else {
            let _ = reply.send(Err(not_found(format!("network {name:?} not found"))));
            return;
        };
        rec.deleting = true;
        let rec = rec.clone();
        if let Err(e) = self.store.save_network(&rec) {
            if let Some(r) = self.networks.get_mut(&name) {
                r.deleting = false;
            }
            let _ = reply.send(Err(e.into()));
            return;
        }
        self.net_busy.insert(name.clone());
        let runner = self.runner.clone();
        let store = if from_store && rec.network.driver == "overlay" {
            match self.overlay_handle() {
                Ok(h) => Some(h.clone()),
                Err(e) => {
                    self.finish_untouched(&name, e, reply);
                    return;
                }
            }
        } else {
            None
        };
        self.spawn(move || {
            if let Some(h) = store {
                if let Err(e) = h.delete_network(&rec.network.name) {
                    return Done::NetworkDeleted {
                        name: rec.network.name.clone(),
                        result: Err(e),
                        untouched: true,
                        reply,
                    };
                }
            }
            let result = finish_network_delete(&runner, &rec);
            Done::NetworkDeleted {
                name: rec.network.name.clone(),
                result,
                untouched: false,
                reply,
            }
        });
    }

    /// A removal refused before anything was torn down: the network is back to normal.
    fn finish_untouched(&mut self, name: &str, e: ApiError, reply: Reply<()>) {
        self.net_busy.remove(name);
        if let Some(r) = self.networks.get_mut(name) {
            r.deleting = false;
            let rec = r.clone();
            if let Err(se) = self.store.save_network(&rec) {
                tracing::warn!(network = %name, error = %se, "saving a network whose removal was refused");
            }
        }
        let _ = reply.send(Err(e));
    }

    /// Validate an overlay network here, store it in the cluster store in a job (the owner never
    /// waits for etcd), record it when the job reports back.
    fn start_create_overlay(&mut self, req: &NetworkCreate, reply: Reply<Network>) {
        let planned = self.mutable().and_then(|()| {
            check_name("network", &req.name)?;
            if self.networks.contains_key(&req.name) || self.net_busy.contains(&req.name) {
                return Err(conflict(format!("network {:?} already exists", req.name)));
            }
            let rec = self.plan_overlay(req, &new_id())?;
            Ok((self.overlay_handle()?.clone(), rec))
        });
        let (h, rec) = match planned {
            Ok(x) => x,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        self.net_busy.insert(rec.network.name.clone());
        self.spawn(move || {
            let result = crate::overlay::NetDef::from_rec(&rec)
                .ok_or_else(|| ApiError::Internal("bad overlay record".into()))
                .and_then(|def| h.create_network(def));
            Done::OverlayCreated { rec, result, reply }
        });
    }

    // ---- endpoint input -------------------------------------------------------------------

    fn check_endpoint_input(
        &self,
        net: &NetworkRec,
        ip: Option<IpAddr>,
        ports: &[PortMapping],
        aliases: &[String],
    ) -> Result<(), ApiError> {
        let name = &net.network.name;
        for a in aliases {
            check_name("alias", a)?;
        }
        if net.deleting {
            return Err(conflict(format!("network {name:?} is being removed")));
        }
        for (i, p) in ports.iter().enumerate() {
            check_port(p)?;
            if ports[..i].iter().any(|q| ports_clash(p, q)) {
                return Err(bad(format!(
                    "host port {}/{} is given twice",
                    p.host_port, p.protocol
                )));
            }
        }
        if !ports.is_empty() {
            let ok = match &net.conflist {
                None => net.network.driver == "bridge" || net.network.driver == "overlay",
                Some(v) => v["plugins"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["capabilities"]["portMappings"].as_bool() == Some(true)),
            };
            if !ok {
                return Err(bad(format!(
                    "network {name:?} cannot publish ports (only bridge networks, or cni conflists with the portMappings capability)"
                )));
            }
            for s in self.sandboxes.values() {
                for e in &s.endpoints {
                    for q in &e.endpoint.ports {
                        if let Some(p) = ports.iter().find(|p| ports_clash(p, q)) {
                            return Err(conflict(format!(
                                "host port {}/{} is already published by sandbox {:?}",
                                p.host_port, p.protocol, s.name
                            )));
                        }
                    }
                }
            }
        }
        if net.network.driver == "overlay" {
            // The slice itself is leased by the attachment's job (Runner::add), off the owner.
            self.overlay_handle()?;
        }
        if let Some(ip) = ip {
            if net.network.driver != "bridge" || net.conflist.is_some() {
                return Err(bad(format!(
                    "a static ip needs a bridge network; {name:?} is {}",
                    net.network.driver
                )));
            }
            if net.network.builtin {
                return Err(bad(format!(
                    "a static ip is only supported on user-defined networks, not on {name:?}"
                )));
            }
            let s = net
                .network
                .subnets
                .iter()
                .find(|s| s.subnet.contains(&ip))
                .ok_or_else(|| bad(format!("ip {ip} is not in a subnet of network {name:?}")))?;
            let v4_bcast = matches!(s.subnet, IpNet::V4(_)) && ip == s.subnet.broadcast();
            if ip == s.subnet.network() || v4_bcast || Some(ip) == s.gateway {
                return Err(bad(format!(
                    "ip {ip} is the network, broadcast or gateway address of {}",
                    s.subnet
                )));
            }
            if let Some(r) = s.ip_range {
                if !r.contains(&ip) {
                    return Err(bad(format!(
                        "ip {ip} is outside ip_range {r} of network {name:?}"
                    )));
                }
            }
            for sb in self.sandboxes.values() {
                for e in sb.endpoints.iter().filter(|e| e.endpoint.network == *name) {
                    if e.static_ip == Some(ip)
                        || e.endpoint.addresses.iter().any(|a| a.addr() == ip)
                    {
                        return Err(conflict(format!(
                            "ip {ip} is already used by sandbox {:?} on network {name:?}",
                            sb.name
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    fn new_endpoint(
        sb: &mut SandboxRec,
        network: &str,
        ifname: String,
        ip: Option<IpAddr>,
        aliases: Vec<String>,
        ports: Vec<PortMapping>,
        default_route: bool,
    ) -> EndpointRec {
        let rec = EndpointRec {
            endpoint: Endpoint {
                id: new_id(),
                network: network.to_string(),
                sandbox: sb.name.clone(),
                ifname,
                addresses: vec![],
                gateway: vec![],
                mac: None,
                aliases,
                ports,
            },
            state: EpState::Adding,
            static_ip: ip,
            default_route,
        };
        sb.endpoints.push(rec.clone());
        rec
    }

    // ---- sandboxes ------------------------------------------------------------------------

    #[allow(clippy::result_large_err)]
    fn create_sandbox(
        &mut self,
        req: &SandboxCreate,
        reply: Reply<Sandbox>,
    ) -> Result<(), (ApiError, Reply<Sandbox>)> {
        let plan = match self.plan_sandbox(req) {
            Ok(p) => p,
            Err(e) => return Err((e, reply)),
        };
        let attaches: Result<Vec<Attach>, ApiError> = plan
            .endpoints
            .iter()
            .map(|ep| {
                attach_for(&self.runner, &self.networks, &plan, ep, false)
                    .and_then(|a| self.needs_slice(a, &ep.endpoint.network))
            })
            .collect();
        let attaches = match attaches {
            Ok(a) => a,
            Err(e) => return Err((e, reply)),
        };
        if let Err(e) = self.store.save_sandbox(&plan) {
            return Err((e.into(), reply));
        }
        let name = plan.name.clone();
        let owns = plan.owns_netns;
        self.sandboxes.insert(name.clone(), plan);
        self.busy.insert(name.clone(), "create");
        let runner = self.runner.clone();
        self.spawn(move || {
            let (result, clean) = create_job(&runner, &name, owns, &attaches);
            Done::Created {
                name,
                result,
                clean,
                reply,
            }
        });
        Ok(())
    }

    fn plan_sandbox(&self, req: &SandboxCreate) -> Result<SandboxRec, ApiError> {
        self.mutable()?;
        check_name("sandbox", &req.name)?;
        if self.sandboxes.contains_key(&req.name) {
            return Err(conflict(format!("sandbox {:?} already exists", req.name)));
        }
        if let Some(h) = &req.hostname {
            let ok = !h.is_empty()
                && h.len() <= 63
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                && !h.starts_with('-');
            if !ok {
                return Err(bad(format!("invalid hostname {h:?}")));
            }
        }
        let id = new_id();
        let network = req.network.clone().unwrap_or_else(|| "bridge".into());
        let pin = self.runner.pin_path(&req.name);
        let mut sb = SandboxRec {
            id: id.clone(),
            name: req.name.clone(),
            mode: "network".into(),
            container_of: None,
            netns: pin.clone(),
            owns_netns: true,
            hostname: req.hostname.clone().unwrap_or_else(|| id[..12].to_string()),
            created: now_rfc3339(),
            state: SbState::Creating,
            next_if: 0,
            endpoints: vec![],
        };
        let special = network == "host" || network == "none" || network.starts_with("container:");
        if special && (req.ip.is_some() || !req.ports.is_empty() || !req.aliases.is_empty()) {
            return Err(bad(format!(
                "ip, ports and aliases need a network; they cannot be used with network {network:?}"
            )));
        }
        let owns = network != "host" && !network.starts_with("container:");
        if owns && std::path::Path::new(&pin).exists() {
            return Err(conflict(format!(
                "namespace {pin} already exists (not created by sandboxd for this name)"
            )));
        }
        if network == "host" {
            sb.mode = "host".into();
            sb.netns = self.runner.host_netns.clone();
            sb.owns_netns = false;
            Self::new_endpoint(&mut sb, "host", "host".into(), None, vec![], vec![], false);
        } else if network == "none" {
            sb.mode = "none".into();
            Self::new_endpoint(&mut sb, "none", "lo".into(), None, vec![], vec![], false);
        } else if let Some(owner) = network.strip_prefix("container:") {
            let oname = self.find_sb(owner)?;
            let o = &self.sandboxes[&oname];
            // A background CHECK of the owner does not stop a joiner: its namespace stays.
            let busy = self.busy.get(&oname).is_some_and(|op| *op != "check");
            if o.state != SbState::Ready || busy {
                return Err(conflict(format!("sandbox {oname:?} is not ready")));
            }
            sb.mode = "container".into();
            sb.container_of = Some(oname.clone());
            sb.netns = o.netns.clone();
            sb.owns_netns = false;
            Self::new_endpoint(
                &mut sb,
                &format!("container:{oname}"),
                "eth0".into(),
                None,
                vec![],
                vec![],
                false,
            );
        } else {
            let nname = self.find_net(&network)?;
            let net = &self.networks[&nname];
            if net.network.driver == "host" || net.network.driver == "none" {
                return Err(bad(format!(
                    "use network {:?} by its name",
                    net.network.driver
                )));
            }
            self.check_endpoint_input(net, req.ip, &req.ports, &req.aliases)?;
            let dr = !net.network.internal;
            sb.next_if = 1;
            Self::new_endpoint(
                &mut sb,
                &nname,
                "eth0".into(),
                req.ip,
                req.aliases.clone(),
                req.ports.clone(),
                dr,
            );
        }
        Ok(sb)
    }

    #[allow(clippy::result_large_err)]
    fn delete_sandbox(&mut self, key: &str, reply: Reply<()>) -> Result<(), (ApiError, Reply<()>)> {
        let name = match self.mutable().and_then(|()| self.find_sb(key)) {
            Ok(n) => n,
            Err(e) => return Err((e, reply)),
        };
        if let Some(op) = self.busy.get(&name) {
            return Err((
                conflict(format!("sandbox {name:?}: {op} in progress")),
                reply,
            ));
        }
        let joiners: Vec<String> = self
            .sandboxes
            .values()
            .filter(|s| s.container_of.as_deref() == Some(name.as_str()))
            .map(|s| s.name.clone())
            .collect();
        if !joiners.is_empty() {
            return Err((
                conflict(format!(
                    "sandbox {name:?} shares its namespace with sandboxes {}; remove them first",
                    joiners.join(", ")
                )),
                reply,
            ));
        }
        let Some(sb) = self.sandboxes.get_mut(&name) else {
            return Err((not_found(format!("sandbox {key:?} not found")), reply));
        };
        sb.state = SbState::Deleting;
        let sb = sb.clone();
        if let Err(e) = self.store.save_sandbox(&sb) {
            return Err((e.into(), reply));
        }
        let attaches: Vec<Attach> = sb
            .endpoints
            .iter()
            .filter_map(|ep| attach_for(&self.runner, &self.networks, &sb, ep, false).ok())
            .collect();
        self.busy.insert(name.clone(), "remove");
        let runner = self.runner.clone();
        self.spawn(move || {
            let result = teardown(&runner, &sb, &attaches);
            Done::Deleted {
                name,
                result,
                reply,
            }
        });
        Ok(())
    }

    #[allow(clippy::result_large_err)]
    fn connect(
        &mut self,
        key: &str,
        req: &EndpointCreate,
        reply: Reply<Endpoint>,
    ) -> Result<(), (ApiError, Reply<Endpoint>)> {
        let r = (|| -> Result<(SandboxRec, EndpointRec), ApiError> {
            self.mutable()?;
            let name = self.find_sb(key)?;
            if let Some(op) = self.busy.get(&name) {
                return Err(conflict(format!("sandbox {name:?}: {op} in progress")));
            }
            let sb = &self.sandboxes[&name];
            if sb.state != SbState::Ready {
                return Err(conflict(format!("sandbox {name:?} is not ready")));
            }
            match sb.mode.as_str() {
                "container" => {
                    return Err(bad(format!(
                        "sandbox {name:?} shares the namespace of {:?} (container mode) and cannot connect to other networks",
                        sb.container_of.clone().unwrap_or_default()
                    )))
                }
                "host" => {
                    return Err(bad(format!(
                        "sandbox {name:?} uses the host network and cannot connect to other networks"
                    )))
                }
                "none" => {
                    return Err(bad(format!(
                        "sandbox {name:?} has network none, which cannot be combined with other networks"
                    )))
                }
                _ => {}
            }
            if req.network == "host"
                || req.network == "none"
                || req.network.starts_with("container:")
            {
                return Err(bad(format!(
                    "network {:?} cannot be combined with other networks",
                    req.network
                )));
            }
            let nname = self.find_net(&req.network)?;
            let net = &self.networks[&nname];
            if sb.endpoints.iter().any(|e| e.endpoint.network == nname) {
                return Err(conflict(format!(
                    "sandbox {name:?} is already connected to network {nname:?}"
                )));
            }
            self.check_endpoint_input(net, req.ip, &req.ports, &req.aliases)?;
            let has_gw = sb.endpoints.iter().any(|e| e.default_route);
            let mut sb = sb.clone();
            let ifname = format!("eth{}", sb.next_if);
            sb.next_if += 1;
            let ep = Self::new_endpoint(
                &mut sb,
                &nname,
                ifname,
                req.ip,
                req.aliases.clone(),
                req.ports.clone(),
                !has_gw && !net.network.internal,
            );
            Ok((sb, ep))
        })();
        let (sb, ep) = match r {
            Ok(x) => x,
            Err(e) => return Err((e, reply)),
        };
        let attach = match attach_for(&self.runner, &self.networks, &sb, &ep, false)
            .and_then(|a| self.needs_slice(a, &ep.endpoint.network))
        {
            Ok(a) => a,
            Err(e) => return Err((e, reply)),
        };
        if let Err(e) = self.store.save_sandbox(&sb) {
            return Err((e.into(), reply));
        }
        let name = sb.name.clone();
        self.sandboxes.insert(name.clone(), sb);
        self.busy.insert(name.clone(), "connect");
        let runner = self.runner.clone();
        let ep_id = ep.endpoint.id.clone();
        self.spawn(move || {
            let (result, clean) = match runner.add(&attach) {
                Ok(r) => (Ok(r), true),
                // Runner::add already ran the rollback DEL; check it left nothing cached.
                Err(e) => {
                    let clean = runner.cni.cached_entry(&attach.list, &attach.rt).is_none();
                    (Err(e), clean)
                }
            };
            Done::Connected {
                sandbox: name,
                ep_id,
                result,
                clean,
                reply,
            }
        });
        Ok(())
    }

    #[allow(clippy::result_large_err)]
    fn disconnect(
        &mut self,
        key: &str,
        network: &str,
        reply: Reply<()>,
    ) -> Result<(), (ApiError, Reply<()>)> {
        type Handover = Option<(String, Attach, Attach)>;
        let r = (|| -> Result<(SandboxRec, Attach, String, Handover), ApiError> {
            self.mutable()?;
            let name = self.find_sb(key)?;
            if let Some(op) = self.busy.get(&name) {
                return Err(conflict(format!("sandbox {name:?}: {op} in progress")));
            }
            let sb = &self.sandboxes[&name];
            if sb.state != SbState::Ready {
                return Err(conflict(format!("sandbox {name:?} is not ready")));
            }
            let nname = self
                .find_net(network)
                .unwrap_or_else(|_| network.to_string());
            let ep = sb
                .endpoints
                .iter()
                .find(|e| e.endpoint.network == nname)
                .ok_or_else(|| {
                    not_found(format!(
                        "sandbox {name:?} is not connected to network {network:?}"
                    ))
                })?;
            match sb.mode.as_str() {
                "host" => {
                    return Err(bad(format!(
                        "sandbox {name:?} cannot be disconnected from the host network"
                    )))
                }
                "none" => {
                    return Err(bad(format!(
                        "sandbox {name:?} cannot be disconnected from network none"
                    )))
                }
                "container" => {
                    return Err(bad(format!(
                        "sandbox {name:?} is in container mode; remove it instead"
                    )))
                }
                _ => {}
            }
            let mut sb = sb.clone();
            let attach = attach_for(&self.runner, &self.networks, &sb, ep, false)?;
            let id = ep.endpoint.id.clone();
            // Docker moves the default route to another endpoint when the gateway endpoint
            // leaves: the first ready endpoint of a non-internal sandboxd bridge network gets it,
            // through its plugins (DEL, then ADD with the same address and MAC and
            // isDefaultGateway), recorded as `rerouting` so a crash finishes the move.
            let mut handover = None;
            if ep.default_route {
                let next = sb.endpoints.iter().position(|e| {
                    e.endpoint.id != id
                        && e.state == EpState::Ready
                        && self.networks.get(&e.endpoint.network).is_some_and(|n| {
                            n.network.driver == "bridge"
                                && n.conflist.is_none()
                                && !n.network.internal
                        })
                });
                if let Some(i) = next {
                    let old =
                        attach_for(&self.runner, &self.networks, &sb, &sb.endpoints[i], false)?;
                    sb.endpoints[i].default_route = true;
                    sb.endpoints[i].state = EpState::Rerouting;
                    let new =
                        attach_for(&self.runner, &self.networks, &sb, &sb.endpoints[i], true)?;
                    handover = Some((sb.endpoints[i].endpoint.id.clone(), old, new));
                }
            }
            for e in sb.endpoints.iter_mut().filter(|e| e.endpoint.id == id) {
                e.state = EpState::Removing;
            }
            Ok((sb, attach, id, handover))
        })();
        let (sb, attach, ep_id, handover) = match r {
            Ok(x) => x,
            Err(e) => return Err((e, reply)),
        };
        if let Err(e) = self.store.save_sandbox(&sb) {
            return Err((e.into(), reply));
        }
        let name = sb.name.clone();
        self.sandboxes.insert(name.clone(), sb);
        self.busy.insert(name.clone(), "disconnect");
        let runner = self.runner.clone();
        self.spawn(move || {
            let result = runner.del(&attach);
            let rerouted = match (&result, handover) {
                (Ok(()), Some((id, old, new))) => {
                    let _ = runner.del(&old);
                    Some((id, runner.add(&new)))
                }
                (Err(_), Some((id, _, _))) => Some((id, Err(ApiError::Internal(String::new())))),
                _ => None,
            };
            Done::Disconnected {
                sandbox: name,
                ep_id,
                result,
                rerouted,
                reply,
            }
        });
        Ok(())
    }

    // ---- repair ---------------------------------------------------------------------------

    /// Start background CHECKs from the queue, at most 4 at a time; a sandbox busy with a
    /// client's operation waits at the back of the queue.
    fn pump_checks(&mut self) {
        let mut budget = self.check_queue.len();
        while self.checks_running < 4 && budget > 0 && self.shutdown.is_none() && !self.repairing {
            budget -= 1;
            let Some(name) = self.check_queue.pop_front() else {
                break;
            };
            let Some(sb) = self.sandboxes.get(&name) else {
                continue;
            };
            if sb.state != SbState::Ready {
                continue;
            }
            if self.busy.contains_key(&name) {
                self.check_queue.push_back(name);
                continue;
            }
            let sb = sb.clone();
            let nets = self.networks.clone();
            let runner = self.runner.clone();
            self.busy.insert(name, "check");
            self.checks_running += 1;
            self.spawn(move || Done::Checked {
                outcome: Box::new(reconcile_sandbox(&runner, &nets, sb, true)),
            });
        }
    }

    fn valid_attachments(&self) -> BTreeMap<String, Vec<Attachment>> {
        let mut m: BTreeMap<String, Vec<Attachment>> = BTreeMap::new();
        for s in self.sandboxes.values() {
            for e in &s.endpoints {
                let key = match s.mode.as_str() {
                    "container" => "container".to_string(),
                    _ => e.endpoint.network.clone(),
                };
                m.entry(key).or_default().push(Attachment {
                    container_id: s.id.clone(),
                    ifname: e.endpoint.ifname.clone(),
                });
            }
        }
        m
    }

    fn start_repair(&mut self, reply: Reply<RepairReport>) {
        self.repairing = true;
        let sbs: Vec<SandboxRec> = self
            .sandboxes
            .values()
            .filter(|s| !self.busy.contains_key(&s.name))
            .cloned()
            .collect();
        let nets = self.networks.clone();
        let skip_nets = self.net_busy.clone();
        let valid = self.valid_attachments();
        let runner = self.runner.clone();
        self.spawn(move || {
            let outcome = reconcile(&runner, &nets, sbs, &valid, &skip_nets, true);
            Done::Repaired {
                outcome: Box::new(outcome),
                reply,
            }
        });
    }

    // ---- job completions ------------------------------------------------------------------

    fn done(&mut self, d: Done) {
        match d {
            Done::Created {
                name,
                result,
                clean,
                reply,
            } => {
                self.busy.remove(&name);
                let r = match result {
                    Ok(results) => {
                        if let Some(sb) = self.sandboxes.get_mut(&name) {
                            let own = sb.mode == "network";
                            for (ep, res) in sb.endpoints.iter_mut().zip(results.iter()) {
                                fill_endpoint(&mut ep.endpoint, res, own);
                                ep.state = EpState::Ready;
                            }
                            sb.state = SbState::Ready;
                        }
                        match self.persist_sb(&name) {
                            Ok(()) => {
                                let api = self.sandboxes.get(&name).map(|s| self.render_sb(s));
                                self.event("sandbox", "create", &name, None, Some(&name));
                                for e in api.iter().flat_map(|s| s.endpoints.iter()) {
                                    self.event(
                                        "endpoint",
                                        "connect",
                                        &e.id,
                                        Some(&e.network),
                                        Some(&name),
                                    );
                                }
                                self.sync_etc(&name);
                                tracing::info!(sandbox = %name, "sandbox created");
                                api.ok_or_else(|| not_found("sandbox vanished"))
                            }
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => {
                        if clean {
                            self.sandboxes.remove(&name);
                            let _ = self.persist_sb(&name);
                        }
                        tracing::warn!(sandbox = %name, error = %e, clean, "sandbox creation failed");
                        Err(e)
                    }
                };
                self.publish_dns();
                let _ = reply.send(r);
            }
            Done::Deleted {
                name,
                result,
                reply,
            } => {
                self.busy.remove(&name);
                let r = match result {
                    Ok(()) => {
                        let sb = self.sandboxes.remove(&name);
                        let r = self.persist_sb(&name);
                        for e in sb.iter().flat_map(|s| s.endpoints.iter()) {
                            self.event(
                                "endpoint",
                                "disconnect",
                                &e.endpoint.id,
                                Some(&e.endpoint.network),
                                Some(&name),
                            );
                        }
                        self.event("sandbox", "remove", &name, None, Some(&name));
                        self.sync_etc(&name);
                        tracing::info!(sandbox = %name, "sandbox removed");
                        r
                    }
                    Err(e) => {
                        tracing::warn!(sandbox = %name, error = %e, "sandbox removal failed; retry DELETE or repair");
                        Err(e)
                    }
                };
                self.publish_dns();
                let _ = reply.send(r);
            }
            Done::Connected {
                sandbox,
                ep_id,
                result,
                clean,
                reply,
            } => {
                self.busy.remove(&sandbox);
                let r = match result {
                    Ok(res) => {
                        let mut out = None;
                        if let Some(sb) = self.sandboxes.get_mut(&sandbox) {
                            for ep in sb.endpoints.iter_mut().filter(|e| e.endpoint.id == ep_id) {
                                fill_endpoint(&mut ep.endpoint, &res, true);
                                ep.state = EpState::Ready;
                                out = Some(ep.endpoint.clone());
                            }
                        }
                        match (self.persist_sb(&sandbox), out) {
                            (Ok(()), Some(ep)) => {
                                self.sync_etc(&sandbox);
                                self.event(
                                    "endpoint",
                                    "connect",
                                    &ep.id,
                                    Some(&ep.network),
                                    Some(&sandbox),
                                );
                                Ok(ep)
                            }
                            (Err(e), _) => Err(e),
                            (_, None) => Err(not_found("endpoint vanished")),
                        }
                    }
                    Err(e) => {
                        if clean {
                            if let Some(sb) = self.sandboxes.get_mut(&sandbox) {
                                sb.endpoints.retain(|e| e.endpoint.id != ep_id);
                            }
                            let _ = self.persist_sb(&sandbox);
                        }
                        Err(e)
                    }
                };
                self.publish_dns();
                let _ = reply.send(r);
            }
            Done::Disconnected {
                sandbox,
                ep_id,
                result,
                rerouted,
                reply,
            } => {
                self.busy.remove(&sandbox);
                if let (Some((id, res)), Some(sb)) = (rerouted, self.sandboxes.get_mut(&sandbox)) {
                    let disconnected = result.is_ok();
                    for e in sb.endpoints.iter_mut().filter(|e| e.endpoint.id == id) {
                        match &res {
                            Ok(r) => {
                                fill_endpoint(&mut e.endpoint, r, true);
                                e.state = EpState::Ready;
                            }
                            // The gateway endpoint stays: undo the intent.
                            Err(_) if !disconnected => {
                                e.state = EpState::Ready;
                                e.default_route = false;
                            }
                            // Left `rerouting`: the next repair or start finishes the move.
                            Err(err) => {
                                tracing::warn!(sandbox = %sandbox, error = %err, "moving the default route failed");
                            }
                        }
                    }
                }
                let r = match result {
                    Ok(()) => {
                        let mut net = None;
                        if let Some(sb) = self.sandboxes.get_mut(&sandbox) {
                            net = sb
                                .endpoints
                                .iter()
                                .find(|e| e.endpoint.id == ep_id)
                                .map(|e| e.endpoint.network.clone());
                            sb.endpoints.retain(|e| e.endpoint.id != ep_id);
                        }
                        let r = self.persist_sb(&sandbox);
                        self.sync_etc(&sandbox);
                        self.event(
                            "endpoint",
                            "disconnect",
                            &ep_id,
                            net.as_deref(),
                            Some(&sandbox),
                        );
                        r
                    }
                    Err(e) => {
                        // The endpoint stays `removing` (a retry or the next start finishes it).
                        let _ = self.persist_sb(&sandbox);
                        Err(e)
                    }
                };
                self.publish_dns();
                let _ = reply.send(r);
            }
            Done::NetworkDeleted {
                name,
                result,
                untouched: true,
                reply,
            } => {
                self.net_busy.remove(&name);
                let e = result.err().unwrap_or_else(|| {
                    ApiError::Internal("network removal neither done nor refused".into())
                });
                self.finish_untouched(&name, e, reply);
            }
            Done::OverlayCreated { rec, result, reply } => {
                let name = rec.network.name.clone();
                self.net_busy.remove(&name);
                let r = result.and_then(|()| match self.networks.get(&name) {
                    // The watch already brought it (same id): it is ours.
                    Some(known) if known.network.id == rec.network.id => Ok(known.network.clone()),
                    Some(_) => Err(conflict(format!("network {name:?} already exists"))),
                    None => {
                        self.store.save_network(&rec)?;
                        let net = rec.network.clone();
                        self.networks.insert(name.clone(), rec);
                        self.event("network", "create", &name, Some(&name), None);
                        tracing::info!(network = %name, driver = "overlay", "network created");
                        Ok(net)
                    }
                });
                self.publish_dns();
                let _ = reply.send(r);
            }
            Done::NetworkDeleted {
                name,
                result,
                untouched: false,
                reply,
            } => {
                self.net_busy.remove(&name);
                let r = match result {
                    Ok(()) => {
                        self.networks.remove(&name);
                        let r = self.store.remove_network(&name).map_err(ApiError::from);
                        self.event("network", "remove", &name, Some(&name), None);
                        r
                    }
                    Err(e) => Err(e),
                };
                self.publish_dns();
                let _ = reply.send(r);
            }
            Done::Checked { outcome } => {
                self.checks_running = self.checks_running.saturating_sub(1);
                let name = outcome.name.clone();
                self.busy.remove(&name);
                for a in &outcome.actions {
                    tracing::info!(action = %a, "start-up check");
                }
                match outcome.kept {
                    Some(sb) => {
                        if self.sandboxes.get(&name) != Some(&sb) {
                            self.sandboxes.insert(name.clone(), sb);
                            if let Err(e) = self.persist_sb(&name) {
                                tracing::warn!(sandbox = %name, error = %e, "persisting a repaired sandbox");
                            }
                        }
                    }
                    None => {
                        self.sandboxes.remove(&name);
                        let _ = self.persist_sb(&name);
                        self.event("sandbox", "remove", &name, None, Some(&name));
                    }
                }
                self.sync_etc(&name);
                self.publish_dns();
                for r in self.deferred.remove(&name).unwrap_or_default() {
                    self.handle(r);
                }
                if self.check_queue.is_empty() && self.checks_running == 0 {
                    tracing::info!("start-up checks finished");
                }
            }
            Done::Repaired { outcome, reply } => {
                self.repairing = false;
                let r = self.apply_outcome(*outcome);
                let _ = reply.send(r);
            }
        }
    }

    fn apply_outcome(&mut self, o: Outcome) -> Result<RepairReport, ApiError> {
        let mut errors = Vec::new();
        for name in &o.removed_sandboxes {
            self.sandboxes.remove(name);
            if let Err(e) = self.store.remove_sandbox(name) {
                errors.push(e.to_string());
            }
            self.event("sandbox", "remove", name, None, Some(name));
        }
        for sb in o.sandboxes {
            if self.sandboxes.get(&sb.name) != Some(&sb) && !self.busy.contains_key(&sb.name) {
                if let Err(e) = self.store.save_sandbox(&sb) {
                    errors.push(e.to_string());
                }
                self.sandboxes.insert(sb.name.clone(), sb);
            }
        }
        for name in &o.removed_networks {
            self.networks.remove(name);
            if let Err(e) = self.store.remove_network(name) {
                errors.push(e.to_string());
            }
            self.event("network", "remove", name, Some(name), None);
        }
        // Listeners before the resolv.conf files that name them.
        self.publish_dns();
        if let Some(dir) = &self.etc_netns {
            let written = self.store.dir().join("etc-written");
            for sb in self.sandboxes.values() {
                if sb.state == SbState::Ready {
                    let _ = self.write_etc(dir, &written, sb);
                }
            }
            crate::etcfiles::prune(dir, &written, &|n| self.sandboxes.contains_key(n));
        }
        if !errors.is_empty() {
            return Err(ApiError::Internal(errors.join("; ")));
        }
        Ok(RepairReport { actions: o.actions })
    }
}

/// Create the namespace (when owned) and ADD every endpoint; on failure undo everything done.
/// Returns the results and, on failure, whether the rollback was complete.
fn create_job(
    runner: &Runner,
    name: &str,
    owns: bool,
    attaches: &[Attach],
) -> (Result<Vec<CniResult>, ApiError>, bool) {
    if owns {
        if let Err(e) = runner.create_netns(name) {
            return (Err(e), runner.delete_netns(name).is_ok());
        }
    }
    let mut results = Vec::new();
    for (i, a) in attaches.iter().enumerate() {
        match runner.add(a) {
            Ok(r) => results.push(r),
            Err(e) => {
                let mut clean = true;
                for done in attaches[..i].iter().rev() {
                    clean &= runner.del(done).is_ok();
                }
                clean &= runner.cni.cached_entry(&a.list, &a.rt).is_none();
                if owns {
                    clean &= runner.delete_netns(name).is_ok();
                }
                return (Err(e), clean);
            }
        }
    }
    (Ok(results), true)
}

/// DEL every endpoint (reverse join order, all attempted) and delete an owned namespace.
fn teardown(runner: &Runner, sb: &SandboxRec, attaches: &[Attach]) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    for a in attaches.iter().rev() {
        if let Err(e) = runner.del(a) {
            errors.push(e.to_string());
        }
    }
    if sb.owns_netns {
        if let Err(e) = runner.delete_netns(&sb.name) {
            errors.push(e.to_string());
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Internal(errors.join("; ")))
    }
}

/// Remove a network's leftovers: GC its cache entries (none valid), its bridge and its leases.
fn finish_network_delete(runner: &Runner, rec: &NetworkRec) -> Result<(), ApiError> {
    let list = match &rec.conflist {
        Some(v) => serde_json::to_vec(v)
            .ok()
            .and_then(|b| cni::NetConfList::parse(&b).ok()),
        None if rec.network.driver == "overlay" => {
            cniops::overlay_conflist(&rec.network, true, true).ok()
        }
        None => cniops::bridge_conflist(&rec.network, &runner.ipam_dir, true, true).ok(),
    };
    if let Some(list) = list {
        // Overlay networks are shared with other runtimes of this node (the `overlay` CNI
        // plugin uses the same host-local directory): only the cache-level GC is ours to run.
        let r = if rec.conflist.is_some() || rec.network.driver == "overlay" {
            runner.gc_cache_only(&list, &[])
        } else {
            runner.gc(&list, &[])
        };
        if let Err(e) = r {
            tracing::warn!(network = %rec.network.name, error = %e, "GC while removing network");
        }
    }
    if rec.conflist.is_none() {
        if let Some(br) = &rec.network.bridge {
            if let Err(e) = Runner::delete_isolation(br) {
                tracing::warn!(network = %rec.network.name, error = %e, "while removing network");
            }
            Runner::delete_bridge(br)?;
        }
        let leases = runner.ipam_dir.join(&rec.network.name);
        match std::fs::remove_dir_all(&leases) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ApiError::Internal(format!(
                    "removing {}: {e}",
                    leases.display()
                )))
            }
        }
    }
    Ok(())
}

/// What the reconcile did to one sandbox.
#[derive(Debug)]
pub struct SbOutcome {
    name: String,
    id: String,
    actions: Vec<String>,
    /// The sandbox as it is now; `None` when it was removed.
    kept: Option<SandboxRec>,
    /// Interfaces whose endpoints were removed (no longer valid attachments).
    dropped_ifnames: Vec<String>,
}

/// A reconcile action when DEL of `a` left firewall entries (or they could not be listed).
fn leftovers(a: &Attach) -> Option<String> {
    match Runner::firewall_leftovers(a) {
        Ok(left) if left.is_empty() => None,
        Ok(left) => Some(format!(
            "{}: DEL left firewall entries: {}",
            a.label,
            left.join(", ")
        )),
        Err(e) => Some(format!("{}: {e}", a.label)),
    }
}

/// Reconcile one sandbox: finish or undo its interrupted operations, release it when its
/// namespace vanished, CHECK each endpoint and repair (DEL + ADD with the same address and MAC)
/// what fails.
fn reconcile_sandbox(
    runner: &Runner,
    nets: &BTreeMap<String, NetworkRec>,
    mut sb: SandboxRec,
    check: bool,
) -> SbOutcome {
    let mut o = SbOutcome {
        name: sb.name.clone(),
        id: sb.id.clone(),
        actions: Vec::new(),
        kept: None,
        dropped_ifnames: Vec::new(),
    };
    let attach =
        |sb: &SandboxRec, ep: &EndpointRec, pin: bool| attach_for(runner, nets, sb, ep, pin);
    let alive = sb.mode == "host" || Runner::netns_alive(&sb.netns);
    if sb.state != SbState::Ready || !alive {
        let why = match (sb.state, alive) {
            (SbState::Creating, _) => "rolled back a half-done creation",
            (SbState::Deleting, _) => "finished a half-done removal",
            _ => "its namespace vanished; released its endpoints",
        };
        let attaches: Vec<Attach> = sb
            .endpoints
            .iter()
            .filter_map(|e| attach(&sb, e, false).ok())
            .collect();
        match teardown(runner, &sb, &attaches) {
            Ok(()) => {
                o.actions.push(format!("sandbox {}: {why}", sb.name));
                // Reconcile checks its work: DEL must have left nothing in the firewall.
                o.actions.extend(attaches.iter().filter_map(leftovers));
            }
            Err(e) => {
                o.actions
                    .push(format!("sandbox {}: {why} failed: {e}", sb.name));
                o.kept = Some(sb);
            }
        }
        return o;
    }
    let mut keep = Vec::new();
    for mut ep in std::mem::take(&mut sb.endpoints) {
        let label = format!("endpoint {}/{}", sb.name, ep.endpoint.network);
        let a = match attach(&sb, &ep, false) {
            Ok(a) => a,
            Err(e) => {
                o.actions.push(format!("{label}: {e}"));
                keep.push(ep);
                continue;
            }
        };
        match ep.state {
            EpState::Adding | EpState::Removing => {
                let why = if ep.state == EpState::Adding {
                    "rolled back a half-done connect"
                } else {
                    "finished a half-done disconnect"
                };
                match runner.del(&a) {
                    Ok(()) => {
                        o.actions.push(format!("{label}: {why}"));
                        o.dropped_ifnames.push(ep.endpoint.ifname.clone());
                    }
                    Err(e) => {
                        o.actions.push(format!("{label}: {why} failed: {e}"));
                        keep.push(ep);
                    }
                }
            }
            EpState::Rerouting => {
                // Finish the default-route move: DEL, then ADD with the same identity.
                let pinned = attach(&sb, &ep, true).unwrap_or(a.clone());
                let _ = runner.del(&a);
                match runner.add(&pinned) {
                    Ok(r) => {
                        fill_endpoint(&mut ep.endpoint, &r, true);
                        ep.state = EpState::Ready;
                        o.actions
                            .push(format!("{label}: finished moving the default route here"));
                    }
                    Err(e) => o
                        .actions
                        .push(format!("{label}: moving the default route failed: {e}")),
                }
                keep.push(ep);
            }
            EpState::Ready => {
                if let Err(msg) = if check { runner.check(&a) } else { Ok(()) } {
                    // Repair: DEL, then ADD again with the same address and MAC.
                    let pinned = attach(&sb, &ep, true).unwrap_or(a.clone());
                    let _ = runner.del(&a);
                    o.actions.extend(leftovers(&a));
                    match runner.add(&pinned) {
                        Ok(r) => {
                            fill_endpoint(&mut ep.endpoint, &r, sb.mode == "network");
                            o.actions
                                .push(format!("{label}: re-applied (CHECK said: {msg})"));
                        }
                        Err(e) => o
                            .actions
                            .push(format!("{label}: CHECK said {msg}; re-ADD failed: {e}")),
                    }
                }
                keep.push(ep);
            }
        }
    }
    sb.endpoints = keep;
    o.kept = Some(sb);
    o
}

/// The reconcile, at start and on `POST /v1/_repair` (blocking). `sbs` are the sandboxes no
/// job is working on; `valid` lists every endpoint of every sandbox (busy ones included) so GC
/// never collects an attachment in flight. `check` also CHECKs (and repairs) every ready
/// endpoint; at start that part runs in the background instead.
pub fn reconcile(
    runner: &Runner,
    nets: &BTreeMap<String, NetworkRec>,
    sbs: Vec<SandboxRec>,
    valid: &BTreeMap<String, Vec<Attachment>>,
    skip_nets: &HashSet<String>,
    check: bool,
) -> Outcome {
    let mut o = Outcome::default();
    let mut valid = valid.clone();
    // Sandboxes are independent: reconcile them on a few threads (plugin execs dominate; a
    // restart with many sandboxes must not CHECK them one by one).
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<SandboxRec>>> = sbs
        .into_iter()
        .map(|s| std::sync::Mutex::new(Some(s)))
        .collect();
    let workers = slots.len().clamp(1, 8);
    let results: Vec<SbOutcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(slot) = slots.get(i) else { break };
                        let taken = slot.lock().ok().and_then(|mut g| g.take());
                        if let Some(sb) = taken {
                            out.push(reconcile_sandbox(runner, nets, sb, check));
                        }
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut results = results;
    results.sort_by(|a, b| a.name.cmp(&b.name));
    for r in results {
        o.actions.extend(r.actions);
        for v in valid.values_mut() {
            v.retain(|a| {
                !(a.container_id == r.id
                    && (r.kept.is_none() || r.dropped_ifnames.contains(&a.ifname)))
            });
        }
        match r.kept {
            Some(sb) => o.sandboxes.push(sb),
            None => o.removed_sandboxes.push(r.name),
        }
    }
    // GC every network with its valid attachments; finish removals that were interrupted.
    let mut known: HashSet<String> = ["host", "none", "container"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (name, rec) in nets {
        if skip_nets.contains(name) {
            continue;
        }
        if rec.deleting {
            match finish_network_delete(runner, rec) {
                Ok(()) => {
                    o.actions
                        .push(format!("network {name}: finished a half-done removal"));
                    o.removed_networks.push(name.clone());
                }
                Err(e) => o
                    .actions
                    .push(format!("network {name}: removal failed: {e}")),
            }
            continue;
        }
        let list = match (&rec.conflist, rec.network.driver.as_str()) {
            (Some(v), _) => serde_json::to_vec(v)
                .ok()
                .and_then(|b| cni::NetConfList::parse(&b).ok()),
            (None, "bridge") => {
                cniops::bridge_conflist(&rec.network, &runner.ipam_dir, true, true).ok()
            }
            (None, "overlay") => cniops::overlay_conflist(&rec.network, true, true).ok(),
            (None, kind) => cniops::mode_conflist(kind, None).ok(),
        };
        if let Some(list) = list {
            known.insert(list.name.clone());
            let v = valid.get(name).cloned().unwrap_or_default();
            let r = if rec.conflist.is_some() || rec.network.driver == "overlay" {
                runner.gc_cache_only(&list, &v)
            } else {
                runner.gc(&list, &v)
            };
            if let Err(e) = r {
                o.actions.push(format!("network {name}: GC failed: {e}"));
            }
        }
    }
    if let Ok(list) = cniops::mode_conflist("container", Some("/")) {
        let v = valid.get("container").cloned().unwrap_or_default();
        if let Err(e) = runner.gc(&list, &v) {
            o.actions.push(format!("container mode: GC failed: {e}"));
        }
    }
    // Cached attachments of networks sandboxd no longer knows (removed while we were down).
    for (_, e) in cni::cache::list_entries(&runner.cni.cache_dir) {
        if known.contains(&e.network_name) {
            continue;
        }
        if let Some(list) = e
            .config_bytes()
            .and_then(|b| cni::NetConfList::parse(&b).ok())
        {
            let rt = e.runtime_conf();
            match runner.cni.del_network_list(&list, &rt) {
                Ok(()) => o.actions.push(format!(
                    "released orphaned attachment {}/{} of unknown network {}",
                    e.container_id, e.if_name, e.network_name
                )),
                Err(err) => o.actions.push(format!(
                    "orphaned attachment of {}: {}",
                    e.network_name, err.msg
                )),
            }
        }
    }
    o
}

impl Owner {
    /// Start-up work before the socket accepts: refresh host-namespace paths (the daemon's pid
    /// may have changed), create the built-in networks on first start, then reconcile.
    /// Returns the reconcile's actions. Blocking.
    pub fn startup(&mut self) -> Result<Vec<String>, ApiError> {
        let host = self.runner.host_netns.clone();
        let host_owned: HashSet<String> = self
            .sandboxes
            .values()
            .filter(|s| s.mode == "host")
            .map(|s| s.name.clone())
            .collect();
        let mut changed = Vec::new();
        for s in self.sandboxes.values_mut() {
            let hosty = s.mode == "host"
                || s.container_of
                    .as_ref()
                    .is_some_and(|o| host_owned.contains(o));
            if hosty && s.netns != host {
                s.netns = host.clone();
                changed.push(s.name.clone());
            }
        }
        for name in changed {
            self.persist_sb(&name)?;
        }
        self.ensure_builtins()?;
        // Names and listeners from the persisted records at once: queries are answered while
        // the reconcile below runs (it publishes again with what it changed).
        self.publish_dns();
        // A kill -9 while the runtime side wrote a cache entry leaves libcni's temporary file
        // (`.<name>.tmp<pid>`). This daemon is the only writer of its cache and nothing runs
        // yet, so any such file is garbage.
        let results = self.runner.cni.cache_dir.join("results");
        for e in std::fs::read_dir(&results).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with('.') && n.contains(".tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let sbs: Vec<SandboxRec> = self.sandboxes.values().cloned().collect();
        let valid = self.valid_attachments();
        let outcome = reconcile(
            &self.runner,
            &self.networks,
            sbs,
            &valid,
            &HashSet::new(),
            false,
        );
        let report = self.apply_outcome(outcome)?;
        // CHECK (and repair) every endpoint in the background once the socket answers: with
        // many sandboxes the plugin execs take seconds, and sandboxes work meanwhile anyway.
        self.check_queue = self
            .sandboxes
            .values()
            .filter(|s| s.state == SbState::Ready)
            .map(|s| s.name.clone())
            .collect();
        Ok(report.actions)
    }

    fn ensure_builtins(&mut self) -> Result<(), ApiError> {
        for (name, driver) in [("host", "host"), ("none", "none")] {
            if self.networks.contains_key(name) {
                continue;
            }
            let rec = NetworkRec {
                network: Network {
                    id: new_id(),
                    name: name.into(),
                    driver: driver.into(),
                    builtin: true,
                    subnets: vec![],
                    internal: false,
                    ipv6: false,
                    bridge: None,
                    options: BTreeMap::new(),
                    labels: BTreeMap::new(),
                    created: now_rfc3339(),
                    endpoints: vec![],
                },
                conflist: None,
                deleting: false,
            };
            self.store.save_network(&rec)?;
            self.networks.insert(name.into(), rec);
        }
        if !self.networks.contains_key("bridge") {
            let req = NetworkCreate {
                name: "bridge".into(),
                options: BTreeMap::from([("bridge_name".to_string(), "sbr0".to_string())]),
                ..Default::default()
            };
            let mut rec = self.plan_bridge(&req, &new_id())?;
            rec.network.builtin = true;
            self.store.save_network(&rec)?;
            tracing::info!(subnet = %rec.network.subnets[0].subnet, "created the default bridge network");
            self.networks.insert("bridge".into(), rec);
        }
        Ok(())
    }
}

// ---- overlay networks (layer 6, crate::overlay) ---------------------------------------------

impl Owner {
    fn overlay_handle(&self) -> Result<&crate::overlay::OverlayHandle, ApiError> {
        self.overlay.as_ref().ok_or_else(|| {
            bad("overlay networks need a cluster store: start sandboxd with --cluster-store etcd://HOST:PORT --advertise-addr IP")
        })
    }

    /// Validate an overlay network and store it in etcd (the other nodes learn it from their
    /// watch); the local record is kept like any other so `network ls` works without etcd.
    fn plan_overlay(&self, req: &NetworkCreate, id: &str) -> Result<NetworkRec, ApiError> {
        use crate::overlay::{NetDef, DEFAULT_PORT, DEFAULT_SUBNET_LEN};
        let h = self.overlay_handle()?;
        let mut subnet_len = DEFAULT_SUBNET_LEN;
        let mut vni = None;
        let mut port = DEFAULT_PORT;
        for (k, v) in &req.options {
            let num = || {
                v.parse::<u32>()
                    .map_err(|_| bad(format!("invalid option {k} {v:?}: not a number")))
            };
            match k.as_str() {
                "subnet_len" => {
                    subnet_len = u8::try_from(num()?)
                        .map_err(|_| bad(format!("invalid option subnet_len {v:?}")))?
                }
                "vni" => vni = Some(num()?),
                "port" => {
                    port = u16::try_from(num()?)
                        .map_err(|_| bad(format!("invalid option port {v:?}")))?
                }
                other => {
                    return Err(bad(format!(
                        "unknown option {other:?} for the overlay driver (known: subnet_len, vni, port)"
                    )))
                }
            }
        }
        if req.internal || req.ipv6 {
            return Err(bad("overlay networks are IPv4 and not internal"));
        }
        let subnet = match req.subnets.as_slice() {
            [s] if s.gateway.is_none() && s.ip_range.is_none() => match s.subnet {
                IpNet::V4(v) => v,
                IpNet::V6(_) => return Err(bad("overlay networks need an IPv4 subnet")),
            },
            [] => return Err(bad("an overlay network needs --subnet")),
            _ => {
                return Err(bad(
                    "an overlay network takes exactly one subnet, without gateway or ip_range",
                ))
            }
        };
        if let Some(u) = self
            .used_subnets()
            .iter()
            .find(|u| cniops::overlaps(u, &IpNet::V4(subnet)))
        {
            return Err(conflict(format!(
                "subnet {subnet} overlaps subnet {u} of a local network"
            )));
        }
        let used = h.used_vnis();
        let vni = match vni {
            Some(v) => {
                if let Some((n, _)) = used.iter().find(|(_, x)| *x == v) {
                    return Err(conflict(format!(
                        "vni {v} is already used by network {n:?}"
                    )));
                }
                v
            }
            None => (1..)
                .find(|v| !used.iter().any(|(_, x)| x == v))
                .unwrap_or(1),
        };
        let def = NetDef {
            name: req.name.clone(),
            id: id.to_string(),
            subnet,
            subnet_len,
            vni,
            port,
            created: now_rfc3339(),
            labels: req.labels.clone(),
        };
        def.validate()?;
        Ok(def.to_rec())
    }

    /// Mark a new attachment to an overlay network: its job leases the node's slice first.
    fn needs_slice(&self, mut a: Attach, network: &str) -> Result<Attach, ApiError> {
        if let Some(net) = self.networks.get(network) {
            if net.network.driver == "overlay" && net.conflist.is_none() {
                a.slice = Some(crate::overlay::NetDef::from_rec(net).ok_or_else(|| {
                    ApiError::Internal(format!("network {network:?}: bad overlay record"))
                })?);
            }
        }
        Ok(a)
    }

    /// Apply the agent's view of the overlay networks.
    fn overlay_update(&mut self, m: crate::overlay::OwnerMsg) {
        let (full, nets, gone) = match m {
            crate::overlay::OwnerMsg::Networks { full, nets, gone } => (full, nets, gone),
            crate::overlay::OwnerMsg::Names(remote) => {
                self.remote_names = remote;
                self.publish_dns();
                return;
            }
        };
        let mut gone = gone;
        if full {
            let names: HashSet<String> = nets.iter().map(|n| n.network.name.clone()).collect();
            gone.extend(
                self.networks
                    .values()
                    .filter(|n| n.network.driver == "overlay" && !names.contains(&n.network.name))
                    .map(|n| n.network.name.clone()),
            );
        }
        for rec in nets {
            let name = rec.network.name.clone();
            match self.networks.get(&name) {
                Some(old) if old.network.driver != "overlay" => {
                    tracing::warn!(network = %name, "an overlay network has the name of a local network; ignored here");
                }
                Some(old) if old.network.id == rec.network.id && !old.deleting => {}
                Some(_) if self.net_busy.contains(&name) => {}
                _ => {
                    if let Err(e) = self.store.save_network(&rec) {
                        tracing::warn!(network = %name, error = %e, "saving an overlay network");
                        continue;
                    }
                    let created = !self.networks.contains_key(&name);
                    self.networks.insert(name.clone(), rec);
                    if created {
                        self.event("network", "create", &name, Some(&name), None);
                        tracing::info!(network = %name, "overlay network learned from the cluster store");
                    }
                }
            }
        }
        for name in gone {
            let Some(rec) = self.networks.get(&name) else {
                continue;
            };
            if rec.network.driver != "overlay" || rec.deleting || self.net_busy.contains(&name) {
                continue;
            }
            let users = self
                .sandboxes
                .values()
                .any(|s| s.endpoints.iter().any(|e| e.endpoint.network == name));
            if users {
                tracing::warn!(network = %name, "overlay network removed from the cluster store while sandboxes here still use it; kept locally");
                continue;
            }
            let (tx, _rx) = oneshot::channel();
            self.start_delete_network(&name, false, tx);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::path::PathBuf;

    /// An owner over a scratch store, with the built-in networks; nothing is executed.
    fn owner(tag: &str) -> (Owner, tokio::runtime::Runtime, PathBuf) {
        let dir = std::env::temp_dir().join(format!("sandboxd-owner-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(16);
        let runner = Arc::new(Runner {
            cni: cni::CniConfig::new(vec![], dir.join("cache")),
            netns_dir: dir.join("netns"),
            ipam_dir: dir.join("ipam"),
            host_netns: "/proc/self/ns/net".into(),
            overlay: std::sync::OnceLock::new(),
        });
        let mut o = Owner::new(
            store,
            dir.join("conf"),
            runner,
            vec![],
            vec![],
            tx,
            rt.handle().clone(),
            events,
        );
        o.ensure_builtins().unwrap();
        (o, rt, dir)
    }

    fn net(name: &str, subnet: &str) -> NetworkCreate {
        NetworkCreate {
            name: name.into(),
            subnets: vec![Subnet {
                subnet: subnet.parse().unwrap(),
                gateway: None,
                ip_range: None,
            }],
            ..Default::default()
        }
    }

    fn port(h: u32, proto: &str, ip: Option<&str>) -> PortMapping {
        PortMapping {
            host_port: h,
            container_port: 80,
            protocol: proto.into(),
            host_ip: ip.map(|i| i.parse().unwrap()),
        }
    }

    #[test]
    fn network_validation() {
        let (mut o, _rt, dir) = owner("net");
        let names: Vec<&String> = o.networks.keys().collect();
        assert_eq!(names, ["bridge", "host", "none"]);
        let n1 = o.create_network(&net("n1", "10.1.0.0/24")).unwrap();
        assert_eq!(n1.subnets[0].gateway, Some("10.1.0.1".parse().unwrap()));
        assert!(n1.bridge.unwrap().starts_with("sbr-"));
        let is = |r: Result<Network, ApiError>, status: u16| {
            let e = r.unwrap_err();
            assert_eq!(e.status(), status, "{e}");
            e.to_string()
        };
        assert!(is(o.create_network(&net("n2", "10.1.0.0/16")), 409).contains("n1"));
        // Overlay networks need a cluster store (sandboxd --cluster-store).
        let mut ov = net("ov", "10.60.0.0/16");
        ov.driver = Some("overlay".into());
        assert!(is(o.create_network(&ov), 400).contains("--cluster-store"));
        is(o.create_network(&net("n1", "10.7.0.0/24")), 409);
        is(o.create_network(&net("n2", "10.2.0.5/24")), 400);
        is(o.create_network(&net("n2", "fd00::/64")), 400);
        is(o.create_network(&net("container", "10.3.0.0/24")), 400);
        is(o.create_network(&net("a/b", "10.3.0.0/24")), 400);
        let mut gw = net("n2", "10.3.0.0/24");
        gw.subnets[0].gateway = Some("10.4.0.1".parse().unwrap());
        is(o.create_network(&gw), 400);
        let mut r = net("n2", "10.3.0.0/24");
        r.subnets[0].ip_range = Some("10.3.1.0/25".parse().unwrap());
        is(o.create_network(&r), 400);
        let mut b = net("n2", "10.3.0.0/24");
        b.options.insert("bridge_name".into(), "sbr0".into());
        is(o.create_network(&b), 409);
        b.options.clear();
        b.options.insert("vlan".into(), "1".into());
        is(o.create_network(&b), 400);
        let mut d = NetworkCreate {
            name: "x".into(),
            driver: Some("macvlan".into()),
            ..Default::default()
        };
        is(o.create_network(&d), 400);
        // No subnet: the next free pool entry (bridge took the first).
        d.driver = None;
        let auto = o.create_network(&d).unwrap();
        let bridge_subnet = o.networks["bridge"].network.subnets[0].subnet;
        assert!(!cniops::overlaps(&auto.subnets[0].subnet, &bridge_subnet));
        // Persisted.
        assert!(dir.join("networks/x.json").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn endpoint_and_sandbox_validation() {
        let (mut o, _rt, dir) = owner("ep");
        o.create_network(&net("n1", "10.1.0.0/24")).unwrap();
        let mut sb = SandboxRec {
            id: "ab".repeat(32),
            name: "web".into(),
            mode: "network".into(),
            container_of: None,
            netns: "/run/netns/web".into(),
            owns_netns: true,
            hostname: "web".into(),
            created: String::new(),
            state: SbState::Ready,
            next_if: 1,
            endpoints: vec![],
        };
        let mut ep = Owner::new_endpoint(
            &mut sb,
            "n1",
            "eth0".into(),
            None,
            vec![],
            vec![port(8080, "tcp", None)],
            true,
        );
        ep.endpoint.addresses = vec!["10.1.0.5/24".parse().unwrap()];
        ep.state = EpState::Ready;
        sb.endpoints = vec![ep];
        o.sandboxes.insert("web".into(), sb);
        let n1 = o.networks["n1"].clone();
        let check = |ip: Option<&str>, ports: Vec<PortMapping>| {
            o.check_endpoint_input(&n1, ip.map(|i| i.parse().unwrap()), &ports, &[])
                .map_err(|e| e.status())
        };
        assert_eq!(check(Some("10.1.0.5"), vec![]), Err(409));
        assert_eq!(check(Some("10.9.0.5"), vec![]), Err(400));
        assert_eq!(check(Some("10.1.0.1"), vec![]), Err(400));
        assert_eq!(check(Some("10.1.0.255"), vec![]), Err(400));
        assert_eq!(check(Some("10.1.0.6"), vec![]), Ok(()));
        assert_eq!(check(None, vec![port(8080, "tcp", None)]), Err(409));
        assert_eq!(
            check(None, vec![port(8080, "tcp", Some("127.0.0.1"))]),
            Err(409)
        );
        assert_eq!(check(None, vec![port(8080, "udp", None)]), Ok(()));
        assert_eq!(check(None, vec![port(0, "tcp", None)]), Err(400));
        assert_eq!(check(None, vec![port(70000, "tcp", None)]), Err(400));
        assert_eq!(check(None, vec![port(81, "icmp", None)]), Err(400));
        assert_eq!(
            check(None, vec![port(81, "tcp", None), port(81, "tcp", None)]),
            Err(400)
        );
        // The default network takes no static address (Docker).
        let bridge = o.networks["bridge"].clone();
        let e = o
            .check_endpoint_input(&bridge, Some("172.17.0.9".parse().unwrap()), &[], &[])
            .unwrap_err();
        assert_eq!(e.status(), 400);

        // Network in use, built-ins.
        let e = o.check_delete_network("n1").unwrap_err();
        assert_eq!(e.status(), 409);
        assert!(e.to_string().contains("web"), "{e}");
        assert_eq!(o.check_delete_network("bridge").unwrap_err().status(), 409);
        assert_eq!(o.check_delete_network("nosuch").unwrap_err().status(), 404);

        // Sandbox plans.
        let plan = |req: SandboxCreate| o.plan_sandbox(&req).map_err(|e| e.status());
        let named = |n: &str, network: &str| SandboxCreate {
            name: n.into(),
            network: Some(network.into()),
            ..Default::default()
        };
        assert_eq!(plan(named("web", "n1")).unwrap_err(), 409);
        assert_eq!(plan(named("x", "container:nosuch")).unwrap_err(), 404);
        assert_eq!(plan(named("x", "nosuch")).unwrap_err(), 404);
        let mut h = named("x", "host");
        h.ports = vec![port(81, "tcp", None)];
        assert_eq!(plan(h).unwrap_err(), 400);
        let c = plan(named("x", "container:web")).unwrap();
        assert_eq!(
            (c.mode.as_str(), c.netns.as_str()),
            ("container", "/run/netns/web")
        );
        assert_eq!(c.endpoints[0].endpoint.network, "container:web");
        let host = plan(named("x", "host")).unwrap();
        assert!(!host.owns_netns);
        let n = plan(named("x", "n1")).unwrap();
        assert_eq!(n.endpoints[0].endpoint.ifname, "eth0");
        assert!(n.endpoints[0].default_route);
        assert_eq!(n.state, SbState::Creating);
        // By id prefix.
        assert_eq!(o.find_sb(&"ab".repeat(6)).unwrap(), "web");
        assert_eq!(o.find_sb("abab").unwrap_err().status(), 404);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn results_fill_the_endpoints_own_interface() {
        let r = CniResult::from_value(
            &serde_json::json!({"cniVersion": "1.0.0",
                "interfaces": [{"name": "sbr0", "mac": "aa:aa:aa:aa:aa:aa"},
                               {"name": "eth1", "mac": "02:00:00:00:00:01", "sandbox": "/run/netns/x"}],
                "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1}]}),
            "1.0.0",
        )
        .unwrap();
        let mut e = Endpoint {
            id: String::new(),
            network: "n1".into(),
            sandbox: "x".into(),
            ifname: "eth1".into(),
            addresses: vec![],
            gateway: vec![],
            mac: None,
            aliases: vec![],
            ports: vec![],
        };
        fill_endpoint(&mut e, &r, true);
        assert_eq!(e.addresses, vec!["10.1.0.5/24".parse::<IpNet>().unwrap()]);
        assert_eq!(e.gateway, vec!["10.1.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(e.mac.as_deref(), Some("02:00:00:00:00:01"));
    }
}
