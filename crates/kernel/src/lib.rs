//! Kernel access: network namespaces, a synchronous netlink client (links, veths, bridges,
//! addresses, routes), sysctls. Behind small traits so plugin logic can be tested with a fake.
//!
//! Layout (the kernel layer, under the firewall and plugin layers):
//! - [`netns`]: open/identify/enter network namespaces, pinned namespaces under /run/netns.
//! - [`netlink`]: [`netlink::NetlinkOps`], the real [`netlink::Netlink`] socket and the
//!   recording [`netlink::FakeNetlink`].
//! - [`sysctl`]: /proc/sys reads and writes (per network namespace).
//! - [`conntrack`]: deletion of conntrack entries by protocol and destination port.
//! - [`mac`]: MAC parsing/formatting and random veth names.
//! - [`cni_error`]: the CNI error codes of this crate's errors (`From<Error> for CniError`).

pub mod cni_error;
pub mod conntrack;
pub mod error;
pub mod mac;
pub mod netlink;
pub mod netns;
pub mod sysctl;

pub use error::{Error, Result};
pub use netlink::{
    Addr, BridgeVlan, Call, FakeNetlink, Family, Link, Neighbour, Netlink, NetlinkOps, RouteSpec,
    VethSpec,
};
pub use netns::NetNs;
