//! Docker's remote network driver and remote IPAM driver (`sandboxd --docker-plugin NAME`):
//! a stock dockerd finds `/run/docker/plugins/NAME.sock` and uses it for
//! `docker network create -d NAME --ipam-driver NAME …` (docs/docker-driver.md).
//!
//! - [`proto`]: the wire types of the legacy plugin protocol.
//! - [`driver`]: NetworkDriver calls mapped onto the bridge crate's host-side ports and the
//!   firewall crate (masquerade, forward accept, port forwarding).
//! - [`ipam`]: IpamDriver calls on host-local's allocator and lease directories.
//! - [`state`]: the persisted networks, endpoints and pools.
//!
//! This face keeps its own state, beside the owner's: Docker's objects are created and removed
//! by dockerd alone, through calls that must answer even while the API owner is busy, and they
//! never take part in the owner's reconcile or GC of sandboxd's own networks (their firewall
//! entries carry their own owner tags). Calls are serialized by one mutex and run on the
//! blocking pool: each is a few netlink and nftables exchanges. The API's list calls show these
//! objects too ([`api_networks`], [`api_sandboxes`]), so `netns network ls` and
//! `netns sandbox ls` list what dockerd created.

pub mod driver;
pub mod ipam;
pub mod proto;
pub mod state;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::Error;
use crate::model::{Endpoint, NetEndpointRef, Network, Sandbox, Subnet};
use proto::CONTENT_TYPE;
use state::{DkState, DkStore};

/// Shared by every call.
pub struct Ctx {
    store: DkStore,
    state: Mutex<DkState>,
    ipam_dir: PathBuf,
}

impl Ctx {
    /// Persist `st` (called with the state lock held).
    pub fn save(&self, st: &DkState) -> Result<(), String> {
        self.store.save(st).map_err(|e| e.to_string())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DkState> {
        // A panic in a call leaves the last saved state valid; carry on with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

static ACTIVE: OnceLock<Arc<Ctx>> = OnceLock::new();

/// Load the state, undo what a crash left half-done and make the context the one the API's
/// list calls show. `ipam_dir` is host-local's data directory shared with sandboxd's networks.
pub fn open(data_dir: &Path, ipam_dir: &Path) -> Result<(Arc<Ctx>, Vec<String>), Error> {
    let store = DkStore::open(data_dir)?;
    let st = store.load()?;
    let ctx = Arc::new(Ctx {
        store,
        state: Mutex::new(st),
        ipam_dir: ipam_dir.to_path_buf(),
    });
    let actions = {
        let mut st = ctx.lock();
        let mut a = driver::reconcile(&ctx, &mut st);
        a.extend(ipam::gc(&st, &ctx.ipam_dir));
        a
    };
    let _ = ACTIVE.set(ctx.clone());
    Ok((ctx, actions))
}

/// `POST /v1/_repair`'s Docker part: the firewall entries and bridges of Docker's networks
/// and endpoints ([`driver::repair`]); one line per repair.
pub fn repair() -> Vec<String> {
    match ACTIVE.get() {
        Some(ctx) => driver::repair(&ctx.lock()),
        None => Vec::new(),
    }
}

/// Checks a plugin name (it becomes a socket file name).
pub fn check_plugin_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid docker plugin name {name:?}: use letters, digits, '-', '_' and '.'"
        ))
    }
}

/// Which interface a call belongs to: the error field differs.
#[derive(Clone, Copy)]
enum Face {
    Net,
    Ipam,
}

fn encode<T: Serialize>(v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Errors go back with status 200 and the interface's error field: `Err` for the network
/// driver, `Error` for IPAM (dockerd reads each from its own response type; with another
/// status it would show the raw body for IPAM).
fn failure(face: Face, msg: &str) -> Value {
    match face {
        Face::Net => json!({"Err": msg}),
        Face::Ipam => json!({"Error": msg}),
    }
}

fn to_value<T: Serialize>(r: Result<T, String>, face: Face) -> Value {
    match r.and_then(|v| serde_json::to_value(v).map_err(|e| e.to_string())) {
        Ok(v) => v,
        Err(e) => failure(face, &e),
    }
}

fn empty(r: Result<(), String>, face: Face) -> Value {
    match r {
        Ok(()) => json!({}),
        Err(e) => failure(face, &e),
    }
}

/// One call: `None` for an unknown method (404).
fn handle(ctx: &Ctx, call: &str, body: &[u8]) -> Option<Value> {
    use proto::*;
    let (face, method) = match call.split_once('.') {
        Some(("Plugin", "Activate")) => {
            return Some(json!(Activate {
                implements: vec!["NetworkDriver", "IpamDriver"],
            }))
        }
        Some(("NetworkDriver", m)) => (Face::Net, m),
        Some(("IpamDriver", m)) => (Face::Ipam, m),
        _ => return None,
    };
    macro_rules! req {
        ($t:ty) => {
            match decode::<$t>(body) {
                Ok(r) => r,
                Err(e) => return Some(failure(face, &e)),
            }
        };
    }
    let mut st = ctx.lock();
    let st = &mut *st;
    let out = match (face, method) {
        (Face::Net, "GetCapabilities") => json!(Capabilities {
            scope: "local",
            connectivity_scope: "local",
        }),
        (Face::Net, "CreateNetwork") => {
            let r = req!(CreateNetwork);
            empty(driver::create_network(ctx, st, &r), face)
        }
        (Face::Net, "DeleteNetwork") => {
            let r = req!(NetworkRef);
            empty(driver::delete_network(ctx, st, &r.network_id), face)
        }
        (Face::Net, "CreateEndpoint") => {
            let r = req!(CreateEndpoint);
            to_value(driver::create_endpoint(ctx, st, &r), face)
        }
        (Face::Net, "DeleteEndpoint") => {
            let r = req!(EndpointRef);
            empty(driver::delete_endpoint(ctx, st, &r.endpoint_id), face)
        }
        (Face::Net, "EndpointOperInfo") => {
            let r = req!(EndpointRef);
            to_value(driver::oper_info(st, &r.endpoint_id), face)
        }
        (Face::Net, "Join") => {
            let r = req!(proto::Join);
            to_value(driver::join(ctx, st, &r), face)
        }
        (Face::Net, "Leave") => {
            let r = req!(EndpointRef);
            empty(driver::leave(ctx, st, &r.endpoint_id), face)
        }
        (Face::Net, "ProgramExternalConnectivity") => {
            let r = req!(EndpointRef);
            let opts = r.options.clone().unwrap_or_default();
            empty(driver::program(ctx, st, &r.endpoint_id, &opts), face)
        }
        (Face::Net, "RevokeExternalConnectivity") => {
            let r = req!(EndpointRef);
            empty(driver::revoke(ctx, st, &r.endpoint_id), face)
        }
        // Node discovery is for multi-host drivers: nothing to do on one host.
        (Face::Net, "DiscoverNew" | "DiscoverDelete") => json!({}),
        (Face::Ipam, "GetCapabilities") => json!(IpamCapabilities {
            requires_mac_address: false,
            requires_request_replay: false,
        }),
        (Face::Ipam, "GetDefaultAddressSpaces") => json!(AddressSpaces {
            local_default_address_space: ipam::ADDRESS_SPACE,
            global_default_address_space: ipam::ADDRESS_SPACE,
        }),
        (Face::Ipam, "RequestPool") => {
            let r = req!(RequestPool);
            let out = ipam::request_pool(st, &r);
            to_value(out.and_then(|v| ctx.save(st).map(|()| v)), face)
        }
        (Face::Ipam, "ReleasePool") => {
            let r = req!(ReleasePool);
            let out = ipam::release_pool(st, &ctx.ipam_dir, &r.pool_id);
            empty(out.and_then(|()| ctx.save(st)), face)
        }
        (Face::Ipam, "RequestAddress") => {
            let r = req!(RequestAddress);
            let out = ipam::request_address(st, &ctx.ipam_dir, &r);
            to_value(out.and_then(|v| ctx.save(st).map(|()| v)), face)
        }
        (Face::Ipam, "ReleaseAddress") => {
            let r = req!(ReleaseAddress);
            let out = ipam::release_address(st, &ctx.ipam_dir, &r.pool_id, &r.address);
            empty(out.and_then(|()| ctx.save(st)), face)
        }
        // AllocateNetwork/FreeNetwork (swarm managers only) and anything newer: 404, which
        // dockerd treats as "not implemented".
        _ => return None,
    };
    Some(out)
}

async fn dispatch(
    State(ctx): State<Arc<Ctx>>,
    UrlPath(call): UrlPath<String>,
    body: Bytes,
) -> Response {
    let started = std::time::Instant::now();
    let name = call.clone();
    let out = tokio::task::spawn_blocking(move || handle(&ctx, &call, &body)).await;
    match out {
        Ok(Some(v)) => {
            let failed = v.get("Err").or_else(|| v.get("Error"));
            match failed {
                Some(e) => tracing::warn!(call = %name, error = %e, "docker plugin call failed"),
                None => {
                    tracing::debug!(call = %name, ms = started.elapsed().as_millis() as u64, "docker plugin call")
                }
            }
            encode(&v)
        }
        Ok(None) => not_found(name).await,
        Err(e) => encode(&json!({"Err": format!("call panicked: {e}")})),
    }
}

async fn not_found(call: String) -> Response {
    tracing::debug!(call = %call, "docker plugin call not implemented (404)");
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        json!({"Err": format!("{call} is not implemented")}).to_string(),
    )
        .into_response()
}

/// The plugin protocol's router: every call is `POST /<Interface>.<Method>`.
pub fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/{call}", post(dispatch))
        .fallback(|uri: axum::http::Uri| not_found(uri.path().trim_start_matches('/').to_string()))
        .with_state(ctx)
}

/// Name under which a Docker network appears in sandboxd's API.
pub fn api_network_name(nid: &str) -> String {
    driver::fw_network(nid)
}

fn sandbox_name(key: &str) -> String {
    let base = Path::new(key)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("docker-{base}")
}

/// Docker's networks as API networks (driver `docker`), for `GET /v1/networks`.
pub fn api_networks() -> Vec<Network> {
    let Some(ctx) = ACTIVE.get() else {
        return Vec::new();
    };
    let st = ctx.lock();
    st.networks
        .values()
        .map(|n| {
            let endpoints = st
                .endpoints
                .values()
                .filter(|e| e.network_id == n.id)
                .map(|e| NetEndpointRef {
                    sandbox: e
                        .sandbox_key
                        .as_deref()
                        .map(sandbox_name)
                        .unwrap_or_default(),
                    endpoint_id: e.id.clone(),
                })
                .collect();
            let mut options = n.options.clone();
            if let Some(m) = n.mtu {
                options.insert("mtu".into(), m.to_string());
            }
            Network {
                id: n.id.clone(),
                name: api_network_name(&n.id),
                driver: "docker".into(),
                builtin: false,
                subnets: n
                    .subnets
                    .iter()
                    .map(|s| Subnet {
                        subnet: s.pool,
                        gateway: s.gateway.map(|g| g.addr()),
                        ip_range: None,
                    })
                    .collect(),
                internal: n.internal,
                ipv6: n.subnets.iter().any(|s| !s.pool.addr().is_ipv4()),
                bridge: Some(n.bridge.clone()),
                options,
                labels: BTreeMap::from([("com.docker.network.id".to_string(), n.id.clone())]),
                created: n.created.clone(),
                endpoints,
            }
        })
        .collect()
}

/// Docker's joined sandboxes as API sandboxes, for `GET /v1/sandboxes`.
pub fn api_sandboxes() -> Vec<Sandbox> {
    let Some(ctx) = ACTIVE.get() else {
        return Vec::new();
    };
    let st = ctx.lock();
    let mut by_key: BTreeMap<String, Vec<Endpoint>> = BTreeMap::new();
    let mut created: BTreeMap<String, String> = BTreeMap::new();
    for e in st.endpoints.values() {
        let Some(key) = &e.sandbox_key else { continue };
        let gw = st
            .networks
            .get(&e.network_id)
            .filter(|n| !n.internal)
            .map(|n| {
                n.subnets
                    .iter()
                    .filter_map(|s| s.gateway.map(|g| g.addr()))
                    .collect()
            })
            .unwrap_or_default();
        by_key.entry(key.clone()).or_default().push(Endpoint {
            id: e.id.clone(),
            network: api_network_name(&e.network_id),
            sandbox: sandbox_name(key),
            ifname: e.peer.clone(),
            addresses: e.addresses.clone(),
            gateway: gw,
            mac: Some(e.mac.clone()).filter(|m| !m.is_empty()),
            aliases: Vec::new(),
            ports: e
                .ports
                .iter()
                .map(|p| crate::model::PortMapping {
                    host_port: u32::from(p.host_port),
                    container_port: u32::from(p.container_port),
                    protocol: p.proto.clone(),
                    host_ip: p.host_ip,
                })
                .collect(),
        });
        created
            .entry(key.clone())
            .or_insert_with(|| e.created.clone());
    }
    by_key
        .into_iter()
        .map(|(key, endpoints)| {
            let name = sandbox_name(&key);
            Sandbox {
                id: name.trim_start_matches("docker-").to_string(),
                name,
                mode: "docker".into(),
                container_of: None,
                netns: key.clone(),
                hostname: String::new(),
                endpoints,
                gateway_endpoint: None,
                created: created.remove(&key).unwrap_or_default(),
                resolv_conf_path: None,
                hosts_path: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dispatch_error_fields_404s_and_persistence() {
        let dir = std::env::temp_dir().join(format!("dk-mod-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (ctx, _) = open(&dir, &dir.join("ipam")).unwrap();
        let call = |c: &str, body: &str| handle(&ctx, c, body.as_bytes());

        let a = call("Plugin.Activate", "").unwrap();
        assert_eq!(a, json!({"Implements": ["NetworkDriver", "IpamDriver"]}));
        assert_eq!(
            call("NetworkDriver.GetCapabilities", "").unwrap()["Scope"],
            "local"
        );
        for unknown in [
            "NetworkDriver.AllocateNetwork",
            "NetworkDriver.FreeNetwork",
            "Nope.Call",
        ] {
            assert!(call(unknown, "{}").is_none(), "{unknown}");
        }
        // IPAM errors use `Error`, driver errors `Err`.
        let e = call("IpamDriver.RequestPool", r#"{"Pool":"nonsense"}"#).unwrap();
        assert!(e["Error"].as_str().unwrap().contains("invalid pool"), "{e}");
        let e = call("NetworkDriver.Join", r#"{"EndpointID":"abc"}"#).unwrap();
        assert!(
            e["Err"].as_str().unwrap().contains("no such endpoint"),
            "{e}"
        );
        let e = call("NetworkDriver.CreateNetwork", "{not json").unwrap();
        assert!(
            e["Err"].as_str().unwrap().contains("invalid request body"),
            "{e}"
        );
        // Unknown ids on teardown succeed.
        for c in [
            "NetworkDriver.Leave",
            "NetworkDriver.DeleteEndpoint",
            "NetworkDriver.RevokeExternalConnectivity",
            "NetworkDriver.DeleteNetwork",
            "IpamDriver.ReleasePool",
        ] {
            assert_eq!(
                call(c, r#"{"NetworkID":"n","EndpointID":"e","PoolID":"p"}"#).unwrap(),
                json!({}),
                "{c}"
            );
        }
        // Same request, same pool; persisted across a reopen.
        let p1 = call("IpamDriver.RequestPool", r#"{"Pool":"10.91.0.0/24"}"#).unwrap();
        let p2 = call("IpamDriver.RequestPool", r#"{"Pool":"10.91.0.0/24"}"#).unwrap();
        assert_eq!(p1["PoolID"], p2["PoolID"]);
        let reopened = DkStore::open(&dir).unwrap().load().unwrap();
        assert_eq!(reopened.pools[p1["PoolID"].as_str().unwrap()].refs, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
