//! iptables port forwarding with the reference `portmap` plugin's layout,
//! so hosts whose tooling expects these chains keep working and rules written by
//! the reference plugin are found and removed by ours:
//!
//! ```text
//! nat PREROUTING / OUTPUT:  -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT       (appended)
//! nat POSTROUTING:          -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ (first)
//! CNI-HOSTPORT-MASQ:        -m mark --mark 0x2000/0x2000 -j MASQUERADE
//! CNI-HOSTPORT-SETMARK:     -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
//! CNI-HOSTPORT-DNAT:        -p tcp -m comment --comment "dnat name: \"<net>\" id: \"<cid>\"" -m multiport
//!                               --destination-ports 8080,8443 [conditions] -j CNI-DN-<21 hex>   (≤15 ports/rule)
//! CNI-DN-<21 hex of sha512(net+cid)>, per mapping, in this order:
//!     -p tcp -s <container subnet> --dport 8080 [-d hostIP] -j CNI-HOSTPORT-SETMARK   (hairpin, snat)
//!     -p tcp -s 127.0.0.1 --dport 8080 [-d hostIP] -j CNI-HOSTPORT-SETMARK           (localhost, v4, snat)
//!     -p tcp --dport 8080 [-d hostIP] -j DNAT --to-destination 10.22.0.2:80        ([v6]:port)
//! ```
//!
//! The per-container chain is per (network, container) like the reference, so DEL removes every
//! ifname of that container in that network. DEL needs no mappings: it lists CNI-HOSTPORT-DNAT
//! and deletes the rules jumping to the container's chain. Top-level chains are never removed.
//!
//! Shared host ports behave as in the nftables backend: the same container may publish a host
//! port on several networks (Podman passes a container's portMappings to every network it
//! joins); each network has its own chain, the first entry rule matches, and when that
//! network's chain is deleted the next one answers. A host port whose DNAT (same protocol, port
//! and `-d` host address) is in ANOTHER container's chain is refused before anything changes,
//! naming the owner (the reference lets the first rule silently shadow the other). The check
//! lists CNI-HOSTPORT-DNAT once per family and reads only the chains whose entry rules name
//! one of the requested ports.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::iptables::{collect, rules, s, stale_jump_targets, ExecRunner, Runner, Table};
use crate::names::sha512_hex;
use crate::portmap::{PortForward, PortmapSpec, Proto};
use crate::{lock, validate_owner, Error, Family, LOCK_PATH};

/// Top-level DNAT chain.
pub const DNAT_CHAIN: &str = "CNI-HOSTPORT-DNAT";
/// Chain that sets the masquerade mark.
pub const SETMARK_CHAIN: &str = "CNI-HOSTPORT-SETMARK";
/// Chain that masquerades marked packets.
pub const MASQ_CHAIN: &str = "CNI-HOSTPORT-MASQ";
const MASQ_COMMENT: &str = "CNI portfwd requiring masquerade";
const MARK_COMMENT: &str = "CNI portfwd masquerade mark";
/// Ports per multiport match (the iptables limit).
const MULTIPORT_MAX: usize = 15;

/// `CNI-DN-` + 21 hex of sha512(network + container id) (reference name, 28 chars).
pub fn dn_chain(network: &str, container_id: &str) -> String {
    let h = sha512_hex(format!("{network}{container_id}").as_bytes());
    format!("CNI-DN-{}", &h[..21])
}

/// Reference comment of the entry rules.
pub fn dnat_comment(network: &str, container_id: &str) -> String {
    format!("dnat name: \"{network}\" id: \"{container_id}\"")
}

fn mark_hex(bit: u8) -> String {
    let m = 1u32 << bit;
    format!("{m:#x}/{m:#x}")
}

/// The rules of one family: (chain, args) pairs in order. First the container chain's rules,
/// then the entry rules of [`DNAT_CHAIN`].
pub fn container_rules(spec: &PortmapSpec, fam: Family) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let addr = match fam {
        Family::V4 => spec.v4,
        Family::V6 => spec.v6,
    };
    let Some(addr) = addr else {
        return (Vec::new(), Vec::new());
    };
    let ip = addr.addr();
    let maps: Vec<_> = spec.mappings.iter().filter(|m| m.applies_to(ip)).collect();
    if maps.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let chain = dn_chain(&spec.network, &spec.container_id);
    let comment = dnat_comment(&spec.network, &spec.container_id);
    let conditions = match fam {
        Family::V4 => &spec.conditions_v4,
        Family::V6 => &spec.conditions_v6,
    };
    let mut entries = Vec::new();
    let protos: BTreeSet<_> = maps.iter().map(|m| m.proto).collect();
    for proto in protos {
        let ports: Vec<String> = maps
            .iter()
            .filter(|m| m.proto == proto)
            .map(|m| m.host_port.to_string())
            .collect();
        for chunk in ports.chunks(MULTIPORT_MAX) {
            let mut r = s(&["-p", proto.as_str(), "-m", "comment", "--comment", &comment]);
            r.extend(s(&[
                "-m",
                "multiport",
                "--destination-ports",
                &chunk.join(","),
            ]));
            r.extend(conditions.iter().cloned());
            r.extend(s(&["-j", &chain]));
            entries.push(r);
        }
    }
    let setmark = spec
        .external_set_mark_chain
        .clone()
        .unwrap_or_else(|| SETMARK_CHAIN.to_string());
    let mut rules = Vec::new();
    for m in maps {
        let mut base = s(&["-p", m.proto.as_str()]);
        let dport = m.host_port.to_string();
        let dest: Vec<String> = m
            .specific_host_ip()
            .map(|h| s(&["-d", &h.to_string()]))
            .unwrap_or_default();
        if spec.snat {
            let mut hp = base.clone();
            hp.extend(s(&["-s", &addr.trunc().to_string(), "--dport", &dport]));
            hp.extend(dest.iter().cloned());
            hp.extend(s(&["-j", &setmark]));
            rules.push(hp);
            if fam == Family::V4 {
                let mut lo = base.clone();
                lo.extend(s(&["-s", "127.0.0.1", "--dport", &dport]));
                lo.extend(dest.iter().cloned());
                lo.extend(s(&["-j", &setmark]));
                rules.push(lo);
            }
        }
        if spec.masq_all {
            let mut all = base.clone();
            all.extend(s(&["--dport", &dport]));
            all.extend(dest.iter().cloned());
            all.extend(s(&["-j", &setmark]));
            rules.push(all);
        }
        let to = match ip {
            std::net::IpAddr::V4(a) => format!("{a}:{}", m.container_port),
            std::net::IpAddr::V6(a) => format!("[{a}]:{}", m.container_port),
        };
        base.extend(s(&["--dport", &dport]));
        base.extend(dest);
        base.extend(s(&["-j", "DNAT", "--to-destination", &to]));
        rules.push(base);
    }
    (rules, entries)
}

/// The fixed rules: (chain, args, insert first?).
fn top_rules(spec: &PortmapSpec) -> Vec<(&'static str, Vec<String>, bool)> {
    let jump = s(&["-m", "addrtype", "--dst-type", "LOCAL", "-j", DNAT_CHAIN]);
    let mut v = vec![("PREROUTING", jump.clone(), false), ("OUTPUT", jump, false)];
    if spec.external_set_mark_chain.is_none() {
        let mark = mark_hex(spec.mark_bit);
        v.push((
            SETMARK_CHAIN,
            s(&[
                "-m",
                "comment",
                "--comment",
                MARK_COMMENT,
                "-j",
                "MARK",
                "--set-xmark",
                &mark,
            ]),
            false,
        ));
        v.push((
            MASQ_CHAIN,
            s(&["-m", "mark", "--mark", &mark, "-j", "MASQUERADE"]),
            false,
        ));
        v.push((
            "POSTROUTING",
            s(&["-m", "comment", "--comment", MASQ_COMMENT, "-j", MASQ_CHAIN]),
            true,
        ));
    }
    v
}

/// An entry rule of [`DNAT_CHAIN`] as listed by `-S`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRule {
    /// Container id from the reference comment `dnat name: "<net>" id: "<cid>"`.
    pub container_id: String,
    /// The whole comment.
    pub comment: String,
    /// The per-container chain it jumps to.
    pub chain: String,
    /// `-p`.
    pub proto: Option<Proto>,
    /// `--dports` of its multiport match.
    pub ports: Vec<u16>,
}

/// Entry rules (ours or the reference's) of a `-S CNI-HOSTPORT-DNAT` listing.
pub(crate) fn parse_entries(listing: &str) -> Vec<EntryRule> {
    let mut out = Vec::new();
    for r in rules(listing) {
        let (Some(comment), Some(chain)) = (r.arg("--comment"), r.target()) else {
            continue;
        };
        let Some(cid) = comment
            .split_once(" id: \"")
            .and_then(|(_, rest)| rest.strip_suffix('"'))
        else {
            continue;
        };
        out.push(EntryRule {
            container_id: cid.to_string(),
            comment: comment.to_string(),
            chain: chain.to_string(),
            proto: r.arg("-p").and_then(Proto::parse),
            ports: r
                .arg("--dports")
                .or_else(|| r.arg("--destination-ports"))
                .map(|p| p.split(',').filter_map(|x| x.parse().ok()).collect())
                .unwrap_or_default(),
        });
    }
    out
}

/// (protocol, host port, `-d` address) of every DNAT rule of a per-container chain listing.
pub(crate) fn parse_dnats(listing: &str) -> Vec<(Proto, u16, Option<IpAddr>)> {
    rules(listing)
        .iter()
        .filter(|r| r.target() == Some("DNAT"))
        .filter_map(|r| {
            let proto = r.arg("-p").and_then(Proto::parse)?;
            let port = r.arg("--dport").and_then(|p| p.parse().ok())?;
            let dest = r.arg("-d").and_then(|d| d.split('/').next()?.parse().ok());
            Some((proto, port, dest))
        })
        .collect()
}

/// iptables implementation of [`PortForward`].
pub(crate) struct IptablesPortForward<R: Runner = ExecRunner> {
    runner: R,
    lock_path: PathBuf,
}

impl IptablesPortForward<ExecRunner> {
    /// Execs the real binaries, locks [`LOCK_PATH`].
    pub fn new() -> Self {
        Self::with_runner(ExecRunner, PathBuf::from(LOCK_PATH))
    }
}

impl Default for IptablesPortForward<ExecRunner> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R: Runner> IptablesPortForward<R> {
    /// Custom runner and lock file (tests).
    pub fn with_runner(runner: R, lock_path: PathBuf) -> Self {
        Self { runner, lock_path }
    }

    fn nat(&self) -> Table<'_, R> {
        Table::new(&self.runner, "nat")
    }

    /// Err naming the owner when another container's chain already DNATs one of `spec`'s host
    /// ports (same protocol, port and host address) in this family. Nothing is changed.
    fn refuse_foreign(&self, spec: &PortmapSpec, fam: Family) -> Result<(), Error> {
        let addr = match fam {
            Family::V4 => spec.v4,
            Family::V6 => spec.v6,
        };
        let Some(addr) = addr else { return Ok(()) };
        let wanted: Vec<_> = spec
            .mappings
            .iter()
            .filter(|m| m.applies_to(addr.addr()))
            .collect();
        let listing = match self.nat().run(fam, s(&["-S", DNAT_CHAIN]))? {
            o if o.success => o.stdout,
            _ => return Ok(()),
        };
        let mut read = BTreeSet::new();
        for entry in parse_entries(&listing) {
            if entry.container_id == spec.container_id {
                continue;
            }
            let named = wanted
                .iter()
                .any(|m| Some(m.proto) == entry.proto && entry.ports.contains(&m.host_port));
            if !named || !read.insert(entry.chain.clone()) {
                continue;
            }
            let out = self.nat().run(fam, s(&["-S", &entry.chain]))?;
            if !out.success {
                continue;
            }
            let dnats = parse_dnats(&out.stdout);
            for m in &wanted {
                let key = (m.proto, m.host_port, m.specific_host_ip());
                if dnats.contains(&key) {
                    let host = m
                        .specific_host_ip()
                        .map(|h| format!("{h} . "))
                        .unwrap_or_default();
                    return Err(Error::Conflict(format!(
                        "host port {host}{} . {} ({} nat {}) is already published by another attachment \"{}\"; DEL it or run GC first",
                        m.proto,
                        m.host_port,
                        fam.prog(),
                        entry.chain,
                        entry.comment
                    )));
                }
            }
        }
        Ok(())
    }

    fn add_family(&self, spec: &PortmapSpec, fam: Family) -> Result<(), Error> {
        let (rules, entries) = container_rules(spec, fam);
        if rules.is_empty() {
            return Ok(());
        }
        self.nat().ensure_chain(fam, DNAT_CHAIN)?;
        if spec.external_set_mark_chain.is_none() {
            self.nat().ensure_chain(fam, SETMARK_CHAIN)?;
            self.nat().ensure_chain(fam, MASQ_CHAIN)?;
        }
        for (chain, rule, first) in top_rules(spec) {
            if !self.nat().exists(fam, chain, &rule)? {
                let mut args = if first {
                    s(&["-I", chain, "1"])
                } else {
                    s(&["-A", chain])
                };
                args.extend(rule);
                self.nat().run_ok(fam, args)?;
            }
        }
        let chain = dn_chain(&spec.network, &spec.container_id);
        // A fresh chain each ADD: rules of an earlier ADD of this container would otherwise
        // linger in front of the new ones.
        if self.nat().chain_exists(fam, &chain)? {
            self.nat().run_ok(fam, s(&["-F", &chain]))?;
        } else {
            self.nat().run_ok(fam, s(&["-N", &chain]))?;
        }
        for rule in rules {
            let mut args = s(&["-A", &chain]);
            args.extend(rule);
            self.nat().run_ok(fam, args)?;
        }
        for entry in entries {
            if !self.nat().exists(fam, DNAT_CHAIN, &entry)? {
                let mut args = s(&["-A", DNAT_CHAIN]);
                args.extend(entry);
                self.nat().run_ok(fam, args)?;
            }
        }
        Ok(())
    }
}

/// Families with an address in `spec`.
fn families(spec: &PortmapSpec) -> Vec<Family> {
    let mut v = Vec::new();
    if spec.v4.is_some() {
        v.push(Family::V4);
    }
    if spec.v6.is_some() {
        v.push(Family::V6);
    }
    v
}

impl<R: Runner> PortForward for IptablesPortForward<R> {
    fn add_portmap(&self, spec: &PortmapSpec) -> Result<(), Error> {
        spec.validate()?;
        if spec.mappings.is_empty() {
            return Ok(());
        }
        let _guard = lock::lock(&self.lock_path)?;
        for fam in families(spec) {
            self.refuse_foreign(spec, fam)?;
        }
        let chain = dn_chain(&spec.network, &spec.container_id);
        for fam in families(spec) {
            if let Err(e) = self.add_family(spec, fam) {
                // Roll back this call's chains so a failed ADD leaves nothing behind.
                let mut ignored = Vec::new();
                for f in families(spec) {
                    self.nat().remove_chain(f, DNAT_CHAIN, &chain, &mut ignored);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn del_portmap(&self, network: &str, container_id: &str, ifname: &str) -> Result<(), Error> {
        validate_owner(network, container_id, ifname)?;
        let _guard = lock::lock(&self.lock_path)?;
        let chain = dn_chain(network, container_id);
        let mut errors = Vec::new();
        for fam in [Family::V4, Family::V6] {
            self.nat()
                .remove_chain(fam, DNAT_CHAIN, &chain, &mut errors);
        }
        collect(errors)
    }

    fn check_portmap(&self, spec: &PortmapSpec) -> Result<(), Error> {
        spec.validate()?;
        let _guard = lock::lock(&self.lock_path)?;
        let chain = dn_chain(&spec.network, &spec.container_id);
        for fam in families(spec) {
            let (rules, entries) = container_rules(spec, fam);
            let all = rules
                .iter()
                .map(|r| (chain.as_str(), r))
                .chain(entries.iter().map(|e| (DNAT_CHAIN, e)));
            for (c, rule) in all {
                if !self.nat().exists(fam, c, rule)? {
                    return Err(Error::Missing(format!(
                        "{} nat rule missing: -A {c} {}",
                        fam.prog(),
                        rule.join(" ")
                    )));
                }
            }
        }
        Ok(())
    }

    fn gc_portmap(&self, network: &str, keep: &[(String, String)]) -> Result<(), Error> {
        validate_owner(network, "gc", "gc")?;
        let _guard = lock::lock(&self.lock_path)?;
        // Chains are per container: a container is kept if any of its ifnames is.
        let kept: BTreeSet<String> = keep.iter().map(|(c, _)| dn_chain(network, c)).collect();
        let prefix = format!("dnat name: \"{network}\" id: \"");
        let mut errors = Vec::new();
        for fam in [Family::V4, Family::V6] {
            let listing = match self.nat().run(fam, s(&["-S", DNAT_CHAIN])) {
                Ok(o) if o.success => o.stdout,
                _ => continue,
            };
            let stale = stale_jump_targets(&listing, &prefix, "CNI-DN-", &kept);
            for chain in stale {
                self.nat()
                    .remove_chain(fam, DNAT_CHAIN, &chain, &mut errors);
            }
        }
        collect(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portmap::PortMap;

    fn spec() -> PortmapSpec {
        let mut s = PortmapSpec::new("s1net", "s1cid1", "eth0");
        s.v4 = Some("10.22.0.5/24".parse().unwrap());
        s.v6 = Some("fd00::5/64".parse().unwrap());
        s.mappings = vec![
            PortMap::from_raw(8080, 80, "tcp", "").unwrap(),
            PortMap::from_raw(8443, 443, "tcp", "").unwrap(),
            PortMap::from_raw(5353, 53, "udp", "127.0.0.1").unwrap(),
        ];
        s
    }

    #[test]
    fn chain_name_is_28_chars() {
        let c = dn_chain("s1net", "s1cid1");
        assert_eq!(c.len(), 28);
        assert!(c.starts_with("CNI-DN-"));
    }

    #[test]
    fn v4_rules_in_reference_order() {
        let (rules, entries) = container_rules(&spec(), Family::V4);
        let r: Vec<String> = rules.iter().map(|r| r.join(" ")).collect();
        assert_eq!(
            r[0],
            "-p tcp -s 10.22.0.0/24 --dport 8080 -j CNI-HOSTPORT-SETMARK"
        );
        assert_eq!(
            r[1],
            "-p tcp -s 127.0.0.1 --dport 8080 -j CNI-HOSTPORT-SETMARK"
        );
        assert_eq!(
            r[2],
            "-p tcp --dport 8080 -j DNAT --to-destination 10.22.0.5:80"
        );
        assert_eq!(
            r[8],
            "-p udp --dport 5353 -d 127.0.0.1 -j DNAT --to-destination 10.22.0.5:53"
        );
        assert_eq!(entries.len(), 2);
        let e0 = entries[0].join(" ");
        assert!(e0.contains("--destination-ports 8080,8443"), "{e0}");
        assert!(e0.contains("dnat name: \"s1net\" id: \"s1cid1\""), "{e0}");
    }

    #[test]
    fn v6_skips_localhost_and_other_family_host_ip() {
        let (rules, entries) = container_rules(&spec(), Family::V6);
        let r: Vec<String> = rules.iter().map(|r| r.join(" ")).collect();
        assert_eq!(r.len(), 4, "{r:?}");
        assert!(r[1].ends_with("--to-destination [fd00::5]:80"));
        assert_eq!(entries.len(), 1);
    }

    #[test]
    fn multiport_chunks_of_fifteen() {
        let mut sp = spec();
        sp.mappings = (1..=20)
            .map(|p| PortMap::from_raw(p, 80, "tcp", "").unwrap())
            .collect();
        let (_, entries) = container_rules(&sp, Family::V4);
        assert_eq!(entries.len(), 2);
    }

    #[test]
    fn listings_parse_into_owners_and_dnat_keys() {
        let entries = "-N CNI-HOSTPORT-DNAT\n\
            -A CNI-HOSTPORT-DNAT -p tcp -m comment --comment \"dnat name: \\\"a\\\" id: \\\"ctr\\\"\" -m multiport --dports 8087,9000 -j CNI-DN-aaa\n\
            -A CNI-HOSTPORT-DNAT -p udp -m comment --comment \"dnat name: \\\"b\\\" id: \\\"x\\\"\" -m multiport --dports 53 -j CNI-DN-bbb\n";
        let e = parse_entries(entries);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].container_id, "ctr");
        assert_eq!(e[0].chain, "CNI-DN-aaa");
        assert_eq!(e[0].proto, Some(Proto::Tcp));
        assert_eq!(e[0].ports, vec![8087, 9000]);
        assert_eq!(e[1].comment, "dnat name: \"b\" id: \"x\"");
        let chain = "-N CNI-DN-aaa\n\
            -A CNI-DN-aaa -s 10.22.0.0/24 -p tcp -m tcp --dport 8087 -j CNI-HOSTPORT-SETMARK\n\
            -A CNI-DN-aaa -p tcp -m tcp --dport 8087 -j DNAT --to-destination 10.22.0.2:80\n\
            -A CNI-DN-aaa -d 127.0.0.1/32 -p tcp -m tcp --dport 9000 -j DNAT --to-destination 10.22.0.2:90\n";
        assert_eq!(
            parse_dnats(chain),
            vec![
                (Proto::Tcp, 8087, None),
                (Proto::Tcp, 9000, Some("127.0.0.1".parse().unwrap()))
            ]
        );
    }

    #[test]
    fn mark_bit_and_external_chain() {
        let mut sp = spec();
        sp.mark_bit = 5;
        let top = top_rules(&sp);
        assert!(top
            .iter()
            .any(|(_, r, _)| r.join(" ").contains("0x20/0x20")));
        sp.external_set_mark_chain = Some("KUBE-MARK-MASQ".into());
        assert_eq!(top_rules(&sp).len(), 2);
        let (rules, _) = container_rules(&sp, Family::V4);
        assert!(rules[0].join(" ").ends_with("-j KUBE-MARK-MASQ"));
    }
}
