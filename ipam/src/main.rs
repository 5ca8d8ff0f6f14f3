//! The `host-local` binary: the CNI skeleton around [`host_local::plugin::HostLocal`].

fn main() {
    cni::skel::run(
        &host_local::plugin::HostLocal,
        "CNI host-local plugin (rust, reference-compatible data directory)",
    )
}
