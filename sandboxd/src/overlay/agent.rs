//! The overlay agent: one tokio task that owns the etcd session of this node.
//!
//! Session life: connect → reuse the node's etcd lease if it is still alive (else grant a new
//! one) → re-assert the node's slices under that lease → re-list the prefix (first session, or
//! after a compaction) or resume the watch from the last revision seen → watch, keep the lease
//! alive every TTL/3, serve the owner's commands, release idle slices. Any error ends the session;
//! the node then answers commands with 503 and reconnects every second. The kernel state is left
//! alone while etcd is away, so traffic between existing sandboxes keeps flowing.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::dataplane::{self, Peer};
use super::{read_json, slice_key, Cmd, Config, LeaseFile, NetDef, OwnerMsg, Shared, SliceVal};
use crate::error::{conflict, ApiError};

/// How long a slice is kept after an attachment asked for it even without any address leased in
/// it: the ADD that asked is still on its way (plugins can take seconds on a loaded machine), and
/// releasing under it would leave a sandbox in a slice the node no longer holds.
const GRACE: Duration = Duration::from_secs(10);

/// What survives a restart of the daemon (`<state_dir>/node.json`).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct NodeState {
    /// The node's etcd lease id (reused while it lives).
    lease_id: i64,
    /// Network → this node's slice.
    slices: BTreeMap<String, Ipv4Net>,
    /// Definitions of the networks we hold slices of (to re-claim them before etcd is listed).
    #[serde(default)]
    defs: BTreeMap<String, NetDef>,
}

/// Why a session ended.
type SessionEnd = String;

struct Session {
    client: Client,
    watch: WatchStream,
    keeper: LeaseKeeper,
    ka: LeaseKeepAliveStream,
}

/// The agent's state.
pub struct Agent {
    cfg: Config,
    shared: Arc<Mutex<Shared>>,
    to_owner: Box<dyn Fn(OwnerMsg) + Send + Sync>,
    state: NodeState,
    nets: BTreeMap<String, NetDef>,
    /// Every slice in etcd, per network.
    slices: BTreeMap<String, BTreeMap<Ipv4Net, SliceVal>>,
    last_rev: Option<i64>,
    ensured: HashMap<String, Instant>,
    /// Slice keys etcd holds for this node that the node does not hold (a claim whose reply
    /// was lost: it committed after the request timed out); released at the next chance.
    orphans: Vec<String>,
    /// This node's endpoints per overlay network, as last given by the owner (re-published by
    /// every new session: the keys go with an expired lease).
    local_names: BTreeMap<String, Vec<crate::dns::RemoteName>>,
    /// The other nodes' endpoints, from the cluster store.
    remote_names: crate::dns::RemoteNames,
    /// A command whose etcd request failed on a broken connection, with when it arrived: it
    /// is tried once more on the next session (the owner is still waiting for it).
    retry: Option<(Instant, Cmd)>,
}

fn etcd_err(what: &str, e: impl std::fmt::Display) -> String {
    format!("etcd {what}: {e}")
}

impl Agent {
    /// A new agent (reads the node's saved state).
    pub fn new(
        cfg: Config,
        shared: Arc<Mutex<Shared>>,
        to_owner: Box<dyn Fn(OwnerMsg) + Send + Sync>,
    ) -> Result<Agent, String> {
        let state: NodeState = read_json(&cfg.state_dir.join("node.json")).unwrap_or_default();
        Ok(Agent {
            cfg,
            shared,
            to_owner,
            state,
            nets: BTreeMap::new(),
            slices: BTreeMap::new(),
            last_rev: None,
            ensured: HashMap::new(),
            retry: None,
            local_names: BTreeMap::new(),
            remote_names: BTreeMap::new(),
            orphans: Vec::new(),
        })
    }

    fn save_state(&self) {
        let p = self.cfg.state_dir.join("node.json");
        match serde_json::to_vec_pretty(&self.state) {
            Ok(b) => {
                if let Err(e) = crate::store::write_atomic(&p, &b) {
                    tracing::warn!(error = %e, "saving overlay state");
                }
            }
            Err(e) => tracing::warn!(error = %e, "encoding overlay state"),
        }
    }

    fn key_net(&self, name: &str) -> String {
        format!("{}/networks/{name}", self.cfg.prefix)
    }

    fn key_vni(&self, vni: u32) -> String {
        format!("{}/vnis/{vni}", self.cfg.prefix)
    }

    fn key_names(&self, net: &str) -> String {
        format!("{}/names/{net}/{}", self.cfg.prefix, self.cfg.node)
    }

    /// Write (or delete, when empty) this node's names of `net`, bound to the node's lease.
    async fn put_names(&self, c: &mut Client, net: &str) -> Result<(), String> {
        let key = self.key_names(net);
        match self.local_names.get(net) {
            Some(list) if !list.is_empty() => {
                let body = serde_json::to_vec(list).map_err(|e| e.to_string())?;
                c.put(
                    key,
                    body,
                    Some(PutOptions::new().with_lease(self.state.lease_id)),
                )
                .await
                .map_err(|e| etcd_err("names put", e))?;
            }
            _ => {
                c.delete(key, None)
                    .await
                    .map_err(|e| etcd_err("names delete", e))?;
            }
        }
        Ok(())
    }

    fn set_local_names(&mut self, net: String, names: Vec<crate::dns::RemoteName>) {
        if names.is_empty() {
            self.local_names.remove(&net);
        } else {
            self.local_names.insert(net, names);
        }
    }

    fn key_slice(&self, net: &str, s: &Ipv4Net) -> String {
        format!("{}/subnets/{net}/{}", self.cfg.prefix, slice_key(s))
    }

    fn set_healthy(&self, h: bool) {
        if let Ok(mut s) = self.shared.lock() {
            s.healthy = h;
            s.nets = self.nets.clone();
        }
    }

    fn my_val(&self, def: &NetDef) -> SliceVal {
        SliceVal {
            node: self.cfg.node.clone(),
            public_ip: self.cfg.advertise,
            vtep_mac: kernel::mac::format_mac(&dataplane::vtep_mac(&self.cfg.node, &def.name)),
            vni: def.vni,
        }
    }

    /// Run until the owner goes away.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        // Commands that arrived between two connection attempts: served by the next session if
        // it comes up soon enough (the owner waits at most 5 s), refused otherwise. A node whose
        // first attempt failed (etcd still electing, say) thus does not refuse at once.
        let mut pending: Vec<(Instant, Cmd)> = Vec::new();
        loop {
            match self.connect().await {
                Ok(mut s) => {
                    self.set_healthy(true);
                    tracing::info!(node = %self.cfg.node, lease = self.state.lease_id, "cluster store session up");
                    let mut ended = None;
                    for (t, c) in pending.drain(..) {
                        if ended.is_some() || t.elapsed() > Duration::from_secs(4) {
                            self.refuse(c);
                        } else if let Err(e) = self.command(&mut s.client, c.clone()).await {
                            self.refuse(c);
                            ended = Some(e);
                        }
                    }
                    let why = match ended {
                        Some(e) => Some(e),
                        None => self.serve(&mut s, &mut rx).await,
                    };
                    match why {
                        Some(why) => tracing::warn!(reason = %why, "cluster store session ended"),
                        None => return,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cluster store unreachable");
                    for (_, c) in pending.drain(..) {
                        self.refuse(c);
                    }
                }
            }
            self.set_healthy(false);
            // 1-1.5 s, spread per node, so a cluster whose etcd comes back does not reconnect
            // (and re-list) in one burst; at once when a request has a caller waiting for its
            // retry (one connection broke, etcd itself may be fine).
            let jitter = u64::from(dataplane::vtep_mac(&self.cfg.node, "")[3]) * 2;
            let pause = if self.retry.is_some() {
                Duration::ZERO
            } else {
                Duration::from_millis(1000 + jitter)
            };
            pending.extend(self.retry.take());
            let until = tokio::time::Instant::now() + pause;
            loop {
                tokio::select! {
                    c = rx.recv() => match c {
                        None => return,
                        Some(c) => pending.push((Instant::now(), c)),
                    },
                    _ = tokio::time::sleep_until(until) => break,
                }
            }
        }
    }

    fn unavailable(&self) -> ApiError {
        ApiError::Unavailable(format!(
            "cluster store {} is unreachable: overlay networks cannot be changed or take new attachments until it is back (existing sandboxes keep working)",
            self.cfg.endpoints.join(",")
        ))
    }

    fn refuse(&mut self, c: Cmd) {
        let e = self.unavailable();
        match c {
            Cmd::Create(_, r) | Cmd::Delete(_, r) => {
                let _ = r.try_send(Err(e));
            }
            Cmd::EnsureSlice(_, r) => {
                let _ = r.try_send(Err(e));
            }
            // Kept: the next session publishes it.
            Cmd::Names(net, names) => self.set_local_names(net, names),
        }
    }

    async fn connect(&mut self) -> Result<Session, String> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            // etcd answers in milliseconds; 2 s leaves room for one retry on a new connection
            // inside the owner's 5 s wait.
            .with_timeout(Duration::from_secs(2))
            // HTTP/2 pings find a dead etcd or a partition within 15 s. The interval must stay
            // above etcd's --grpc-keepalive-min-time (5 s by default): etcd answers pings that
            // come more often with GOAWAY (too_many_pings) and drops the connection, and a
            // request sent on it then hangs until its timeout.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let mut c = Client::connect(&self.cfg.endpoints, Some(opts))
            .await
            .map_err(|e| etcd_err("connect", e))?;
        let alive = if self.state.lease_id != 0 {
            c.lease_time_to_live(self.state.lease_id, None)
                .await
                .map(|r| r.ttl() > 0)
                .map_err(|e| etcd_err("lease lookup", e))?
        } else {
            false
        };
        if !alive {
            let id = c
                .lease_grant(self.cfg.lease_ttl, None)
                .await
                .map_err(|e| etcd_err("lease grant", e))?
                .id();
            tracing::info!(lease = id, ttl = self.cfg.lease_ttl, "granted a node lease");
            self.state.lease_id = id;
            self.save_state();
        }
        // Re-assert our slices under the (possibly new) lease: a restart or a long partition
        // keeps the same slice as long as nobody else took it.
        let own: Vec<(String, Ipv4Net)> = self
            .state
            .slices
            .iter()
            .map(|(n, s)| (n.clone(), *s))
            .collect();
        for (net, s) in own {
            let def = self
                .nets
                .get(&net)
                .cloned()
                .or_else(|| self.state.defs.get(&net).cloned());
            let Some(def) = def else { continue };
            if !self.claim(&mut c, &def, &s, true).await? {
                tracing::error!(network = %net, slice = %s, "our slice was taken by another node while we were away; sandboxes on it lose cross-node traffic");
                self.state.slices.remove(&net);
                self.save_state();
            }
        }
        // Names under the (possibly new) lease; what was written under an expired one is gone.
        let nets: Vec<String> = self.local_names.keys().cloned().collect();
        for net in nets {
            self.put_names(&mut c, &net).await?;
        }
        let (keeper, ka) = c
            .lease_keep_alive(self.state.lease_id)
            .await
            .map_err(|e| etcd_err("keepalive", e))?;
        let start = match self.last_rev {
            Some(r) => r + 1,
            None => self.relist(&mut c).await? + 1,
        };
        let watch = c
            .watch(
                format!("{}/", self.cfg.prefix),
                Some(WatchOptions::new().with_prefix().with_start_revision(start)),
            )
            .await
            .map_err(|e| etcd_err("watch", e))?;
        Ok(Session {
            client: c,
            watch,
            keeper,
            ka,
        })
    }

    /// Create (or re-bind to our lease) the key of slice `s`; false when another node holds it.
    async fn claim(
        &mut self,
        c: &mut Client,
        def: &NetDef,
        s: &Ipv4Net,
        ours_ok: bool,
    ) -> Result<bool, String> {
        let key = self.key_slice(&def.name, s);
        let mut val = self.my_val(def);
        if val.vni == 0 {
            if let Some(v) = self.slices.get(&def.name).and_then(|m| m.get(s)) {
                val.vni = v.vni;
            }
        }
        let body = serde_json::to_vec(&val).map_err(|e| e.to_string())?;
        let put = TxnOp::put(
            key.clone(),
            body.clone(),
            Some(PutOptions::new().with_lease(self.state.lease_id)),
        );
        let r = c
            .txn(
                Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([put])
                    .or_else([TxnOp::get(key.clone(), None)]),
            )
            .await
            .map_err(|e| etcd_err("slice txn", e))?;
        if r.succeeded() {
            return Ok(true);
        }
        if !ours_ok {
            return Ok(false);
        }
        let holder = r.op_responses().into_iter().find_map(|o| match o {
            etcd_client::TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .and_then(|kv| serde_json::from_slice::<SliceVal>(kv.value()).ok()),
            _ => None,
        });
        if holder.as_ref().is_some_and(|h| h.node == self.cfg.node) {
            c.put(
                key,
                body,
                Some(PutOptions::new().with_lease(self.state.lease_id)),
            )
            .await
            .map_err(|e| etcd_err("slice put", e))?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Delete the slice keys found in [`Agent::orphans`].
    async fn release_orphans(&mut self, c: &mut Client) -> Result<(), String> {
        while let Some(key) = self.orphans.pop() {
            if let Err(e) = c.delete(key.clone(), None).await {
                self.orphans.push(key);
                return Err(etcd_err("releasing a slice", e));
            }
        }
        Ok(())
    }

    /// Full re-list of the prefix; returns its revision.
    async fn relist(&mut self, c: &mut Client) -> Result<i64, String> {
        let r = c
            .get(
                format!("{}/", self.cfg.prefix),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .map_err(|e| etcd_err("list", e))?;
        let rev = r.header().map(|h| h.revision()).unwrap_or(0);
        // Resume from here if the next session starts before any event arrives.
        self.last_rev = Some(rev);
        self.nets.clear();
        self.slices.clear();
        self.remote_names.clear();
        for kv in r.kvs() {
            if let Ok(k) = kv.key_str() {
                let k = k.to_string();
                self.put_key(&k, kv.value());
            }
        }
        (self.to_owner)(OwnerMsg::Names(self.remote_names.clone()));
        let own: Vec<String> = self
            .slices
            .iter()
            .flat_map(|(net, m)| m.iter().map(move |(s, v)| (net, s, v)))
            .filter(|(net, s, v)| {
                v.node == self.cfg.node && self.state.slices.get(*net) != Some(*s)
            })
            .map(|(net, s, _)| self.key_slice(net, s))
            .collect();
        self.orphans.extend(own);
        self.release_orphans(c).await?;
        let recs = self.nets.values().map(NetDef::to_rec).collect();
        (self.to_owner)(OwnerMsg::Networks {
            full: true,
            nets: recs,
            gone: vec![],
        });
        self.set_healthy(true);
        self.converge_all();
        Ok(rev)
    }

    /// Record a key's value (no kernel work). Returns what changed: Some(net) for a network,
    /// or the slice (net, slice).
    fn put_key(&mut self, key: &str, value: &[u8]) -> Change {
        let Some(rest) = key.strip_prefix(&format!("{}/", self.cfg.prefix)) else {
            return Change::None;
        };
        if let Some(name) = rest.strip_prefix("networks/") {
            match serde_json::from_slice::<NetDef>(value) {
                Ok(d) if d.name == name => {
                    self.nets.insert(name.to_string(), d);
                    return Change::Net(name.to_string());
                }
                _ => tracing::warn!(key, "ignoring an undecodable network definition"),
            }
        } else if let Some(r) = rest.strip_prefix("subnets/") {
            if let Some((net, sk)) = r.split_once('/') {
                if let (Some(s), Ok(v)) = (
                    super::parse_slice_key(sk),
                    serde_json::from_slice::<SliceVal>(value),
                ) {
                    self.slices.entry(net.to_string()).or_default().insert(s, v);
                    return Change::Slice(net.to_string(), s);
                }
            }
            tracing::warn!(key, "ignoring an undecodable slice");
        } else if let Some((net, node)) =
            rest.strip_prefix("names/").and_then(|r| r.split_once('/'))
        {
            if node == self.cfg.node {
                return Change::None;
            }
            match serde_json::from_slice::<Vec<crate::dns::RemoteName>>(value) {
                Ok(list) => {
                    self.remote_names
                        .entry(net.to_string())
                        .or_default()
                        .insert(node.to_string(), list);
                    return Change::Names;
                }
                Err(_) => tracing::warn!(key, "ignoring undecodable names"),
            }
        }
        Change::None
    }

    fn peers(&self, net: &str) -> BTreeMap<Ipv4Net, Peer> {
        self.slices
            .get(net)
            .into_iter()
            .flatten()
            .filter(|(_, v)| v.node != self.cfg.node)
            .filter_map(|(s, v)| dataplane::peer_of(v).map(|p| (*s, p)))
            .collect()
    }

    fn lease_path(&self, net: &str) -> PathBuf {
        self.cfg.lease_dir.join(format!("{net}.json"))
    }

    fn lease_file(&self, def: &NetDef, slice: &Ipv4Net) -> LeaseFile {
        LeaseFile {
            network: def.name.clone(),
            subnet: def.subnet,
            slice: *slice,
            mtu: dataplane::overlay_mtu(self.cfg.advertise),
            bridge: def.bridge(),
            ipam_data_dir: self.cfg.ipam_dir.clone(),
            state_dir: self.cfg.cni_state_dir.clone(),
            ip_masq: true,
        }
    }

    /// Program one network of ours: device, lease file, every peer.
    fn program(&self, net: &str) -> Result<LeaseFile, String> {
        let def = self
            .nets
            .get(net)
            .ok_or_else(|| format!("network {net:?} is not in the cluster store"))?;
        let own = self
            .state
            .slices
            .get(net)
            .ok_or_else(|| format!("no slice of {net:?} on this node"))?;
        let idx = dataplane::ensure_device(def, &self.cfg.node, self.cfg.advertise, own)?;
        dataplane::converge(idx, &self.peers(net))?;
        let lf = self.lease_file(def, own);
        let bytes = serde_json::to_vec_pretty(&lf).map_err(|e| e.to_string())?;
        crate::store::write_atomic(&self.lease_path(net), &bytes).map_err(|e| e.to_string())?;
        Ok(lf)
    }

    fn converge_all(&mut self) {
        let own: Vec<String> = self.state.slices.keys().cloned().collect();
        for net in own {
            if !self.nets.contains_key(&net) {
                // Deleted while we were away.
                self.drop_own(&net);
                continue;
            }
            if let Err(e) = self.program(&net) {
                tracing::warn!(network = %net, error = %e, "programming overlay network");
            }
        }
    }

    /// Forget our slice of `net` locally and remove its kernel state (no etcd request).
    fn drop_own(&mut self, net: &str) {
        let def = self
            .nets
            .get(net)
            .cloned()
            .or_else(|| self.state.defs.get(net).cloned());
        self.state.slices.remove(net);
        self.state.defs.remove(net);
        self.save_state();
        let _ = std::fs::remove_file(self.lease_path(net));
        if let Some(def) = def {
            if let Err(e) = dataplane::remove_device(&def) {
                tracing::warn!(network = %net, error = %e, "removing overlay devices");
            }
        }
    }

    async fn serve(
        &mut self,
        s: &mut Session,
        rx: &mut mpsc::UnboundedReceiver<Cmd>,
    ) -> Option<SessionEnd> {
        let period =
            Duration::from_secs(u64::try_from((self.cfg.lease_ttl / 3).max(1)).unwrap_or(1));
        let mut ka_tick = tokio::time::interval(period);
        let mut idle_tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                m = s.watch.message() => match m {
                    Ok(Some(resp)) => {
                        if resp.canceled() || resp.compact_revision() > 0 {
                            self.last_rev = None;
                            return Some(format!("watch cancelled (compacted at {}): re-listing", resp.compact_revision()));
                        }
                        self.apply_events(resp.events());
                        if let Err(e) = self.release_orphans(&mut s.client).await {
                            return Some(e);
                        }
                    }
                    Ok(None) => return Some("watch stream closed".into()),
                    Err(e) => return Some(etcd_err("watch", e)),
                },
                _ = ka_tick.tick() => {
                    if let Err(e) = s.keeper.keep_alive().await {
                        return Some(etcd_err("keepalive", e));
                    }
                },
                m = s.ka.message() => match m {
                    Ok(Some(r)) if r.ttl() <= 0 => {
                        // Expired (a partition longer than the TTL): the next session grants a
                        // new lease and re-claims our slices.
                        self.state.lease_id = 0;
                        return Some("node lease expired".into());
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return Some("keepalive stream closed".into()),
                    Err(e) => return Some(etcd_err("keepalive", e)),
                },
                c = rx.recv() => match c {
                    None => return None,
                    Some(c) => {
                        let t = Instant::now();
                        if let Err(e) = self.command(&mut s.client, c.clone()).await {
                            self.retry = Some((t, c));
                            return Some(e);
                        }
                    }
                },
                _ = idle_tick.tick() => {
                    if let Err(e) = self.release_idle(&mut s.client).await {
                        return Some(e);
                    }
                },
            }
        }
    }

    fn apply_events(&mut self, events: &[etcd_client::Event]) {
        let mut upd = Vec::new();
        let mut gone = Vec::new();
        let mut names = false;
        for ev in events {
            let Some(kv) = ev.kv() else { continue };
            self.last_rev = Some(kv.mod_revision().max(self.last_rev.unwrap_or(0)));
            let Ok(key) = kv.key_str() else { continue };
            let key = key.to_string();
            match ev.event_type() {
                EventType::Put => match self.put_key(&key, kv.value()) {
                    Change::Net(n) => {
                        if let Some(d) = self.nets.get(&n) {
                            upd.push(d.to_rec());
                        }
                        gone.retain(|g| *g != n);
                    }
                    Change::Slice(net, s) => self.slice_up(&net, &s),
                    Change::Names => names = true,
                    Change::None => {}
                },
                EventType::Delete => {
                    let rest = key
                        .strip_prefix(&format!("{}/", self.cfg.prefix))
                        .unwrap_or("");
                    if let Some(name) = rest.strip_prefix("networks/") {
                        if self.state.slices.contains_key(name) {
                            self.drop_own(name);
                        }
                        self.nets.remove(name);
                        self.slices.remove(name);
                        upd.retain(|r: &crate::model::NetworkRec| r.network.name != name);
                        gone.push(name.to_string());
                    } else if let Some(r) = rest.strip_prefix("subnets/") {
                        if let Some((net, sk)) = r.split_once('/') {
                            if let Some(s) = super::parse_slice_key(sk) {
                                let old = self.slices.get_mut(net).and_then(|m| m.remove(&s));
                                if let Some(v) = old {
                                    self.slice_down(net, &s, &v);
                                }
                            }
                        }
                    } else if let Some((net, node)) =
                        rest.strip_prefix("names/").and_then(|r| r.split_once('/'))
                    {
                        if let Some(m) = self.remote_names.get_mut(net) {
                            names |= m.remove(node).is_some();
                            if m.is_empty() {
                                self.remote_names.remove(net);
                            }
                        }
                    }
                }
            }
        }
        if names {
            (self.to_owner)(OwnerMsg::Names(self.remote_names.clone()));
        }
        if !upd.is_empty() || !gone.is_empty() {
            self.set_healthy(true);
            (self.to_owner)(OwnerMsg::Networks {
                full: false,
                nets: upd,
                gone,
            });
        }
    }

    fn slice_up(&mut self, net: &str, s: &Ipv4Net) {
        let Some(v) = self.slices.get(net).and_then(|m| m.get(s)).cloned() else {
            return;
        };
        if v.node == self.cfg.node {
            if self.state.slices.get(net) != Some(s) {
                tracing::warn!(network = %net, slice = %s, "a slice claim of ours committed after it timed out: releasing it");
                self.orphans.push(self.key_slice(net, s));
            }
            return;
        }
        if !self.state.slices.contains_key(net) {
            return;
        }
        let Some(def) = self.nets.get(net) else {
            return;
        };
        let (Some(idx), Some(p)) = (dataplane::device_index(def), dataplane::peer_of(&v)) else {
            return;
        };
        match dataplane::add_peer(idx, s, &p) {
            Ok(()) => {
                tracing::debug!(network = %net, slice = %s, node = %v.node, "peer programmed")
            }
            Err(e) => tracing::warn!(network = %net, slice = %s, error = %e, "programming a peer"),
        }
    }

    fn slice_down(&mut self, net: &str, s: &Ipv4Net, v: &SliceVal) {
        if v.node == self.cfg.node {
            return;
        }
        let Some(def) = self.nets.get(net) else {
            return;
        };
        let (Some(idx), Some(p)) = (dataplane::device_index(def), dataplane::peer_of(v)) else {
            return;
        };
        match dataplane::del_peer(idx, s, &p) {
            Ok(()) => tracing::info!(network = %net, slice = %s, node = %v.node, "peer removed"),
            Err(e) => tracing::warn!(network = %net, slice = %s, error = %e, "removing a peer"),
        }
    }

    /// The definition stored for network `name`, if any.
    async fn stored_def(&self, c: &mut Client, name: &str) -> Result<Option<NetDef>, String> {
        let r = c
            .get(self.key_net(name), None)
            .await
            .map_err(|e| etcd_err("read network", e))?;
        Ok(r.kvs()
            .first()
            .and_then(|kv| serde_json::from_slice(kv.value()).ok()))
    }

    /// Serve one command. An etcd failure ends the session without replying: the caller
    /// retries the command once on the next session, or refuses it (503).
    async fn command(&mut self, c: &mut Client, cmd: Cmd) -> Result<(), String> {
        match cmd {
            Cmd::Create(def, reply) => {
                let key = self.key_net(&def.name);
                // The VNI is claimed in the same transaction: two networks created at once on
                // two nodes can never share a VXLAN id.
                let vkey = self.key_vni(def.vni);
                let body = serde_json::to_vec(&def).map_err(|e| e.to_string())?;
                let r = c
                    .txn(
                        Txn::new()
                            .when([
                                Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                                Compare::create_revision(vkey.clone(), CompareOp::Equal, 0),
                            ])
                            .and_then([
                                TxnOp::put(key, body, None),
                                TxnOp::put(vkey, def.name.clone(), None),
                            ]),
                    )
                    .await;
                match r {
                    Ok(r) if r.succeeded() => {
                        self.nets.insert(def.name.clone(), def);
                        self.set_healthy(true);
                        let _ = reply.try_send(Ok(()));
                    }
                    // Our own earlier try may have committed before its connection broke:
                    // the same definition already stored is a success, not a conflict.
                    Ok(_) if self.stored_def(c, &def.name).await? == Some(def.clone()) => {
                        self.nets.insert(def.name.clone(), def);
                        let _ = reply.try_send(Ok(()));
                    }
                    Ok(_) => {
                        let _ = reply.try_send(Err(conflict(format!(
                            "network {:?} or vni {} already exists in the cluster store",
                            def.name, def.vni
                        ))));
                    }
                    Err(e) => return Err(etcd_err("create network", e)),
                }
            }
            Cmd::Delete(name, reply) => {
                let r = self.delete_network(c, &name).await?;
                let _ = reply.try_send(r);
            }
            Cmd::EnsureSlice(def, reply) => {
                let r = self.ensure_slice(c, def).await?;
                let _ = reply.try_send(r);
            }
            Cmd::Names(net, names) => {
                self.set_local_names(net.clone(), names);
                self.put_names(c, &net).await?;
            }
        }
        Ok(())
    }

    async fn delete_network(
        &mut self,
        c: &mut Client,
        name: &str,
    ) -> Result<Result<(), ApiError>, String> {
        // Our own idle slice goes first (the owner checked we have no endpoints on it).
        if let Some(s) = self.state.slices.get(name).copied() {
            if !self.slice_in_use(name) {
                c.delete(self.key_slice(name, &s), None)
                    .await
                    .map_err(|e| etcd_err("release slice", e))?;
                self.drop_own(name);
            }
        }
        let prefix = format!("{}/subnets/{name}/", self.cfg.prefix);
        let mut dels = vec![TxnOp::delete(self.key_net(name), None)];
        if let Some(d) = self.nets.get(name) {
            dels.push(TxnOp::delete(self.key_vni(d.vni), None));
        }
        let r = c
            .txn(
                Txn::new()
                    .when([Compare::version(prefix.clone(), CompareOp::Equal, 0).with_prefix()])
                    .and_then(dels)
                    .or_else([TxnOp::get(prefix, Some(GetOptions::new().with_prefix()))]),
            )
            .await
            .map_err(|e| etcd_err("delete network", e))?;
        if r.succeeded() {
            return Ok(Ok(()));
        }
        let mut nodes: Vec<String> = r
            .op_responses()
            .into_iter()
            .flat_map(|o| match o {
                etcd_client::TxnOpResponse::Get(g) => g
                    .kvs()
                    .iter()
                    .filter_map(|kv| serde_json::from_slice::<SliceVal>(kv.value()).ok())
                    .map(|v| v.node)
                    .collect::<Vec<_>>(),
                _ => vec![],
            })
            .collect();
        nodes.sort();
        nodes.dedup();
        Ok(Err(conflict(format!(
            "network {name:?} has active endpoints on nodes: {}",
            nodes.join(", ")
        ))))
    }

    async fn ensure_slice(
        &mut self,
        c: &mut Client,
        def: NetDef,
    ) -> Result<Result<LeaseFile, ApiError>, String> {
        let name = def.name.clone();
        self.nets.entry(name.clone()).or_insert(def.clone());
        self.ensured.insert(name.clone(), Instant::now());
        if let Some(own) = self.state.slices.get(&name).copied() {
            // The usual case: nothing to do but confirm (no netlink dump per attachment).
            let lf = self.lease_file(&def, &own);
            let on_disk: Option<LeaseFile> = read_json(&self.lease_path(&name));
            if dataplane::device_index(&def).is_some() && on_disk.as_ref() == Some(&lf) {
                return Ok(Ok(lf));
            }
            return Ok(self.program(&name).map_err(ApiError::Internal));
        }
        // Start at a node-specific offset so nodes joining at once rarely race for a slice.
        let all: Vec<Ipv4Net> = def.slices().collect();
        if all.is_empty() {
            return Ok(Err(conflict(format!("network {name:?} has no slices"))));
        }
        let off = (dataplane::vtep_mac(&self.cfg.node, "")[1] as usize * 256
            + dataplane::vtep_mac(&self.cfg.node, "")[2] as usize)
            % all.len();
        for attempt in 0..3 {
            if attempt > 0 {
                // Lost races: refresh our view of who holds what.
                let r = c
                    .get(
                        format!("{}/subnets/{name}/", self.cfg.prefix),
                        Some(GetOptions::new().with_prefix()),
                    )
                    .await
                    .map_err(|e| etcd_err("list slices", e))?;
                for kv in r.kvs() {
                    if let Ok(k) = kv.key_str() {
                        let k = k.to_string();
                        self.put_key(&k, kv.value());
                    }
                }
            }
            let taken = self.slices.get(&name).cloned().unwrap_or_default();
            let free: Vec<Ipv4Net> = (0..all.len())
                .map(|i| all[(off + i) % all.len()])
                .filter(|s| !taken.contains_key(s))
                .take(4)
                .collect();
            if free.is_empty() {
                return Ok(Err(conflict(format!(
                    "overlay network {name:?} has no free slice of /{} left in {}",
                    def.subnet_len, def.subnet
                ))));
            }
            for s in free {
                tracing::debug!(network = %name, slice = %s, "claiming a slice");
                if self.claim(c, &def, &s, false).await? {
                    tracing::info!(network = %name, slice = %s, "leased a slice");
                    self.state.slices.insert(name.clone(), s);
                    self.state.defs.insert(name.clone(), def.clone());
                    let mine = self.my_val(&def);
                    self.slices.entry(name.clone()).or_default().insert(s, mine);
                    self.save_state();
                    return Ok(self.program(&name).map_err(ApiError::Internal));
                }
                self.slices
                    .entry(name.clone())
                    .or_default()
                    .entry(s)
                    .or_insert_with(|| SliceVal {
                        node: String::new(),
                        public_ip: std::net::Ipv4Addr::UNSPECIFIED,
                        vtep_mac: String::new(),
                        vni: 0,
                    });
            }
        }
        Ok(Err(ApiError::Unavailable(format!(
            "could not lease a slice of {name:?}: too much contention, retry"
        ))))
    }

    /// Whether any address of the network is leased on this node (by sandboxd or by another
    /// runtime through the `overlay` CNI plugin: both use the same host-local directory).
    fn slice_in_use(&self, net: &str) -> bool {
        let dir = self.cfg.ipam_dir.join(net);
        std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten().any(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok())
                })
            })
            .unwrap_or(false)
    }

    async fn release_idle(&mut self, c: &mut Client) -> Result<(), String> {
        let idle: Vec<(String, Ipv4Net)> = self
            .state
            .slices
            .iter()
            .filter(|(n, _)| self.ensured.get(*n).is_none_or(|t| t.elapsed() > GRACE))
            .filter(|(n, _)| !self.slice_in_use(n))
            .map(|(n, s)| (n.clone(), *s))
            .collect();
        for (net, s) in idle {
            c.delete(self.key_slice(&net, &s), None)
                .await
                .map_err(|e| etcd_err("release slice", e))?;
            tracing::info!(network = %net, slice = %s, "released an idle slice");
            if let Some(m) = self.slices.get_mut(&net) {
                m.remove(&s);
            }
            self.drop_own(&net);
        }
        Ok(())
    }
}

/// What a key change touched.
enum Change {
    None,
    Net(String),
    Slice(String, Ipv4Net),
    Names,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn agent() -> Agent {
        let dir = std::env::temp_dir().join(format!("rcni-agent-{}", std::process::id()));
        let cfg = Config {
            endpoints: vec!["http://127.0.0.1:1".into()],
            advertise: "192.0.2.1".parse().unwrap(),
            node: "n1".into(),
            lease_ttl: 10,
            prefix: "/p".into(),
            lease_dir: dir.join("lease"),
            state_dir: dir.join("state"),
            ipam_dir: dir.join("ipam"),
            cni_state_dir: dir.join("cni"),
        };
        Agent::new(
            cfg,
            Arc::new(Mutex::new(Shared::default())),
            Box::new(|_| {}),
        )
        .unwrap()
    }

    #[test]
    fn keys_decode_into_networks_and_peers() {
        let mut a = agent();
        let def = NetDef {
            name: "web".into(),
            id: "b".repeat(64),
            subnet: "10.50.0.0/16".parse().unwrap(),
            subnet_len: 24,
            vni: 3,
            port: 8472,
            created: String::new(),
            labels: BTreeMap::new(),
        };
        let body = serde_json::to_vec(&def).unwrap();
        assert!(matches!(a.put_key("/p/networks/web", &body), Change::Net(n) if n == "web"));
        assert!(matches!(
            a.put_key("/p/networks/other", &body),
            Change::None
        ));
        assert!(matches!(a.put_key("/q/networks/web", &body), Change::None));
        let mine = a.my_val(&def);
        assert_eq!(mine.vni, 3);
        let theirs = SliceVal {
            node: "n2".into(),
            public_ip: "192.0.2.2".parse().unwrap(),
            vtep_mac: "0e:00:00:00:00:02".into(),
            vni: 3,
        };
        let s1: Ipv4Net = "10.50.1.0/24".parse().unwrap();
        let s2: Ipv4Net = "10.50.2.0/24".parse().unwrap();
        a.put_key(
            "/p/subnets/web/10.50.1.0-24",
            &serde_json::to_vec(&mine).unwrap(),
        );
        assert!(matches!(
            a.put_key("/p/subnets/web/10.50.2.0-24", &serde_json::to_vec(&theirs).unwrap()),
            Change::Slice(n, s) if n == "web" && s == s2
        ));
        assert!(matches!(
            a.put_key("/p/subnets/web/junk", b"{}"),
            Change::None
        ));
        // Our own slice is never a peer.
        let peers = a.peers("web");
        assert_eq!(peers.len(), 1);
        assert_eq!(
            peers[&s2],
            ([0x0e, 0, 0, 0, 0, 2], "192.0.2.2".parse().unwrap())
        );
        assert!(!peers.contains_key(&s1));
        assert_eq!(a.key_slice("web", &s1), "/p/subnets/web/10.50.1.0-24");
        assert_eq!(a.key_vni(3), "/p/vnis/3");
    }
}
