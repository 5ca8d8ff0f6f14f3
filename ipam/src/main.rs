//! The `host-local` binary: the CNI skeleton around [`host_local::plugin`].
fn main() {}
