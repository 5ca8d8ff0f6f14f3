//! The one shape of a firewall entry as read back, whatever the backend (see [`crate::list`]).

/// One firewall entry of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `nftables`, `iptables` or `ip6tables`
    pub backend: &'static str,
    /// where it lives: `inet rcni set masq4`, `bridge rcni chain prerouting`,
    /// `nat chain CNI-HOSTPORT-DNAT`, …
    pub object: String,
    /// the element (`key` or `key : data`), `rule handle <n>`, or the iptables rule line
    pub entry: String,
    /// its comment (empty when it has none)
    pub comment: String,
}
