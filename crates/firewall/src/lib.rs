//! Firewall: one trait, two backends (nftables through nftnl, iptables with the reference layout).
