//! The remote IPAM driver on host-local's allocator and data layout: every pool
//! is a host-local network directory `<data-dir>/ipam/docker-<pool>` (one lease file per address,
//! owned by a fresh id per request), so `netns` and anything reading host-local directories see
//! Docker's leases like any other.
//!
//! Pools are persisted (`RequiresRequestReplay` is false: dockerd replays nothing). A pool asked
//! for by CIDR is shared by identical requests (same PoolID, reference counted, as dockerd's
//! own IPAM does); an empty request gets a fresh pool from the default ranges that overlaps no
//! pool, network or route in use. The gateway is not a lease: it is reserved on the pool record
//! and given to host-local as the range's gateway, which host-local never hands out.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use host_local::config::{IpamConfig, RawNetConf};
use ipnet::IpNet;
use serde_json::json;

use super::proto::{
    RequestAddress, RequestAddressResponse, RequestPool, RequestPoolResponse, OPT_REQUEST_TYPE,
    REQUEST_TYPE_GATEWAY,
};
use super::state::{DkPool, DkState};
use crate::cniops::{default_pool, host_prefixes, overlaps, range_bounds};

/// The one address space we serve (local and global alike).
pub const ADDRESS_SPACE: &str = "rcni";

/// host-local network name (lease directory) of a pool.
pub fn lease_dir_name(pool: &IpNet) -> String {
    format!("docker-{}", pool.to_string().replace(['/', ':'], "_"))
}

fn first_host(n: &IpNet) -> Option<IpAddr> {
    match n.trunc() {
        IpNet::V4(v) => u32::from(v.network())
            .checked_add(1)
            .map(|x| IpAddr::V4(x.into())),
        IpNet::V6(v) => u128::from(v.network())
            .checked_add(1)
            .map(|x| IpAddr::V6(x.into())),
    }
}

/// host-local's configuration for a pool, optionally asking for one address.
fn config(ipam_dir: &Path, p: &DkPool, want: Option<IpAddr>) -> Result<IpamConfig, String> {
    let mut range = serde_json::Map::new();
    range.insert("subnet".into(), json!(p.pool.trunc().to_string()));
    if let Some(gw) = p.gateway {
        range.insert("gateway".into(), json!(gw.to_string()));
    }
    // Dynamic addresses come from the sub-pool (`--ip-range`); a static one (`--ip`) may be
    // anywhere in the pool, as with Docker's own IPAM.
    if let (Some(sub), None) = (p.sub_pool, want) {
        let (start, end) = range_bounds(&p.pool, &sub);
        range.insert("rangeStart".into(), json!(start.to_string()));
        range.insert("rangeEnd".into(), json!(end.to_string()));
    }
    let mut conf = json!({
        "cniVersion": "1.0.0",
        "name": lease_dir_name(&p.pool),
        "ipam": {
            "type": "host-local",
            "dataDir": ipam_dir.display().to_string(),
            "ranges": [[range]],
        },
    });
    if let (Some(ip), Some(o)) = (want, conf.as_object_mut()) {
        o.insert("runtimeConfig".into(), json!({"ips": [ip.to_string()]}));
    }
    let raw: RawNetConf = serde_json::from_value(conf).map_err(|e| e.to_string())?;
    IpamConfig::load(raw, None).map_err(|e| e.to_string())
}

fn parse_net(what: &str, s: &str) -> Result<IpNet, String> {
    let n: IpNet = s
        .parse()
        .map_err(|_| format!("invalid {what} {s:?}: expected a CIDR"))?;
    if n.trunc() != n {
        return Err(format!("invalid {what} {s}: host bits set"));
    }
    Ok(n)
}

/// RequestPool.
pub fn request_pool(st: &mut DkState, req: &RequestPool) -> Result<RequestPoolResponse, String> {
    if req.pool.is_empty() && !req.sub_pool.is_empty() {
        return Err("a sub-pool needs a pool".into());
    }
    let space = if req.address_space.is_empty() {
        ADDRESS_SPACE.to_string()
    } else {
        req.address_space.clone()
    };
    let sub = if req.sub_pool.is_empty() {
        None
    } else {
        Some(parse_net("sub-pool", &req.sub_pool)?)
    };
    let respond = |p: &DkPool| RequestPoolResponse {
        pool_id: p.id.clone(),
        pool: p.pool.to_string(),
        data: BTreeMap::new(),
    };
    if !req.pool.is_empty() {
        let pool = parse_net("pool", &req.pool)?;
        if pool.addr().is_ipv4() == req.v6 {
            return Err(format!("pool {pool} does not match V6={}", req.v6));
        }
        if let Some(s) = sub {
            if !pool.contains(&s) {
                return Err(format!("sub-pool {s} is not inside pool {pool}"));
            }
        }
        let id = match sub {
            Some(s) => format!("{space}/{pool}/{s}"),
            None => format!("{space}/{pool}"),
        };
        if let Some(p) = st.pools.get_mut(&id) {
            p.refs += 1;
            return Ok(respond(p));
        }
        if let Some(other) = st
            .pools
            .values()
            .find(|p| p.space == space && overlaps(&p.pool, &pool))
        {
            return Err(format!(
                "pool {pool} overlaps pool {} already in use",
                other.pool
            ));
        }
        let p = DkPool {
            id: id.clone(),
            space,
            pool,
            sub_pool: sub,
            explicit: true,
            refs: 1,
            gateway: None,
            leases: BTreeMap::new(),
        };
        let r = respond(&p);
        st.pools.insert(id, p);
        return Ok(r);
    }
    if req.v6 {
        return Err("no default IPv6 pool: give one with --subnet".into());
    }
    let mut used: Vec<IpNet> = host_prefixes();
    used.extend(st.pools.values().map(|p| p.pool));
    used.extend(
        st.networks
            .values()
            .flat_map(|n| n.subnets.iter().map(|s| s.pool)),
    );
    let pool = default_pool()
        .into_iter()
        .find(|c| !used.iter().any(|u| overlaps(u, c)))
        .ok_or("the default pools are all in use")?;
    let p = DkPool {
        id: format!("{space}/{pool}"),
        space,
        pool,
        sub_pool: None,
        explicit: false,
        refs: 1,
        gateway: None,
        leases: BTreeMap::new(),
    };
    let r = respond(&p);
    st.pools.insert(p.id.clone(), p);
    Ok(r)
}

/// ReleasePool: drop one reference; the last one releases every lease left and the pool.
pub fn release_pool(st: &mut DkState, ipam_dir: &Path, id: &str) -> Result<(), String> {
    let Some(p) = st.pools.get_mut(id) else {
        return Ok(());
    };
    p.refs = p.refs.saturating_sub(1);
    if p.refs > 0 {
        return Ok(());
    }
    let p = p.clone();
    let cfg = config(ipam_dir, &p, None)?;
    for owner in p.leases.values() {
        host_local::alloc::del(&cfg, owner, "eth0").map_err(|e| e.to_string())?;
    }
    st.pools.remove(id);
    Ok(())
}

/// RequestAddress: the gateway (reserved on the pool), a static address or any free one (a
/// host-local lease).
pub fn request_address(
    st: &mut DkState,
    ipam_dir: &Path,
    req: &RequestAddress,
) -> Result<RequestAddressResponse, String> {
    let p = st
        .pools
        .get_mut(&req.pool_id)
        .ok_or_else(|| format!("no such pool {:?}", req.pool_id))?;
    let want: Option<IpAddr> = if req.address.is_empty() {
        None
    } else {
        Some(
            req.address
                .split('/')
                .next()
                .unwrap_or_default()
                .parse()
                .map_err(|_| format!("invalid address {:?}", req.address))?,
        )
    };
    if let Some(ip) = want {
        if !p.pool.contains(&ip) {
            return Err(format!("address {ip} is not in pool {}", p.pool));
        }
    }
    let prefix = p.pool.prefix_len();
    let with_prefix = |ip: IpAddr| {
        IpNet::new(ip, prefix)
            .map(|n| n.to_string())
            .map_err(|e| e.to_string())
    };
    let gateway_request = req
        .options
        .as_ref()
        .and_then(|o| o.get(OPT_REQUEST_TYPE))
        .is_some_and(|t| t == REQUEST_TYPE_GATEWAY);
    if gateway_request {
        let gw = match want {
            Some(ip) => ip,
            None => first_host(&p.pool).ok_or("pool has no usable address")?,
        };
        if p.leases.contains_key(&gw) {
            return Err(format!("gateway {gw} is already allocated"));
        }
        if p.gateway.is_some_and(|g| g != gw) {
            return Err(format!(
                "pool {} already has gateway {}",
                p.pool,
                p.gateway.unwrap_or(gw)
            ));
        }
        p.gateway = Some(gw);
        return Ok(RequestAddressResponse {
            address: with_prefix(gw)?,
            data: BTreeMap::new(),
        });
    }
    let owner = crate::util::new_id();
    let cfg = config(ipam_dir, p, want)?;
    let got = host_local::alloc::add(&cfg, &owner, "eth0").map_err(|e| e.to_string())?;
    let ip = got
        .first()
        .map(|a| a.address.addr())
        .ok_or("no address returned")?;
    p.leases.insert(ip, owner);
    Ok(RequestAddressResponse {
        address: with_prefix(ip)?,
        data: BTreeMap::new(),
    })
}

/// ReleaseAddress (an unknown address is fine: dockerd releases at its own pace).
pub fn release_address(
    st: &mut DkState,
    ipam_dir: &Path,
    pool_id: &str,
    address: &str,
) -> Result<(), String> {
    let Some(p) = st.pools.get_mut(pool_id) else {
        return Ok(());
    };
    let Ok(ip) = address
        .split('/')
        .next()
        .unwrap_or_default()
        .parse::<IpAddr>()
    else {
        return Err(format!("invalid address {address:?}"));
    };
    if p.gateway == Some(ip) {
        p.gateway = None;
        return Ok(());
    }
    if let Some(owner) = p.leases.get(&ip).cloned() {
        let cfg = config(ipam_dir, p, None)?;
        host_local::alloc::del(&cfg, &owner, "eth0").map_err(|e| e.to_string())?;
        p.leases.remove(&ip);
    }
    Ok(())
}

/// Start-up: remove leases of our pools that no record owns (a crash between host-local's
/// write and the state's). Returns one line per pool that had any.
pub fn gc(st: &DkState, ipam_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for p in st.pools.values() {
        let valid: Vec<(String, String)> = p
            .leases
            .values()
            .map(|o| (o.clone(), "eth0".to_string()))
            .collect();
        let outcome = config(ipam_dir, p, None)
            .and_then(|cfg| host_local::alloc::gc(&cfg, &valid).map_err(|e| e.to_string()));
        match outcome {
            Ok(freed) if freed.is_empty() => {}
            Ok(freed) => out.push(format!(
                "docker pool {}: released {} orphaned lease(s)",
                p.id,
                freed.len()
            )),
            Err(e) => out.push(format!("docker pool {}: lease GC failed: {e}", p.id)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("dk-ipam-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn pool_req(pool: &str) -> RequestPool {
        RequestPool {
            address_space: "rcni".into(),
            pool: pool.into(),
            ..Default::default()
        }
    }

    #[test]
    fn pools_addresses_and_gateways() {
        let dir = tmp("a");
        let mut st = DkState::default();
        let a = request_pool(&mut st, &pool_req("10.77.0.0/24")).unwrap();
        let b = request_pool(&mut st, &pool_req("10.77.0.0/24")).unwrap();
        assert_eq!(a.pool_id, b.pool_id);
        assert_eq!(st.pools[&a.pool_id].refs, 2);
        assert!(request_pool(&mut st, &pool_req("10.77.0.0/16")).is_err());
        let gw = request_address(
            &mut st,
            &dir,
            &RequestAddress {
                pool_id: a.pool_id.clone(),
                address: String::new(),
                options: Some(BTreeMap::from([(
                    OPT_REQUEST_TYPE.to_string(),
                    REQUEST_TYPE_GATEWAY.to_string(),
                )])),
            },
        )
        .unwrap();
        assert_eq!(gw.address, "10.77.0.1/24");
        let any = |st: &mut DkState, addr: &str| {
            request_address(
                st,
                &dir,
                &RequestAddress {
                    pool_id: a.pool_id.clone(),
                    address: addr.into(),
                    options: None,
                },
            )
        };
        assert_eq!(any(&mut st, "").unwrap().address, "10.77.0.2/24");
        assert_eq!(any(&mut st, "10.77.0.9").unwrap().address, "10.77.0.9/24");
        assert!(any(&mut st, "10.77.0.9").is_err());
        assert!(any(&mut st, "10.77.0.1").is_err());
        let leases = dir.join(lease_dir_name(&"10.77.0.0/24".parse().unwrap()));
        assert!(leases.join("10.77.0.9").exists());
        // A lease no record owns (crash between the two writes) goes at the next start.
        let orphan = config(&dir, &st.pools[&a.pool_id], None).unwrap();
        host_local::alloc::add(&orphan, "orphan", "eth0").unwrap();
        assert_eq!(gc(&st, &dir).len(), 1);
        assert!(leases.join("10.77.0.9").exists());
        release_address(&mut st, &dir, &a.pool_id, "10.77.0.9").unwrap();
        assert!(!leases.join("10.77.0.9").exists());
        release_pool(&mut st, &dir, &a.pool_id).unwrap();
        assert!(st.pools.contains_key(&a.pool_id));
        release_pool(&mut st, &dir, &a.pool_id).unwrap();
        assert!(st.pools.is_empty());
        assert!(!leases.join("10.77.0.2").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sub_pool_for_dynamic_addresses_only() {
        let dir = tmp("sub");
        let mut st = DkState::default();
        let req = RequestPool {
            sub_pool: "10.66.0.128/25".into(),
            ..pool_req("10.66.0.0/24")
        };
        let p = request_pool(&mut st, &req).unwrap();
        assert_eq!(p.pool_id, "rcni/10.66.0.0/24/10.66.0.128/25");
        let ask = |st: &mut DkState, addr: &str| {
            request_address(
                st,
                &dir,
                &RequestAddress {
                    pool_id: p.pool_id.clone(),
                    address: addr.into(),
                    options: None,
                },
            )
            .unwrap()
            .address
        };
        assert_eq!(ask(&mut st, ""), "10.66.0.128/24");
        assert_eq!(ask(&mut st, "10.66.0.10"), "10.66.0.10/24");
        assert_eq!(ask(&mut st, ""), "10.66.0.129/24");
        release_pool(&mut st, &dir, &p.pool_id).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn empty_requests_get_distinct_pools() {
        let mut st = DkState::default();
        let a = request_pool(&mut st, &pool_req("")).unwrap();
        let b = request_pool(&mut st, &pool_req("")).unwrap();
        assert_ne!(a.pool, b.pool);
        let bad = RequestPool {
            sub_pool: "10.0.0.0/25".into(),
            ..pool_req("")
        };
        assert!(request_pool(&mut st, &bad).is_err());
    }
}
