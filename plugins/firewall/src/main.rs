//! `firewall`: chained plugin letting container traffic through the host's forward filter.
fn main() {
    cni::skel::run(
        &firewall_plugin::FirewallPlugin,
        "CNI firewall plugin: forward accepts (nftables or iptables) and ingressPolicy isolation",
    )
}
