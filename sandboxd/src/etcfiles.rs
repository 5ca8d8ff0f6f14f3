//! Per-sandbox `hosts`, `resolv.conf` and `hostname` under `<dir>/<sandbox>/`: the iproute2
//! convention, where `ip netns exec NAME` bind-mounts every file of `/etc/netns/NAME/` over
//! `/etc`. It is off unless `--etc-netns DIR` is given (the systemd unit passes `/etc/netns`),
//! so a daemon started by hand or by a test never writes into the machine's `/etc`.
//!
//! A sandbox on a network with a name service (every network but the built-ins, [`crate::dns`])
//! gets that service as its name server, with the host's `search` and `options` lines; a sandbox
//! on built-in networks only keeps the host's servers, as in Docker.
//!
//! Which directories sandboxd wrote is recorded under the data directory (`etc-written/<name>`),
//! never inside them: `ip netns exec` bind-mounts every entry of the directory over `/etc`, and
//! a marker file there would make it warn on each run.

use std::net::IpAddr;
use std::path::Path;

use crate::model::{EpState, SandboxRec};
use crate::store::write_atomic;

/// Docker's fallback when the host only has loopback resolvers, which a sandbox cannot reach.
const FALLBACK: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

/// The sandbox's `hosts`: the standard entries and its own addresses with its names.
pub fn hosts(sb: &SandboxRec) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for e in sb.endpoints.iter().filter(|e| e.state == EpState::Ready) {
        if sb.mode != "network" {
            continue;
        }
        let mut names = vec![sb.hostname.clone()];
        if sb.name != sb.hostname {
            names.push(sb.name.clone());
        }
        names.extend(e.endpoint.aliases.iter().cloned());
        for a in &e.endpoint.addresses {
            out.push_str(&format!("{}\t{}\n", a.addr(), names.join(" ")));
        }
    }
    out
}

/// The sandbox's `resolv.conf`: the host's, without loopback name servers (unreachable from
/// another namespace); Docker's public fallback when none is left.
pub fn resolv_conf(host: &str) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let loopback = words
                .next()
                .and_then(|a| a.parse::<IpAddr>().ok())
                .is_none_or(|a| a.is_loopback());
            if loopback {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        for s in FALLBACK {
            out.push_str(&format!("nameserver {s}\n"));
        }
    }
    out
}

/// The `resolv.conf` of a sandbox served by sandboxd's name service: those servers, and the
/// host's `search`/`options`/`domain` lines (the host's own servers are reached through the
/// service, which forwards to them from the daemon's namespace).
pub fn resolv_conf_dns(host: &str, servers: &[IpAddr]) -> String {
    let mut out =
        String::from("# written by sandboxd: its name service for this sandbox's networks\n");
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    for line in host.lines() {
        let first = line.split_whitespace().next();
        if matches!(first, Some("search" | "options" | "domain")) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// What goes into the files besides the sandbox record.
#[derive(Debug, Clone, Default)]
pub struct EtcInput<'a> {
    /// sandboxd's name servers for this sandbox (empty: use the host's servers).
    pub nameservers: &'a [IpAddr],
    /// The host's resolv.conf (default /etc/resolv.conf).
    pub host_resolv: Option<&'a Path>,
}

/// Write (or refresh) the files of a sandbox with its own namespace; `written` is the directory
/// of markers under the data directory.
pub fn write(dir: &Path, written: &Path, sb: &SandboxRec) -> Result<(), crate::Error> {
    write_with(dir, written, sb, &EtcInput::default())
}

/// [`write`] with name servers and the host's resolv.conf path.
pub fn write_with(
    dir: &Path,
    written: &Path,
    sb: &SandboxRec,
    input: &EtcInput<'_>,
) -> Result<(), crate::Error> {
    if !sb.owns_netns {
        return Ok(());
    }
    std::fs::create_dir_all(written).map_err(|e| crate::Error::io("create", written, e))?;
    // Marker first: a crash after it leaves a directory the next prune knows to remove.
    write_atomic(&written.join(&sb.name), b"")?;
    let d = dir.join(&sb.name);
    std::fs::create_dir_all(&d).map_err(|e| crate::Error::io("create", &d, e))?;
    // A temporary file of a write cut short by a kill -9 (write_atomic's `*.json.tmp`).
    for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().ends_with(".json.tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let host_path = input.host_resolv.unwrap_or(Path::new("/etc/resolv.conf"));
    let host = std::fs::read_to_string(host_path).unwrap_or_default();
    let resolv = if input.nameservers.is_empty() {
        resolv_conf(&host)
    } else {
        resolv_conf_dns(&host, input.nameservers)
    };
    write_atomic(&d.join("hosts"), hosts(sb).as_bytes())?;
    write_atomic(&d.join("resolv.conf"), resolv.as_bytes())?;
    write_atomic(&d.join("hostname"), format!("{}\n", sb.hostname).as_bytes())
}

/// Remove a sandbox's directory, only if sandboxd wrote it.
pub fn remove(dir: &Path, written: &Path, name: &str) {
    let marker = written.join(name);
    if marker.exists() {
        let _ = std::fs::remove_dir_all(dir.join(name));
        let _ = std::fs::remove_file(marker);
    }
}

/// Remove directories sandboxd wrote for sandboxes that no longer exist.
pub fn prune(dir: &Path, written: &Path, keep: &dyn Fn(&str) -> bool) {
    for e in std::fs::read_dir(written).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains(".tmp") {
            let _ = std::fs::remove_file(e.path());
        } else if !keep(&name) {
            remove(dir, written, &name);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn resolv_conf_drops_loopback_servers() {
        let r = resolv_conf("# c\nnameserver 127.0.0.53\noptions edns0\nsearch example.org\n");
        assert_eq!(
            r,
            "# c\noptions edns0\nsearch example.org\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        let r = resolv_conf_dns(
            "nameserver 127.0.0.53\nsearch a.example\noptions edns0\n",
            &["10.1.0.1".parse().unwrap()],
        );
        assert!(
            r.ends_with("nameserver 10.1.0.1\nsearch a.example\noptions edns0\n"),
            "{r}"
        );
        let r = resolv_conf("nameserver 10.0.0.2\nnameserver ::1\n");
        assert_eq!(r, "nameserver 10.0.0.2\n");
    }
}
