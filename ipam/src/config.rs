//! host-local configuration: the `ipam` object, `runtimeConfig` (`ipRanges`, `ips`), `args.cni.ips`
//! and CNI_ARGS `IP=`, merged and validated like the reference's `LoadIPAMConfig`.
//! Everything is checked here, before the data directory is touched.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::error::ConfigError;
use crate::range::{parse_ip_maybe_cidr, RangeSet, RawRange};

/// Default lease directory root of the reference plugin.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// The parts of the plugin config host-local reads (the whole plugin config is on stdin).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawNetConf {
    /// Network name: names the lease directory.
    #[serde(default)]
    pub name: String,
    /// Config version; 0.1.0/0.2.0 allow one address per family.
    #[serde(default, rename = "cniVersion")]
    pub cni_version: Option<String>,
    /// The IPAM section.
    #[serde(default)]
    pub ipam: Option<RawIpam>,
    /// Capability arguments injected by the runtime.
    #[serde(default, rename = "runtimeConfig")]
    pub runtime_config: Option<RawRuntimeConfig>,
    /// `args` convention object (`args.cni.ips`).
    #[serde(default)]
    pub args: Option<RawArgs>,
}

/// The `ipam` object.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawIpam {
    /// Plugin type (`host-local`); not checked, like the reference.
    #[serde(default, rename = "type")]
    pub ipam_type: Option<String>,
    /// Legacy single range: subnet.
    #[serde(default)]
    pub subnet: Option<String>,
    /// Legacy single range: first address.
    #[serde(default, rename = "rangeStart")]
    pub range_start: Option<String>,
    /// Legacy single range: last address.
    #[serde(default, rename = "rangeEnd")]
    pub range_end: Option<String>,
    /// Legacy single range: gateway.
    #[serde(default)]
    pub gateway: Option<String>,
    /// Range sets: one address is allocated from each.
    #[serde(default)]
    pub ranges: Option<Vec<Vec<RawRange>>>,
    /// Routes copied verbatim into the result.
    #[serde(default)]
    pub routes: Option<Vec<Value>>,
    /// Lease directory root (default [`DEFAULT_DATA_DIR`]).
    #[serde(default, rename = "dataDir")]
    pub data_dir: Option<String>,
    /// resolv.conf-style file whose contents become the result's `dns`.
    #[serde(default, rename = "resolvConf")]
    pub resolv_conf: Option<String>,
}

/// `runtimeConfig` keys host-local consumes (CONVENTIONS.md capabilities `ipRanges`, `ips`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawRuntimeConfig {
    /// Extra range sets, prepended to the configured ones.
    #[serde(default, rename = "ipRanges")]
    pub ip_ranges: Option<Vec<Vec<RawRange>>>,
    /// Requested addresses (prefix optional).
    #[serde(default)]
    pub ips: Option<Vec<String>>,
}

/// The `args` object.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawArgs {
    /// `args.cni`.
    #[serde(default)]
    pub cni: Option<RawCniArgs>,
}

/// `args.cni`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawCniArgs {
    /// Requested addresses (prefix optional).
    #[serde(default)]
    pub ips: Option<Vec<String>>,
}

/// A validated host-local configuration.
#[derive(Debug, Clone)]
pub struct IpamConfig {
    /// Network name (lease directory `<data_dir>/<name>`).
    pub name: String,
    /// Config version as given ("" when absent).
    pub cni_version: String,
    /// Lease directory root.
    pub data_dir: PathBuf,
    /// Range sets, in allocation order (ipRanges, legacy range, ranges).
    pub range_sets: Vec<RangeSet>,
    /// Routes for the result, undecoded (the plugin glue converts and validates them).
    pub routes: Vec<Value>,
    /// resolv.conf path, if any.
    pub resolv_conf: Option<String>,
    /// Requested addresses, deduplicated, in request order (CNI_ARGS, args, runtimeConfig).
    pub requested: Vec<IpAddr>,
}

impl IpamConfig {
    /// Merge and validate, in the reference's order so the first reported problem matches.
    /// `args_ip` is the CNI_ARGS `IP` value, if any.
    pub fn load(raw: RawNetConf, args_ip: Option<&str>) -> Result<IpamConfig, ConfigError> {
        let ipam = raw.ipam.ok_or(ConfigError::MissingIpam)?;
        let mut requested: Vec<IpAddr> = Vec::new();
        let mut push = |ip: IpAddr| {
            if !requested.contains(&ip) {
                requested.push(ip);
            }
        };
        if let Some(v) = args_ip.filter(|v| !v.is_empty()) {
            push(parse_ip_maybe_cidr(v).ok_or_else(|| ConfigError::InvalidArgsIp(v.into()))?);
        }
        let args_ips = raw
            .args
            .and_then(|a| a.cni)
            .and_then(|c| c.ips)
            .unwrap_or_default();
        let rc = raw.runtime_config.unwrap_or_default();
        for s in args_ips.iter().chain(rc.ips.iter().flatten()) {
            push(parse_ip_maybe_cidr(s).ok_or_else(|| ConfigError::InvalidRequestedIp(s.clone()))?);
        }

        let mut raw_sets: Vec<Vec<RawRange>> = rc.ip_ranges.unwrap_or_default();
        let legacy = RawRange {
            subnet: ipam.subnet,
            range_start: ipam.range_start,
            range_end: ipam.range_end,
            gateway: ipam.gateway,
        };
        if legacy.has_subnet() {
            raw_sets.push(vec![legacy]);
        }
        raw_sets.extend(ipam.ranges.unwrap_or_default());
        if raw_sets.is_empty() {
            return Err(ConfigError::NoRanges);
        }
        let mut range_sets = Vec::with_capacity(raw_sets.len());
        for (idx, set) in raw_sets.iter().enumerate() {
            range_sets.push(
                RangeSet::from_raw(set).map_err(|e| ConfigError::InvalidRangeSet {
                    idx,
                    source: Box::new(e),
                })?,
            );
        }
        let version = raw.cni_version.unwrap_or_default();
        let v4 = range_sets.iter().filter(|s| s.is_ipv4()).count();
        let v6 = range_sets.len() - v4;
        if (v4 > 1 || v6 > 1) && matches!(version.as_str(), "" | "0.1.0" | "0.2.0") {
            return Err(ConfigError::TooManyPerFamily(version));
        }
        for (i, a) in range_sets.iter().enumerate() {
            for (j, b) in range_sets.iter().enumerate().skip(i + 1) {
                if a.overlaps(b) {
                    return Err(ConfigError::SetsOverlap(i, j));
                }
            }
        }
        let data_dir = PathBuf::from(
            ipam.data_dir
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| DEFAULT_DATA_DIR.to_string()),
        );
        Ok(IpamConfig {
            name: raw.name,
            cni_version: version,
            data_dir,
            range_sets,
            routes: ipam.routes.unwrap_or_default(),
            resolv_conf: ipam.resolv_conf.filter(|r| !r.is_empty()),
            requested,
        })
    }

    /// The lease directory of this network.
    pub fn network_dir(&self) -> PathBuf {
        self.data_dir.join(&self.name)
    }

    /// Assign requested addresses to range sets: each set takes the first requested address it
    /// holds. Fails before any lease is written when an address is a gateway or fits no set
    /// (the reference only finds out after allocating, then rolls back).
    pub fn plan_requests(&self) -> Result<Vec<Option<IpAddr>>, ConfigError> {
        let mut left = self.requested.clone();
        let mut plan = Vec::with_capacity(self.range_sets.len());
        for (idx, set) in self.range_sets.iter().enumerate() {
            let pos = left.iter().position(|ip| set.contains(*ip));
            let req = pos.map(|p| left.remove(p));
            if let Some(ip) = req {
                if set.range_for(ip).is_some_and(|r| r.gateway == ip) {
                    return Err(ConfigError::RequestedGateway { idx, ip });
                }
            }
            plan.push(req);
        }
        if !left.is_empty() {
            return Err(ConfigError::RequestedUnused(left));
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn load(v: Value, args_ip: Option<&str>) -> Result<IpamConfig, ConfigError> {
        IpamConfig::load(serde_json::from_value(v).unwrap(), args_ip)
    }

    fn err(v: Value) -> String {
        load(v, None).unwrap_err().to_string()
    }

    #[test]
    fn legacy_range_is_prepended_and_ip_ranges_before_it() {
        let c = load(
            serde_json::json!({"cniVersion":"1.0.0","name":"n","ipam":{
                "subnet":"10.1.0.0/24",
                "ranges":[[{"subnet":"fd00::/64"}]]},
                "runtimeConfig":{"ipRanges":[[{"subnet":"10.9.0.0/24"}]]}}),
            None,
        )
        .unwrap();
        let firsts: Vec<String> = c
            .range_sets
            .iter()
            .map(|s| s.0[0].subnet.to_string())
            .collect();
        assert_eq!(firsts, ["10.9.0.0/24", "10.1.0.0/24", "fd00::/64"]);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn reference_messages() {
        assert_eq!(
            err(serde_json::json!({"name":"n"})),
            "IPAM config missing 'ipam' key"
        );
        assert_eq!(
            err(serde_json::json!({"name":"n","ipam":{}})),
            "no IP ranges specified"
        );
        assert_eq!(
            err(
                serde_json::json!({"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[
                [{"subnet":"10.5.0.0/24"}],[{"subnet":"10.5.0.0/16"}]]}})
            ),
            "range set 0 overlaps with 1"
        );
        assert_eq!(
            err(
                serde_json::json!({"cniVersion":"0.2.0","name":"n","ipam":{"ranges":[
                [{"subnet":"10.5.0.0/24"}],[{"subnet":"10.6.0.0/25"}]]}})
            ),
            "CNI version 0.2.0 does not support more than 1 address per family"
        );
        assert_eq!(
            err(
                serde_json::json!({"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[
                [{"subnet":"10.5.0.0/24"}],[]]}})
            ),
            "invalid range set 1: empty range set"
        );
        assert_eq!(
            err(serde_json::json!({"name":"n","ipam":{"subnet":"10.4.0.0/31"}})),
            "invalid range set 0: Network 10.4.0.0/31 too small to allocate from"
        );
    }

    #[test]
    fn requested_ips_merge_and_plan() {
        let c = load(
            serde_json::json!({"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[
                [{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/64"}]]},
                "args":{"cni":{"ips":["fd00::7/64"]}},
                "runtimeConfig":{"ips":["10.1.0.5"]}}),
            Some("10.1.0.5/24"),
        )
        .unwrap();
        assert_eq!(c.requested.len(), 2);
        let plan = c.plan_requests().unwrap();
        assert_eq!(
            plan,
            vec![
                Some("10.1.0.5".parse().unwrap()),
                Some("fd00::7".parse().unwrap())
            ]
        );

        let c = load(
            serde_json::json!({"name":"n","ipam":{"subnet":"10.1.0.0/24"}}),
            Some("10.1.0.1"),
        )
        .unwrap();
        assert_eq!(
            c.plan_requests().unwrap_err().to_string(),
            "failed to allocate for range 0: requested ip 10.1.0.1 is subnet's gateway"
        );
        let c = load(
            serde_json::json!({"name":"n","ipam":{"subnet":"10.1.0.0/24"}}),
            Some("10.9.0.1"),
        )
        .unwrap();
        assert_eq!(
            c.plan_requests().unwrap_err().to_string(),
            "failed to allocate all requested IPs: 10.9.0.1"
        );
        assert_eq!(
            load(
                serde_json::json!({"name":"n","ipam":{"subnet":"10.1.0.0/24"}}),
                Some("bogus")
            )
            .unwrap_err()
            .to_string(),
            "ARGS: error parsing value of pair \"IP=bogus\": invalid IP address bogus"
        );
    }
}
