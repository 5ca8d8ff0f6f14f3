//! The `netns` debugging CLI end to end, with the suite's plugins (bridge + host-local), inside a
//! private network + mount namespace per test: namespaces, attachments through the conflist
//! runtime, the libcni result cache, `show`, traffic through `netns exec`, CHECK, DEL twice, GC
//! of a namespace deleted without detach, and bad input that must change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use integration_tests::{bin_dir, plugin_bin, sandbox, CniState, Sandbox};
use serde_json::{json, Value};

const NET: &str = "demo";

/// Write a bridge + host-local conflist (leases under the sandbox scratch dir) into a fresh
/// config directory and return that directory.
fn conf_dir(sb: &Sandbox) -> PathBuf {
    let dir = sb.dir("net.d");
    let conf = json!({"cniVersion": "1.1.0", "name": NET, "plugins": [
        {"type": "bridge", "bridge": "cni-demo", "isGateway": true, "ipMasq": true,
         "ipam": {"type": "host-local", "subnet": "10.77.0.0/24",
                  "dataDir": sb.scratch().join("ipam")}}]});
    std::fs::write(dir.join("10-demo.conflist"), conf.to_string()).unwrap();
    std::fs::write(
        dir.join("20-other.conflist"),
        json!({"cniVersion": "1.0.0", "name": "other", "plugins": [{"type": "loopback"}]})
            .to_string(),
    )
    .unwrap();
    dir
}

/// Run the CLI with the config dir from NETCONFPATH and the plugins from CNI_PATH, like a user.
fn netns(conf: &Path, args: &[&str]) -> Output {
    Command::new(plugin_bin("netns"))
        .args(args)
        .env("NETCONFPATH", conf)
        .env("CNI_PATH", bin_dir())
        .env_remove("CNI_CONF_DIR")
        .output()
        .unwrap()
}

fn ok(conf: &Path, args: &[&str]) -> String {
    let out = netns(conf, args);
    assert!(
        out.status.success(),
        "netns {args:?} failed ({:?}): {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run, expect exit `code`, return stderr.
fn fails(conf: &Path, args: &[&str], code: i32) -> String {
    let out = netns(conf, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "netns {args:?}: stdout {} stderr {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

fn leases(sb: &Sandbox) -> Vec<String> {
    integration_tests::lease_files(&sb.scratch().join("ipam").join(NET))
}

/// libcni's result cache files (none when the directory does not exist; any other error fails).
fn cache_files() -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir("/var/lib/cni/results") {
        Ok(d) => d
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("cannot list /var/lib/cni/results: {e}"),
    };
    v.sort();
    v
}

/// The shared "nothing left" check for `network` as the CLI runs it: leases under the
/// sandbox's `ipam` directory, libcni's cache in /var/lib/cni, veths, nft and iptables entries.
fn assert_nothing_left(sb: &Sandbox, network: &str) {
    let data_dir = sb.scratch().join("ipam");
    sb.assert_no_cni_leftovers(&CniState {
        data_dir: &data_dir,
        cache_dir: Path::new("/var/lib/cni"),
        network,
    });
}

fn show(conf: &Path, name: &str) -> Value {
    serde_json::from_str(&ok(conf, &["show", name, "--json"])).unwrap()
}

/// The global IPv4 address of eth0 in `show --json`.
fn eth0_addr(report: &Value) -> String {
    report["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["interface"] == "eth0" && a["address"].as_str().unwrap().starts_with("10.77."))
        .map(|a| a["address"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no 10.77 address on eth0: {report}"))
}

#[test]
fn add_attach_show_ping_check_detach_gc_del() {
    sandbox(|sb| {
        let conf = conf_dir(sb);
        ok(&conf, &["add", "c1"]);
        ok(&conf, &["add", "c2"]);
        assert!(Path::new("/run/netns/c1").exists());
        let list: Value = serde_json::from_str(&ok(&conf, &["list", "--json"])).unwrap();
        assert_eq!(list[0]["name"], "c1");
        assert_eq!(list[1]["name"], "c2");

        let human = ok(&conf, &["attach", "c1", NET]);
        assert!(human.contains("10.77.0."), "{human}");
        let res: Value = serde_json::from_str(&ok(
            &conf,
            &["attach", "c2", NET, "--container-id", "web-id", "--json"],
        ))
        .unwrap();
        assert_eq!(res["cniVersion"], "1.1.0");
        let c2_ip = res["ips"][0]["address"].as_str().unwrap().to_string();

        // show: eth0 with its address, the attachment and its masquerade entry.
        let r1 = show(&conf, "c1");
        let eth0 = r1["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == "eth0")
            .unwrap_or_else(|| panic!("no eth0: {r1}"));
        assert_eq!(eth0["kind"], "veth");
        assert_eq!(eth0["state"], "UP");
        let c1_ip = eth0_addr(&r1);
        assert_eq!(r1["attachments"][0]["network"], NET);
        assert_eq!(r1["attachments"][0]["containerId"], "c1");
        assert_eq!(r1["attachments"][0]["ips"][0], c1_ip.as_str());
        let fw = r1["firewall"].as_array().unwrap();
        assert_eq!(fw.len(), 1, "{r1}");
        assert!(
            fw[0]["comment"].as_str().unwrap().contains("id: c1,"),
            "{r1}"
        );
        assert!(fw[0]["entry"]
            .as_str()
            .unwrap()
            .starts_with(c1_ip.split('/').next().unwrap()));
        let r2 = show(&conf, "c2");
        assert_eq!(eth0_addr(&r2), c2_ip);
        assert_eq!(r2["attachments"][0]["containerId"], "web-id");
        let human = ok(&conf, &["show", "c2"]);
        assert!(
            human.contains("INTERFACES") && human.contains("web-id"),
            "{human}"
        );

        // The cache is libcni's: results/<net>-<cid>-<ifname>, cniCacheV1.
        assert_eq!(cache_files(), ["demo-c1-eth0", "demo-web-id-eth0"]);
        let raw: Value =
            serde_json::from_slice(&std::fs::read("/var/lib/cni/results/demo-c1-eth0").unwrap())
                .unwrap();
        assert_eq!(raw["kind"], "cniCacheV1");
        assert_eq!(raw["containerId"], "c1");
        assert_eq!(raw["ifName"], "eth0");
        assert_eq!(raw["networkName"], NET);
        assert_eq!(raw["netns"], "/run/netns/c1");
        let config = cni::cache::b64_decode(raw["config"].as_str().unwrap()).unwrap();
        let config: Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(config["name"], NET);
        assert_eq!(raw["result"]["ips"][0]["address"], c1_ip.as_str());

        // Traffic between the two namespaces, through `netns exec`; its exit code is the
        // command's.
        let c2_addr = c2_ip.split('/').next().unwrap();
        ok(&conf, &["exec", "c1", "--", "ping", "-c1", "-W2", c2_addr]);
        let out = netns(&conf, &["exec", "c1", "--", "sh", "-c", "exit 7"]);
        assert_eq!(out.status.code(), Some(7));
        let sys = ok(&conf, &["exec", "c1", "--", "ls", "/sys/class/net"]);
        assert!(
            sys.contains("eth0"),
            "exec must see the namespace's sysfs: {sys}"
        );

        ok(&conf, &["check", "c1", NET]);
        ok(&conf, &["check", "c2", NET]);

        // Detach twice: both succeed, the lease and the cache entry are gone.
        assert_eq!(leases(sb).len(), 2);
        ok(&conf, &["detach", "c1", NET]);
        ok(&conf, &["detach", "c1", NET]);
        assert_eq!(leases(sb), [c2_addr.to_string()]);
        assert_eq!(cache_files(), ["demo-web-id-eth0"]);
        assert!(show(&conf, "c1")["attachments"]
            .as_array()
            .unwrap()
            .is_empty());
        fails(&conf, &["check", "c1", NET], 3);

        // Delete c2 without detaching: its lease stays until gc finds its netns gone.
        let warn = String::from_utf8_lossy(&netns(&conf, &["del", "c2"]).stderr).into_owned();
        assert!(warn.contains("netns gc demo"), "{warn}");
        assert_eq!(leases(sb), [c2_addr.to_string()]);
        let out = ok(&conf, &["gc", NET]);
        assert!(out.contains("web-id"), "{out}");
        assert!(leases(sb).is_empty());
        assert!(cache_files().is_empty());
        let nft = sb.sh("nft list table inet rcni");
        assert!(!nft.contains("id: web-id"), "{nft}");

        ok(&conf, &["status", NET]);
        ok(&conf, &["del", "c1"]);
        assert!(!Path::new("/run/netns/c1").exists());
        let list: Value = serde_json::from_str(&ok(&conf, &["list", "--json"])).unwrap();
        assert_eq!(list, json!([]));
        assert_nothing_left(sb, NET);
    });
}

#[test]
fn bad_input_is_rejected_before_anything_runs() {
    sandbox(|sb| {
        let conf = conf_dir(sb);
        ok(&conf, &["add", "c1"]);

        let e = fails(&conf, &["attach", "nope", NET], 3);
        assert!(
            e.contains("namespace \"nope\" not found") && e.contains("found: c1"),
            "{e}"
        );
        assert!(e.contains("netns add nope"), "{e}");
        let e = fails(&conf, &["attach", "c1", "nonet"], 3);
        assert!(e.contains("network \"nonet\" not found"), "{e}");
        assert!(e.contains("(found: demo, other)"), "{e}");
        for (port, what) in [
            ("80", "expected [HOSTIP:]HOST:CONTAINER"),
            ("0:80", "host port 0 is out of range 1-65535"),
            ("80:80/icmp", "protocol \"icmp\" is not supported"),
        ] {
            let e = fails(&conf, &["attach", "c1", NET, "--port", port], 2);
            assert!(e.contains(what), "--port {port}: {e}");
        }
        let e = fails(
            &conf,
            &["attach", "c1", NET, "--mac", "01:00:5e:00:00:01"],
            2,
        );
        assert!(e.contains("multicast"), "{e}");
        fails(&conf, &["attach", "c1", NET, "--mac", "zz:zz"], 2);
        fails(&conf, &["attach", "c1", NET, "--ip", "10.77.0.300"], 2);
        fails(
            &conf,
            &["attach", "c1", NET, "--ifname", "much-too-long-ifname"],
            2,
        );
        fails(&conf, &["attach", "c1", NET, "--container-id", "bad id"], 2);
        fails(&conf, &["attach", "c1", NET, "--args", "A=b=c"], 2);
        fails(&conf, &["show", "nope"], 3);
        fails(&conf, &["exec", "nope", "--", "true"], 3);
        fails(&conf, &["gc", "nonet"], 3);
        fails(&conf, &["add", "bad name"], 2);
        fails(&conf, &["attach"], 2);

        // Nothing was created: no bridge, no veth, no lease, no cache, c1 has only lo.
        assert_eq!(sb.link_names(None), ["lo"]);
        assert_eq!(sb.link_names(Some("c1")), ["lo"]);
        assert!(leases(sb).is_empty());
        assert!(cache_files().is_empty());
        assert_nothing_left(sb, NET);
    });
}

#[test]
fn networks_help_and_completions() {
    sandbox(|sb| {
        let conf = conf_dir(sb);
        std::fs::write(conf.join("30-broken.conflist"), "{").unwrap();
        let nets: Value = serde_json::from_str(&ok(&conf, &["networks", "--json"])).unwrap();
        assert_eq!(nets[0]["name"], NET);
        assert_eq!(nets[0]["plugins"], json!(["bridge"]));
        assert_eq!(nets[1]["name"], "other");
        assert!(nets[2]["error"].is_string(), "{nets}");
        let table = ok(&conf, &["networks"]);
        assert!(table.starts_with("NAME"), "{table}");
        assert!(table.contains("(invalid)"), "{table}");
        // --conf-dir wins over NETCONFPATH.
        let empty = sb.dir("empty");
        let out = ok(
            &conf,
            &["networks", "--conf-dir", empty.to_str().unwrap(), "--json"],
        );
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!([]));

        for sub in [
            "attach", "detach", "check", "gc", "status", "show", "exec", "add", "del", "list",
            "networks",
        ] {
            let help = ok(&conf, &[sub, "--help"]);
            assert!(help.contains("Exit codes"), "{sub}: {help}");
        }
        let bash = ok(&conf, &["completions", "bash"]);
        assert!(bash.contains("netns") && bash.contains("attach"), "{bash}");
    });
}

#[test]
fn show_finds_iptables_masquerade_rules() {
    sandbox(|sb| {
        let dir = sb.dir("ipt.d");
        let conf = json!({"cniVersion": "1.0.0", "name": "ipt", "plugins": [
            {"type": "bridge", "bridge": "cni-ipt", "isGateway": true, "ipMasq": true,
             "ipMasqBackend": "iptables",
             "ipam": {"type": "host-local", "subnet": "10.78.0.0/24",
                      "dataDir": sb.scratch().join("ipam")}}]});
        std::fs::write(dir.join("10-ipt.conflist"), conf.to_string()).unwrap();
        ok(&dir, &["add", "c1"]);
        ok(&dir, &["attach", "c1", "ipt", "--container-id", "ipt-c1"]);
        let r = show(&dir, "c1");
        let fw = r["firewall"].as_array().unwrap();
        assert!(!fw.is_empty(), "{r}");
        assert!(fw.iter().all(|e| e["backend"] == "iptables"), "{r}");
        assert!(
            fw.iter().any(|e| e["object"] == "nat chain POSTROUTING"
                && e["entry"].as_str().unwrap().contains("10.78.0.2")),
            "{r}"
        );
        assert!(
            fw.iter()
                .all(|e| e["comment"] == "name: \"ipt\" id: \"ipt-c1\""),
            "{r}"
        );
        assert_eq!(
            sb.iptables_entries("ipt"),
            3,
            "the masquerade rules were there"
        );
        ok(&dir, &["detach", "c1", "ipt"]);
        let save = sb.sh("iptables-save -t nat");
        assert!(!save.contains("ipt-c1"), "{save}");
        ok(&dir, &["del", "c1"]);
        assert_nothing_left(sb, "ipt");
    });
}

/// `netns attach --port` through bridge + host-local + portmap: a listener in the namespace is
/// reached from the host through the published port, `show` lists the port, and detach removes
/// the mapping (the port stops answering).
#[test]
fn attach_with_published_port_carries_traffic() {
    sandbox(|sb| {
        let dir = sb.dir("net.d");
        let conf = json!({"cniVersion": "1.1.0", "name": "pm", "plugins": [
            {"type": "bridge", "bridge": "cni-pm", "isGateway": true, "ipMasq": true,
             "ipam": {"type": "host-local", "subnet": "10.78.0.0/24",
                      "dataDir": sb.scratch().join("ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": true}}]});
        std::fs::write(dir.join("10-pm.conflist"), conf.to_string()).unwrap();
        ok(&dir, &["add", "web"]);
        ok(&dir, &["attach", "web", "pm", "--port", "8080:80"]);
        let shown = ok(&dir, &["show", "web", "--json"]);
        assert!(
            shown.contains("8080"),
            "show does not list the port: {shown}"
        );

        let _listener = sb.spawn_in(
            "web",
            &[
                "socat",
                "TCP-LISTEN:80,fork,reuseaddr",
                "SYSTEM:echo published",
            ],
        );
        sb.wait_listening("web", "tcp", 80);
        let fetch = |addr: &str| {
            let out = sb.try_sh(&format!("socat -T2 - TCP:{addr}:8080 </dev/null"));
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        // From the host to its own address on the bridge, and to localhost.
        assert_eq!(fetch("10.78.0.1"), "published");
        assert_eq!(fetch("127.0.0.1"), "published");

        assert!(
            sb.nft_entries("net: pm, id: ") > 0,
            "port entries were there"
        );
        ok(&dir, &["detach", "web", "pm"]);
        assert_ne!(
            fetch("10.78.0.1"),
            "published",
            "port still answers after detach"
        );
        ok(&dir, &["del", "web"]);
        assert_nothing_left(sb, "pm");
    });
}
