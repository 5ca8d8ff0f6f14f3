//! `bridge`: docker0-style bridge networking for CNI.
fn main() {
    // Our host-local is linked in: when the `host-local` that CNI_PATH names is ours, IPAM runs
    // in this process instead of a second exec (cni::delegate explains the check).
    cni::delegate::register_builtin(vec![cni::delegate::Builtin {
        name: "host-local",
        plugin: &host_local::plugin::HostLocal,
        marker: host_local::BUILTIN_MARKER,
    }]);
    cni::skel::run(
        &bridge::Bridge,
        "CNI bridge plugin: a bridge, a veth pair per container, delegated IPAM, masquerade",
    )
}
