//! host-local exec-time benchmark: ours vs the reference Go plugin, interleaved in one run so
//! both see the same machine load. Prints p50/p90 of ADD and DEL per call (fork+exec+work, the
//! cost a runtime pays) and the ratio, then the wall time of 100 parallel ADDs on one /24.
//! Prints figures only; asserts nothing about time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::{sandbox, CniCall};
use serde_json::{json, Value};

const ITER: usize = 200;

fn conf(dd: &Path, subnet: &str) -> Value {
    json!({"cniVersion": "1.0.0", "name": "bench",
           "ipam": {"type": "host-local", "dataDir": dd.to_str().unwrap(),
                    "ranges": [[{"subnet": subnet}], [{"subnet": "fd00:b::/64"}]]}})
}

fn timed(bin: &Path, cmd: &str, cid: &str, ns: &Path, c: &Value) -> Duration {
    let call = CniCall::with_bin(bin.to_path_buf(), cmd)
        .env("CNI_PATH", "/usr/lib/cni")
        .attachment(cid, ns, "eth0")
        .conf(c);
    let t = Instant::now();
    let out = call.run();
    let d = t.elapsed();
    assert_eq!(
        out.code,
        0,
        "{} {cmd} failed: {}",
        bin.display(),
        out.stdout
    );
    d
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn spawn_add(bin: &Path, cid: &str, ns: &Path, c: &Value) -> Child {
    let mut ch = Command::new(bin)
        .env_clear()
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", ns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = ch.stdin.take().unwrap();
    stdin.write_all(&serde_json::to_vec(c).unwrap()).unwrap();
    drop(stdin);
    ch
}

fn parallel_adds(bin: &Path, ns: &Path, dd: &Path) -> Duration {
    let c = conf(dd, "10.77.0.0/24");
    let t = Instant::now();
    let children: Vec<Child> = (0..100)
        .map(|i| spawn_add(bin, &format!("par{i}"), ns, &c))
        .collect();
    for ch in children {
        let out = ch.wait_with_output().unwrap();
        assert!(out.status.success(), "parallel ADD failed");
    }
    t.elapsed()
}

fn main() {
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_host-local"));
    let reference = PathBuf::from("/usr/lib/cni/host-local");
    if !reference.exists() {
        eprintln!("hostlocal bench: /usr/lib/cni/host-local missing (containernetworking-plugins); nothing to compare");
        return;
    }
    sandbox(|sb| {
        let ns = sb.netns("bench");
        let bins = [
            ("ours", &ours, sb.dir("ours")),
            ("reference", &reference, sb.dir("ref")),
        ];
        let confs: Vec<Value> = bins
            .iter()
            .map(|(_, _, dd)| conf(dd, "10.66.0.0/16"))
            .collect();
        let mut add = [Vec::new(), Vec::new()];
        let mut del = [Vec::new(), Vec::new()];
        // Alternate which binary goes first so neither always runs on a warmer cache.
        for i in 0..ITER {
            for k in 0..2 {
                let b = (i + k) % 2;
                add[b].push(timed(bins[b].1, "ADD", &format!("c{i}"), &ns, &confs[b]));
            }
        }
        for i in 0..ITER {
            for k in 0..2 {
                let b = (i + k) % 2;
                del[b].push(timed(bins[b].1, "DEL", &format!("c{i}"), &ns, &confs[b]));
            }
        }
        // The floor every exec pays here (fork/exec/pipes/wait of a do-nothing binary), so the
        // plugins' own cost can be read off as "p50 - floor".
        let mut floor: Vec<Duration> = (0..ITER)
            .map(|_| {
                let call = CniCall::with_bin(PathBuf::from("/bin/true"), "ADD").stdin("{}");
                let t = Instant::now();
                call.run();
                t.elapsed()
            })
            .collect();
        let floor50 = pct(&mut floor, 0.5);
        println!("host-local exec time, {ITER} calls each, dual-stack config, dataDir on tmpfs");
        println!(
            "exec floor (/bin/true through the same spawn path): p50 {:.3}ms",
            ms(floor50)
        );
        println!(
            "{:<6} {:>12} {:>12} {:>12} {:>12} {:>10}",
            "verb", "ours p50", "ours p90", "ref p50", "ref p90", "p50 ratio"
        );
        for (verb, v) in [("ADD", &mut add), ("DEL", &mut del)] {
            let (o50, o90) = (pct(&mut v[0], 0.5), pct(&mut v[0], 0.9));
            let (r50, r90) = (pct(&mut v[1], 0.5), pct(&mut v[1], 0.9));
            println!(
                "{verb:<6} {:>10.3}ms {:>10.3}ms {:>10.3}ms {:>10.3}ms {:>9.2}x {:>15.2}x",
                ms(o50),
                ms(o90),
                ms(r50),
                ms(r90),
                ms(r50) / ms(o50),
                (ms(r50) - ms(floor50)) / (ms(o50) - ms(floor50)).max(0.001)
            );
        }
        let po = parallel_adds(&ours, &ns, &sb.dir("par-ours"));
        let pr = parallel_adds(&reference, &ns, &sb.dir("par-ref"));
        println!(
            "100 parallel ADDs on one /24: ours {:.1}ms, reference {:.1}ms, ratio {:.2}x",
            ms(po),
            ms(pr),
            ms(pr) / ms(po)
        );
    });
}
