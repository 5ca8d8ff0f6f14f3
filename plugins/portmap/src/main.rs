//! `portmap`: publishes container ports on the host (chained after bridge).
fn main() {
    cni::skel::run(
        &portmap::Portmap,
        "CNI portmap plugin: host port -> container DNAT with hairpin, localhost and conntrack cleanup",
    )
}
