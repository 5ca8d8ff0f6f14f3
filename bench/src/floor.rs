//! The floor of an ADD in the exec model, measured on this machine in the same run as the
//! plugins: process execs of a static do-nothing binary, and the kernel's own attach done by
//! one process over netlink with no plugin logic around it.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use integration_tests::Sandbox;
use kernel::netlink::{Netlink, NetlinkOps, RouteSpec, VethSpec};
use kernel::netns::NetNs;

/// Bridge, subnet and namespace prefix of the floor's own attachments (never shared with the
/// implementations under measurement).
const BRIDGE: &str = "br-floor";
const NS_PREFIX: &str = "floor";

/// The steps of one floor attach, in order, with their names.
pub const STEPS: [&str; 7] = [
    "open ns + socket",
    "veth create",
    "lookup + enslave",
    "host end up",
    "container address",
    "container up",
    "default route",
];

pub struct Floor {
    noop: PathBuf,
    host: Netlink,
    bridge: u32,
    made: Vec<String>,
}

impl Floor {
    /// Build the static no-op binary (cc -static) and the floor's bridge with its gateway.
    pub fn new(sb: &Sandbox) -> Floor {
        let src = sb.scratch().join("noop.c");
        let noop = sb.scratch().join("noop");
        std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
        let out = Command::new("cc")
            .args(["-static", "-Os", "-o"])
            .arg(&noop)
            .arg(&src)
            .output()
            .unwrap_or_else(|e| panic!("the floor needs a C compiler (cc): {e}"));
        assert!(
            out.status.success(),
            "cc -static failed (is libc6-dev installed?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut host = Netlink::open().unwrap();
        host.bridge_add(BRIDGE, None).unwrap();
        let br = host.link_by_name(BRIDGE).unwrap().unwrap();
        host.addr_add(br.index, "10.62.0.1/16".parse().unwrap())
            .unwrap();
        host.link_set_up(br.index).unwrap();
        Floor {
            noop,
            host,
            bridge: br.index,
            made: Vec::new(),
        }
    }

    /// One exec of the static no-op binary, measured like a plugin exec (spawn, pipes, wait).
    pub fn exec_noop(&self) -> Duration {
        crate::exec(&self.noop, &[], b"").elapsed
    }

    /// One attach done by this process: veth pair born in a fresh namespace under its final
    /// name, host end enslaved and up, container end addressed and up, default route.
    pub fn attach(&mut self, sb: &Sandbox) -> Duration {
        self.attach_steps(sb, None).iter().sum()
    }

    /// [`Floor::attach`], timed per step (see [`STEPS`]), on the floor's own bridge or on
    /// `bridge` (the one an implementation under measurement fills, so the kernel's cost is
    /// measured at that bridge's number of ports).
    pub fn attach_steps(&mut self, sb: &Sandbox, bridge: Option<&str>) -> [Duration; 7] {
        let master = match bridge {
            None => self.bridge,
            // The container's default route needs its gateway on-link (inside 10.62.0.0/16 on
            // eth0), not owned by anyone: the bridge keeps only its own address.
            Some(name) => self.host.link_by_name(name).unwrap().unwrap().index,
        };
        let i = self.made.len();
        let name = format!("{NS_PREFIX}{i}");
        let path = sb.netns(&name);
        self.made.push(name);
        let host_name = format!("vfl{i}");
        let addr = format!("10.62.{}.{}/16", 1 + i / 250, 2 + i % 250);
        let mut steps = [Duration::ZERO; 7];
        let mut t = Instant::now();
        let mut lap = |i: usize| {
            let now = Instant::now();
            steps[i] = now - t;
            t = now;
        };
        let ns = NetNs::open(&path).unwrap();
        let mut cont = Netlink::open_in(&ns).unwrap();
        lap(0);
        self.host
            .veth_add(&VethSpec {
                host_name: &host_name,
                peer_name: "eth0",
                peer_netns: &ns,
                mtu: None,
                peer_mac: None,
            })
            .unwrap();
        lap(1);
        let hv = self.host.link_by_name(&host_name).unwrap().unwrap();
        self.host.link_set_master(hv.index, master).unwrap();
        lap(2);
        self.host.link_set_up(hv.index).unwrap();
        lap(3);
        let eth0 = cont.link_by_name("eth0").unwrap().unwrap();
        cont.addr_add(eth0.index, addr.parse().unwrap()).unwrap();
        lap(4);
        cont.link_set_up(eth0.index).unwrap();
        lap(5);
        let mut default = RouteSpec::new("0.0.0.0/0".parse().unwrap());
        default.gw = Some("10.62.0.1".parse().unwrap());
        default.oif = Some(eth0.index);
        cont.route_add(&default).unwrap();
        lap(6);
        steps
    }

    /// Remove every namespace (and so every veth) the floor made.
    pub fn cleanup(&mut self, sb: &Sandbox) {
        for name in self.made.drain(..) {
            sb.sh(&format!("ip netns del {name}"));
        }
    }
}
