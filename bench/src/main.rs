//! `rcni-bench`: plays the container runtime against our plugins and, when the Debian package
//! `containernetworking-plugins` is installed (/usr/lib/cni), against the reference plugins too,
//! interleaved in one run so both see the same machine state. It prints figures and ratios and
//! never asserts on time: speed targets are read off its output, not enforced by tests.
//!
//! Everything runs inside a private network + mount namespace (the test harness's sandbox), so
//! the machine's own interfaces and firewall are untouched.
//!
//! The floor. Every figure of ours is printed beside the floor measured in the same run: one
//! exec of a static do-nothing binary per plugin process of the chain (2 for bridge and
//! host-local, 3 with portmap) plus the kernel's own attach done by one process over netlink
//! (veth pair born in the namespace, enslave, host end up, container address, up, default
//! route). Nothing can
//! be faster than that without leaving the exec model; the ratio to it is what is left to win.
//! The floor attach is also measured at each scale checkpoint, which isolates the kernel's own
//! growth with the number of bridge ports from ours.
//!
//! Phases. Our plugins run with `RCNI_TRACE=1` in the scale run; the per-phase p50s of their
//! trace lines (cni::trace) are printed at each checkpoint, so growth is attributed to a phase.
//!
//! Usage: rcni-bench [--quick] [--n N] [--parallel P] [--scale MAX] [--portmap]
//!   --quick       a smoke run (CI): 5 attachments, 10 parallel, no scale run
//!   --n N         attachments per implementation for the latency run (default 100)
//!   --parallel P  simultaneous ADDs for the parallel run (default 100)
//!   --scale MAX   also attach MAX containers (ours, and the reference when installed) and
//!                 report ADD p50 at 10/100/500/1000/... (off by default: it takes minutes)
//!   --ours-only   skip the reference (quick iterations; not for reported figures)
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

mod floor;
use floor::Floor;

/// One implementation under measurement.
struct Impl {
    label: &'static str,
    dir: PathBuf,
    bridge: &'static str,
    subnet: &'static str,
    data: PathBuf,
    /// Chain portmap after bridge (`--portmap`).
    portmap: bool,
    /// Run the plugins with RCNI_TRACE=1 (ours only; the scale run).
    trace: std::sync::atomic::AtomicBool,
}

/// What one plugin execution cost.
struct Exec {
    elapsed: Duration,
    ok: bool,
    stdout: String,
    /// `rcni-trace` lines the plugins wrote to stderr (only with RCNI_TRACE=1).
    traces: Vec<String>,
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
        .stderr(Stdio::piped())
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
    // Plugins write at most a few lines to stderr; reading it after stdout cannot block them.
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
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
        traces: stderr
            .lines()
            .filter(|l| l.starts_with("rcni-trace "))
            .map(str::to_string)
            .collect(),
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
                traces: [b.traces, p.traces].concat(),
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
                traces: [b.traces, p.traces].concat(),
                max_rss_kb: b.max_rss_kb.max(p.max_rss_kb),
            }
        }
    }

    fn env(&self, verb: &str, cid: &str, netns: &Path) -> Vec<(&'static str, String)> {
        let mut env = vec![(
            "RCNI_TRACE",
            u8::from(self.trace.load(std::sync::atomic::Ordering::Relaxed)).to_string(),
        )];
        env.extend([
            ("CNI_COMMAND", verb.to_string()),
            ("CNI_CONTAINERID", cid.to_string()),
            ("CNI_NETNS", netns.display().to_string()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_PATH", self.dir.display().to_string()),
            (
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={cid}"),
            ),
        ]);
        env
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

/// Samples of the floor taken in the latency run, interleaved with the implementations.
struct FloorSamples {
    exec: Vec<Duration>,
    attach: Vec<Duration>,
}

impl FloorSamples {
    /// The floor of a chain of `processes` plugin processes: that many static execs plus one
    /// kernel attach, at p50.
    fn p50(&self, processes: u32) -> Duration {
        percentile(&self.exec, 0.5) * processes + percentile(&self.attach, 0.5)
    }
}

fn latency_run(
    sb: &Sandbox,
    impls: &[Impl],
    n: usize,
    floor: &mut Floor,
) -> (Vec<Stats>, FloorSamples) {
    let mut fs = FloorSamples {
        exec: Vec::new(),
        attach: Vec::new(),
    };
    let mut stats: Vec<Stats> = impls
        .iter()
        .map(|_| Stats {
            add: vec![],
            del: vec![],
            failures: 0,
            max_rss_kb: 0,
        })
        .collect();
    // Interleaved: container i of every implementation (and of the floor) before container
    // i+1 of any.
    for i in 0..n {
        fs.exec.push(floor.exec_noop());
        fs.attach.push(floor.attach(sb));
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
    floor.cleanup(sb);
    (stats, fs)
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

/// p50 per phase of `rcni-trace` lines, as `plugin.phase`, in order of first appearance.
fn phase_p50s(traces: &[String]) -> Vec<(String, f64)> {
    let mut order: Vec<String> = Vec::new();
    let mut samples: std::collections::HashMap<String, Vec<f64>> = Default::default();
    for line in traces {
        let mut words = line.split(' ');
        let (Some(_), Some(plugin), Some(_verb)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        for w in words {
            let Some((k, v)) = w.split_once('=') else {
                continue;
            };
            let Ok(v) = v.parse::<f64>() else { continue };
            let key = format!("{plugin}.{k}");
            if !samples.contains_key(&key) {
                order.push(key.clone());
            }
            samples.entry(key).or_default().push(v);
        }
    }
    order
        .into_iter()
        .map(|k| {
            let mut v = samples.remove(&k).unwrap_or_default();
            v.sort_by(f64::total_cmp);
            let p50 = v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0.0);
            (k, p50)
        })
        .collect()
}

/// One checkpoint of the scale run.
struct ScalePoint {
    n: usize,
    add_p50: Duration,
    /// p50 of the floor's own attach at this population (ours only), and of each step.
    floor_attach_p50: Option<Duration>,
    floor_steps_p50: Vec<Duration>,
    phases: Vec<(String, f64)>,
}

/// Attach `max` containers one by one and report ADD p50 around each checkpoint; with a floor,
/// also the kernel's own attach at that population and the phases of our trace.
fn scale_run(
    sb: &Sandbox,
    im: &Impl,
    max: usize,
    mut floor: Option<&mut Floor>,
) -> Vec<ScalePoint> {
    let mut adds = Vec::new();
    let mut traces: Vec<Vec<String>> = Vec::new();
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
        traces.push(e.traces);
        let n = i + 1;
        if checkpoints.contains(&n) {
            // p50 of the last min(n, 10) ADDs: the cost at this population.
            let from = n.saturating_sub(10);
            let window: Vec<String> = traces[from..].concat();
            let mut floor_steps_p50 = Vec::new();
            let floor_attach_p50 = floor.as_deref_mut().map(|f| {
                let samples: Vec<[Duration; 7]> = (0..10)
                    .map(|_| f.attach_steps(sb, Some(im.bridge)))
                    .collect();
                for step in 0..floor::STEPS.len() {
                    let v: Vec<Duration> = samples.iter().map(|s| s[step]).collect();
                    floor_steps_p50.push(percentile(&v, 0.5));
                }
                // Off the bridge again: the population stays ours, and a bridge holds at most
                // 1024 ports (EXFULL).
                f.cleanup(sb);
                let totals: Vec<Duration> = samples.iter().map(|s| s.iter().sum()).collect();
                percentile(&totals, 0.5)
            });
            out.push(ScalePoint {
                n,
                add_p50: percentile(&adds[from..], 0.5),
                floor_attach_p50,
                floor_steps_p50,
                phases: phase_p50s(&window),
            });
        }
    }
    for i in 0..max {
        let name = format!("{}s{i}", im.label);
        im.call("DEL", &name, &PathBuf::from(format!("/run/netns/{name}")));
        sb.sh(&format!("ip netns del {name}"));
    }
    if let Some(f) = floor {
        f.cleanup(sb);
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
    // Iterating on our own figures: skip the reference (reported figures never use this).
    let ours_only = flag("--ours-only").is_some();

    sandbox(|sb| {
        let mut impls = vec![Impl {
            label: "ours",
            dir: bin_dir(),
            bridge: "br-ours",
            subnet: "10.60.0.0/16",
            data: sb.dir("data-ours"),
            portmap,
            trace: Default::default(),
        }];
        match reference_dir().filter(|_| !ours_only) {
            Some(dir) => impls.push(Impl {
                label: "ref",
                dir,
                bridge: "br-ref",
                subnet: "10.61.0.0/16",
                data: sb.dir("data-ref"),
                portmap,
                trace: Default::default(),
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
        let mut floor = Floor::new(sb);
        let (stats, floor_samples) = latency_run(sb, &impls, n, &mut floor);
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
        println!("{}", row("floor: static exec", &floor_samples.exec));
        println!("{}", row("floor: kernel attach", &floor_samples.attach));
        let processes: u32 = if portmap { 3 } else { 2 };
        let chain_floor = floor_samples.p50(processes);
        println!(
            "floor (bridge + host-local: 2 execs + attach) = {} ms; (+ portmap: 3 execs + attach) = {} ms",
            ms(floor_samples.p50(2)),
            ms(floor_samples.p50(3))
        );
        for (im, s) in impls.iter().zip(&stats) {
            println!(
                "{} ADD p50 / floor of this chain ({processes} execs + attach, {} ms) = {:.2}x",
                im.label,
                ms(chain_floor),
                percentile(&s.add, 0.5).as_secs_f64() / chain_floor.as_secs_f64()
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
            for (k, im) in impls.iter().enumerate() {
                let ours = k == 0;
                im.trace.store(ours, std::sync::atomic::Ordering::Relaxed);
                let points = scale_run(sb, im, scale, ours.then_some(&mut floor));
                im.trace.store(false, std::sync::atomic::Ordering::Relaxed);
                let line: Vec<String> = points
                    .iter()
                    .map(|p| format!("n={}: {} ms", p.n, ms(p.add_p50)))
                    .collect();
                println!("{:<8} {}", im.label, line.join("  "));
                if let (Some(first), Some(last)) = (points.first(), points.last()) {
                    println!(
                        "{:<8} p50 at n={} / p50 at n={} = {:.2}",
                        im.label,
                        last.n,
                        first.n,
                        last.add_p50.as_secs_f64() / first.add_p50.as_secs_f64()
                    );
                }
                if !ours {
                    continue;
                }
                // The kernel's own attach at each population, on the same bridge (with as many
                // ports as containers attached): its growth is the kernel's.
                let line: Vec<String> = points
                    .iter()
                    .filter_map(|p| Some(format!("n={}: {} ms", p.n, ms(p.floor_attach_p50?))))
                    .collect();
                println!("{:<8} {}", "floor attach", line.join("  "));
                println!("floor attach steps p50 (the kernel's own work, one process, ms):");
                for (i, step) in floor::STEPS.iter().enumerate() {
                    let vals: Vec<String> = points
                        .iter()
                        .map(|p| {
                            let v = p.floor_steps_p50.get(i).map(|d| ms(*d)).unwrap_or_default();
                            format!("{v:>8}")
                        })
                        .collect();
                    println!("  {step:<40}{}", vals.join(""));
                }
                println!("phase p50s of ours (RCNI_TRACE, ms; plugin.phase):");
                let keys: Vec<&String> = points
                    .last()
                    .map(|p| p.phases.iter().map(|(k, _)| k).collect())
                    .unwrap_or_default();
                let header: Vec<String> = points
                    .iter()
                    .map(|p| format!("{:>8}", format!("n={}", p.n)))
                    .collect();
                println!("  {:<40}{}", "", header.join(""));
                for key in keys {
                    let vals: Vec<String> = points
                        .iter()
                        .map(|p| {
                            let v = p.phases.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
                            format!("{:>8}", v.map(|v| format!("{v:.3}")).unwrap_or_default())
                        })
                        .collect();
                    println!("  {key:<40}{}", vals.join(""));
                }
            }
        }
    });
}
