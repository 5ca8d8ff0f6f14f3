//! `tuning`: chained plugin adjusting the container interface and its network sysctls.
fn main() {
    cni::skel::run(
        &tuning::Tuning,
        "CNI tuning plugin: sysctls, MAC, MTU, promisc, allmulti and txqueuelen with restore on DEL",
    )
}
