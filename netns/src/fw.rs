//! Firewall entries that belong to an attachment, from the firewall crate's own listing API
//! (`firewall::list`): our nftables tables (`inet rcni` and `bridge rcni`) and our iptables
//! entries in the `nat` and `filter` tables of both families. Nothing is re-parsed here.

use serde::Serialize;

/// One firewall entry.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FwEntry {
    /// Container ID of the attachment it belongs to.
    #[serde(rename = "containerId")]
    pub container_id: String,
    /// "nftables" or "iptables"/"ip6tables".
    pub backend: String,
    /// Where: `inet rcni set masq4`, `nat chain CNI-…`, ...
    pub object: String,
    /// The element or rule.
    pub entry: String,
    /// Its comment.
    pub comment: String,
}

/// Identity of an attachment for matching.
#[derive(Debug, Clone)]
pub struct Owner {
    /// Network name.
    pub network: String,
    /// Container ID.
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
}

/// The entries of `all` owned by one of `owners`.
pub fn owned(all: &[firewall::list::Entry], owners: &[Owner]) -> Vec<FwEntry> {
    let mut out = Vec::new();
    for e in all {
        for o in owners
            .iter()
            .filter(|o| e.owned_by(&o.network, &o.container_id, &o.ifname))
        {
            out.push(FwEntry {
                container_id: o.container_id.clone(),
                backend: e.backend.to_string(),
                object: e.object.clone(),
                entry: e.entry.clone(),
                comment: e.comment.clone(),
            });
        }
    }
    out
}

/// Read every backend and return the entries of `owners`. When the firewall cannot be read,
/// the reason goes to stderr and the list is empty (a debugging view, not a check).
pub fn collect(owners: &[Owner]) -> Vec<FwEntry> {
    if owners.is_empty() {
        return Vec::new();
    }
    match firewall::list::list_all() {
        Ok(all) => owned(&all, owners),
        Err(e) => {
            eprintln!("netns: cannot list firewall entries: {e}");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firewall::list::Entry;

    fn owner(cid: &str) -> Owner {
        Owner {
            network: "demo".into(),
            container_id: cid.into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn entries_are_attributed_to_their_owner() {
        let ours = firewall::names::owner_comment("demo", "web-id", "eth0");
        let other = firewall::names::owner_comment("demo", "web-id2", "eth0");
        let standby = firewall::portmap::nft::pm_comment("demo", "web-id", "eth0");
        let nft = |object: &str, entry: &str, comment: &str| Entry {
            backend: "nftables",
            object: object.into(),
            entry: entry.into(),
            comment: comment.into(),
        };
        let all = vec![
            nft("inet rcni set masq4", "10.22.0.5", &ours),
            nft("inet rcni set masq4", "10.22.0.6", &other),
            nft(
                "inet rcni set hostport-standby4",
                "0.0.0.0 . tcp . 8087 . 0xd3b2c180 : 10.33.0.2 . 80",
                &standby,
            ),
            Entry {
                backend: "iptables",
                object: "nat chain POSTROUTING".into(),
                entry: "-A POSTROUTING -s 10.22.0.5/32 -j CNI-abc".into(),
                comment: "name: \"demo\" id: \"web-id\"".into(),
            },
            Entry {
                backend: "iptables",
                object: "nat chain POSTROUTING".into(),
                entry: "-A POSTROUTING -s 10.23.0.5/32 -j CNI-ghi".into(),
                comment: "name: \"other\" id: \"web-id\"".into(),
            },
        ];
        let got = owned(&all, &[owner("web-id")]);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].entry, "10.22.0.5");
        assert_eq!(got[0].comment, ours);
        assert_eq!(got[1].object, "inet rcni set hostport-standby4");
        assert_eq!(got[2].backend, "iptables");
        assert_eq!(owned(&all, &[owner("web-id2")]).len(), 1);
        assert!(collect(&[]).is_empty());
    }
}
