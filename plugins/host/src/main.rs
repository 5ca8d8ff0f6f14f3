//! `host`: Docker's `--network host` as a CNI plugin.
fn main() {
    cni::skel::run(
        &host::Host,
        "CNI host plugin: the sandbox shares the host network namespace (Docker --network host)",
    )
}
