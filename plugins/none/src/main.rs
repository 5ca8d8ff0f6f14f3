//! `none`: Docker's `--network none` as a CNI plugin (loopback only).
fn main() {
    cni::skel::run(
        &none::Loopback,
        "CNI none plugin: the sandbox gets loopback only (Docker --network none)",
    )
}
