//! nftables port forwarding (portmap) in the suite's table `inet rcni`,
//! with the same discipline as masquerade: one netlink transaction per call, the firewall
//! flock, idempotent creation, owners carried in element comments.
//!
//! Layout (as `nft list table inet rcni` prints it, masquerade objects omitted):
//!
//! ```text
//! map hostports4 { type inet_proto . inet_service : ipv4_addr . inet_service
//!     elements = { tcp . 8080 comment "<nethash>-<ownerhash> ctr:<ctrhash> net: n, id: c, if: eth0"
//!                  : 10.22.0.2 . 80 } }
//! map hostips4   { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service }
//! map hostports6 { type inet_proto . inet_service : ipv6_addr . inet_service }
//! map hostips6   { type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service }
//! set hostport-masqall4 { type ipv4_addr }      # container addresses of masqAll attachments
//! set hostport-masqall6 { type ipv6_addr }
//! map hostport-standby4 { type ipv4_addr . inet_proto . inet_service . mark : ipv4_addr . inet_service
//!     elements = { 0.0.0.0 . tcp . 8080 . 0x1a2b3c4d comment "<nethash b>-<ownerhash> ctr:<ctrhash> net: b, …"
//!                  : 10.33.0.2 . 80 } }        # 0.0.0.0 = the hostports4 key, else hostips4
//! map hostport-standby6 { type ipv6_addr . inet_proto . inet_service . mark : ipv6_addr . inet_service }
//! chain hostport-prerouting { type nat hook prerouting priority dstnat; policy accept;
//!     fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @hostips4
//!     fib daddr type local dnat ip to meta l4proto . th dport map @hostports4
//!     (the same two for ip6) }
//! chain hostport-output { type nat hook output priority dstnat; … the same four rules }
//! chain hostport-postrouting { type nat hook postrouting priority srcnat; policy accept;
//!     ip saddr 127.0.0.0/8 ct status dnat masquerade            # 127.0.0.1:hostPort from the host
//!     ct status dnat ip daddr @hostport-masqall4 masquerade
//!     ct status dnat ip6 daddr @hostport-masqall6 masquerade
//!     ct status dnat ip saddr 10.22.0.0/24 ip daddr 10.22.0.0/24 masquerade   # hairpin, per subnet
//! }
//! ```
//!
//! Why this shape:
//! * A published port is ONE map element whose data is the DNAT target (`ipv4_addr .
//!   inet_service`), not a verdict: elements carrying jumps make the kernel re-validate the whole
//!   table on every commit (cost grows with containers, see [`crate::nft`]); data elements do
//!   not. ADD is one keyed lookup per mapping (to refuse a port another attachment holds) plus
//!   the element adds; DEL deletes the owner's elements. Neither depends on how many containers
//!   exist. The fixed rules are created once.
//! * The hostIP maps come first so a specific address wins over "any"; `fib daddr type local`
//!   restricts DNAT to traffic addressed to this host (the reference's `--dst-type LOCAL`).
//! * Hairpin (a container reaching its own or a neighbour's published port) must be
//!   masqueraded or the reply bypasses the DNAT; instead of the reference's packet mark, the
//!   postrouting chain matches `ct status dnat` with source and destination in the container
//!   subnet: one rule per (network, subnet), tagged `hp-<nethash>:<subnet>`, removed with the
//!   last element of that subnet. Localhost needs `route_localnet=1` (set by the plugin) and the
//!   fixed 127.0.0.0/8 rule.
//! * Each element comment starts with [`crate::names::owner_tag`], so DEL needs neither
//!   prevResult nor the mappings, and GC finds stale owners by dumping our maps. The second
//!   token, `ctr:<16 hex>` ([`crate::names::container_hash`]), names the container.
//! * One container may publish the same host port on several attachments: Podman passes a
//!   container's portMappings to every network it joins (`--network a,b -p 8087:80`, `network
//!   connect`), like the reference, whose per-attachment DNAT chains let the first match and the
//!   next take over when the first is deleted. Here the first attachment's element is active;
//!   a later attachment of the SAME container (compared by `ctr:`) records its target in the
//!   standby map, keyed by the active key plus a 32-bit mark of its owner tag (so several
//!   standbys coexist and each one names its active key). DEL of the active owner deletes its
//!   element and, in the same transaction, adds the first remaining standby's target under that
//!   key and deletes the standby (GC does the same for the keys it frees; a standby whose active
//!   element is gone is promoted by the next DEL/GC). DEL of a standby owner removes its standby
//!   elements only. A host port held by ANOTHER container is still refused before any change.
//!   The standby maps hold only such duplicates: ADD costs one more keyed lookup per duplicate
//!   mapping, DEL reads them along with the other maps.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use ipnet::IpNet;
use nftnl::expr::Masquerade;
use nftnl::{ChainType, Hook, ProtoFamily};

use crate::names::{
    bounded_comment, container_hash, network_hash, owner_tag, parse_subnet_tag, subnet_tag,
    tag_of_comment,
};
use crate::nft::batch::{BaseChain, Body, Op};
use crate::nft::netlink::Nl;
use crate::nft::object::{
    addr_load, bitwise_and, boxed, cmp, ct, daddr_is_local, dnat, lookup, meta, nfproto, payload,
    prefix_match, Expr, SetDef, CMP_NEQ, R1, R32,
};
use crate::nft::{keep_err, RuleInfo, TABLE};
use crate::portmap::{PortForward, PortmapSpec, Proto};
use crate::{lock, validate_owner, Error, Family, LOCK_PATH};

/// dstnat priority (prerouting/output).
pub const DSTNAT_PRIORITY: i32 = -100;
/// srcnat priority.
pub const SRCNAT_PRIORITY: i32 = 100;

/// Our three base chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HpChain {
    /// nat prerouting dstnat: DNAT of traffic from outside and from containers.
    Prerouting,
    /// nat output dstnat: DNAT of traffic from the host itself.
    Output,
    /// nat postrouting srcnat: hairpin / localhost / masqAll masquerade.
    Postrouting,
}

impl HpChain {
    /// All, in creation order.
    pub const ALL: [HpChain; 3] = [HpChain::Prerouting, HpChain::Output, HpChain::Postrouting];
    /// Chain name.
    pub fn name(self) -> &'static str {
        match self {
            HpChain::Prerouting => "hostport-prerouting",
            HpChain::Output => "hostport-output",
            HpChain::Postrouting => "hostport-postrouting",
        }
    }
    fn hook(self) -> (Hook, i32, &'static str) {
        match self {
            HpChain::Prerouting => (
                Hook::PreRouting,
                DSTNAT_PRIORITY,
                "nat hook prerouting priority dstnat",
            ),
            HpChain::Output => (
                Hook::Out,
                DSTNAT_PRIORITY,
                "nat hook output priority dstnat",
            ),
            HpChain::Postrouting => (
                Hook::PostRouting,
                SRCNAT_PRIORITY,
                "nat hook postrouting priority srcnat",
            ),
        }
    }
    /// Fixed rules at the head of the chain, in order.
    pub(crate) fn fixed(self) -> Vec<(Body, &'static str)> {
        match self {
            HpChain::Prerouting | HpChain::Output => vec![
                (dnat_rule(Slot::Ips4), "rcni: hostport dnat ip4"),
                (dnat_rule(Slot::Ports4), "rcni: hostport dnat any4"),
                (dnat_rule(Slot::Ips6), "rcni: hostport dnat ip6"),
                (dnat_rule(Slot::Ports6), "rcni: hostport dnat any6"),
            ],
            HpChain::Postrouting => vec![
                (localhost_masq(), "rcni: hostport localhost4"),
                (masq_all(false), "rcni: hostport masqall4"),
                (masq_all(true), "rcni: hostport masqall6"),
            ],
        }
    }
    /// Creates the chain if absent.
    fn add(self) -> Op {
        let (hook, priority, text) = self.hook();
        Op::AddChain {
            name: self.name(),
            base: Some(BaseChain {
                hook,
                priority,
                kind: ChainType::Nat,
                text,
            }),
        }
    }
}

/// The maps and sets holding per-attachment state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    /// `hostports4`: proto . port -> v4 target
    Ports4,
    /// `hostips4`: v4 host address . proto . port -> v4 target
    Ips4,
    /// `hostports6`
    Ports6,
    /// `hostips6`
    Ips6,
    /// `hostport-masqall4`: plain set of v4 container addresses
    MasqAll4,
    /// `hostport-masqall6`
    MasqAll6,
    /// `hostport-standby4`: v4 host address (0.0.0.0 = any) . proto . port . owner mark -> v4
    /// target: mappings of a container's other attachments waiting for the active one's DEL
    Standby4,
    /// `hostport-standby6`: the same for IPv6 (`::` = any)
    Standby6,
}

// nft datatype ids (nftables' enum datatypes) and the concatenation rule (id << 6 | next).
const T_IPV4: u32 = 7;
const T_IPV6: u32 = 8;
const T_PROTO: u32 = 12;
const T_SERVICE: u32 = 13;
const T_MARK: u32 = 19;
const fn cat(a: u32, b: u32) -> u32 {
    (a << 6) | b
}

impl Slot {
    /// All, in creation order.
    pub const ALL: [Slot; 8] = [
        Slot::Ports4,
        Slot::Ips4,
        Slot::Ports6,
        Slot::Ips6,
        Slot::MasqAll4,
        Slot::MasqAll6,
        Slot::Standby4,
        Slot::Standby6,
    ];
    /// Object name.
    pub fn name(self) -> &'static str {
        match self {
            Slot::Ports4 => "hostports4",
            Slot::Ips4 => "hostips4",
            Slot::Ports6 => "hostports6",
            Slot::Ips6 => "hostips6",
            Slot::MasqAll4 => "hostport-masqall4",
            Slot::MasqAll6 => "hostport-masqall6",
            Slot::Standby4 => "hostport-standby4",
            Slot::Standby6 => "hostport-standby6",
        }
    }
    fn id(self) -> u32 {
        // Transaction-local ids, distinct from the masquerade sets' 1 and 2.
        20 + self as u32
    }
    fn is_map(self) -> bool {
        !matches!(self, Slot::MasqAll4 | Slot::MasqAll6)
    }
    fn v6(self) -> bool {
        matches!(
            self,
            Slot::Ports6 | Slot::Ips6 | Slot::MasqAll6 | Slot::Standby6
        )
    }
    /// The maps the DNAT rules read (one active mapping per host port).
    fn is_active_map(self) -> bool {
        matches!(self, Slot::Ports4 | Slot::Ips4 | Slot::Ports6 | Slot::Ips6)
    }
    /// Where the standbys of an active map live.
    fn standby(self) -> Slot {
        if self.v6() {
            Slot::Standby6
        } else {
            Slot::Standby4
        }
    }
    /// (key type, key len, data type, data len); data 0 for plain sets.
    fn types(self) -> (u32, u32, u32, u32) {
        let d4 = (cat(T_IPV4, T_SERVICE), 8);
        let d6 = (cat(T_IPV6, T_SERVICE), 20);
        let pp = (cat(T_PROTO, T_SERVICE), 8);
        match self {
            Slot::Ports4 => (pp.0, pp.1, d4.0, d4.1),
            Slot::Ips4 => (cat(cat(T_IPV4, T_PROTO), T_SERVICE), 12, d4.0, d4.1),
            Slot::Ports6 => (pp.0, pp.1, d6.0, d6.1),
            Slot::Ips6 => (cat(cat(T_IPV6, T_PROTO), T_SERVICE), 24, d6.0, d6.1),
            Slot::MasqAll4 => (T_IPV4, 4, 0, 0),
            Slot::MasqAll6 => (T_IPV6, 16, 0, 0),
            Slot::Standby4 => (
                cat(cat(cat(T_IPV4, T_PROTO), T_SERVICE), T_MARK),
                16,
                d4.0,
                d4.1,
            ),
            Slot::Standby6 => (
                cat(cat(cat(T_IPV6, T_PROTO), T_SERVICE), T_MARK),
                28,
                d6.0,
                d6.1,
            ),
        }
    }
    fn key_len(self) -> usize {
        self.types().1 as usize
    }
    fn type_str(self) -> &'static str {
        match self {
            Slot::Ports4 => "inet_proto . inet_service : ipv4_addr . inet_service",
            Slot::Ips4 => "ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service",
            Slot::Ports6 => "inet_proto . inet_service : ipv6_addr . inet_service",
            Slot::Ips6 => "ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service",
            Slot::MasqAll4 => "ipv4_addr",
            Slot::MasqAll6 => "ipv6_addr",
            Slot::Standby4 => {
                "ipv4_addr . inet_proto . inet_service . mark : ipv4_addr . inet_service"
            }
            Slot::Standby6 => {
                "ipv6_addr . inet_proto . inet_service . mark : ipv6_addr . inet_service"
            }
        }
    }
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// A 2-byte big-endian port in a 4-byte register slot.
fn port_reg(p: u16) -> [u8; 4] {
    let b = p.to_be_bytes();
    [b[0], b[1], 0, 0]
}

/// Key bytes of a port map element (concatenation components padded to 4 bytes).
pub fn port_key(host_ip: Option<IpAddr>, proto: Proto, port: u16) -> Vec<u8> {
    let mut k = host_ip.map(ip_bytes).unwrap_or_default();
    k.extend([proto.number(), 0, 0, 0]);
    k.extend(port_reg(port));
    k
}

/// Data bytes of a DNAT target.
pub fn target_data(ip: IpAddr, port: u16) -> Vec<u8> {
    let mut d = ip_bytes(ip);
    d.extend(port_reg(port));
    d
}

fn ip_from(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
        _ => None,
    }
}

fn port_from(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
}

/// One element of our maps/sets as stored in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PmElem {
    /// which map/set
    pub slot: Slot,
    /// raw key
    pub key: Vec<u8>,
    /// raw data (empty for sets)
    pub data: Vec<u8>,
    /// owner comment
    pub comment: String,
}

impl PmElem {
    /// Owner tag at the start of the comment.
    pub fn tag(&self) -> &str {
        tag_of_comment(&self.comment)
    }
    /// The container address this element points at (DNAT target or masqAll address).
    pub fn container_ip(&self) -> Option<IpAddr> {
        if self.slot.is_map() {
            let n = if self.slot.v6() { 16 } else { 4 };
            ip_from(self.data.get(..n)?)
        } else {
            ip_from(&self.key)
        }
    }
    /// Human-readable key.
    pub fn key_str(&self) -> String {
        key_str(self.slot, &self.key)
    }
    /// The element as nft prints it: key, and ` : data` for a map.
    fn text(&self) -> String {
        if self.slot.is_map() {
            format!("{} : {}", self.key_str(), self.data_str())
        } else {
            self.key_str()
        }
    }
    fn data_str(&self) -> String {
        let n = if self.slot.v6() { 16 } else { 4 };
        match (
            self.data.get(..n).and_then(ip_from),
            self.data.get(n..).and_then(port_from),
        ) {
            (Some(ip), Some(p)) => format!("{ip} . {p}"),
            _ => String::new(),
        }
    }
}

fn key_str(slot: Slot, key: &[u8]) -> String {
    if !slot.is_map() {
        return ip_from(key).map(|i| i.to_string()).unwrap_or_default();
    }
    let n = match slot {
        Slot::Ips4 | Slot::Standby4 => 4,
        Slot::Ips6 | Slot::Standby6 => 16,
        _ => 0,
    };
    let mut s = String::new();
    if n > 0 {
        if let Some(ip) = key.get(..n).and_then(ip_from) {
            s.push_str(&format!("{ip} . "));
        }
    }
    let proto = key
        .get(n)
        .and_then(|p| Proto::from_number(*p))
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| format!("{}", key.get(n).copied().unwrap_or(0)));
    let port = key.get(n + 4..).and_then(port_from).unwrap_or(0);
    s.push_str(&format!("{proto} . {port}"));
    if let Some(m) = key.get(n + 8..n + 12) {
        let mut b = [0u8; 4];
        b.copy_from_slice(m);
        s.push_str(&format!(" . {:#010x}", u32::from_ne_bytes(b)));
    }
    s
}

/// Standby key of an attachment's mapping: the active key with the host address made explicit
/// (all zeros = any, which no hostIP map key can be) and the owner's mark appended, so the
/// standbys of several attachments of one container coexist and the active key is recovered
/// from a standby element alone ([`active_of_standby`]).
pub fn standby_key(active: Slot, key: &[u8], owner_tag: &str) -> (Slot, Vec<u8>) {
    let standby = active.standby();
    let mut k = match active {
        Slot::Ports4 => vec![0; 4],
        Slot::Ports6 => vec![0; 16],
        _ => Vec::new(),
    };
    k.extend_from_slice(key);
    k.extend(owner_mark(owner_tag).to_ne_bytes());
    (standby, k)
}

/// 32 bits of sha512(owner tag): tells apart the standbys of one container's attachments.
fn owner_mark(owner_tag: &str) -> u32 {
    let h = crate::names::sha512_hex(owner_tag.as_bytes());
    u32::from_str_radix(&h[..8], 16).unwrap_or(0)
}

/// The active (map, key) a standby element stands in for.
pub fn active_of_standby(e: &PmElem) -> Option<(Slot, Vec<u8>)> {
    let (n, any, ips) = match e.slot {
        Slot::Standby4 => (4, Slot::Ports4, Slot::Ips4),
        Slot::Standby6 => (16, Slot::Ports6, Slot::Ips6),
        _ => return None,
    };
    let addr = e.key.get(..n)?;
    let rest = e.key.get(n..n + 8)?;
    Some(if addr.iter().all(|b| *b == 0) {
        (any, rest.to_vec())
    } else {
        (ips, e.key.get(..n + 8)?.to_vec())
    })
}

fn add_rule(chain: HpChain, rule: Body, comment: &str) -> Op {
    Op::AddRule {
        chain: chain.name(),
        rule,
        comment: comment.to_string(),
        after: None,
    }
}

fn add_elem(e: &PmElem) -> Op {
    Op::AddElem {
        set: e.slot.name(),
        key: e.key.clone(),
        data: e.data.clone(),
        comment: e.comment.clone(),
        text: e.text(),
    }
}

fn del_elem(slot: Slot, key: &[u8]) -> Op {
    Op::DelElem {
        set: slot.name(),
        key: key.to_vec(),
        text: key_str(slot, key),
    }
}

/// Comment tag of a hairpin rule: `hp-<nethash>:<subnet>`.
pub fn hairpin_tag(network: &str, subnet: &IpNet) -> String {
    format!("hp-{}", subnet_tag(network, subnet))
}

fn hairpin_comment(network: &str, subnet: &IpNet) -> String {
    bounded_comment(format!("{} net: {network}", hairpin_tag(network, subnet)))
}

fn parse_hairpin(comment: &str) -> Option<(&str, IpNet)> {
    parse_subnet_tag(tag_of_comment(comment).strip_prefix("hp-")?)
}

/// Comment of this backend's elements: the owner tag, the container hash (`ctr:<16 hex>`, so
/// another attachment of the same container is recognized even when the readable part is
/// truncated), then the readable owner.
pub fn pm_comment(network: &str, container_id: &str, ifname: &str) -> String {
    bounded_comment(format!(
        "{} ctr:{} net: {network}, id: {container_id}, if: {ifname}",
        owner_tag(network, container_id, ifname),
        container_hash(container_id)
    ))
}

/// Whether a stored element comment belongs to an attachment of `container_id`. Comments
/// written before the container hash existed are matched on their complete `id:` part.
pub fn same_container(comment: &str, container_id: &str) -> bool {
    match ctr_token(comment).and_then(|t| t.strip_prefix("ctr:")) {
        Some(h) => h == container_hash(container_id),
        None => comment.contains(&format!(", id: {container_id}, if: ")),
    }
}

/// The `ctr:<hash>` token of an element comment (None for comments of older versions).
fn ctr_token(comment: &str) -> Option<&str> {
    comment.split(' ').nth(1).filter(|t| t.starts_with("ctr:"))
}

/// The elements `spec` wants.
pub fn wanted_elems(spec: &PortmapSpec) -> Vec<PmElem> {
    let comment = pm_comment(&spec.network, &spec.container_id, &spec.ifname);
    let mut out = Vec::new();
    for addr in spec.addrs() {
        let ip = addr.addr();
        let v6 = ip.is_ipv6();
        for m in &spec.mappings {
            if !m.applies_to(ip) {
                continue;
            }
            let host = m.specific_host_ip();
            let slot = match (v6, host.is_some()) {
                (false, false) => Slot::Ports4,
                (false, true) => Slot::Ips4,
                (true, false) => Slot::Ports6,
                (true, true) => Slot::Ips6,
            };
            out.push(PmElem {
                slot,
                key: port_key(host, m.proto, m.host_port),
                data: target_data(ip, m.container_port),
                comment: comment.clone(),
            });
        }
        if spec.masq_all && !spec.mappings.is_empty() {
            out.push(PmElem {
                slot: if v6 { Slot::MasqAll6 } else { Slot::MasqAll4 },
                key: ip_bytes(ip),
                data: Vec::new(),
                comment: comment.clone(),
            });
        }
    }
    out
}

fn fixed_ok(chain: HpChain, present: &[RuleInfo]) -> bool {
    let fixed = chain.fixed();
    present.len() >= fixed.len() && fixed.iter().zip(present).all(|((_, c), r)| r.comment == *c)
}

/// ADD plan. `chains[i]` are the rules of [`HpChain::ALL`]`[i]` (None: absent); `existing` is
/// a keyed element lookup. Err when a host port is held by another attachment.
pub(crate) fn plan_add(
    spec: &PortmapSpec,
    chains: &[Option<Vec<RuleInfo>>; 3],
    existing: &mut dyn FnMut(Slot, &[u8]) -> Option<PmElem>,
) -> Result<Vec<Op>, Error> {
    let mut ops = Vec::new();
    let all_ok = HpChain::ALL
        .iter()
        .zip(chains)
        .all(|(c, r)| r.as_deref().is_some_and(|r| fixed_ok(*c, r)));
    let post_present: Vec<RuleInfo> = chains[2].clone().unwrap_or_default();
    let mut hairpins_present: BTreeSet<String> = post_present
        .iter()
        .filter(|r| parse_hairpin(&r.comment).is_some())
        .map(|r| tag_of_comment(&r.comment).to_string())
        .collect();
    if !all_ok {
        ops.push(Op::AddTable);
        ops.extend(Slot::ALL.iter().map(|s| Op::AddSet(set_def(*s))));
        for (chain, present) in HpChain::ALL.iter().zip(chains) {
            match present {
                Some(r) if fixed_ok(*chain, r) => continue,
                Some(_) => {
                    ops.push(chain.add());
                    ops.push(Op::FlushChain(chain.name()));
                }
                None => ops.push(chain.add()),
            }
            for (rule, comment) in chain.fixed() {
                ops.push(add_rule(*chain, rule, comment));
            }
            if *chain == HpChain::Postrouting {
                // A rebuilt postrouting chain keeps every hairpin rule it had.
                for r in &post_present {
                    if let Some((_, net)) = parse_hairpin(&r.comment) {
                        ops.push(add_rule(*chain, hairpin(&net), &r.comment));
                    }
                }
            }
        }
    }
    if spec.snat && !spec.mappings.is_empty() {
        for addr in spec.addrs() {
            let subnet = addr.trunc();
            let tag = hairpin_tag(&spec.network, &subnet);
            if hairpins_present.insert(tag) {
                ops.push(add_rule(
                    HpChain::Postrouting,
                    hairpin(&subnet),
                    &hairpin_comment(&spec.network, &subnet),
                ));
            }
        }
    }
    let mine = owner_tag(&spec.network, &spec.container_id, &spec.ifname);
    let mut standby_sets = BTreeSet::new();
    for want in wanted_elems(spec) {
        match existing(want.slot, &want.key) {
            None => ops.push(add_elem(&want)),
            Some(cur) if cur.tag() == mine && cur.data == want.data => {}
            Some(cur) if cur.tag() == mine || !want.slot.is_map() => {
                // Our own element with another target, or a masqAll address still held by a
                // stale owner (address reused): replace it in the same transaction.
                ops.push(del_elem(want.slot, &want.key));
                ops.push(add_elem(&want));
            }
            Some(cur) if same_container(&cur.comment, &spec.container_id) => {
                // Another attachment of this container (another network or ifname) publishes
                // the port: it stays active; ours waits as a standby that DEL of the active
                // one promotes (one more keyed lookup, only for such duplicates).
                let (slot, key) = standby_key(want.slot, &want.key, &mine);
                let sb = PmElem { slot, key, ..want };
                match existing(sb.slot, &sb.key) {
                    Some(cur) if cur.tag() == mine && cur.data == sb.data => continue,
                    Some(_) => ops.push(del_elem(sb.slot, &sb.key)),
                    None => {}
                }
                if standby_sets.insert(sb.slot) {
                    // Tables created before the standby maps existed lack them.
                    ops.push(Op::AddSet(set_def(sb.slot)));
                }
                ops.push(add_elem(&sb));
            }
            Some(cur) => {
                return Err(Error::Conflict(format!(
                    "host port {} ({}) is already published by another attachment \"{}\"; DEL it or run GC first",
                    want.key_str(),
                    want.slot.name(),
                    cur.comment
                )))
            }
        }
    }
    Ok(ops)
}

/// DEL/GC plan: delete elements selected by `remove`; for every active key left without an
/// element, promote the first remaining standby of that key (delete the standby, add its target
/// under the active key, next to the deletion so both land in one transaction, see
/// [`transactions`]); last, the hairpin rules of `network` that no remaining element needs.
pub(crate) fn plan_remove(
    network: &str,
    all: &[PmElem],
    post: &[RuleInfo],
    remove: &dyn Fn(&PmElem) -> bool,
) -> Vec<Op> {
    let prefix = format!("{}-", network_hash(network));
    let mut ops = Vec::new();
    let mut remaining = Vec::new();
    // Active keys that keep their element, and the standbys that stay, per active key (sorted
    // by comment so the choice is deterministic).
    let mut held: BTreeSet<(Slot, Vec<u8>)> = BTreeSet::new();
    let mut standbys: std::collections::BTreeMap<(Slot, Vec<u8>), Vec<&PmElem>> =
        std::collections::BTreeMap::new();
    let mut freed = Vec::new();
    for e in all {
        if remove(e) {
            if e.slot.is_active_map() {
                let ctr = ctr_token(&e.comment).map(str::to_string);
                freed.push(((e.slot, e.key.clone()), ctr));
            } else {
                ops.push(del_elem(e.slot, &e.key));
            }
            continue;
        }
        if e.tag().starts_with(&prefix) {
            remaining.extend(e.container_ip());
        }
        if e.slot.is_active_map() {
            held.insert((e.slot, e.key.clone()));
        } else if let Some(active) = active_of_standby(e) {
            standbys.entry(active).or_default().push(e);
        }
    }
    for v in standbys.values_mut() {
        v.sort_by(|a, b| a.comment.cmp(&b.comment).then(a.key.cmp(&b.key)));
    }
    // Standbys whose active element is gone without a promotion (removed by hand, or by an
    // older version): promote them too, so a standby never waits for a DEL that cannot come.
    let orphans: Vec<(Slot, Vec<u8>)> = standbys
        .iter()
        .filter(|(k, v)| !v.is_empty() && !held.contains(*k) && !freed.iter().any(|(f, _)| f == *k))
        .map(|(k, _)| k.clone())
        .collect();
    // Only a standby of the container that held the key takes over (a standby of another
    // container could only be left by hand-edits); `None` = anyone.
    let mut promote = |ops: &mut Vec<Op>, active: &(Slot, Vec<u8>), ctr: Option<&str>| {
        let Some(cands) = standbys.get_mut(active) else {
            return;
        };
        let pick = cands
            .iter()
            .position(|s| ctr.is_none_or(|c| ctr_token(&s.comment) == Some(c)));
        if let Some(i) = pick {
            let s = cands.remove(i);
            ops.push(add_elem(&PmElem {
                slot: active.0,
                key: active.1.clone(),
                data: s.data.clone(),
                comment: s.comment.clone(),
            }));
            ops.push(del_elem(s.slot, &s.key));
        }
    };
    for (active, ctr) in &freed {
        ops.push(del_elem(active.0, &active.1));
        promote(&mut ops, active, ctr.as_deref());
    }
    for active in &orphans {
        promote(&mut ops, active, None);
    }
    let nethash = network_hash(network);
    for r in post {
        if let Some((h, net)) = parse_hairpin(&r.comment) {
            if h == nethash && !remaining.iter().any(|ip| net.contains(ip)) {
                ops.push(Op::DelRule {
                    chain: HpChain::Postrouting.name(),
                    handle: r.handle,
                });
            }
        }
    }
    ops
}

/// Splits a removal plan into transactions of about `max` messages without separating a
/// promotion (deletion of the active element, addition of the standby's target under its key,
/// deletion of the standby) so a host port never stays unpublished between two commits.
pub(crate) fn transactions(ops: &[Op], max: usize) -> Vec<&[Op]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..ops.len() {
        let inside =
            matches!(ops[i], Op::AddElem { .. }) || matches!(ops[i - 1], Op::AddElem { .. });
        if i - start >= max && !inside {
            out.push(&ops[start..i]);
            start = i;
        }
    }
    if start < ops.len() {
        out.push(&ops[start..]);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Encoding

const IPS_DST_NAT: u32 = 1 << 5;

fn lookup_slot(slot: Slot, sreg: u32, dreg: Option<u32>) -> Expr {
    lookup(slot.name(), slot.id(), sreg, dreg, false)
}

fn fam(v6: bool) -> Family {
    if v6 {
        Family::V6
    } else {
        Family::V4
    }
}

/// `ct status dnat`.
fn ct_dnat() -> [Expr; 3] {
    [
        ct(libc::NFT_CT_STATUS, R1),
        bitwise_and(R1, &IPS_DST_NAT.to_ne_bytes()),
        cmp(CMP_NEQ, R1, &0u32.to_ne_bytes()),
    ]
}

/// `fib daddr type local dnat ip|ip6 to <key> map @<slot>`
fn dnat_rule(slot: Slot) -> Body {
    let v6 = slot.v6();
    let mut e: Vec<Expr> = Vec::new();
    e.extend(nfproto(fam(v6)));
    e.extend(daddr_is_local());
    // Key into consecutive 32-bit registers starting at NFT_REG32_00.
    let mut reg = R32;
    if matches!(slot, Slot::Ips4 | Slot::Ips6) {
        let (off, len) = if v6 { (24, 16) } else { (16, 4) };
        e.push(payload(libc::NFT_PAYLOAD_NETWORK_HEADER, off, len, reg));
        reg += len / 4;
    }
    e.push(meta(libc::NFT_META_L4PROTO, reg));
    e.push(payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, reg + 1));
    e.push(lookup_slot(slot, R32, Some(R32)));
    // The map's data: address from NFT_REG32_00, port right after it.
    let port_reg = if v6 { R32 + 4 } else { R32 + 1 };
    e.push(dnat(fam(v6), R32, port_reg));
    let (kw, key) = match slot {
        Slot::Ips4 => ("ip", "ip daddr . meta l4proto . th dport"),
        Slot::Ips6 => ("ip6", "ip6 daddr . meta l4proto . th dport"),
        Slot::Ports6 => ("ip6", "meta l4proto . th dport"),
        _ => ("ip", "meta l4proto . th dport"),
    };
    Body {
        text: format!(
            "fib daddr type local dnat {kw} to {key} map @{}",
            slot.name()
        ),
        exprs: boxed(e),
    }
}

/// The expressions `e` then `masquerade`.
fn masquerade(text: String, e: Vec<Expr>) -> Body {
    let mut exprs = boxed(e);
    exprs.push(Box::new(Masquerade));
    Body { text, exprs }
}

/// `ip saddr 127.0.0.0/8 ct status dnat masquerade`
fn localhost_masq() -> Body {
    let mut e: Vec<Expr> = nfproto(Family::V4).into();
    e.extend(prefix_match(
        &IpNet::V4(ipnet::Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8)),
        true,
    ));
    e.extend(ct_dnat());
    masquerade("ip saddr 127.0.0.0/8 ct status dnat masquerade".into(), e)
}

/// `ct status dnat ip|ip6 daddr @hostport-masqall4|6 masquerade`
fn masq_all(v6: bool) -> Body {
    let slot = if v6 { Slot::MasqAll6 } else { Slot::MasqAll4 };
    let mut e: Vec<Expr> = nfproto(fam(v6)).into();
    e.extend(ct_dnat());
    e.push(addr_load(fam(v6), false));
    e.push(lookup_slot(slot, R1, None));
    let kw = fam(v6).kw();
    let text = format!("ct status dnat {kw} daddr @{} masquerade", slot.name());
    masquerade(text, e)
}

/// `ct status dnat <fam> saddr S <fam> daddr S masquerade`
fn hairpin(net: &IpNet) -> Body {
    let f = Family::of(net.addr());
    let mut e: Vec<Expr> = nfproto(f).into();
    e.extend(ct_dnat());
    e.extend(prefix_match(net, true));
    e.extend(prefix_match(net, false));
    let kw = f.kw();
    let text = format!("ct status dnat {kw} saddr {net} {kw} daddr {net} masquerade");
    masquerade(text, e)
}

fn set_def(slot: Slot) -> SetDef<'static> {
    let (key_type, key_len, dt, dl) = slot.types();
    SetDef {
        family: ProtoFamily::Inet,
        name: slot.name(),
        id: slot.id(),
        key_type,
        key_len,
        data: slot.is_map().then_some((dt, dl)),
        key_byteorder: None,
        text: slot.type_str(),
    }
}

// ---------------------------------------------------------------------------------------------
// Reads

fn dump_chain(nl: &mut Nl, chain: HpChain) -> Result<Option<Vec<RuleInfo>>, Error> {
    nl.chain_rules(ProtoFamily::Inet, chain.name())
}

fn elem_request(nl: &mut Nl, slot: Slot, key: Option<&[u8]>) -> Result<Vec<PmElem>, Error> {
    Ok(nl
        .set_elems(ProtoFamily::Inet, slot.name(), key)?
        .into_iter()
        .filter(|e| e.key.len() == slot.key_len())
        .map(|e| PmElem {
            slot,
            key: e.key,
            data: e.data,
            comment: e.comment,
        })
        .collect())
}

/// Every element of our maps and sets: what DEL, GC and the listing read.
fn all_elems(nl: &mut Nl) -> Result<Vec<PmElem>, Error> {
    let mut all = Vec::new();
    for slot in Slot::ALL {
        all.extend(elem_request(nl, slot, None)?);
    }
    Ok(all)
}

// ---------------------------------------------------------------------------------------------
// The backend

/// nftables implementation of [`PortForward`].
pub(crate) struct NftPortForward {
    lock_path: PathBuf,
}

impl Default for NftPortForward {
    fn default() -> Self {
        Self::new()
    }
}

impl NftPortForward {
    /// Uses [`LOCK_PATH`].
    pub fn new() -> Self {
        Self {
            lock_path: PathBuf::from(LOCK_PATH),
        }
    }

    fn apply(nl: &mut Nl, ops: &[Op], what: &str) -> Result<(), Error> {
        crate::nft::apply(nl, ProtoFamily::Inet, ops, what)
    }

    fn remove(
        &self,
        network: &str,
        select: &dyn Fn(&PmElem) -> bool,
        what: &str,
    ) -> Result<(), Error> {
        let _guard = lock::lock(&self.lock_path)?;
        let mut nl = Nl::open()?;
        let all = all_elems(&mut nl)?;
        let post = dump_chain(&mut nl, HpChain::Postrouting)?.unwrap_or_default();
        let ops = plan_remove(network, &all, &post, select);
        // Element deletions come first, rule deletions last: chunks never drop a rule still
        // needed by an element that stays.
        for chunk in transactions(&ops, 512) {
            Self::apply(&mut nl, chunk, what)?;
        }
        Ok(())
    }
}

impl PortForward for NftPortForward {
    fn add_portmap(&self, spec: &PortmapSpec) -> Result<(), Error> {
        spec.validate()?;
        if spec.mappings.is_empty() || spec.addrs().is_empty() {
            return Ok(());
        }
        let _guard = lock::lock(&self.lock_path)?;
        let mut nl = Nl::open()?;
        let chains = [
            dump_chain(&mut nl, HpChain::Prerouting)?,
            dump_chain(&mut nl, HpChain::Output)?,
            dump_chain(&mut nl, HpChain::Postrouting)?,
        ];
        let mut err = None;
        let ops = plan_add(spec, &chains, &mut |slot, key| {
            let found = elem_request(&mut nl, slot, Some(key)).map(|v| v.into_iter().next());
            keep_err(&mut err, found)
        })?;
        err.map_or(Ok(()), Err)?;
        Self::apply(&mut nl, &ops, "add port mappings")
    }

    fn del_portmap(&self, network: &str, container_id: &str, ifname: &str) -> Result<(), Error> {
        validate_owner(network, container_id, ifname)?;
        let tag = owner_tag(network, container_id, ifname);
        self.remove(network, &|e| e.tag() == tag, "delete port mappings")
    }

    fn check_portmap(&self, spec: &PortmapSpec) -> Result<(), Error> {
        spec.validate()?;
        let wanted = wanted_elems(spec);
        if wanted.is_empty() {
            return Ok(());
        }
        let _guard = lock::lock(&self.lock_path)?;
        let mut nl = Nl::open()?;
        let mut post = Vec::new();
        for chain in HpChain::ALL {
            let rules = dump_chain(&mut nl, chain)?.unwrap_or_default();
            if !fixed_ok(chain, &rules) {
                return Err(Error::Missing(format!(
                    "chain inet {TABLE} {} is missing or lacks its fixed rules",
                    chain.name()
                )));
            }
            if chain == HpChain::Postrouting {
                post = rules;
            }
        }
        let mine = owner_tag(&spec.network, &spec.container_id, &spec.ifname);
        for w in &wanted {
            let found = elem_request(&mut nl, w.slot, Some(&w.key))?;
            match found.first() {
                Some(e) if e.tag() == mine && e.data == w.data => {}
                Some(e)
                    if w.slot.is_active_map() && same_container(&e.comment, &spec.container_id) =>
                {
                    // Another attachment of this container is active: ours must be standing by.
                    let (slot, key) = standby_key(w.slot, &w.key, &mine);
                    let sb = elem_request(&mut nl, slot, Some(&key))?;
                    if !sb.first().is_some_and(|s| s.tag() == mine && s.data == w.data) {
                        return Err(Error::Missing(format!(
                            "host port {} ({}) is published by \"{}\" of the same container, and this attachment's standby target {} is missing from map inet {TABLE} {}",
                            w.key_str(),
                            w.slot.name(),
                            e.comment,
                            w.data_str(),
                            slot.name()
                        )));
                    }
                }
                Some(e) => {
                    return Err(Error::Missing(format!(
                        "element {} in map inet {TABLE} {} is \"{} : {}\", expected target {} of container {:?}",
                        w.key_str(),
                        w.slot.name(),
                        e.comment,
                        e.data_str(),
                        w.data_str(),
                        spec.container_id
                    )))
                }
                None => {
                    return Err(Error::Missing(format!(
                        "element {} missing from map inet {TABLE} {}",
                        w.key_str(),
                        w.slot.name()
                    )))
                }
            }
        }
        if spec.snat {
            for addr in spec.addrs() {
                let tag = hairpin_tag(&spec.network, &addr.trunc());
                if !post.iter().any(|r| tag_of_comment(&r.comment) == tag) {
                    return Err(Error::Missing(format!(
                        "hairpin masquerade rule for {} missing from chain inet {TABLE} {}",
                        addr.trunc(),
                        HpChain::Postrouting.name()
                    )));
                }
            }
        }
        Ok(())
    }

    fn gc_portmap(&self, network: &str, keep: &[(String, String)]) -> Result<(), Error> {
        validate_owner(network, "gc", "gc")?;
        for (cid, ifname) in keep {
            validate_owner(network, cid, ifname)?;
        }
        let prefix = format!("{}-", network_hash(network));
        let kept: BTreeSet<String> = keep.iter().map(|(c, i)| owner_tag(network, c, i)).collect();
        self.remove(
            network,
            &|e| e.tag().starts_with(&prefix) && !kept.contains(e.tag()),
            "garbage-collect port mappings",
        )
    }
}

/// Every element of our maps and sets, and every rule of our three chains.
pub(crate) fn list(nl: &mut Nl) -> Result<Vec<crate::entry::Entry>, Error> {
    let mut out = Vec::new();
    for e in all_elems(nl)? {
        let entry = e.text();
        out.push(crate::nft::elem_entry(
            ProtoFamily::Inet,
            e.slot.name(),
            entry,
            &e.comment,
        ));
    }
    let chains: Vec<&str> = HpChain::ALL.iter().map(|c| c.name()).collect();
    out.extend(crate::nft::rule_entries(nl, ProtoFamily::Inet, &chains)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(ops: &[Op]) -> Result<nftnl::FinalizedBatch, Error> {
        crate::nft::batch::encode(ProtoFamily::Inet, ops)
    }
    use crate::portmap::PortMap;

    fn spec(cid: &str, v4: &str, maps: &[(i64, i64, &str, &str)]) -> PortmapSpec {
        let mut s = PortmapSpec::new("n", cid, "eth0");
        s.v4 = Some(v4.parse().unwrap());
        s.mappings = maps
            .iter()
            .map(|(h, c, p, ip)| PortMap::from_raw(*h, *c, p, ip).unwrap())
            .collect();
        s
    }

    fn render(ops: &[Op]) -> Vec<String> {
        ops.iter()
            .map(|o| o.nft(ProtoFamily::Inet).to_string())
            .collect()
    }

    fn present() -> [Option<Vec<RuleInfo>>; 3] {
        let mut h = 1;
        HpChain::ALL.map(|c| {
            Some(
                c.fixed()
                    .into_iter()
                    .map(|(_, comment)| {
                        h += 1;
                        RuleInfo {
                            handle: h,
                            comment: comment.to_string(),
                        }
                    })
                    .collect(),
            )
        })
    }

    #[test]
    fn first_add_creates_everything() {
        let mut s = spec(
            "c1",
            "10.22.0.2/24",
            &[(8080, 80, "tcp", ""), (5353, 53, "udp", "127.0.0.1")],
        );
        s.v6 = Some("fd00::2/64".parse().unwrap());
        let ops = render(&plan_add(&s, &[None, None, None], &mut |_, _| None).unwrap());
        for o in &ops {
            println!("{o}");
        }
        assert_eq!(ops[0], "add table inet rcni");
        assert!(ops.contains(&"add map inet rcni hostports4 { type inet_proto . inet_service : ipv4_addr . inet_service; }".to_string()));
        assert!(ops.iter().any(|o| o.starts_with(
            "add chain inet rcni hostport-output { type nat hook output priority dstnat"
        )));
        assert!(ops.iter().any(|o| o.contains("hostport-prerouting fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @hostips4")));
        assert!(ops.iter().any(
            |o| o.contains("ct status dnat ip saddr 10.22.0.0/24 ip daddr 10.22.0.0/24 masquerade")
        ));
        assert!(ops
            .iter()
            .any(|o| o.contains("ct status dnat ip6 saddr fd00::/64")));
        let elems: Vec<&String> = ops
            .iter()
            .filter(|o| o.starts_with("add element"))
            .collect();
        assert_eq!(elems.len(), 3, "{elems:?}");
        assert!(elems[0].contains("hostports4 { tcp . 8080 : 10.22.0.2 . 80 comment"));
        assert!(elems[1].contains("hostips4 { 127.0.0.1 . udp . 5353 : 10.22.0.2 . 53"));
        assert!(elems[2].contains("hostports6 { tcp . 8080 : fd00::2 . 80"));
        // Every op encodes.
        let raw = plan_add(&s, &[None, None, None], &mut |_, _| None).unwrap();
        assert!(encode(&raw).is_ok());
    }

    #[test]
    fn steady_state_add_is_elements_only_and_constant() {
        let s = spec("c2", "10.22.0.3/24", &[(8081, 80, "tcp", "")]);
        let mut chains = present();
        let post = chains[2].as_mut().unwrap();
        post.push(RuleInfo {
            handle: 99,
            comment: hairpin_comment("n", &"10.22.0.0/24".parse().unwrap()),
        });
        let ops = plan_add(&s, &chains, &mut |_, _| None).unwrap();
        assert_eq!(render(&ops).len(), 1, "{ops:?}");
        // Same owner, same data: nothing to do.
        let same = wanted_elems(&s).remove(0);
        assert!(plan_add(&s, &chains, &mut |_, _| Some(same.clone()))
            .unwrap()
            .is_empty());
        // Another owner holds the port: refused.
        let other = PmElem {
            comment: pm_comment("n", "someone", "eth0"),
            ..same
        };
        let err = plan_add(&s, &chains, &mut |_, _| Some(other.clone())).unwrap_err();
        assert!(err.to_string().contains("tcp . 8081"), "{err}");
    }

    #[test]
    fn damaged_chain_is_rebuilt_keeping_hairpins() {
        let s = spec("c", "10.22.0.3/24", &[(8081, 80, "tcp", "")]);
        let mut chains = present();
        let keep = hairpin_comment("m", &"10.33.0.0/24".parse().unwrap());
        chains[2] = Some(vec![RuleInfo {
            handle: 5,
            comment: keep.clone(),
        }]);
        let ops = render(&plan_add(&s, &chains, &mut |_, _| None).unwrap());
        assert!(ops.contains(&"flush chain inet rcni hostport-postrouting".to_string()));
        assert!(ops.iter().any(|o| o.contains(&keep)));
        assert!(!ops
            .iter()
            .any(|o| o.contains("flush chain inet rcni hostport-prerouting")));
    }

    #[test]
    fn remove_only_owner_and_unused_hairpins() {
        let a = spec("a", "10.22.0.2/24", &[(8080, 80, "tcp", "")]);
        let b = spec("b", "10.22.0.3/24", &[(8081, 80, "tcp", "")]);
        let c = spec("c", "10.33.0.3/24", &[(8082, 80, "udp", "")]);
        let mut all = wanted_elems(&a);
        all.extend(wanted_elems(&b));
        all.extend(wanted_elems(&c));
        let post = vec![
            RuleInfo {
                handle: 7,
                comment: hairpin_comment("n", &"10.22.0.0/24".parse().unwrap()),
            },
            RuleInfo {
                handle: 8,
                comment: hairpin_comment("n", &"10.33.0.0/24".parse().unwrap()),
            },
        ];
        let tag = owner_tag("n", "c", "eth0");
        let ops = render(&plan_remove("n", &all, &post, &|e| e.tag() == tag));
        assert_eq!(
            ops,
            vec![
                "delete element inet rcni hostports4 { udp . 8082 }".to_string(),
                "delete rule inet rcni hostport-postrouting handle 8".to_string(),
            ]
        );
        assert!(encode(&plan_remove("n", &all, &post, &|_| true)).is_ok());
    }

    fn on(net: &str, cid: &str, v4: &str, maps: &[(i64, i64, &str, &str)]) -> PortmapSpec {
        let mut s = spec(cid, v4, maps);
        s.network = net.to_string();
        s
    }

    /// A fake kernel: the elements present, looked up by (slot, key).
    fn lookup(all: &[PmElem]) -> impl FnMut(Slot, &[u8]) -> Option<PmElem> + '_ {
        move |slot, key| all.iter().find(|e| e.slot == slot && e.key == key).cloned()
    }

    /// Applies a plan's element ops to a fake kernel state.
    fn apply(all: &mut Vec<PmElem>, ops: &[Op]) {
        let slot_of = |set: &str| Slot::ALL.into_iter().find(|s| s.name() == set).unwrap();
        for op in ops {
            let shown = op.nft(ProtoFamily::Inet);
            match op {
                Op::AddElem {
                    set,
                    key,
                    data,
                    comment,
                    ..
                } => {
                    let e = PmElem {
                        slot: slot_of(set),
                        key: key.clone(),
                        data: data.clone(),
                        comment: comment.clone(),
                    };
                    assert!(
                        !all.iter().any(|x| x.slot == e.slot && x.key == e.key),
                        "add of an existing key {shown}"
                    );
                    all.push(e);
                }
                Op::DelElem { set, key, .. } => {
                    let n = all.len();
                    all.retain(|x| !(x.slot == slot_of(set) && x.key == *key));
                    assert_eq!(n, all.len() + 1, "delete of an absent key {shown}");
                }
                _ => {}
            }
        }
    }

    fn hairpins_for(specs: &[&PortmapSpec]) -> [Option<Vec<RuleInfo>>; 3] {
        let mut chains = present();
        let post = chains[2].as_mut().unwrap();
        for (i, s) in specs.iter().enumerate() {
            post.push(RuleInfo {
                handle: 100 + i as u64,
                comment: hairpin_comment(&s.network, &s.v4.unwrap().trunc()),
            });
        }
        chains
    }

    #[test]
    fn same_container_on_another_network_stands_by_and_is_promoted() {
        let m = [(8087, 80, "tcp", ""), (9000, 90, "udp", "127.0.0.1")];
        let a = on("a", "ctr", "10.22.0.2/24", &m);
        let b = on("b", "ctr", "10.33.0.2/24", &m);
        let c = on("c", "ctr", "10.44.0.2/24", &m);
        let chains = hairpins_for(&[&a, &b, &c]);
        let mut k: Vec<PmElem> = Vec::new();
        let ops = plan_add(&a, &chains, &mut lookup(&k)).unwrap();
        apply(&mut k, &ops);
        // b: same container, other network: accepted as standby, a stays active.
        let ops = plan_add(&b, &chains, &mut lookup(&k)).unwrap();
        let r = render(&ops);
        println!("{r:#?}");
        assert_eq!(r[0], "add map inet rcni hostport-standby4 { type ipv4_addr . inet_proto . inet_service . mark : ipv4_addr . inet_service; }");
        assert!(
            r[1].starts_with("add element inet rcni hostport-standby4 { 0.0.0.0 . tcp . 8087 . 0x"),
            "{r:?}"
        );
        assert!(r[1].contains(": 10.33.0.2 . 80 comment"), "{r:?}");
        assert!(r[2].contains("{ 127.0.0.1 . udp . 9000 . 0x"), "{r:?}");
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(encode(&ops).is_ok());
        apply(&mut k, &ops);
        // Idempotent; c stands by too.
        assert!(plan_add(&b, &chains, &mut lookup(&k)).unwrap().is_empty());
        let ops = plan_add(&c, &chains, &mut lookup(&k)).unwrap();
        apply(&mut k, &ops);
        assert_eq!(
            k.iter().filter(|e| e.slot == Slot::Standby4).count(),
            4,
            "{k:?}"
        );
        // Another container on the port: refused, naming the active owner.
        let d = on("b", "other", "10.33.0.9/24", &[(8087, 80, "tcp", "")]);
        let err = plan_add(&d, &chains, &mut lookup(&k))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("already published") && err.contains("id: ctr"),
            "{err}"
        );

        let active = |k: &[PmElem], slot: Slot, key: &[u8]| {
            k.iter()
                .find(|e| e.slot == slot && e.key == key)
                .map(|e| (e.tag().to_string(), e.data.clone()))
        };
        let k8087 = port_key(None, Proto::Tcp, 8087);
        let k9000 = port_key(Some("127.0.0.1".parse().unwrap()), Proto::Udp, 9000);
        let ip = |s: &str| target_data(s.parse().unwrap(), 80);
        assert_eq!(
            active(&k, Slot::Ports4, &k8087),
            Some((owner_tag("a", "ctr", "eth0"), ip("10.22.0.2")))
        );
        // DEL of a standby owner (c) removes its standbys only.
        let post = chains[2].clone().unwrap();
        let tag_c = owner_tag("c", "ctr", "eth0");
        let ops = plan_remove("c", &k, &post, &|e| e.tag() == tag_c);
        assert!(
            ops.iter().all(|o| matches!(
                o,
                Op::DelElem {
                    set: "hostport-standby4",
                    ..
                } | Op::DelRule { .. }
            )),
            "{:?}",
            render(&ops)
        );
        apply(&mut k, &ops);
        assert_eq!(k.len(), 4, "{k:?}");
        // DEL of the active owner (a): b's targets take over in the same plan.
        let tag_a = owner_tag("a", "ctr", "eth0");
        let ops = plan_remove("a", &k, &post, &|e| e.tag() == tag_a);
        let r = render(&ops);
        println!("{r:#?}");
        assert_eq!(r[0], "delete element inet rcni hostports4 { tcp . 8087 }");
        assert!(
            r[1].starts_with(
                "add element inet rcni hostports4 { tcp . 8087 : 10.33.0.2 . 80 comment"
            ),
            "{r:?}"
        );
        assert!(
            r[2].starts_with(
                "delete element inet rcni hostport-standby4 { 0.0.0.0 . tcp . 8087 . 0x"
            ),
            "{r:?}"
        );
        assert_eq!(r.len(), 7, "two promotions and a's hairpin rule: {r:?}");
        assert!(r[6].starts_with("delete rule inet rcni hostport-postrouting handle 100"));
        assert!(encode(&ops).is_ok());
        apply(&mut k, &ops);
        assert_eq!(
            active(&k, Slot::Ports4, &k8087),
            Some((owner_tag("b", "ctr", "eth0"), ip("10.33.0.2")))
        );
        assert_eq!(
            active(&k, Slot::Ips4, &k9000).map(|(t, _)| t),
            Some(owner_tag("b", "ctr", "eth0"))
        );
        assert!(k.iter().all(|e| e.slot != Slot::Standby4), "{k:?}");
        // Re-ADD of b is a no-op; DEL of b leaves nothing.
        assert!(plan_add(&b, &chains, &mut lookup(&k)).unwrap().is_empty());
        let tag_b = owner_tag("b", "ctr", "eth0");
        let ops = plan_remove("b", &k, &post, &|e| e.tag() == tag_b);
        apply(&mut k, &ops);
        assert!(k.is_empty(), "{k:?}");
    }

    #[test]
    fn gc_promotes_for_freed_keys_and_orphans() {
        let m = [(8087, 80, "tcp", "")];
        let a = on("a", "ctr", "10.22.0.2/24", &m);
        let b = on("b", "ctr", "10.33.0.2/24", &m);
        let chains = hairpins_for(&[&a, &b]);
        let mut k: Vec<PmElem> = Vec::new();
        for s in [&a, &b] {
            let ops = plan_add(s, &chains, &mut lookup(&k)).unwrap();
            apply(&mut k, &ops);
        }
        let post = chains[2].clone().unwrap();
        // GC of network a with nothing valid frees the key: b is promoted.
        let ops = plan_remove("a", &k, &post, &|e| e.tag().starts_with(&network_hash("a")));
        apply(&mut k, &ops);
        assert_eq!(k.len(), 1);
        assert_eq!(k[0].slot, Slot::Ports4);
        assert_eq!(k[0].tag(), owner_tag("b", "ctr", "eth0"));
        // GC removing both active and standby owners: nothing promoted, nothing left.
        let mut k: Vec<PmElem> = Vec::new();
        for s in [&a, &b] {
            let ops = plan_add(s, &chains, &mut lookup(&k)).unwrap();
            apply(&mut k, &ops);
        }
        let ops = plan_remove("a", &k, &post, &|_| true);
        apply(&mut k, &ops);
        assert!(k.is_empty(), "{k:?}");
        // An orphan standby (active element deleted by hand) is promoted by the next removal.
        let mut k: Vec<PmElem> = Vec::new();
        for s in [&a, &b] {
            let ops = plan_add(s, &chains, &mut lookup(&k)).unwrap();
            apply(&mut k, &ops);
        }
        k.retain(|e| e.slot != Slot::Ports4);
        let ops = plan_remove("x", &k, &post, &|_| false);
        apply(&mut k, &ops);
        assert_eq!(k.len(), 1);
        assert_eq!(k[0].slot, Slot::Ports4);
        // A standby of ANOTHER container (only hand-edits make one) does not take over a key
        // freed by DEL of the container that held it.
        let foreign = on("b", "other", "10.33.0.7/24", &m);
        let mut stray = wanted_elems(&foreign).remove(0);
        let (slot, key) = standby_key(stray.slot, &stray.key, &owner_tag("b", "other", "eth0"));
        stray.slot = slot;
        stray.key = key;
        k.push(stray);
        let tag_b = owner_tag("b", "ctr", "eth0");
        let ops = plan_remove("b", &k, &post, &|e| e.tag() == tag_b);
        assert!(
            !ops.iter().any(|o| matches!(o, Op::AddElem { .. })),
            "{:?}",
            render(&ops)
        );
    }

    #[test]
    fn same_container_detection_and_standby_keys() {
        let c = pm_comment("n", "abc", "eth0");
        assert!(same_container(&c, "abc"));
        assert!(!same_container(&c, "ab"));
        // Comments of older versions: the complete id part.
        let old = crate::names::owner_comment("n", "abc", "eth0");
        assert!(same_container(&old, "abc"));
        assert!(!same_container(&old, "ab"));
        // A long container id survives truncation through the hash.
        let long = "f".repeat(64);
        let c = pm_comment(&"n".repeat(40), &long, "eth0");
        assert!(c.len() < crate::names::NFT_COMMENT_MAX);
        assert!(same_container(&c, &long));
        assert_eq!(
            tag_of_comment(&c),
            owner_tag(&"n".repeat(40), &long, "eth0")
        );
        for (slot, host) in [
            (Slot::Ports4, None),
            (Slot::Ips4, Some("10.0.0.1")),
            (Slot::Ports6, None),
            (Slot::Ips6, Some("fd00::1")),
        ] {
            let key = port_key(host.map(|h| h.parse().unwrap()), Proto::Tcp, 80);
            let (sb, k) = standby_key(slot, &key, "t");
            assert_eq!(k.len(), sb.key_len());
            let e = PmElem {
                slot: sb,
                key: k,
                data: Vec::new(),
                comment: String::new(),
            };
            assert_eq!(active_of_standby(&e), Some((slot, key)));
            assert_ne!(
                standby_key(slot, &port_key(None, Proto::Tcp, 80), "u").1,
                e.key
            );
        }
    }

    #[test]
    fn transactions_keep_promotions_whole() {
        let e = |n: u8| PmElem {
            slot: Slot::Ports4,
            key: vec![n],
            data: Vec::new(),
            comment: String::new(),
        };
        let del = |n: u8| del_elem(Slot::Ports4, &[n]);
        let ops = vec![
            del(1),
            del(2),
            add_elem(&e(2)),
            del_elem(Slot::Standby4, &[2]),
            del(3),
            del(4),
        ];
        let t = transactions(&ops, 2);
        let lens: Vec<usize> = t.iter().map(|c| c.len()).collect();
        assert_eq!(lens, vec![4, 2]);
        assert_eq!(transactions(&ops, 1).len(), 4);
        assert!(transactions(&[], 5).is_empty());
    }

    #[test]
    fn key_layout() {
        assert_eq!(
            port_key(None, Proto::Udp, 0x1f90),
            vec![17, 0, 0, 0, 0x1f, 0x90, 0, 0]
        );
        let k = port_key(Some("fd00::1".parse().unwrap()), Proto::Tcp, 80);
        assert_eq!(k.len(), Slot::Ips6.key_len());
        assert_eq!(target_data("10.0.0.1".parse().unwrap(), 80).len(), 8);
        assert_eq!(
            target_data(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), 80).len(),
            Slot::Ports6.types().3 as usize
        );
    }
}
