//! The bridge plugin's side effects, behind four small object-safe traits so that its logic
//! (ADD's LIFO rollback above all, and DEL's best-effort teardown) runs against fakes in unit
//! tests without root: the seam design youki uses for its syscalls.
//!
//! - [`Kernel`]: netlink sockets (as [`NetlinkOps`], the real client or `kernel::FakeNetlink`),
//!   sysctls on both sides of the veth, the sysfs look-up that saves re-pinning the bridge MAC,
//!   and the sleeps of the polling loops;
//! - [`Masquerade`]: chooses the `ipMasq` backend and hands out its [`Firewall`];
//! - [`AntiSpoof`]: the `macspoofchk` entries;
//! - [`Ipam`]: delegation to the IPAM plugin.
//!
//! [`Deps`] bundles one of each; [`Deps::SYSTEM`] is what the binary runs with. The plugin logic
//! takes `&Deps` and never calls the kernel, the firewall crate or `cni::delegate` directly.

use std::time::Duration;

use cni::delegate;
use cni::error::CniError;
use cni::result::CniResult;
use cni::skel::CmdArgs;
use firewall::macspoof::SpoofEntry;
use firewall::Firewall;
use kernel::mac::format_mac;
use kernel::netlink::{Netlink, NetlinkOps};
use kernel::netns::NetNs;
use kernel::sysctl;

/// One sysctl write inside the container's namespace (key relative to /proc/sys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlWrite {
    /// Key, e.g. `net/ipv4/conf/eth0/arp_notify`.
    pub key: String,
    /// Value to write.
    pub value: &'static str,
    /// A failed write fails the ADD; otherwise it is ignored (a knob older kernels lack).
    pub required: bool,
}

/// Kernel access: sockets, sysctls, sysfs, time.
pub trait Kernel: Sync {
    /// A netlink socket in the plugin's own (host) namespace.
    fn host_netlink(&self) -> kernel::Result<Box<dyn NetlinkOps>>;
    /// A netlink socket inside `ns`.
    fn netlink_in(&self, ns: &NetNs) -> kernel::Result<Box<dyn NetlinkOps>>;
    /// Write a sysctl of the host namespace.
    fn sysctl_write(&self, key: &str, value: &str) -> kernel::Result<()>;
    /// Write a host sysctl only when its value differs; whether a write happened.
    fn sysctl_write_if_different(&self, key: &str, value: &str) -> kernel::Result<bool>;
    /// Apply `writes` in order inside `ns`. The outer error is entering the namespace; the inner
    /// one the first failed required write.
    fn container_sysctls(
        &self,
        ns: &NetNs,
        writes: &[SysctlWrite],
    ) -> kernel::Result<Result<(), String>>;
    /// Whether the bridge's MAC is already set by user space, so pinning it is a no-op.
    fn bridge_mac_pinned(&self, name: &str, index: u32, mac: &[u8; 6]) -> bool;
    /// Wait (polling loops: bridge port forwarding, IPv6 DAD).
    fn sleep(&self, d: Duration);
}

/// `ipMasq`: the backend choice and its entries.
pub trait Masquerade: Sync {
    /// The firewall for `ipMasqBackend` (`None`: detect).
    fn firewall(&self, backend: Option<&str>) -> Result<Box<dyn Firewall>, firewall::Error>;
}

/// `macspoofchk`: the anti-spoofing entries of an attachment, found by owner.
pub trait AntiSpoof: Sync {
    /// Protect `entry.host_veth` (idempotent).
    fn add(&self, entry: &SpoofEntry) -> Result<(), firewall::Error>;
    /// Remove the owner's entries; nothing there is success.
    fn del(&self, network: &str, container_id: &str, ifname: &str) -> Result<(), firewall::Error>;
    /// Err naming what is missing or different.
    fn check(&self, entry: &SpoofEntry) -> Result<(), firewall::Error>;
    /// Remove every entry of `network` whose owner is not in `keep` (container id, ifname).
    fn gc(&self, network: &str, keep: &[(String, String)]) -> Result<(), firewall::Error>;
}

/// Delegation to the IPAM plugin `plugin` with the call's own stdin and environment.
pub trait Ipam: Sync {
    /// ADD: the lease, as a result in the config's version.
    fn add(&self, plugin: &str, args: &CmdArgs) -> Result<CniResult, CniError>;
    /// DEL: release the lease.
    fn del(&self, plugin: &str, args: &CmdArgs) -> Result<(), CniError>;
    /// CHECK.
    fn check(&self, plugin: &str, args: &CmdArgs) -> Result<(), CniError>;
    /// GC (forwarded with the valid attachments, spec §GC).
    fn gc(&self, plugin: &str, args: &CmdArgs) -> Result<(), CniError>;
    /// STATUS.
    fn status(&self, plugin: &str, args: &CmdArgs) -> Result<(), CniError>;
}

/// The side effects one call of the plugin may have.
#[derive(Clone, Copy)]
pub struct Deps<'a> {
    /// Sockets, sysctls, sysfs, sleeps.
    pub kernel: &'a dyn Kernel,
    /// `ipMasq`.
    pub masquerade: &'a dyn Masquerade,
    /// `macspoofchk`.
    pub spoof: &'a dyn AntiSpoof,
    /// IPAM delegation.
    pub ipam: &'a dyn Ipam,
}

impl Deps<'static> {
    /// The real kernel, firewall and IPAM plugin.
    pub const SYSTEM: Deps<'static> = Deps {
        kernel: &System,
        masquerade: &System,
        spoof: &System,
        ipam: &System,
    };
}

/// The production implementation of every seam.
pub struct System;

impl Kernel for System {
    fn host_netlink(&self) -> kernel::Result<Box<dyn NetlinkOps>> {
        Ok(Box::new(Netlink::open()?))
    }

    fn netlink_in(&self, ns: &NetNs) -> kernel::Result<Box<dyn NetlinkOps>> {
        Ok(Box::new(Netlink::open_in(ns)?))
    }

    fn sysctl_write(&self, key: &str, value: &str) -> kernel::Result<()> {
        sysctl::write(key, value)
    }

    fn sysctl_write_if_different(&self, key: &str, value: &str) -> kernel::Result<bool> {
        sysctl::write_if_different(key, value)
    }

    fn container_sysctls(
        &self,
        ns: &NetNs,
        writes: &[SysctlWrite],
    ) -> kernel::Result<Result<(), String>> {
        ns.run(|| {
            for w in writes {
                match sysctl::write(&w.key, w.value) {
                    Err(e) if w.required => return Err(e.to_string()),
                    _ => {}
                }
            }
            Ok(())
        })
    }

    /// `addr_assign_type` 3 means user space set the MAC. The SETLINK is not free: it sends
    /// NETDEV_CHANGEADDR through every notifier, and with 1000 ports it took about 1 ms
    /// (rcni-bench phase `gateway`). sysfs shows the devices of the namespace it was mounted
    /// in, so the answer counts only when its ifindex and MAC are those of our bridge;
    /// otherwise (or unreadable) we pin, as the reference does on every ADD.
    fn bridge_mac_pinned(&self, name: &str, index: u32, mac: &[u8; 6]) -> bool {
        let read = |attr: &str| std::fs::read_to_string(format!("/sys/class/net/{name}/{attr}"));
        let same_device = read("ifindex").is_ok_and(|v| v.trim() == index.to_string())
            && read("address").is_ok_and(|v| v.trim().eq_ignore_ascii_case(&format_mac(mac)));
        same_device && read("addr_assign_type").is_ok_and(|v| v.trim() == "3")
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

impl Masquerade for System {
    fn firewall(&self, backend: Option<&str>) -> Result<Box<dyn Firewall>, firewall::Error> {
        Ok(firewall::firewall(firewall::choose_backend(backend)?))
    }
}

impl AntiSpoof for System {
    fn add(&self, entry: &SpoofEntry) -> Result<(), firewall::Error> {
        firewall::macspoof::mac_spoof_check().add_macspoofchk(entry)
    }

    fn del(&self, network: &str, container_id: &str, ifname: &str) -> Result<(), firewall::Error> {
        firewall::macspoof::mac_spoof_check().del_macspoofchk(network, container_id, ifname)
    }

    fn check(&self, entry: &SpoofEntry) -> Result<(), firewall::Error> {
        firewall::macspoof::mac_spoof_check().check_macspoofchk(entry)
    }

    fn gc(&self, network: &str, keep: &[(String, String)]) -> Result<(), firewall::Error> {
        firewall::macspoof::mac_spoof_check().gc_macspoofchk(network, keep)
    }
}

impl Ipam for System {
    fn add(&self, plugin: &str, args: &CmdArgs) -> Result<CniResult, CniError> {
        delegate::delegate_add(plugin, &args.stdin, args)
    }

    fn del(&self, plugin: &str, args: &CmdArgs) -> Result<(), CniError> {
        delegate::delegate_del(plugin, &args.stdin, args)
    }

    fn check(&self, plugin: &str, args: &CmdArgs) -> Result<(), CniError> {
        delegate::delegate_check(plugin, &args.stdin, args)
    }

    fn gc(&self, plugin: &str, args: &CmdArgs) -> Result<(), CniError> {
        delegate::delegate_gc(plugin, &args.stdin, args)
    }

    fn status(&self, plugin: &str, args: &CmdArgs) -> Result<(), CniError> {
        delegate::delegate_status(plugin, &args.stdin, args)
    }
}
