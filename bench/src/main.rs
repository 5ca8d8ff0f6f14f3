//! `rcni-bench`: plays the container runtime against our plugins and, when the Debian package
//! `containernetworking-plugins` is installed (/usr/lib/cni), against the reference plugins too,
//! interleaved in one run so both see the same machine state. It prints figures and ratios and
//! never asserts on time: speed targets are read off its output, not enforced by tests.
//!
//! Everything runs inside a private network + mount namespace (the test harness's sandbox), so
//! the machine's own interfaces and firewall are untouched.
//!
//! Usage: rcni-bench [--quick] [--n N] [--parallel P] [--scale MAX] [--portmap]
//!   --quick       a smoke run (CI): 5 attachments, 10 parallel, no scale run
//!   --n N         attachments per implementation for the latency run (default 100)
//!   --parallel P  simultaneous ADDs for the parallel run (default 100)
//!   --scale MAX   also attach MAX containers (ours, and the reference when installed) and
//!                 report ADD p50 at 10/100/500/1000/... (off by default: it takes minutes)
//!   --portmap     chain portmap after bridge (one mapping per container, hostPort 20000+i,
//!                 prevResult = bridge's result); ADD/DEL figures are then the whole chain's
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::{bin_dir, reference_dir, sandbox, Sandbox};
use serde_json::{json, Value};

/// One implementation under measurement.
struct Impl {
    label: &'static str,
    dir: PathBuf,
    bridge: &'static str,
    subnet: &'static str,
    data: PathBuf,
    /// Chain portmap after bridge (`--portmap`).
    portmap: bool,
}

/// What one plugin execution cost.
struct Exec {
    elapsed: Duration,
    ok: bool,
    stdout: String,
    /// Peak resident set of the plugin process (and the children it waited for), in KiB.
    max_rss_kb: i64,
}

/// Exec a plugin like a runtime, measuring wall time and peak RSS (through wait4).
fn exec(bin: &Path, env: &[(&str, String)], stdin: &[u8]) -> Exec {
    let start = Instant::now();
    let mut child = Command::new(bin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child, which we then consider reaped.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to locals; the pid is our child's.
    let rc = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(rc, child.id() as libc::pid_t, "wait4");
    let elapsed = start.elapsed();
    std::mem::forget(child);
    Exec {
        elapsed,
        ok: std::process::ExitStatus::from_raw(status).success(),
        stdout,
        max_rss_kb: usage.ru_maxrss,
    }
}

impl Impl {
    fn conf(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "cniVersion": "1.0.0", "name": "bench", "type": "bridge", "bridge": self.bridge,
            "isGateway": true, "isDefaultGateway": true, "ipMasq": true,
            "ipam": {"type": "host-local", "subnet": self.subnet, "dataDir": self.data}
        }))
        .unwrap()
    }

    /// One runtime operation: bridge alone, or bridge then portmap (ADD) / portmap then bridge
    /// (DEL) with `--portmap`; the elapsed time is the chain's.
    fn call(&self, verb: &str, cid: &str, netns: &Path) -> Exec {
        if !self.portmap {
            return self.call_bridge(verb, cid, netns);
        }
        let port = host_port(cid, self.label);
        let pm_conf = |prev: Option<Value>| {
            let mut c = json!({
                "cniVersion": "1.0.0", "name": "bench", "type": "portmap",
                "capabilities": {"portMappings": true},
                "runtimeConfig": {"portMappings": [
                    {"hostPort": port, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]}
            });
            if let Some(p) = prev {
                c["prevResult"] = p;
            }
            serde_json::to_vec(&c).unwrap()
        };
        if verb == "ADD" {
            let b = self.call_bridge(verb, cid, netns);
            if !b.ok {
                return b;
            }
            let prev: Value = serde_json::from_str(&b.stdout).unwrap_or(Value::Null);
            let p = exec(
                &self.dir.join("portmap"),
                &self.env(verb, cid, netns),
                &pm_conf(Some(prev)),
            );
            Exec {
                elapsed: b.elapsed + p.elapsed,
                ok: p.ok,
                stdout: p.stdout,
                max_rss_kb: b.max_rss_kb.max(p.max_rss_kb),
            }
        } else {
            let p = exec(
                &self.dir.join("portmap"),
                &self.env(verb, cid, netns),
                &pm_conf(None),
            );
            let b = self.call_bridge(verb, cid, netns);
            Exec {
                elapsed: b.elapsed + p.elapsed,
                ok: b.ok && p.ok,
                stdout: b.stdout,
                max_rss_kb: b.max_rss_kb.max(p.max_rss_kb),
            }
        }
    }

    fn env(&self, verb: &str, cid: &str, netns: &Path) -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", verb.to_string()),
            ("CNI_CONTAINERID", cid.to_string()),
            ("CNI_NETNS", netns.display().to_string()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_PATH", self.dir.display().to_string()),
            (
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={cid}"),
            ),
        ]
    }

    fn call_bridge(&self, verb: &str, cid: &str, netns: &Path) -> Exec {
        exec(
            &self.dir.join("bridge"),
            &self.env(verb, cid, netns),
            &self.conf(),
        )
    }
}

/// hostPort of a container: 20000 + its index (latency `<label><i>` and scale `<label>s<i>` runs
/// never overlap), 40000 + index for the parallel run (`<label>p<i>`).
fn host_port(cid: &str, label: &str) -> u16 {
    let rest = cid.strip_prefix(label).unwrap_or(cid);
    let (base, digits) = match rest.strip_prefix('p') {
        Some(d) => (40000u16, d),
        None => (20000, rest.strip_prefix('s').unwrap_or(rest)),
    };
    base + digits.parse::<u16>().unwrap_or(0)
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut v = samples.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

struct Stats {
    add: Vec<Duration>,
    del: Vec<Duration>,
    failures: usize,
    max_rss_kb: i64,
}

fn row(label: &str, s: &[Duration]) -> String {
    format!(
        "{label:<28} p50 {:>8} ms  p90 {:>8} ms  p99 {:>8} ms",
        ms(percentile(s, 0.5)),
        ms(percentile(s, 0.9)),
        ms(percentile(s, 0.99))
    )
}

/// Latency of the kernel's own veth deletion (one netlink request, no process exec): the
/// yardstick for DEL, whose cost is dominated by the kernel's synchronize_net grace periods.
fn kernel_veth_delete(sb: &Sandbox, n: usize) -> Vec<Duration> {
    let mut nl = kernel::netlink::Netlink::open().unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        sb.sh(&format!(
            "ip netns add kd{i} && ip link add kdv{i} type veth peer name eth0 netns kd{i} && ip link set kdv{i} up"
        ));
        let link = kernel::netlink::NetlinkOps::link_by_name(&mut nl, &format!("kdv{i}"))
            .unwrap()
            .unwrap();
        let t = Instant::now();
        kernel::netlink::NetlinkOps::link_del(&mut nl, link.index).unwrap();
        out.push(t.elapsed());
        sb.sh(&format!("ip netns del kd{i}"));
    }
    out
}

fn latency_run(sb: &Sandbox, impls: &[Impl], n: usize) -> Vec<Stats> {
    let mut stats: Vec<Stats> = impls
        .iter()
        .map(|_| Stats {
            add: vec![],
            del: vec![],
            failures: 0,
            max_rss_kb: 0,
        })
        .collect();
    // Interleaved: container i of every implementation before container i+1 of any.
    for i in 0..n {
        for (k, im) in impls.iter().enumerate() {
            let name = format!("{}{i}", im.label);
            let ns = sb.netns(&name);
            let e = im.call("ADD", &name, &ns);
            stats[k].failures += usize::from(!e.ok);
            stats[k].max_rss_kb = stats[k].max_rss_kb.max(e.max_rss_kb);
            stats[k].add.push(e.elapsed);
        }
    }
    for i in 0..n {
        for (k, im) in impls.iter().enumerate() {
            let name = format!("{}{i}", im.label);
            let ns = PathBuf::from(format!("/run/netns/{name}"));
            let e = im.call("DEL", &name, &ns);
            stats[k].failures += usize::from(!e.ok);
            stats[k].max_rss_kb = stats[k].max_rss_kb.max(e.max_rss_kb);
            stats[k].del.push(e.elapsed);
            sb.sh(&format!("ip netns del {name}"));
        }
    }
    stats
}

/// `p` ADDs at once: wall time, failures and duplicate addresses.
fn parallel_run(sb: &Sandbox, im: &Impl, p: usize) -> (Duration, usize, usize) {
    let names: Vec<String> = (0..p).map(|i| format!("{}p{i}", im.label)).collect();
    let paths: Vec<PathBuf> = names.iter().map(|n| sb.netns(n)).collect();
    let start = Instant::now();
    let results: Vec<Exec> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .zip(&paths)
            .map(|(n, path)| s.spawn(move || im.call("ADD", n, path)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = start.elapsed();
    let failures = results.iter().filter(|e| !e.ok).count();
    let mut seen = HashSet::new();
    let mut dups = 0;
    for e in results.iter().filter(|e| e.ok) {
        let v: Value = serde_json::from_str(&e.stdout).unwrap_or(Value::Null);
        for ip in v["ips"].as_array().into_iter().flatten() {
            if !seen.insert(ip["address"].as_str().unwrap_or_default().to_string()) {
                dups += 1;
            }
        }
    }
    for (n, path) in names.iter().zip(&paths) {
        im.call("DEL", n, path);
        sb.sh(&format!("ip netns del {n}"));
    }
    (wall, failures, dups)
}

/// Attach `max` containers one by one and report ADD p50 around each checkpoint.
fn scale_run(sb: &Sandbox, im: &Impl, max: usize) -> Vec<(usize, Duration)> {
    let mut adds = Vec::new();
    let mut out = Vec::new();
    let checkpoints: Vec<usize> = [10, 100, 500, 1000, 2000, 5000]
        .into_iter()
        .filter(|c| *c <= max)
        .collect();
    for i in 0..max {
        let name = format!("{}s{i}", im.label);
        let ns = sb.netns(&name);
        let e = im.call("ADD", &name, &ns);
        assert!(e.ok, "{} ADD {i} failed: {}", im.label, e.stdout);
        adds.push(e.elapsed);
        let n = i + 1;
        if checkpoints.contains(&n) {
            // p50 of the last min(n, 10) ADDs: the cost at this population.
            let window = &adds[n.saturating_sub(10)..];
            out.push((n, percentile(window, 0.5)));
        }
    }
    for i in 0..max {
        let name = format!("{}s{i}", im.label);
        im.call("DEL", &name, &PathBuf::from(format!("/run/netns/{name}")));
        sb.sh(&format!("ip netns del {name}"));
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name);
    let num = |name: &str, default: usize| {
        flag(name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let quick = flag("--quick").is_some();
    let n = num("--n", if quick { 5 } else { 100 });
    let p = num("--parallel", if quick { 10 } else { 100 });
    let scale = num("--scale", 0);
    let portmap = flag("--portmap").is_some();

    sandbox(|sb| {
        let mut impls = vec![Impl {
            label: "ours",
            dir: bin_dir(),
            bridge: "br-ours",
            subnet: "10.60.0.0/16",
            data: sb.dir("data-ours"),
            portmap,
        }];
        match reference_dir() {
            Some(dir) => impls.push(Impl {
                label: "ref",
                dir,
                bridge: "br-ref",
                subnet: "10.61.0.0/16",
                data: sb.dir("data-ref"),
                portmap,
            }),
            None => println!("reference plugins not installed (/usr/lib/cni): ours only"),
        }
        println!(
            "rcni-bench: bridge + host-local{} chain, ipMasq on, cniVersion 1.0.0; plugins from {}",
            if portmap {
                " + portmap (1 mapping/container)"
            } else {
                ""
            },
            bin_dir().display()
        );
        println!("\n== latency: {n} attachments per implementation, interleaved");
        let stats = latency_run(sb, &impls, n);
        for (im, s) in impls.iter().zip(&stats) {
            println!("{}", row(&format!("{} ADD", im.label), &s.add));
            println!("{}", row(&format!("{} DEL", im.label), &s.del));
            println!(
                "{:<28} failures {}  peak RSS {} KiB",
                format!("{}", im.label),
                s.failures,
                s.max_rss_kb
            );
        }
        let kdel = kernel_veth_delete(sb, n.min(50));
        println!("{}", row("kernel veth delete", &kdel));
        let ours = &stats[0];
        let kernel_p50 = percentile(&kdel, 0.5).as_secs_f64();
        println!(
            "ours DEL p50 / kernel veth-delete p50 = {:.2}x",
            percentile(&ours.del, 0.5).as_secs_f64() / kernel_p50
        );
        if let Some(reference) = stats.get(1) {
            let ratio = |a: &[Duration], b: &[Duration]| {
                percentile(a, 0.5).as_secs_f64() / percentile(b, 0.5).as_secs_f64()
            };
            println!(
                "ours/ref ADD p50 = {:.3} (ref is {:.1}x slower); ours/ref DEL p50 = {:.3}",
                ratio(&ours.add, &reference.add),
                ratio(&reference.add, &ours.add),
                ratio(&ours.del, &reference.del)
            );
        }

        println!("\n== parallel: {p} simultaneous ADDs per implementation");
        let mut walls = Vec::new();
        for im in &impls {
            let (wall, failures, dups) = parallel_run(sb, im, p);
            println!(
                "{:<28} wall {:>9} ms  failures {failures}  duplicate IPs {dups}",
                im.label,
                ms(wall)
            );
            walls.push(wall);
        }
        if walls.len() == 2 {
            println!(
                "ours/ref parallel wall = {:.3}",
                walls[0].as_secs_f64() / walls[1].as_secs_f64()
            );
        }

        if scale > 0 {
            println!(
                "\n== scale: ADD p50 (last 10 ADDs) as the number of attached containers grows"
            );
            for im in &impls {
                let points = scale_run(sb, im, scale);
                let line: Vec<String> = points
                    .iter()
                    .map(|(n, d)| format!("n={n}: {} ms", ms(*d)))
                    .collect();
                println!("{:<8} {}", im.label, line.join("  "));
                if let (Some(first), Some(last)) = (points.first(), points.last()) {
                    println!(
                        "{:<8} p50 at n={} / p50 at n={} = {:.2}",
                        im.label,
                        last.0,
                        first.0,
                        last.1.as_secs_f64() / first.1.as_secs_f64()
                    );
                }
            }
        }
    });
}
