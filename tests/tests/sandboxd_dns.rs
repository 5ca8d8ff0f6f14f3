//! sandboxd's name service (issue 15), end to end. Each test starts `target/<profile>/sandboxd`
//! inside its private network + mount namespace (own socket, data dir, `--etc-netns` dir and
//! `--resolv-conf`), drives it with the `netns` client, and resolves names the way applications
//! do: `getent hosts` (glibc's resolver) inside `netns exec`, which bind-mounts the sandbox's
//! resolv.conf and hosts over /etc (`NETNS_ETC_DIR` points it at the daemon's --etc-netns dir, so
//! nothing touches the machine's /etc). Answer codes and exact record sets are checked with a
//! tiny DNS client written here (no code shared with the daemon), sending from inside a
//! sandbox's namespace. The upstream resolver is a dnsmasq the test runs on its own loopback.
//! Every test removes what it created, checks nothing is left, and stops its processes by PID.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use integration_tests::daemon::Sandboxd;
use integration_tests::{plugin_bin, sandbox, Sandbox};
use serde_json::Value;

/// The test's sandboxd (the harness's [`Sandboxd`]) writing /etc files to `etc` and reading
/// the host's resolv.conf the test wrote.
struct Daemon {
    d: Sandboxd,
    etc: PathBuf,
}

integration_tests::wraps_sandboxd!(Daemon);

impl Daemon {
    fn start(sb: &Sandbox, host_resolv: &str) -> Daemon {
        Daemon::start_with(sb, host_resolv, &[])
    }

    fn start_with(sb: &Sandbox, host_resolv: &str, extra: &[&str]) -> Daemon {
        let resolv = sb.scratch().join("host-resolv.conf");
        std::fs::write(&resolv, host_resolv).unwrap();
        let etc = sb.dir("etc-netns");
        let mut d = Sandboxd::new(
            sb.scratch().join("sandboxd/sandboxd.sock"),
            sb.dir("sandboxd-data"),
        )
        .arg("--etc-netns")
        .arg(&etc)
        .arg("--resolv-conf")
        .arg(&resolv)
        .args(extra)
        .log_to(sb.scratch().join("sandboxd.log"));
        d.start();
        Daemon { d, etc }
    }

    fn ok(&self, args: &[&str]) -> String {
        self.cli_ok(args)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// `getent hosts KEY` inside sandbox `ns`, through its bind-mounted resolv.conf and hosts:
    /// the first line's fields, or None when glibc found nothing.
    fn getent(&self, ns: &str, key: &str) -> Option<Vec<String>> {
        let out = Command::new(plugin_bin("netns"))
            .env("NETNS_ETC_DIR", &self.etc)
            .args(["exec", ns, "getent", "hosts", key])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().next()?;
        out.status
            .success()
            .then(|| line.split_whitespace().map(str::to_string).collect())
    }

    /// The address `getent hosts NAME` gives in `ns` (must resolve).
    fn resolves(&self, ns: &str, name: &str) -> String {
        let r = self.getent(ns, name).unwrap_or_else(|| {
            panic!(
                "{ns}: {name} does not resolve\nresolv.conf: {}\nlog:\n{}",
                std::fs::read_to_string(self.etc.join(ns).join("resolv.conf")).unwrap_or_default(),
                self.log()
            )
        });
        r[0].clone()
    }

    /// Remove every sandbox and user network, then check nothing is left: sandboxes, pins,
    /// veths, /etc files, and no name service still listening.
    fn remove_all_and_check(&self, sb: &Sandbox) {
        for s in self.json(&["sandbox", "ls"]).as_array().unwrap() {
            self.ok(&["sandbox", "rm", s["name"].as_str().unwrap()]);
        }
        for n in self.json(&["network", "ls"]).as_array().unwrap() {
            if n["builtin"] == false {
                self.ok(&["network", "rm", n["name"].as_str().unwrap()]);
            }
        }
        let pins: Vec<_> = std::fs::read_dir("/run/netns").unwrap().collect();
        assert!(pins.is_empty(), "pins left: {pins:?}");
        let veths = sb.ip_json(None, "link show type veth");
        assert_eq!(veths.as_array().unwrap().len(), 0, "veths left: {veths}");
        let etc: Vec<_> = std::fs::read_dir(&self.etc).unwrap().collect();
        assert!(etc.is_empty(), "per-sandbox /etc files left: {etc:?}");
        let listening = sb.sh("ss -Hlnu 'sport = :53'; ss -Hlnt 'sport = :53'");
        let ours: Vec<&str> = listening
            .lines()
            .filter(|l| !l.contains("127.0.0.1:53"))
            .collect();
        assert!(ours.is_empty(), "DNS listeners left: {ours:?}");
    }
}

/// A dnsmasq on the test's loopback (127.0.0.1:53) answering `names` from a hosts file and
/// logging every query; stopped by PID on drop.
struct Upstream {
    child: Child,
    log: PathBuf,
}

impl Upstream {
    fn start(sb: &Sandbox, names: &[(&str, &str)]) -> Upstream {
        let dnsmasq = Path::new("/usr/sbin/dnsmasq");
        assert!(
            dnsmasq.exists(),
            "dnsmasq is needed as the test's upstream resolver: apt-get install dnsmasq-base"
        );
        let hosts = sb.scratch().join("upstream-hosts");
        let text: String = names.iter().map(|(ip, n)| format!("{ip} {n}\n")).collect();
        std::fs::write(&hosts, text).unwrap();
        let log = sb.scratch().join("dnsmasq.log");
        let child = Command::new(dnsmasq)
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--port=53",
                "--user=root",
                "--pid-file=",
                "--log-queries",
            ])
            .arg(format!("--addn-hosts={}", hosts.display()))
            .arg(format!("--log-facility={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let up = Upstream { child, log };
        let t = Instant::now();
        while !sb.sh("ss -Hlnu 'sport = :53'").contains("127.0.0.1:53") {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "dnsmasq did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        up
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the PID of our own child, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// A tiny DNS client (RFC 1035 §4), independent of the daemon's code.

const A: u16 = 1;
const PTR: u16 = 12;
const AAAA: u16 = 28;
const NXDOMAIN: u8 = 3;

/// A parsed reply: rcode, A/AAAA addresses and PTR names of the answer section.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    rcode: u8,
    addrs: Vec<IpAddr>,
    names: Vec<String>,
}

fn encode_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// Read a (possibly compressed) name at `i`; returns it and the offset after it.
fn read_name(b: &[u8], mut i: usize) -> (String, usize) {
    let mut labels = Vec::new();
    let mut end = None;
    for _ in 0..64 {
        let len = b[i] as usize;
        if len == 0 {
            i += 1;
            break;
        }
        if len & 0xc0 == 0xc0 {
            end.get_or_insert(i + 2);
            i = ((len & 0x3f) << 8) | b[i + 1] as usize;
            continue;
        }
        labels.push(String::from_utf8_lossy(&b[i + 1..i + 1 + len]).into_owned());
        i += 1 + len;
    }
    (labels.join("."), end.unwrap_or(i))
}

fn decode_reply(b: &[u8]) -> Reply {
    let rcode = b[3] & 0x0f;
    let qd = u16::from_be_bytes([b[4], b[5]]);
    let an = u16::from_be_bytes([b[6], b[7]]);
    let mut i = 12;
    for _ in 0..qd {
        i = read_name(b, i).1 + 4;
    }
    let mut r = Reply {
        rcode,
        addrs: vec![],
        names: vec![],
    };
    for _ in 0..an {
        i = read_name(b, i).1;
        let ty = u16::from_be_bytes([b[i], b[i + 1]]);
        let len = u16::from_be_bytes([b[i + 8], b[i + 9]]) as usize;
        let data = &b[i + 10..i + 10 + len];
        match (ty, len) {
            (A, 4) => r
                .addrs
                .push(IpAddr::from(<[u8; 4]>::try_from(data).unwrap())),
            (AAAA, 16) => r
                .addrs
                .push(IpAddr::from(<[u8; 16]>::try_from(data).unwrap())),
            (PTR, _) => r.names.push(read_name(b, i + 10).0),
            _ => {}
        }
        i += 10 + len;
    }
    r
}

/// Run `f` on a thread inside the namespace pinned at /run/netns/`ns`.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

/// One UDP query from the current thread's namespace; None on timeout (2 s).
fn query(server: IpAddr, name: &str, qtype: u16) -> Option<Reply> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let s = UdpSocket::bind(bind).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    s.send_to(&encode_query(id, name, qtype), (server, 53))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = s.recv_from(&mut buf).ok()?;
        if u16::from_be_bytes([buf[0], buf[1]]) == id {
            return Some(decode_reply(&buf[..n]));
        }
    }
}

/// One TCP query from the current thread's namespace.
fn query_tcp(server: IpAddr, name: &str, qtype: u16) -> Reply {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&(server, 53).into(), Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let q = encode_query(7, name, qtype);
    let mut m = (q.len() as u16).to_be_bytes().to_vec();
    m.extend_from_slice(&q);
    s.write_all(&m).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut b = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut b).unwrap();
    decode_reply(&b)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The first address (no prefix) of the endpoint on `net` of `sandbox inspect --json`.
fn addr_on(sbx: &Value, net: &str) -> String {
    sbx["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["network"] == net)
        .unwrap_or_else(|| panic!("no endpoint on {net}: {sbx}"))["addresses"][0]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

/// Names, aliases, `name.network`, short id, hostname, PTR, isolation between networks,
/// disconnect/connect taking effect when they return, /etc files and their paths, and the names
/// coming back at once after a daemon restart.
#[test]
fn names_visibility_disconnect_and_restart() {
    sandbox(|sb| {
        let mut d = Daemon::start_with(sb, "options timeout:1 attempts:1\n", &["--dns-handoff"]);
        d.ok(&["network", "create", "front", "--subnet", "10.151.0.0/24"]);
        d.ok(&["network", "create", "back", "--subnet", "10.152.0.0/24"]);
        let web = d.json(&[
            "sandbox",
            "create",
            "web",
            "--network",
            "front",
            "--alias",
            "www",
            "--hostname",
            "web-host",
        ]);
        let db = d.json(&[
            "sandbox",
            "create",
            "db",
            "--network",
            "front",
            "--alias",
            "sql",
        ]);
        let other = d.json(&["sandbox", "create", "other", "--network", "back"]);
        let web_ip = addr_on(&web, "front");
        let db_ip = addr_on(&db, "front");
        let db_short = &db["id"].as_str().unwrap()[..12];

        // resolv.conf names the network's gateway; inspect shows where the files are.
        let conf = std::fs::read_to_string(d.etc.join("web/resolv.conf")).unwrap();
        assert!(conf.contains("nameserver 10.151.0.1\n"), "{conf}");
        assert!(conf.contains("options timeout:1 attempts:1"), "{conf}");
        let shown = d.ok(&["sandbox", "inspect", "web"]);
        let path = d.etc.join("web/resolv.conf");
        assert!(shown.contains(&path.display().to_string()), "{shown}");
        let j = d.json(&["sandbox", "inspect", "web"]);
        assert_eq!(j["resolv_conf_path"], path.display().to_string());
        assert_eq!(
            j["hosts_path"],
            d.etc.join("web/hosts").display().to_string()
        );

        // Each finds the other by every name, through glibc.
        for name in ["db", "sql", "db.front", "sql.front", db_short] {
            assert_eq!(d.resolves("web", name), db_ip, "{name}");
        }
        for name in ["web", "www", "web.front", "web-host", "www.front"] {
            assert_eq!(d.resolves("db", name), web_ip, "{name}");
        }
        // PTR: the first name.
        let r = d.getent("web", &db_ip).expect("PTR through glibc");
        assert_eq!(r[1], "db", "{r:?}");
        let r = in_netns("web", || query(ip("10.151.0.1"), &rev(&db_ip), PTR)).unwrap();
        assert_eq!(r.names, vec!["db".to_string()]);
        // Exact record sets: one A, no AAAA (NODATA), authoritative NXDOMAIN in the network's
        // own domain, and TCP answers the same.
        let gw = ip("10.151.0.1");
        let (a, aaaa, nx, tcp) = in_netns("web", || {
            (
                query(gw, "db", A).unwrap(),
                query(gw, "db", AAAA).unwrap(),
                query(gw, "nosuch.front", A).unwrap(),
                query_tcp(gw, "sql.front", A),
            )
        });
        assert_eq!((a.rcode, a.addrs.clone()), (0, vec![ip(&db_ip)]));
        assert_eq!((aaaa.rcode, aaaa.addrs.len()), (0, 0));
        assert_eq!(nx.rcode, NXDOMAIN);
        assert_eq!(tcp.addrs, vec![ip(&db_ip)]);

        // A sandbox of another network sees none of them, even when it asks front's listener.
        assert_eq!(d.getent("other", "db"), None);
        assert_eq!(d.getent("other", "db.front"), None);
        let back_gw = ip("10.152.0.1");
        let seen = in_netns("other", || {
            [
                query(back_gw, "db.front", A),
                query(back_gw, "web", A),
                query(gw, "web", A),
            ]
        });
        for r in seen {
            assert!(r.as_ref().is_none_or(|r| r.addrs.is_empty()), "{r:?}");
        }
        let other_ip = addr_on(&other, "back");
        assert_eq!(d.getent("web", "other"), None);
        assert_eq!(d.resolves("other", "other"), other_ip);

        // Disconnect: gone when the command returns. Connect: there when it returns.
        d.ok(&["network", "disconnect", "front", "db"]);
        assert_eq!(d.getent("web", "db"), None);
        assert_eq!(d.getent("web", "sql"), None);
        let r = in_netns("web", || query(gw, "db.front", A)).unwrap();
        assert_eq!((r.rcode, r.addrs.len()), (NXDOMAIN, 0));
        d.ok(&["network", "connect", "back", "db", "--alias", "store"]);
        let db = d.json(&["sandbox", "inspect", "db"]);
        let db_back = addr_on(&db, "back");
        assert_eq!(d.resolves("other", "store"), db_back);
        assert_eq!(d.resolves("other", "db.back"), db_back);
        // db's resolv.conf follows its networks.
        let conf = std::fs::read_to_string(d.etc.join("db/resolv.conf")).unwrap();
        assert!(conf.contains("nameserver 10.152.0.1\n"), "{conf}");
        d.ok(&["network", "connect", "front", "db", "--alias", "sql"]);
        let db = d.json(&["sandbox", "inspect", "db"]);
        let db_ip = addr_on(&db, "front");
        assert_eq!(d.resolves("web", "sql"), db_ip);
        // db on both networks: from `other` (back) "db" is its back address, from web its front.
        assert_eq!(d.resolves("other", "db"), db_back);
        assert_eq!(d.resolves("web", "db"), db_ip);

        // Restart (SIGTERM, --dns-handoff): a query sent while no daemon runs waits in the
        // socket the holder keeps and is answered by the next daemon; the holder then exits.
        d.stop();
        let holder: i32 = std::fs::read_to_string(d.data_dir.join("dns-handoff.pid"))
            .expect("a holder was started")
            .trim()
            .parse()
            .unwrap();
        let t = Instant::now();
        let (answer, waited) = std::thread::scope(|s| {
            let q = s.spawn(|| {
                in_netns("web", || {
                    let t = Instant::now();
                    (query(gw, "sql.front", A), t.elapsed())
                })
            });
            std::thread::sleep(Duration::from_millis(300));
            d.start();
            q.join().unwrap()
        });
        let answer = answer.expect("the query sent during the restart was answered");
        assert_eq!(answer.addrs, vec![ip(&db_ip)]);
        assert!(
            waited >= Duration::from_millis(250),
            "answered by whom? {waited:?}"
        );
        assert_eq!(d.resolves("web", "sql.front"), db_ip);
        assert_eq!(d.resolves("other", "store"), db_back);
        eprintln!(
            "restart: a query sent during it was answered after {waited:?}; names answered {:?} after the stop",
            t.elapsed()
        );
        let t = Instant::now();
        // SAFETY: kill(2) with signal 0 only checks that the process exists.
        while unsafe { libc::kill(holder, 0) } == 0 {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "the holder {holder} did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!d.data_dir.join("dns-handoff.sock").exists());
        // The same after a kill -9.
        d.kill9();
        assert_eq!(
            d.getent("web", "sql"),
            None,
            "nothing answers while it is down"
        );
        d.start();
        assert_eq!(d.resolves("web", "sql"), db_ip);
        assert_eq!(d.resolves("other", "db"), db_back);

        // rm: gone when it returns.
        d.ok(&["sandbox", "rm", "db"]);
        assert_eq!(d.getent("web", "sql"), None);
        assert_eq!(d.getent("other", "store"), None);
        d.remove_all_and_check(sb);
    });
}

fn rev(addr: &str) -> String {
    let o: Vec<&str> = addr.split('.').rev().collect();
    format!("{}.in-addr.arpa", o.join("."))
}

/// Other names go to the host's resolver (a dnsmasq on the test's loopback, as a 127.0.0.53
/// stub would be), over UDP and TCP; an internal network never forwards and answers at once.
#[test]
fn upstream_forwarding_and_internal_networks() {
    sandbox(|sb| {
        let up = Upstream::start(
            sb,
            &[
                ("10.99.0.7", "upstream.example"),
                ("10.99.0.8", "secret.example"),
            ],
        );
        let d = Daemon::start(sb, "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n");
        d.ok(&["network", "create", "pub", "--subnet", "10.153.0.0/24"]);
        d.ok(&[
            "network",
            "create",
            "priv",
            "--subnet",
            "10.154.0.0/24",
            "--internal",
        ]);
        d.ok(&["sandbox", "create", "p1", "--network", "pub"]);
        let i1 = d.json(&["sandbox", "create", "i1", "--network", "priv"]);
        d.ok(&["sandbox", "create", "i2", "--network", "priv"]);

        assert_eq!(d.resolves("p1", "upstream.example"), "10.99.0.7");
        let tcp = in_netns("p1", || query_tcp(ip("10.153.0.1"), "upstream.example", A));
        assert_eq!(tcp.addrs, vec![ip("10.99.0.7")]);
        assert!(up.log().contains("upstream.example"), "{}", up.log());
        // A source that is no sandbox (here the host itself) sees the listener's network but is
        // no client of the forwarder: REFUSED.
        let p1 = d.json(&["sandbox", "inspect", "p1"]);
        let r = query(ip("10.153.0.1"), "p1", A).unwrap();
        assert_eq!(r.addrs, vec![ip(&addr_on(&p1, "pub"))]);
        let r = query(ip("10.153.0.1"), "upstream.example", A).unwrap();
        assert_eq!((r.rcode, r.addrs.len()), (5, 0));

        // Internal: own names work, others are NXDOMAIN at once and never reach the upstream.
        assert_eq!(d.resolves("i2", "i1"), addr_on(&i1, "priv"));
        let t = Instant::now();
        let r = in_netns("i2", || query(ip("10.154.0.1"), "secret.example", A))
            .expect("an internal network answers, it does not time out");
        assert_eq!((r.rcode, r.addrs.len()), (NXDOMAIN, 0));
        assert_eq!(d.getent("i2", "secret.example"), None);
        assert!(
            !up.log().contains("secret.example"),
            "an internal network forwarded:\n{}",
            up.log()
        );
        eprintln!("internal NXDOMAIN in {:?}", t.elapsed());
        // A sandbox on the internal network that also has a way out (connected to pub) gets
        // other names forwarded, even through the internal network's server, which its
        // resolv.conf names first.
        d.ok(&["sandbox", "create", "both", "--network", "priv"]);
        d.ok(&["network", "connect", "pub", "both"]);
        let conf = std::fs::read_to_string(d.etc.join("both/resolv.conf")).unwrap();
        assert!(
            conf.find("10.154.0.1") < conf.find("10.153.0.1") && conf.contains("10.153.0.1"),
            "{conf}"
        );
        assert_eq!(d.resolves("both", "upstream.example"), "10.99.0.7");
        assert_eq!(d.resolves("both", "i1"), addr_on(&i1, "priv"));

        // Dual stack: AAAA answers the IPv6 address (glibc's `getent hosts` asks AAAA first),
        // A the IPv4 one, PTR works for both.
        d.ok(&[
            "network",
            "create",
            "dual",
            "--subnet",
            "10.157.0.0/24",
            "--subnet",
            "fd00:157::/64",
            "--ipv6",
        ]);
        d.ok(&["sandbox", "create", "d1", "--network", "dual"]);
        let d2 = d.json(&["sandbox", "create", "d2", "--network", "dual"]);
        let addrs: Vec<IpAddr> = d2["endpoints"][0]["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| ip(a.as_str().unwrap().split('/').next().unwrap()))
            .collect();
        let v4 = *addrs.iter().find(|a| a.is_ipv4()).unwrap();
        let v6 = *addrs.iter().find(|a| a.is_ipv6()).unwrap();
        let conf = std::fs::read_to_string(d.etc.join("d1/resolv.conf")).unwrap();
        assert!(conf.contains("nameserver 10.157.0.1\n"), "{conf}");
        assert_eq!(d.resolves("d1", "d2"), v6.to_string());
        let gw = ip("10.157.0.1");
        let (a, aaaa) = in_netns("d1", || (query(gw, "d2.dual", A), query(gw, "d2", AAAA)));
        assert_eq!(a.unwrap().addrs, vec![v4]);
        assert_eq!(aaaa.unwrap().addrs, vec![v6]);
        assert_eq!(d.getent("d1", &v6.to_string()).unwrap()[1], "d2");

        // A `cni` network (a user conflist used as is): served on the gateway its plugins
        // report, once that address exists on the host.
        let conf = serde_json::json!({"cniVersion": "1.1.0", "name": "cninet", "plugins": [
            {"type": "bridge", "bridge": "cbr0", "isGateway": true, "ipMasq": true,
             "ipam": {"type": "host-local", "subnet": "10.158.0.0/24",
                      "dataDir": sb.dir("cni-ipam")}}]});
        let netd = d.data_dir.join("net.d");
        std::fs::create_dir_all(&netd).unwrap();
        std::fs::write(netd.join("cninet.conflist"), conf.to_string()).unwrap();
        d.ok(&["network", "create", "cninet", "--driver", "cni"]);
        let c1 = d.json(&["sandbox", "create", "c1", "--network", "cninet"]);
        d.ok(&["sandbox", "create", "c2", "--network", "cninet"]);
        for c in ["c1", "c2"] {
            let conf = std::fs::read_to_string(d.etc.join(c).join("resolv.conf")).unwrap();
            assert!(conf.contains("nameserver 10.158.0.1\n"), "{c}: {conf}");
        }
        assert_eq!(d.resolves("c2", "c1.cninet"), addr_on(&c1, "cninet"));
        d.remove_all_and_check(sb);
    });
}

/// 50 lookups in parallel while a sandbox is connected and disconnected 20 times: every answer
/// is right (the stable name always its one address; the churning one either absent or one of
/// the addresses it had), and every query is answered.
#[test]
fn parallel_lookups_during_connect_disconnect() {
    sandbox(|sb| {
        let d = Daemon::start(sb, "");
        d.ok(&["network", "create", "churn", "--subnet", "10.155.0.0/24"]);
        d.ok(&["network", "create", "side", "--subnet", "10.156.0.0/24"]);
        let client = d.json(&["sandbox", "create", "client", "--network", "churn"]);
        let stable = d.json(&["sandbox", "create", "stable", "--network", "churn"]);
        d.ok(&["sandbox", "create", "flip", "--network", "side"]);
        let stable_ip = ip(&addr_on(&stable, "churn"));
        let client_ip = ip(&addr_on(&client, "churn"));
        let flip_addrs: Mutex<BTreeSet<IpAddr>> = Mutex::new(BTreeSet::new());
        let done = AtomicBool::new(false);
        let (queries, wrong, unanswered) = (
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        );
        let (present, absent) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let bad: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let gw = ip("10.155.0.1");
        std::thread::scope(|s| {
            let mut workers = Vec::new();
            for w in 0..50 {
                let (done, queries, wrong, unanswered, bad) =
                    (&done, &queries, &wrong, &unanswered, &bad);
                let (present, absent) = (&present, &absent);
                workers.push(s.spawn(move || {
                    in_netns("client", || {
                        let mut n = 0;
                        while !done.load(Ordering::Relaxed) || n < 4 {
                            n += 1;
                            let name = if (w + n) % 2 == 0 {
                                "stable"
                            } else {
                                "flip.churn"
                            };
                            queries.fetch_add(1, Ordering::Relaxed);
                            let Some(r) = query(gw, name, A) else {
                                unanswered.fetch_add(1, Ordering::Relaxed);
                                continue;
                            };
                            let ok = if name == "stable" {
                                r.rcode == 0 && r.addrs == vec![stable_ip]
                            } else {
                                // The flip's addresses are recorded by the churn loop before
                                // the connect's reply is read; check against them afterwards.
                                (r.rcode == NXDOMAIN && r.addrs.is_empty())
                                    || (r.rcode == 0
                                        && r.addrs.len() == 1
                                        && r.addrs[0] != stable_ip
                                        && r.addrs[0] != client_ip)
                            };
                            if !ok {
                                wrong.fetch_add(1, Ordering::Relaxed);
                                bad.lock().unwrap().push(format!("{name}: {r:?}"));
                            } else if name != "stable" && !r.addrs.is_empty() {
                                present.fetch_add(1, Ordering::Relaxed);
                                bad.lock().unwrap().push(format!("flip@{}", r.addrs[0]));
                            } else if name != "stable" {
                                absent.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                }));
            }
            for _ in 0..10 {
                let e = d.json(&["network", "connect", "churn", "flip"]);
                let a = ip(e["addresses"][0]
                    .as_str()
                    .unwrap_or_else(|| panic!("{e}"))
                    .split('/')
                    .next()
                    .unwrap());
                flip_addrs.lock().unwrap().insert(a);
                d.ok(&["network", "disconnect", "churn", "flip"]);
            }
            done.store(true, Ordering::Relaxed);
            for w in workers {
                w.join().unwrap();
            }
        });
        let flips = flip_addrs.into_inner().unwrap();
        let mut wrong_n = wrong.load(Ordering::Relaxed);
        let mut errors = Vec::new();
        for b in bad.into_inner().unwrap() {
            match b.strip_prefix("flip@") {
                Some(a) if flips.contains(&ip(a)) => {}
                Some(a) => {
                    wrong_n += 1;
                    errors.push(format!("flip.churn answered {a}, not one of {flips:?}"));
                }
                None => errors.push(b),
            }
        }
        let (q, un) = (
            queries.load(Ordering::Relaxed),
            unanswered.load(Ordering::Relaxed),
        );
        let (p, a) = (
            present.load(Ordering::Relaxed),
            absent.load(Ordering::Relaxed),
        );
        eprintln!(
            "{q} queries during 20 connect/disconnect operations ({p} saw flip, {a} did not)"
        );
        assert!(
            p > 0 && a > 0,
            "the churn was not observed: {p} present, {a} absent"
        );
        assert_eq!(wrong_n, 0, "wrong answers: {errors:?}");
        assert_eq!(un, 0, "{un} of {q} queries were not answered");
        assert!(q >= 200, "only {q} queries ran");
        d.remove_all_and_check(sb);
    });
}
