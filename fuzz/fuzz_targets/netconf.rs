//! Network configs and conflists, and every plugin's own config type decoded from them.
//! Property: no panic, no hang, whatever the bytes. Plugin `load`s run on a `CmdArgs` built the
//! way the skeleton builds it; portmap's backend is pinned so no probe touches the machine.
#![no_main]

use cni::skel::{CmdArgs, Command};
use cni::{CniArgs, NetConf, NetConfList};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let _ = NetConfList::parse(data);
    let _ = NetConfList::from_single(data);
    let Ok(conf) = NetConf::parse(data) else {
        return;
    };
    let version = cni::negotiate(
        conf.cni_version.as_deref(),
        &conf.cni_versions,
        &cni::SUPPORTED_VERSIONS,
    )
    .unwrap_or_default();
    let mut args = CmdArgs {
        command: Command::Add,
        container_id: "fuzz".into(),
        netns: None,
        ifname: "eth0".into(),
        args: CniArgs::default(),
        path: Vec::new(),
        stdin: data.to_vec(),
        conf,
        version,
    };
    let _ = args.prev_result();
    let _ = args.valid_attachments();
    let _ = args.port_mappings();
    let _ = portmap::mappings(&args);
    let _ = args.plugin_conf::<container::ContainerConf>();
    let _ = bridge::BridgeConf::load(&args).map(|b| b.refuse_unsupported());
    let _ = firewall_plugin::FirewallConf::load(&args);
    let _ = host_local::config::IpamConfig::load(args.plugin_conf().unwrap_or_default(), None)
        .map(|c| c.plan_requests());
    if let Ok(t) = tuning::TuningConf::load(&args) {
        for (key, _) in &t.sysctl {
            let _ = tuning::sysctl_rel_path(key, "eth0");
        }
        let _ = tuning::check_allowlist("^net\\.ipv4\\.\n# comment\n", &t.sysctl);
    }
    // Pin portmap's backend (no key: the plugin would probe nftables and exec iptables).
    if let Ok(Value::Object(mut o)) = serde_json::from_slice::<Value>(data) {
        let pinned = if data.len() % 2 == 0 {
            "nftables"
        } else {
            "iptables"
        };
        if !o.keys().any(|k| k.eq_ignore_ascii_case("backend")) {
            o.insert("backend".into(), Value::String(pinned.into()));
        }
        o.retain(|k, v| !k.eq_ignore_ascii_case("backend") || v.is_string());
        if o.keys().any(|k| k.eq_ignore_ascii_case("backend")) {
            if let Ok(stdin) = serde_json::to_vec(&o) {
                args.stdin = stdin;
                let _ = portmap::PortmapConf::load(&args);
            }
        }
    }
});
