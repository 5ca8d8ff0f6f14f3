//! The `host-local` binary: the CNI skeleton around [`host_local::plugin::HostLocal`].

fn main() {
    // The about text carries the builtin marker: it is how `bridge` recognises this binary in
    // CNI_PATH as ours and may run the allocator in its own process (cni::delegate).
    cni::skel::run(
        &host_local::plugin::HostLocal,
        concat!(
            "CNI host-local plugin (rust, reference-compatible data directory) [",
            host_local::builtin_marker!(),
            "]"
        ),
    )
}
