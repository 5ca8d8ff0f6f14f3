//! `overlay`: the CNI meta-plugin of sandboxd's multi-host overlay networks (like flannel's).
fn main() {
    cni::skel::run(
        &overlay::Overlay,
        "CNI overlay plugin: bridge + host-local in this node's slice of a sandboxd overlay network",
    )
}
