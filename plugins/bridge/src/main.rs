//! `bridge`: docker0-style bridge networking for CNI.
fn main() {
    cni::skel::run(
        &bridge::Bridge,
        "CNI bridge plugin: a bridge, a veth pair per container, delegated IPAM, masquerade",
    )
}
