//! Listing: every firewall entry of ours, read back from the kernel (nftables, through the
//! crate's own netlink reader) and from iptables (`-S` of the `nat` and `filter` tables, through
//! the command layer), with the owner each one belongs to. Used by `netns show`, and usable by
//! GC and reconcile: an entry's comment starts with the owner tag of [`crate::names::owner_tag`]
//! (nftables) or carries the reference comment `name: "<net>" id: "<cid>"` (iptables).
//!
//! Each feature lists its own objects (its sets, maps and chains, through `crate::nft::entries`);
//! this module assembles them and adds the iptables entries.

use std::net::IpAddr;

pub use crate::entry::Entry;
use crate::iptables::{rules, split_rule_line, ExecRunner, Runner};
use crate::names::{owner_tag, tag_of_comment};
use crate::nft::netlink::Nl;
use crate::{Error, Family};

impl Entry {
    /// Whether the entry belongs to the attachment (network, container id, ifname).
    /// nftables: the comment starts with the owner tag. iptables: the reference comment names
    /// the container (and the network, when it names one), or the rule is a forward accept of
    /// an address recorded for the owner.
    pub fn owned_by(&self, network: &str, container_id: &str, ifname: &str) -> bool {
        if self.backend == "nftables" {
            return tag_of_comment(&self.comment) == owner_tag(network, container_id, ifname);
        }
        if self.comment.contains(&format!("id: \"{container_id}\"")) {
            return !self.comment.contains("name: \"")
                || self.comment.contains(&format!("name: \"{network}\""));
        }
        self.object == format!("filter chain {}", crate::forward::iptables::FORWARD_CHAIN)
            && crate::forward::iptables::recorded_ips(network, container_id, ifname)
                .iter()
                .any(|ip| {
                    let host = match ip {
                        IpAddr::V4(_) => format!("{ip}/32"),
                        IpAddr::V6(_) => format!("{ip}/128"),
                    };
                    split_rule_line(&self.entry).contains(&host)
                })
    }
}

/// Every entry of ours in both backends. A backend that is not there (no nf_tables, no iptables
/// binary) has no entries; any other failure to look is an error, never an empty list.
pub fn list_all() -> Result<Vec<Entry>, Error> {
    let mut out = Vec::new();
    if crate::nft_available() {
        let mut nl = Nl::open()?;
        out.extend(crate::masquerade::nft::list(&mut nl)?);
        out.extend(crate::portmap::nft::list(&mut nl)?);
        out.extend(crate::forward::nft::list(&mut nl)?);
        out.extend(crate::macspoof::nft::list(&mut nl)?);
    }
    out.extend(iptables_entries(&ExecRunner)?);
    Ok(out)
}

/// The entries of one attachment (network, container id, ifname) in both backends.
pub fn list(network: &str, container_id: &str, ifname: &str) -> Result<Vec<Entry>, Error> {
    Ok(list_all()?
        .into_iter()
        .filter(|e| e.owned_by(network, container_id, ifname))
        .collect())
}

/// Our rules in the `nat` and `filter` tables of both families: rules of chains named `CNI-…`,
/// and rules elsewhere that jump to one or carry the reference comment.
pub(crate) fn iptables_entries(runner: &dyn Runner) -> Result<Vec<Entry>, Error> {
    let mut out = Vec::new();
    for fam in Family::ALL {
        for table in ["nat", "filter"] {
            let args: Vec<String> = ["-w", "-t", table, "-S"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let listing = match runner.run(fam.prog(), &args) {
                Ok(o) if o.success => o.stdout,
                // No binary, or no such table in this namespace: nothing of ours there.
                Err(Error::Exec { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    continue
                }
                Ok(o)
                    if o.stderr.contains("does not exist")
                        || o.stderr.contains("Table does not exist") =>
                {
                    continue
                }
                Ok(o) => {
                    return Err(Error::Command {
                        cmd: format!("{} {}", fam.prog(), args.join(" ")),
                        status: o.status,
                        stderr: o.stderr,
                    })
                }
                Err(e) => return Err(e),
            };
            out.extend(parse_iptables(&listing, fam, table));
        }
    }
    Ok(out)
}

fn parse_iptables(listing: &str, fam: Family, table: &str) -> Vec<Entry> {
    rules(listing)
        .into_iter()
        .filter(|r| {
            r.chain.starts_with("CNI-")
                || r.target().is_some_and(|t| t.starts_with("CNI-"))
                || r.comment().contains(" id: \"")
        })
        .map(|r| Entry {
            backend: fam.prog(),
            object: format!("{table} chain {}", r.chain),
            comment: r.comment().to_string(),
            entry: r.line,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iptables_lines_of_ours_and_their_owners() {
        let listing = "-P POSTROUTING ACCEPT\n\
            -N CNI-88a20ff1b49d3eeca9368247\n\
            -A POSTROUTING -s 10.22.0.5/32 -m comment --comment \"name: \\\"n1\\\" id: \\\"c1\\\"\" -j CNI-88a20ff1b49d3eeca9368247\n\
            -A CNI-88a20ff1b49d3eeca9368247 -d 10.22.0.0/24 -m comment --comment \"name: \\\"n1\\\" id: \\\"c1\\\"\" -j ACCEPT\n\
            -A POSTROUTING -o eth9 -j MASQUERADE\n";
        let e = parse_iptables(listing, Family::V4, "nat");
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].object, "nat chain POSTROUTING");
        assert_eq!(e[1].object, "nat chain CNI-88a20ff1b49d3eeca9368247");
        assert_eq!(e[0].comment, "name: \"n1\" id: \"c1\"");
        assert!(e[0].owned_by("n1", "c1", "eth0"));
        assert!(!e[0].owned_by("n2", "c1", "eth0"));
        assert!(!e[0].owned_by("n1", "c2", "eth0"));
    }

    #[test]
    fn nftables_entries_are_owned_by_their_tag() {
        let e = Entry {
            backend: "nftables",
            object: "inet rcni set masq4".into(),
            entry: "10.22.0.5".into(),
            comment: crate::names::owner_comment("n1", "c1", "eth0"),
        };
        assert!(e.owned_by("n1", "c1", "eth0"));
        assert!(!e.owned_by("n1", "c1", "eth1"));
    }
}
