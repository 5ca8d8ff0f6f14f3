//! Address ranges and range sets, with the reference's canonicalisation rules.
//!
//! A [`Range`] is a subnet plus an inclusive `[start, end]` window and a gateway; a [`RangeSet`]
//! is a non-empty list of non-overlapping ranges of one family from which exactly one address is
//! allocated per ADD. Defaults, validation order and messages follow the reference plugin so that
//! users see the same diagnostics after swapping binaries.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::Deserialize;

use crate::error::ConfigError;

/// One range as written in the config (`subnet`, `rangeStart`, `rangeEnd`, `gateway`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct RawRange {
    /// CIDR of the network, e.g. `10.1.0.0/16`; no host bits allowed.
    #[serde(default)]
    pub subnet: Option<String>,
    /// First allocatable address (default: network + 1).
    #[serde(default, rename = "rangeStart")]
    pub range_start: Option<String>,
    /// Last allocatable address (default: broadcast − 1 for IPv4, last address for IPv6).
    #[serde(default, rename = "rangeEnd")]
    pub range_end: Option<String>,
    /// Gateway returned in the result and never allocated (default: network + 1).
    #[serde(default)]
    pub gateway: Option<String>,
}

impl RawRange {
    /// True when no subnet is given: the legacy top-level range is then absent.
    pub fn has_subnet(&self) -> bool {
        self.subnet.as_deref().is_some_and(|s| !s.is_empty())
    }
}

/// A validated range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet as written (network address, prefix).
    pub subnet: IpNet,
    /// First allocatable address, inclusive.
    pub start: IpAddr,
    /// Last allocatable address, inclusive.
    pub end: IpAddr,
    /// Gateway of the subnet.
    pub gateway: IpAddr,
}

/// A validated, non-empty, single-family list of non-overlapping ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet(pub Vec<Range>);

/// Address as an integer, so that v4 and v6 share the arithmetic.
pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Inverse of [`ip_to_u128`] for the family of `like`.
pub fn u128_to_ip(v: u128, like: IpAddr) -> IpAddr {
    match like {
        // Truncation is intended: v4 values never exceed u32 inside a v4 range.
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(v as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// The next address, wrapping at the top of the family like Go's `ip.NextIP`.
pub fn next_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(1))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(1))),
    }
}

/// IPv4-mapped IPv6 addresses are treated as IPv4, as Go's `To4()` canonicalisation does.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// Parse an address the way the reference's JSON decoding does (`invalid IP address: X`).
pub fn parse_ip(s: &str) -> Result<IpAddr, ConfigError> {
    s.parse::<IpAddr>()
        .map(canonical_ip)
        .map_err(|_| ConfigError::InvalidIp(s.to_string()))
}

/// Parse an address that may carry a prefix (`10.1.0.5` or `10.1.0.5/24`), the form accepted for
/// requested IPs (CNI_ARGS `IP`, `args.cni.ips`, `runtimeConfig.ips`).
pub fn parse_ip_maybe_cidr(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let ip = if s.contains('/') {
        s.parse::<IpNet>().ok()?.addr()
    } else {
        s.parse::<IpAddr>().ok()?
    };
    Some(canonical_ip(ip))
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// Last usable address of a subnet: broadcast − 1 for IPv4, the last address for IPv6.
fn last_ip(subnet: &IpNet) -> IpAddr {
    match subnet {
        IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.broadcast()).wrapping_sub(1))),
        IpNet::V6(n) => IpAddr::V6(n.broadcast()),
    }
}

impl Range {
    /// Validate and fill defaults, in the reference's order (so the first reported problem is
    /// the same): subnet size, host bits, gateway, rangeStart, rangeEnd.
    pub fn from_raw(raw: &RawRange) -> Result<Range, ConfigError> {
        let subnet_s = raw.subnet.as_deref().unwrap_or("");
        if subnet_s.is_empty() {
            return Err(ConfigError::MissingSubnet);
        }
        let subnet: IpNet = subnet_s
            .parse()
            .map_err(|_| ConfigError::InvalidCidr(subnet_s.to_string()))?;
        if subnet.prefix_len() + 2 > subnet.max_prefix_len() {
            return Err(ConfigError::TooSmall(subnet.to_string()));
        }
        if subnet.addr() != subnet.network() {
            return Err(ConfigError::HostBits {
                prefix: subnet.prefix_len(),
                network: subnet.network(),
            });
        }
        let network = subnet.network();
        // Go's JSON decoding of net.IP maps "" to nil: an empty string means "use the default".
        let opt = |s: &Option<String>| -> Result<Option<IpAddr>, ConfigError> {
            match s.as_deref() {
                None | Some("") => Ok(None),
                Some(v) => parse_ip(v).map(Some),
            }
        };
        let gateway = opt(&raw.gateway)?.unwrap_or_else(|| next_ip(network));
        let raw_start = opt(&raw.range_start)?;
        let raw_end = opt(&raw.range_end)?;
        let mut r = Range {
            subnet,
            start: network,
            end: network,
            gateway,
        };
        // The reference checks rangeStart against the subnet *and* a given rangeEnd, then
        // rangeEnd against the (possibly defaulted) start: start > end reports the start.
        let start = match raw_start {
            Some(s) => {
                if !r.contains_bounds(s, Some(s), raw_end) {
                    return Err(ConfigError::StartNotInNetwork(s, subnet.to_string()));
                }
                s
            }
            None => next_ip(network),
        };
        r.start = start;
        let end = match raw_end {
            Some(e) => {
                if !r.contains_bounds(e, Some(start), Some(e)) {
                    return Err(ConfigError::EndNotInNetwork(e, subnet.to_string()));
                }
                e
            }
            None => last_ip(&subnet),
        };
        r.end = end;
        Ok(r)
    }

    fn contains_bounds(&self, ip: IpAddr, start: Option<IpAddr>, end: Option<IpAddr>) -> bool {
        let ip = canonical_ip(ip);
        if !same_family(ip, self.subnet.addr()) || !self.subnet.contains(&ip) {
            return false;
        }
        let v = ip_to_u128(ip);
        if start.is_some_and(|s| v < ip_to_u128(s)) {
            return false;
        }
        if end.is_some_and(|e| v > ip_to_u128(e)) {
            return false;
        }
        true
    }

    /// True when `ip` is inside the subnet and within `[start, end]`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.contains_bounds(ip, Some(self.start), Some(self.end))
    }

    /// The reference's overlap test: same family and either range holds a bound of the other.
    pub fn overlaps(&self, other: &Range) -> bool {
        if !same_family(self.start, other.start) {
            return false;
        }
        self.contains(other.start)
            || self.contains(other.end)
            || other.contains(self.start)
            || other.contains(self.end)
    }

    /// Number of allocatable addresses (the gateway excluded), saturating for huge v6 ranges.
    pub fn capacity(&self) -> u128 {
        let n = (ip_to_u128(self.end) - ip_to_u128(self.start)).saturating_add(1);
        if self.contains(self.gateway) {
            n - 1
        } else {
            n
        }
    }

    /// True for IPv4 ranges.
    pub fn is_ipv4(&self) -> bool {
        self.start.is_ipv4()
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl RangeSet {
    /// Validate a set: non-empty, every range valid, one family, no overlap inside the set.
    pub fn from_raw(raw: &[RawRange]) -> Result<RangeSet, ConfigError> {
        if raw.is_empty() {
            return Err(ConfigError::EmptyRangeSet);
        }
        let mut ranges: Vec<Range> = Vec::with_capacity(raw.len());
        for r in raw {
            let r = Range::from_raw(r)?;
            if let Some(first) = ranges.first() {
                if first.is_ipv4() != r.is_ipv4() {
                    return Err(ConfigError::MixedFamilies);
                }
            }
            ranges.push(r);
        }
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                if a.overlaps(b) {
                    return Err(ConfigError::SubnetsOverlap(a.to_string(), b.to_string()));
                }
            }
        }
        Ok(RangeSet(ranges))
    }

    /// The range holding `ip`, if any.
    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.0.iter().find(|r| r.contains(ip))
    }

    /// True when some range of the set holds `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    /// True when any range of one set overlaps any range of the other.
    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.0.iter().any(|a| other.0.iter().any(|b| a.overlaps(b)))
    }

    /// True for IPv4 sets.
    pub fn is_ipv4(&self) -> bool {
        self.0.first().is_some_and(Range::is_ipv4)
    }

    /// Allocatable addresses over all ranges (gateways excluded), saturating.
    pub fn capacity(&self) -> u128 {
        self.0
            .iter()
            .fold(0u128, |acc, r| acc.saturating_add(r.capacity()))
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// The reference's round-robin cursor over a range set: starts after the last reserved address
/// (or at the first range's start), walks every range in order, wraps, skips gateways, and stops
/// after one full turn.
pub struct RangeIter<'a> {
    set: &'a RangeSet,
    range_idx: usize,
    cur: Option<IpAddr>,
    start_ip: Option<IpAddr>,
}

impl<'a> RangeIter<'a> {
    /// A cursor positioned after `last_reserved` when that address is in the set.
    pub fn new(set: &'a RangeSet, last_reserved: Option<IpAddr>) -> RangeIter<'a> {
        let mut it = RangeIter {
            set,
            range_idx: 0,
            cur: None,
            start_ip: None,
        };
        if let Some(last) = last_reserved {
            if let Some(idx) = set.0.iter().position(|r| r.contains(last)) {
                it.range_idx = idx;
                it.cur = Some(canonical_ip(last));
            }
        }
        it
    }
}

impl Iterator for RangeIter<'_> {
    /// An address and the range it came from.
    type Item = (IpAddr, Range);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let mut r = self.set.0.get(self.range_idx)?;
            let cur = match self.cur {
                None => {
                    self.cur = Some(r.start);
                    self.start_ip = Some(r.start);
                    if r.start == r.gateway {
                        continue;
                    }
                    return Some((r.start, r.clone()));
                }
                Some(c) => c,
            };
            let next = if cur == r.end {
                self.range_idx = (self.range_idx + 1) % self.set.0.len();
                r = self.set.0.get(self.range_idx)?;
                r.start
            } else {
                next_ip(cur)
            };
            self.cur = Some(next);
            match self.start_ip {
                None => self.start_ip = Some(next),
                Some(s) if s == next => return None,
                Some(_) => {}
            }
            if next == r.gateway {
                continue;
            }
            return Some((next, r.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn raw(subnet: &str) -> RawRange {
        RawRange {
            subnet: Some(subnet.into()),
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_v4_and_v6() {
        let r = Range::from_raw(&raw("10.1.0.0/24")).unwrap();
        assert_eq!(
            (r.start, r.end, r.gateway),
            (ip("10.1.0.1"), ip("10.1.0.254"), ip("10.1.0.1"))
        );
        let r = Range::from_raw(&raw("fd00::/120")).unwrap();
        assert_eq!((r.start, r.end), (ip("fd00::1"), ip("fd00::ff")));
    }

    #[test]
    fn validation_messages() {
        let e = |s: &str| Range::from_raw(&raw(s)).unwrap_err().to_string();
        assert_eq!(e("10.4.0.0/33"), "invalid CIDR address: 10.4.0.0/33");
        assert_eq!(
            e("10.4.0.5/24"),
            "Network has host bits set. For a subnet mask of length 24 the network address is 10.4.0.0"
        );
        assert_eq!(
            e("10.4.0.0/31"),
            "Network 10.4.0.0/31 too small to allocate from"
        );
        assert_eq!(
            e("fd00::/127"),
            "Network fd00::/127 too small to allocate from"
        );
        let mut r = raw("10.5.0.0/24");
        r.range_start = Some("10.6.0.1".into());
        assert_eq!(
            Range::from_raw(&r).unwrap_err().to_string(),
            "RangeStart 10.6.0.1 not in network 10.5.0.0/24"
        );
        r.range_start = Some("10.5.0.201".into());
        r.range_end = Some("10.5.0.200".into());
        assert_eq!(
            Range::from_raw(&r).unwrap_err().to_string(),
            "RangeStart 10.5.0.201 not in network 10.5.0.0/24"
        );
        r.range_start = None;
        r.range_end = Some("10.5.1.200".into());
        assert_eq!(
            Range::from_raw(&r).unwrap_err().to_string(),
            "RangeEnd 10.5.1.200 not in network 10.5.0.0/24"
        );
        r.range_end = None;
        r.gateway = Some("bogus".into());
        assert_eq!(
            Range::from_raw(&r).unwrap_err().to_string(),
            "invalid IP address: bogus"
        );
    }

    #[test]
    fn sets_reject_mixed_and_overlap() {
        assert_eq!(
            RangeSet::from_raw(&[raw("10.5.0.0/24"), raw("fd00::/64")])
                .unwrap_err()
                .to_string(),
            "mixed address families"
        );
        assert_eq!(
            RangeSet::from_raw(&[raw("10.5.0.0/24"), raw("10.5.0.0/25")])
                .unwrap_err()
                .to_string(),
            "subnets 10.5.0.1-10.5.0.254 and 10.5.0.1-10.5.0.126 overlap"
        );
        assert_eq!(
            RangeSet::from_raw(&[]).unwrap_err().to_string(),
            "empty range set"
        );
    }

    #[test]
    fn iterator_wraps_skips_gateway_and_stops() {
        let set = RangeSet::from_raw(&[raw("10.2.0.0/29"), raw("10.3.0.0/30")]).unwrap();
        let all: Vec<String> = RangeIter::new(&set, None)
            .map(|(a, _)| a.to_string())
            .collect();
        assert_eq!(
            all,
            ["10.2.0.2", "10.2.0.3", "10.2.0.4", "10.2.0.5", "10.2.0.6", "10.3.0.2"]
        );
        let from: Vec<String> = RangeIter::new(&set, Some(ip("10.2.0.5")))
            .map(|(a, _)| a.to_string())
            .collect();
        assert_eq!(
            from,
            ["10.2.0.6", "10.3.0.2", "10.2.0.2", "10.2.0.3", "10.2.0.4", "10.2.0.5"]
        );
        // A last-reserved address outside the set restarts at the first range.
        let out: Vec<String> = RangeIter::new(&set, Some(ip("192.168.0.1")))
            .map(|(a, _)| a.to_string())
            .collect();
        assert_eq!(out, all);
    }

    #[test]
    fn gateway_only_range_yields_nothing() {
        let mut r = raw("10.2.0.0/30");
        r.range_end = Some("10.2.0.1".into());
        let set = RangeSet::from_raw(&[r]).unwrap();
        assert_eq!(RangeIter::new(&set, None).count(), 0);
        assert_eq!(set.capacity(), 0);
    }

    #[test]
    fn requested_ip_forms() {
        assert_eq!(parse_ip_maybe_cidr("10.1.0.5"), Some(ip("10.1.0.5")));
        assert_eq!(parse_ip_maybe_cidr("10.1.0.5/24"), Some(ip("10.1.0.5")));
        assert_eq!(parse_ip_maybe_cidr("fd00::5/64"), Some(ip("fd00::5")));
        assert_eq!(parse_ip_maybe_cidr("10.1.0.5/33"), None);
        assert_eq!(parse_ip_maybe_cidr("bogus"), None);
        assert_eq!(parse_ip_maybe_cidr("::ffff:10.1.0.5"), Some(ip("10.1.0.5")));
    }
}
