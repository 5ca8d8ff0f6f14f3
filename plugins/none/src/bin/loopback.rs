//! `loopback`: the reference plugin's name for the same behaviour (containerd runs it for every pod).
fn main() {
    cni::skel::run(&none::Loopback, "CNI loopback plugin")
}
