//! Per-phase timing of one plugin call, for users who want to see where an ADD spends its time.
//!
//! Off unless the environment has `RCNI_TRACE=1` (or `true`). Runtimes exec plugins with their
//! own environment plus the `CNI_*` variables (libcni does), so setting it on containerd, CRI-O,
//! Podman or `netns` reaches every plugin of the chain, delegated IPAM included. When on, the
//! skeleton prints one line to **stderr** when the call ends (stdout carries only the result):
//!
//! ```text
//! rcni-trace bridge ADD total=5.120 parse=0.041 bridge=0.210 veth=1.030 ... (ms)
//! ```
//!
//! Each phase is the time since the previous mark, so the phases add up to `total`. Marks
//! cost one uncontended mutex and an `Instant::now()` when off: nothing on the hot path.

use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Tracer {
    plugin: String,
    verb: String,
    start: Instant,
    last: Instant,
    phases: Vec<(&'static str, Duration)>,
}

/// A stack: a plugin run in the process of another (IPAM linked into bridge) traces itself as
/// a nested call, and its time shows up in the caller's current phase.
static TRACE: Mutex<Vec<Tracer>> = Mutex::new(Vec::new());

/// Whether the environment asks for a trace (`RCNI_TRACE=1` or `true`).
pub fn requested(env: &dyn Fn(&str) -> Option<String>) -> bool {
    env("RCNI_TRACE").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Start timing this process's call (the skeleton does this before parsing stdin).
pub fn start(plugin: &str, verb: &str) {
    let now = Instant::now();
    if let Ok(mut t) = TRACE.lock() {
        t.push(Tracer {
            plugin: plugin.to_string(),
            verb: verb.to_string(),
            start: now,
            last: now,
            phases: Vec::new(),
        });
    }
}

/// End the phase named `name` now. A no-op unless a trace was started.
pub fn phase(name: &'static str) {
    if let Ok(mut guard) = TRACE.lock() {
        if let Some(t) = guard.last_mut() {
            let now = Instant::now();
            t.phases.push((name, now - t.last));
            t.last = now;
        }
    }
}

/// The trace line (without newline), closing the last phase as `rest`; `None` when off.
pub fn finish() -> Option<String> {
    let t = TRACE.lock().ok()?.pop()?;
    let now = Instant::now();
    let ms = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1000.0);
    let mut line = format!(
        "rcni-trace {} {} total={}",
        t.plugin,
        t.verb,
        ms(now - t.start)
    );
    for (name, d) in t.phases.iter().chain([("rest", now - t.last)].iter()) {
        line.push_str(&format!(" {name}={}", ms(*d)));
    }
    line.push_str(" (ms)");
    Some(line)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn phases_add_up_and_off_means_silent() {
        assert!(finish().is_none());
        phase("ignored");
        assert!(finish().is_none());
        start("bridge", "ADD");
        std::thread::sleep(Duration::from_millis(2));
        phase("veth");
        phase("ipam");
        let line = finish().unwrap();
        assert!(line.starts_with("rcni-trace bridge ADD total="), "{line}");
        let field = |k: &str| -> f64 {
            let v = line.split(' ').find_map(|f| f.strip_prefix(k)).unwrap();
            v.parse().unwrap()
        };
        let (total, veth, ipam, rest) = (
            field("total="),
            field("veth="),
            field("ipam="),
            field("rest="),
        );
        assert!(veth >= 2.0, "{line}");
        assert!((veth + ipam + rest - total).abs() < 0.01, "{line}");
        assert!(finish().is_none(), "finish consumes the trace");
        // Nested: the inner call's time lands in the outer call's current phase.
        start("bridge", "ADD");
        phase("veth");
        start("host-local", "ADD");
        phase("allocate");
        let inner = finish().unwrap();
        assert!(inner.starts_with("rcni-trace host-local ADD"), "{inner}");
        phase("ipam");
        let outer = finish().unwrap();
        assert!(
            outer.contains(" veth=") && outer.contains(" ipam="),
            "{outer}"
        );
        assert!(!outer.contains("allocate"), "{outer}");
        assert!(requested(&|_| Some("1".into())));
        assert!(requested(&|_| Some("TRUE".into())));
        assert!(!requested(&|_| Some("0".into())));
        assert!(!requested(&|_| None));
    }
}
