//! The name table: an immutable snapshot of every name sandboxd answers, built by the owner from
//! its records after each change and swapped in whole ([`super::Service::publish`]). A query
//! reads one snapshot from start to end, so it never sees half an update (no stale or duplicate
//! answers, aardvark-dns#389 / netavark#1471), and readers never wait for a rebuild.
//!
//! Visibility follows Docker: a sandbox sees the endpoints of every network it is connected to,
//! and nothing else. The asking sandbox is found by the query's source address.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use crate::model::{EpState, NetworkRec, SandboxRec, SbState};

/// Whether a network gets a name service: every network but the built-ins (Docker has none on
/// its default bridge; `host` and `none` have no network of their own).
pub fn dns_enabled(n: &NetworkRec) -> bool {
    !n.network.builtin && n.network.driver != "host" && n.network.driver != "none"
}

/// One endpoint's entry.
#[derive(Debug, Clone)]
struct Ep {
    /// The first name (the sandbox's), answered to PTR queries.
    first: String,
    /// Its addresses on this network.
    addrs: Vec<IpAddr>,
}

/// One network's entry.
#[derive(Debug, Clone, Default)]
struct Net {
    /// Addresses the service listens on (the gateways, on the host side), and whether the
    /// address is sandboxd's own (a subnet gateway it configures: bound before it exists) or
    /// only reported by a `cni` network's plugins (served only if it is a host address).
    listen: Vec<(IpAddr, bool)>,
    eps: Vec<Ep>,
    /// Lower-case name -> endpoints (several sandboxes may share an alias: all are answered).
    names: HashMap<String, Vec<usize>>,
    /// Address -> endpoint, for PTR.
    ptr: HashMap<IpAddr, usize>,
    /// Subnets, to answer NXDOMAIN for unknown reverse names inside them.
    subnets: Vec<ipnet::IpNet>,
}

/// One sandbox with endpoints on DNS-enabled networks.
#[derive(Debug, Clone)]
struct Sb {
    /// Its DNS-enabled networks in join order.
    networks: Vec<String>,
    /// Whether it has a way out (an endpoint on any non-internal network, the default bridge
    /// included): only then are other names forwarded for it.
    has_exit: bool,
}

/// An immutable snapshot of all names.
#[derive(Debug, Clone, Default)]
pub struct Table {
    nets: BTreeMap<String, Net>,
    sandboxes: Vec<Sb>,
    /// Source address -> (network, sandbox index): who is asking.
    by_addr: HashMap<IpAddr, Vec<(String, usize)>>,
    /// Upstream servers for other names (at most 3).
    pub upstream: Vec<SocketAddr>,
}

/// What a query resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The name is ours: these addresses (possibly none of the asked family: NODATA).
    Addrs(Vec<IpAddr>),
    /// A reverse name of ours: the name to point to (no trailing dot).
    Ptr(String),
    /// A name of a network's own domain (or a reverse name in its subnet) that does not exist.
    NxDomain,
    /// Not ours: forward it upstream (when the network may).
    Forward,
    /// Not ours, and the asker is only on internal networks: no forwarding, answer NXDOMAIN.
    Refuse,
    /// Not ours, and the source is no sandbox: REFUSED (the gateway is a host address others
    /// may reach; sandboxd is no open resolver).
    NotOurs,
}

/// An endpoint on another node (a sandbox of an overlay network elsewhere), as that node's
/// overlay agent published it in the cluster store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemoteName {
    /// Its names in lower case, the sandbox's first (the answer to PTR queries).
    pub names: Vec<String>,
    /// Its addresses on the network.
    pub addrs: Vec<IpAddr>,
}

/// The endpoints other nodes publish: network -> node -> endpoints.
pub type RemoteNames = BTreeMap<String, BTreeMap<String, Vec<RemoteName>>>;

/// The names an endpoint answers to: the sandbox's name first, then its aliases on the
/// network, its hostname and its 12-character short id (lower case, no repeats).
fn endpoint_names(sb: &SandboxRec, aliases: &[String]) -> Vec<String> {
    let first = sb.name.to_ascii_lowercase();
    let mut rest: Vec<String> = aliases.iter().map(|a| a.to_ascii_lowercase()).collect();
    rest.push(sb.hostname.to_ascii_lowercase());
    rest.push(
        sb.id
            .chars()
            .take(12)
            .collect::<String>()
            .to_ascii_lowercase(),
    );
    rest.sort();
    rest.dedup();
    rest.retain(|n| *n != first && !n.is_empty());
    let mut names = vec![first];
    names.extend(rest);
    names
}

/// This node's endpoints on `network` as other nodes should answer them (the overlay agent
/// publishes them): ready endpoints of ready sandboxes, as in [`Table::build`].
pub fn local_names(sandboxes: &BTreeMap<String, SandboxRec>, network: &str) -> Vec<RemoteName> {
    sandboxes
        .values()
        .filter(|s| ready(s))
        .flat_map(|sb| {
            sb.endpoints
                .iter()
                .filter(|e| matches!(e.state, EpState::Ready | EpState::Rerouting))
                .filter(|e| e.endpoint.network == network)
                .map(move |e| RemoteName {
                    names: endpoint_names(sb, &e.endpoint.aliases),
                    addrs: e.endpoint.addresses.iter().map(|a| a.addr()).collect(),
                })
        })
        .collect()
}

fn ready(sb: &SandboxRec) -> bool {
    sb.state == SbState::Ready && sb.mode == "network"
}

impl Table {
    /// Build the snapshot from the owner's records. Only ready endpoints of ready sandboxes
    /// count (`rerouting` too: the endpoint keeps its address while its default route moves);
    /// an endpoint being removed is gone from the table as soon as its removal starts.
    pub fn build(
        networks: &BTreeMap<String, NetworkRec>,
        sandboxes: &BTreeMap<String, SandboxRec>,
        upstream: Vec<SocketAddr>,
    ) -> Table {
        let mut t = Table {
            upstream,
            ..Table::default()
        };
        for (name, n) in networks.iter().filter(|(_, n)| dns_enabled(n)) {
            let listen = n
                .network
                .subnets
                .iter()
                .filter_map(|s| s.gateway)
                .map(|g| (g, true))
                .collect();
            t.nets.insert(
                name.clone(),
                Net {
                    listen,
                    subnets: n.network.subnets.iter().map(|s| s.subnet).collect(),
                    ..Net::default()
                },
            );
        }
        for sb in sandboxes.values().filter(|s| ready(s)) {
            let idx = t.sandboxes.len();
            let mut sb_nets = Vec::new();
            let has_exit = sb.endpoints.iter().any(|e| {
                e.state != EpState::Removing
                    && networks
                        .get(&e.endpoint.network)
                        .is_some_and(|n| !n.network.internal)
            });
            for e in sb
                .endpoints
                .iter()
                .filter(|e| matches!(e.state, EpState::Ready | EpState::Rerouting))
            {
                let ep = &e.endpoint;
                let Some(net) = t.nets.get_mut(&ep.network) else {
                    continue;
                };
                let addrs: Vec<IpAddr> = ep.addresses.iter().map(|a| a.addr()).collect();
                // A `cni` network's gateway is only known from its results.
                for g in &ep.gateway {
                    if !net.listen.iter().any(|(a, _)| a == g) {
                        net.listen.push((*g, false));
                    }
                }
                let ep_idx = net.eps.len();
                for n in endpoint_names(sb, &ep.aliases) {
                    net.names.entry(n).or_default().push(ep_idx);
                }
                for a in &addrs {
                    net.ptr.entry(*a).or_insert(ep_idx);
                    t.by_addr
                        .entry(*a)
                        .or_default()
                        .push((ep.network.clone(), idx));
                }
                net.eps.push(Ep {
                    first: sb.name.to_ascii_lowercase(),
                    addrs,
                });
                sb_nets.push(ep.network.clone());
            }
            t.sandboxes.push(Sb {
                networks: sb_nets,
                has_exit,
            });
        }
        // A resolv.conf naming one of our own listeners would forward to ourselves in a loop.
        let own: Vec<IpAddr> = t
            .nets
            .values()
            .flat_map(|n| n.listen.iter().map(|(a, _)| *a))
            .collect();
        t.upstream.retain(|u| !own.contains(&u.ip()));
        t
    }

    /// Add the endpoints other nodes publish for the networks this table serves (overlay
    /// networks): they answer to their names and PTR; they never ask here, so they are no
    /// askers.
    pub fn add_remote(&mut self, remote: &RemoteNames) {
        for (network, nodes) in remote {
            let Some(net) = self.nets.get_mut(network) else {
                continue;
            };
            for r in nodes.values().flatten() {
                let Some(first) = r.names.first() else {
                    continue;
                };
                let ep_idx = net.eps.len();
                for n in &r.names {
                    net.names
                        .entry(n.to_ascii_lowercase())
                        .or_default()
                        .push(ep_idx);
                }
                for a in &r.addrs {
                    net.ptr.entry(*a).or_insert(ep_idx);
                }
                net.eps.push(Ep {
                    first: first.to_ascii_lowercase(),
                    addrs: r.addrs.clone(),
                });
            }
        }
    }

    /// Every (network, address) the service should listen on, with whether to bind it before
    /// the address exists (freebind).
    pub fn listeners(&self) -> Vec<((String, IpAddr), bool)> {
        self.nets
            .iter()
            .flat_map(|(n, e)| e.listen.iter().map(move |(a, f)| ((n.clone(), *a), *f)))
            .collect()
    }

    /// The sandbox asking on `net`'s listener from `src` (by its address; on overlapping
    /// subnets of `cni` networks, the endpoint on the listener's network wins).
    fn asker(&self, net: &str, src: IpAddr) -> Option<&Sb> {
        let v = self.by_addr.get(&src)?;
        let (_, i) = v.iter().find(|(n, _)| n == net).or_else(|| v.first())?;
        self.sandboxes.get(*i)
    }

    /// Whether names that are not ours may be forwarded for a query on `net` from `src`: when
    /// the asking sandbox has a way out (Docker: a container on an internal and an external
    /// network resolves external names). Never for a source that is no sandbox.
    pub fn may_forward(&self, net: &str, src: IpAddr) -> bool {
        self.asker(net, src).is_some_and(|sb| sb.has_exit)
    }

    /// The networks a query that came in on `net` may see: the asking sandbox's, the
    /// listener's first. An unknown source (the host itself, a benchmark) sees the
    /// listener's network only.
    fn visible<'a>(&'a self, net: &'a str, asker: Option<&'a Sb>) -> Vec<&'a str> {
        let mut out: Vec<&str> = Vec::new();
        match asker {
            Some(sb) => {
                if sb.networks.iter().any(|n| n == net) {
                    out.push(net);
                }
                for n in &sb.networks {
                    if !out.contains(&n.as_str()) {
                        out.push(n);
                    }
                }
            }
            None => {
                if self.nets.contains_key(net) {
                    out.push(net);
                }
            }
        }
        out
    }

    fn addrs_of(&self, net: &Net, eps: &[usize]) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = eps
            .iter()
            .filter_map(|i| net.eps.get(*i))
            .flat_map(|e| e.addrs.iter().copied())
            .collect();
        v.dedup();
        v
    }

    /// Resolve a lower-case name without the trailing dot, asked on `net`'s listener by `src`.
    pub fn lookup(&self, net: &str, src: IpAddr, qname: &str) -> Answer {
        let asker = self.asker(net, src);
        let visible = self.visible(net, asker);
        let fallback = match asker {
            None => Answer::NotOurs,
            Some(sb) if sb.has_exit => Answer::Forward,
            Some(_) => Answer::Refuse,
        };
        if let Some(ip) = reverse_name(qname) {
            for n in &visible {
                let Some(e) = self.nets.get(*n) else { continue };
                if let Some(ep) = e.ptr.get(&ip).and_then(|i| e.eps.get(*i)) {
                    return Answer::Ptr(ep.first.clone());
                }
            }
            let ours = visible.iter().any(|n| {
                self.nets
                    .get(*n)
                    .is_some_and(|e| e.subnets.iter().any(|s| s.contains(&ip)))
            });
            return if ours { Answer::NxDomain } else { fallback };
        }
        // The name as registered (names may hold dots: a hostname like web.local).
        for n in &visible {
            let Some(e) = self.nets.get(*n) else { continue };
            if let Some(eps) = e.names.get(qname) {
                return Answer::Addrs(self.addrs_of(e, eps));
            }
        }
        // `name.network`: the network's own domain; unknown names in it are NXDOMAIN.
        for n in &visible {
            let Some(e) = self.nets.get(*n) else { continue };
            let Some(prefix) = qname
                .strip_suffix(*n)
                .and_then(|p| p.strip_suffix('.'))
                .filter(|p| !p.is_empty())
            else {
                continue;
            };
            return match e.names.get(prefix) {
                Some(eps) => Answer::Addrs(self.addrs_of(e, eps)),
                None => Answer::NxDomain,
            };
        }
        fallback
    }
}

/// The address of a full reverse name (`4.3.2.1.in-addr.arpa`, 32 nibbles of `ip6.arpa`).
pub fn reverse_name(q: &str) -> Option<IpAddr> {
    if let Some(rest) = q.strip_suffix(".in-addr.arpa") {
        let mut o: Vec<u8> = rest
            .split('.')
            .map(|x| x.parse::<u8>().ok())
            .collect::<Option<Vec<u8>>>()?;
        if o.len() != 4 {
            return None;
        }
        o.reverse();
        return Some(IpAddr::from([o[0], o[1], o[2], o[3]]));
    }
    let rest = q.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<&str> = rest.split('.').collect();
    if nibbles.len() != 32 {
        return None;
    }
    let mut v: u128 = 0;
    for n in nibbles.iter().rev() {
        let d = u8::from_str_radix(n, 16).ok().filter(|_| n.len() == 1)?;
        v = (v << 4) | u128::from(d);
    }
    Some(IpAddr::V6(v.into()))
}

/// The name servers of a sandbox's resolv.conf: the listener of each of its DNS-enabled
/// networks in join order (the gateway of the endpoint's own family first), at most 3 (glibc
/// reads no more). Empty when it has none (its resolv.conf then follows the host's).
pub fn nameservers(networks: &BTreeMap<String, NetworkRec>, sb: &SandboxRec) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    if sb.mode != "network" {
        return out;
    }
    for e in sb.endpoints.iter().filter(|e| e.state != EpState::Removing) {
        let Some(n) = networks.get(&e.endpoint.network).filter(|n| dns_enabled(n)) else {
            continue;
        };
        let mut gws: Vec<IpAddr> = n
            .network
            .subnets
            .iter()
            .filter(|s| {
                e.endpoint
                    .addresses
                    .iter()
                    .any(|a| s.subnet.contains(&a.addr()))
            })
            .filter_map(|s| s.gateway)
            .collect();
        if gws.is_empty() {
            gws = e.endpoint.gateway.clone();
        }
        // IPv4 first: a sandbox with both families reaches it without waiting for IPv6 DAD.
        gws.sort_by_key(|g| g.is_ipv6());
        if let Some(g) = gws.first() {
            if !out.contains(g) {
                out.push(*g);
            }
        }
    }
    out.truncate(3);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::*;

    pub(crate) fn net(name: &str, subnet: &str, internal: bool) -> NetworkRec {
        let s: ipnet::IpNet = subnet.parse().unwrap();
        NetworkRec {
            network: Network {
                id: "0".repeat(64),
                name: name.into(),
                driver: "bridge".into(),
                builtin: name == "bridge",
                subnets: vec![Subnet {
                    subnet: s,
                    gateway: Some(match s {
                        ipnet::IpNet::V4(v) => IpAddr::V4((u32::from(v.network()) + 1).into()),
                        ipnet::IpNet::V6(v) => IpAddr::V6((u128::from(v.network()) + 1).into()),
                    }),
                    ip_range: None,
                }],
                internal,
                ipv6: false,
                bridge: None,
                options: BTreeMap::new(),
                labels: BTreeMap::new(),
                created: String::new(),
                endpoints: vec![],
            },
            conflist: None,
            deleting: false,
        }
    }

    pub(crate) fn sb(name: &str, id: char, eps: &[(&str, &str, &[&str])]) -> SandboxRec {
        SandboxRec {
            id: id.to_string().repeat(64),
            name: name.into(),
            mode: "network".into(),
            container_of: None,
            netns: String::new(),
            owns_netns: true,
            hostname: format!("{name}-host"),
            created: String::new(),
            state: SbState::Ready,
            next_if: 0,
            endpoints: eps
                .iter()
                .map(|(n, a, al)| EndpointRec {
                    endpoint: Endpoint {
                        id: String::new(),
                        network: (*n).into(),
                        sandbox: name.into(),
                        ifname: "eth0".into(),
                        addresses: vec![a.parse().unwrap()],
                        gateway: vec![],
                        mac: None,
                        aliases: al.iter().map(|s| s.to_string()).collect(),
                        ports: vec![],
                    },
                    state: EpState::Ready,
                    static_ip: None,
                    default_route: false,
                })
                .collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The sample table, for the wire tests.
    pub(crate) fn sample() -> Table {
        table()
    }

    fn table() -> Table {
        let nets: BTreeMap<String, NetworkRec> = [
            net("a", "10.1.0.0/24", false),
            net("b", "10.2.0.0/24", false),
            net("i", "10.3.0.0/24", true),
            net("bridge", "172.17.0.0/16", false),
        ]
        .into_iter()
        .map(|n| (n.network.name.clone(), n))
        .collect();
        let sbs: BTreeMap<String, SandboxRec> = [
            sb("web", 'a', &[("a", "10.1.0.2/24", &["www"])]),
            sb(
                "db",
                'b',
                &[("a", "10.1.0.3/24", &["sql"]), ("i", "10.3.0.3/24", &[])],
            ),
            sb("other", 'c', &[("b", "10.2.0.2/24", &[])]),
            sb("in", 'd', &[("i", "10.3.0.4/24", &[])]),
            sb("def", 'e', &[("bridge", "172.17.0.2/16", &[])]),
        ]
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
        Table::build(&nets, &sbs, vec![])
    }

    #[test]
    fn names_and_visibility() {
        let t = table();
        let web = ip("10.1.0.2");
        let db = vec![ip("10.1.0.3")];
        for q in ["db", "sql", "db-host", "bbbbbbbbbbbb", "db.a", "sql.a"] {
            assert_eq!(t.lookup("a", web, q), Answer::Addrs(db.clone()), "{q}");
        }
        assert_eq!(t.lookup("a", web, "nosuch.a"), Answer::NxDomain);
        assert_eq!(t.lookup("a", web, "example.com"), Answer::Forward);
        // Another network's sandbox sees nothing of network a, even through a's listener.
        assert_eq!(t.lookup("b", ip("10.2.0.2"), "db"), Answer::Forward);
        assert_eq!(t.lookup("a", ip("10.2.0.2"), "db"), Answer::Forward);
        assert_eq!(t.lookup("b", ip("10.2.0.2"), "db.a"), Answer::Forward);
        // db sits on a and i: from i, "db" is its address on i (the listener's network first).
        assert_eq!(
            t.lookup("i", ip("10.3.0.4"), "db"),
            Answer::Addrs(vec![ip("10.3.0.3")])
        );
        assert_eq!(
            t.lookup("i", ip("10.3.0.3"), "web"),
            Answer::Addrs(vec![web])
        );
        // Internal: unknown names are not forwarded for a sandbox only on internal networks,
        // but are for one that also has a way out, whichever listener it asks.
        assert_eq!(t.lookup("i", ip("10.3.0.4"), "example.com"), Answer::Refuse);
        assert_eq!(
            t.lookup("i", ip("10.3.0.3"), "example.com"),
            Answer::Forward
        );
        assert_eq!(
            t.lookup("i", ip("10.3.0.1"), "example.com"),
            Answer::NotOurs
        );
        assert_eq!(
            t.lookup("a", ip("192.0.2.1"), "example.com"),
            Answer::NotOurs
        );
        // PTR, first name; unknown address in the subnet: NXDOMAIN.
        assert_eq!(
            t.lookup("a", web, "3.0.1.10.in-addr.arpa"),
            Answer::Ptr("db".into())
        );
        assert_eq!(
            t.lookup("a", web, "9.0.1.10.in-addr.arpa"),
            Answer::NxDomain
        );
        assert_eq!(t.lookup("a", web, "1.1.1.1.in-addr.arpa"), Answer::Forward);
        // The default bridge has no names.
        assert_eq!(t.lookup("a", web, "def"), Answer::Forward);
        assert!(t.listeners().iter().all(|((n, _), _)| n != "bridge"));
        // The host (unknown source) sees the listener's network.
        assert_eq!(
            t.lookup("a", ip("10.1.0.1"), "web"),
            Answer::Addrs(vec![web])
        );
    }

    #[test]
    fn other_nodes_endpoints_answer_on_their_network_only() {
        let mut t = table();
        let web = ip("10.1.0.2");
        let far = RemoteName {
            names: vec!["far".into(), "far-alias".into()],
            addrs: vec![ip("10.1.0.77")],
        };
        let remote: RemoteNames = [(
            "a".to_string(),
            [("node2".to_string(), vec![far])].into_iter().collect(),
        )]
        .into_iter()
        .collect();
        assert_eq!(t.lookup("a", web, "far"), Answer::Forward);
        t.add_remote(&remote);
        for q in ["far", "far-alias", "far.a", "FAR"] {
            assert_eq!(
                t.lookup("a", web, &q.to_ascii_lowercase()),
                Answer::Addrs(vec![ip("10.1.0.77")]),
                "{q}"
            );
        }
        assert_eq!(
            t.lookup("a", web, "77.0.1.10.in-addr.arpa"),
            Answer::Ptr("far".into())
        );
        // Not visible from another network, and never an asker itself.
        assert_eq!(t.lookup("b", ip("10.2.0.2"), "far"), Answer::Forward);
        assert_eq!(
            t.lookup("a", ip("10.1.0.77"), "example.com"),
            Answer::NotOurs
        );
    }

    #[test]
    fn local_names_put_the_sandbox_name_first() {
        let sbs: BTreeMap<String, SandboxRec> = [(
            "db".to_string(),
            sb("db", 'b', &[("a", "10.1.0.3/24", &["sql"])]),
        )]
        .into_iter()
        .collect();
        assert_eq!(
            local_names(&sbs, "a"),
            vec![RemoteName {
                names: vec![
                    "db".into(),
                    "bbbbbbbbbbbb".into(),
                    "db-host".into(),
                    "sql".into()
                ],
                addrs: vec![ip("10.1.0.3")],
            }]
        );
        assert!(local_names(&sbs, "b").is_empty());
    }

    #[test]
    fn reverse_names() {
        assert_eq!(reverse_name("4.3.2.1.in-addr.arpa"), Some(ip("1.2.3.4")));
        assert_eq!(reverse_name("3.2.1.in-addr.arpa"), None);
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
        assert_eq!(reverse_name(v6), Some(ip("fd00::1")));
    }

    #[test]
    fn resolv_conf_servers() {
        let nets: BTreeMap<String, NetworkRec> = [
            net("a", "10.1.0.0/24", false),
            net("bridge", "172.17.0.0/16", false),
        ]
        .into_iter()
        .map(|n| (n.network.name.clone(), n))
        .collect();
        let s = sb(
            "x",
            'a',
            &[("bridge", "172.17.0.2/16", &[]), ("a", "10.1.0.2/24", &[])],
        );
        assert_eq!(nameservers(&nets, &s), vec![ip("10.1.0.1")]);
    }
}

#[cfg(test)]
mod build_cost {
    #![allow(clippy::unwrap_used)]
    use super::tests::*;
    use super::*;

    /// How long a rebuild with 1000 endpoints takes (printed; run with --nocapture --release).
    #[test]
    fn rebuild_1000() {
        let nets: BTreeMap<String, NetworkRec> = [net("a", "10.1.0.0/16", false)]
            .into_iter()
            .map(|n| (n.network.name.clone(), n))
            .collect();
        let sbs: BTreeMap<String, SandboxRec> = (0..1000u32)
            .map(|i| {
                let a = format!("10.1.{}.{}/16", i / 250, i % 250 + 2);
                let s = sb(&format!("s{i}"), 'a', &[("a", a.as_str(), &["alias"])]);
                (s.name.clone(), s)
            })
            .collect();
        let t = std::time::Instant::now();
        for _ in 0..10 {
            let tb = Table::build(&nets, &sbs, vec![]);
            assert_eq!(tb.nets["a"].eps.len(), 1000);
        }
        eprintln!("Table::build with 1000 endpoints: {:?}", t.elapsed() / 10);
    }
}
