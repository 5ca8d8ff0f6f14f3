//! iptables backend with the reference plugins' ipMasq layout (cni-reference.md §2.2/§2.3), so a
//! host can switch between the reference bridge plugin and ours and still clean old rules:
//!
//! ```text
//! nat POSTROUTING: -s <ip>/32 -m comment --comment "name: \"<net>\" id: \"<cid>\"" -j CNI-<24 hex>
//! nat CNI-<24 hex sha512(net+cid)>:
//!     -d <container subnet> -m comment --comment "…" -j ACCEPT
//!     ! -d 224.0.0.0/4 -m comment --comment "…" -j MASQUERADE      (ip6tables: ff00::/8)
//! ```
//!
//! The chain is per (network, container), not per ifname, like the reference; `del` therefore
//! removes every ifname of that container in that network. DEL needs no address: it lists
//! POSTROUTING (`-S`) and deletes the rules that jump to the container's chain (plugins#810).
//! Commands are exec'd as `iptables -w …` with an argument vector, never through a shell.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use crate::names::{iptables_masq_chain, iptables_masq_comment};
use crate::{lock, validate_owner, validate_rules, Error, Firewall, MasqRule, LOCK_PATH};

/// Result of one command run.
#[derive(Debug, Clone, Default)]
pub struct CmdOutput {
    /// exit status 0
    pub success: bool,
    /// printable exit status
    pub status: String,
    /// captured stdout
    pub stdout: String,
    /// captured stderr
    pub stderr: String,
}

/// Runs a program with arguments; the seam that lets unit tests record argument vectors.
pub trait Runner {
    /// Err only when the program could not be started.
    fn run(&self, prog: &str, args: &[String]) -> Result<CmdOutput, Error>;
}

/// Real runner: `std::process::Command`, no shell.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExecRunner;

impl Runner for ExecRunner {
    fn run(&self, prog: &str, args: &[String]) -> Result<CmdOutput, Error> {
        let out = Command::new(prog)
            .args(args)
            .output()
            .map_err(|source| Error::Exec {
                cmd: format!("{prog} {}", args.join(" ")),
                source,
            })?;
        Ok(CmdOutput {
            success: out.status.success(),
            status: out.status.to_string(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// IP family of a rule set: picks the binary and the multicast range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    /// iptables, 224.0.0.0/4
    V4,
    /// ip6tables, ff00::/8
    V6,
}

impl Family {
    /// The binary for this family.
    pub fn prog(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
    fn multicast(self) -> &'static str {
        match self {
            Family::V4 => "224.0.0.0/4",
            Family::V6 => "ff00::/8",
        }
    }
    fn of(rule: &MasqRule) -> Family {
        match rule.addr {
            ipnet::IpNet::V4(_) => Family::V4,
            ipnet::IpNet::V6(_) => Family::V6,
        }
    }
}

pub(crate) fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// One iptables table, through a [`Runner`]: the command layer shared by every iptables backend
/// (masquerade here, port forwarding, the forward filter). Commands always wait for the xtables
/// lock (`-w`) and take their arguments as a vector, never through a shell.
pub(crate) struct Table<'a, R: Runner> {
    runner: &'a R,
    name: &'static str,
}

impl<'a, R: Runner> Table<'a, R> {
    pub(crate) fn new(runner: &'a R, name: &'static str) -> Self {
        Self { runner, name }
    }

    /// Run `<prog> -w -t <table> <args>`; a non-zero exit is returned, not an error.
    pub(crate) fn run(&self, fam: Family, args: Vec<String>) -> Result<CmdOutput, Error> {
        let mut full = s(&["-w", "-t", self.name]);
        full.extend(args);
        self.runner.run(fam.prog(), &full)
    }

    /// Like [`Table::run`], but a non-zero exit is an error naming the command.
    pub(crate) fn run_ok(&self, fam: Family, args: Vec<String>) -> Result<CmdOutput, Error> {
        let cmd = format!("{} -w -t {} {}", fam.prog(), self.name, args.join(" "));
        let out = self.run(fam, args)?;
        if out.success {
            Ok(out)
        } else {
            Err(Error::Command {
                cmd,
                status: out.status,
                stderr: out.stderr,
            })
        }
    }

    /// Whether `chain` holds a rule with exactly `spec` (`-C`).
    pub(crate) fn exists(&self, fam: Family, chain: &str, spec: &[String]) -> Result<bool, Error> {
        let mut args = s(&["-C", chain]);
        args.extend(spec.iter().cloned());
        Ok(self.run(fam, args)?.success)
    }

    pub(crate) fn chain_exists(&self, fam: Family, chain: &str) -> Result<bool, Error> {
        Ok(self.run(fam, s(&["-S", chain]))?.success)
    }

    /// Creates `chain` if absent; true when it was created now.
    pub(crate) fn ensure_chain(&self, fam: Family, chain: &str) -> Result<bool, Error> {
        if self.chain_exists(fam, chain)? {
            return Ok(false);
        }
        let out = self.run(fam, s(&["-N", chain]))?;
        // A racing reference plugin (no shared lock) may have created it meanwhile.
        if out.success || self.chain_exists(fam, chain)? {
            return Ok(out.success);
        }
        Err(Error::Command {
            cmd: format!("{} -w -t {} -N {chain}", fam.prog(), self.name),
            status: out.status,
            stderr: out.stderr,
        })
    }

    /// Append `spec` to `chain` unless an identical rule is there (ADD stays idempotent).
    pub(crate) fn append_unique(
        &self,
        fam: Family,
        chain: &str,
        spec: Vec<String>,
    ) -> Result<(), Error> {
        if self.exists(fam, chain, &spec)? {
            return Ok(());
        }
        let mut args = s(&["-A", chain]);
        args.extend(spec);
        self.run_ok(fam, args).map(|_| ())
    }

    /// Insert `spec` first in `chain` unless an identical rule is there.
    pub(crate) fn insert_first_unique(
        &self,
        fam: Family,
        chain: &str,
        spec: Vec<String>,
    ) -> Result<(), Error> {
        if self.exists(fam, chain, &spec)? {
            return Ok(());
        }
        let mut args = s(&["-I", chain, "1"]);
        args.extend(spec);
        self.run_ok(fam, args).map(|_| ())
    }

    /// Delete every rule of `parent` that jumps to `chain`, then flush and delete `chain`.
    /// Errors are collected, never returned early (DEL keeps going). A family whose `parent`
    /// cannot be listed has nothing of ours there; only an IPv4 exec failure is reported,
    /// since hosts without IPv6 netfilter are common.
    pub(crate) fn remove_chain(
        &self,
        fam: Family,
        parent: &str,
        chain: &str,
        errors: &mut Vec<Error>,
    ) {
        let listing = match self.run(fam, s(&["-S", parent])) {
            Ok(o) if o.success => o.stdout,
            Ok(_) => String::new(),
            Err(e) => {
                if fam == Family::V4 {
                    errors.push(e);
                }
                return;
            }
        };
        for line in listing.lines() {
            let toks = split_rule_line(line);
            let jumps = toks.windows(2).any(|w| w[0] == "-j" && w[1] == chain);
            if toks.len() > 2 && toks[0] == "-A" && jumps {
                let mut args = s(&["-D", parent]);
                args.extend(toks[2..].iter().cloned());
                if let Err(e) = self.run_ok(fam, args) {
                    errors.push(e);
                }
            }
        }
        match self.chain_exists(fam, chain) {
            Ok(true) => {
                for op in ["-F", "-X"] {
                    if let Err(e) = self.run_ok(fam, s(&[op, chain])) {
                        errors.push(e);
                    }
                }
            }
            Ok(false) => {}
            Err(e) => errors.push(e),
        }
    }
}

/// GC of per-container chains: the chains that rules of an `iptables -S` listing jump to
/// (targets starting with `target_prefix`) when the rule's comment starts with `comment_prefix`
/// (one network's rules) and the chain is not one of the `kept` attachments'.
pub(crate) fn stale_jump_targets(
    listing: &str,
    comment_prefix: &str,
    target_prefix: &str,
    kept: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut stale = BTreeSet::new();
    for line in listing.lines() {
        let toks = split_rule_line(line);
        let ours = toks
            .windows(2)
            .any(|w| w[0] == "--comment" && w[1].starts_with(comment_prefix));
        let target = toks
            .windows(2)
            .find(|w| w[0] == "-j" && w[1].starts_with(target_prefix))
            .map(|w| w[1].clone());
        if let (true, Some(chain)) = (ours, target) {
            if !kept.contains(&chain) {
                stale.insert(chain);
            }
        }
    }
    stale
}

/// Several steps failed: none, one, or all of them as [`Error::Multiple`].
pub(crate) fn collect(mut errors: Vec<Error>) -> Result<(), Error> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(Error::Multiple(errors)),
    }
}

/// The three rule specs (chain, args after the chain) of one address, in reference order.
pub fn masq_rule_specs(rule: &MasqRule) -> Vec<(String, Vec<String>)> {
    let fam = Family::of(rule);
    let chain = iptables_masq_chain(&rule.network, &rule.container_id);
    let comment = iptables_masq_comment(&rule.network, &rule.container_id);
    let subnet = rule.subnet().to_string();
    let ip = rule.ip().to_string();
    let mut accept = s(&["-d", &subnet, "-j", "ACCEPT"]);
    let mut masq = s(&["!", "-d", fam.multicast(), "-j", "MASQUERADE"]);
    let mut jump = s(&["-s", &ip, "-j", &chain]);
    for v in [&mut accept, &mut masq, &mut jump] {
        v.extend(s(&["-m", "comment", "--comment", &comment]));
    }
    vec![
        (chain.clone(), accept),
        (chain, masq),
        ("POSTROUTING".to_string(), jump),
    ]
}

/// Splits one `iptables -S` line into arguments (handles `"…"` with `\"` escapes, as printed
/// for comments).
pub fn split_rule_line(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_token = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                quoted = !quoted;
                in_token = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_token {
                    out.push(std::mem::take(&mut cur));
                    in_token = false;
                }
            }
            c => {
                cur.push(c);
                in_token = true;
            }
        }
    }
    if in_token {
        out.push(cur);
    }
    out
}

/// iptables implementation of [`Firewall`].
pub struct IptablesFirewall<R: Runner = ExecRunner> {
    runner: R,
    lock_path: PathBuf,
}

impl IptablesFirewall<ExecRunner> {
    /// Execs the real binaries, locks [`LOCK_PATH`].
    pub fn new() -> Self {
        Self::with_runner(ExecRunner, PathBuf::from(LOCK_PATH))
    }
}

impl Default for IptablesFirewall<ExecRunner> {
    fn default() -> Self {
        Self::new()
    }
}

/// True when `iptables -w -t nat -S POSTROUTING` succeeds.
pub(crate) fn available() -> bool {
    ExecRunner
        .run("iptables", &s(&["-w", "-t", "nat", "-S", "POSTROUTING"]))
        .map(|o| o.success)
        .unwrap_or(false)
}

impl<R: Runner> IptablesFirewall<R> {
    /// Custom runner and lock file (tests).
    pub fn with_runner(runner: R, lock_path: PathBuf) -> Self {
        Self { runner, lock_path }
    }

    fn nat(&self) -> Table<'_, R> {
        Table::new(&self.runner, "nat")
    }

    fn add_locked(&self, rules: &[MasqRule]) -> Result<(), Error> {
        for rule in rules {
            let fam = Family::of(rule);
            let specs = masq_rule_specs(rule);
            self.nat().ensure_chain(fam, &specs[0].0)?;
            for (chain, spec) in specs {
                self.nat().append_unique(fam, &chain, spec)?;
            }
        }
        Ok(())
    }
}

impl<R: Runner> Firewall for IptablesFirewall<R> {
    fn add_masquerade(&self, rules: &[MasqRule]) -> Result<(), Error> {
        validate_rules(rules)?;
        if rules.is_empty() {
            return Ok(());
        }
        let _guard = lock::lock(&self.lock_path)?;
        let res = self.add_locked(rules);
        if res.is_err() {
            // Roll back this call's chains so a failed ADD leaves nothing behind.
            let mut ignored = Vec::new();
            let owners: BTreeSet<(Family, String)> = rules
                .iter()
                .map(|r| {
                    (
                        Family::of(r),
                        iptables_masq_chain(&r.network, &r.container_id),
                    )
                })
                .collect();
            for (fam, chain) in owners {
                self.nat()
                    .remove_chain(fam, "POSTROUTING", &chain, &mut ignored);
            }
        }
        res
    }

    fn del_masquerade(&self, network: &str, container_id: &str, ifname: &str) -> Result<(), Error> {
        validate_owner(network, container_id, ifname)?;
        let _guard = lock::lock(&self.lock_path)?;
        let chain = iptables_masq_chain(network, container_id);
        let mut errors = Vec::new();
        for fam in [Family::V4, Family::V6] {
            self.nat()
                .remove_chain(fam, "POSTROUTING", &chain, &mut errors);
        }
        collect(errors)
    }

    fn check_masquerade(&self, rules: &[MasqRule]) -> Result<(), Error> {
        validate_rules(rules)?;
        let _guard = lock::lock(&self.lock_path)?;
        for rule in rules {
            let fam = Family::of(rule);
            for (chain, spec) in masq_rule_specs(rule) {
                if !self.nat().exists(fam, &chain, &spec)? {
                    return Err(Error::Missing(format!(
                        "{} nat rule missing for {}: -A {chain} {}",
                        fam.prog(),
                        rule.addr,
                        spec.join(" ")
                    )));
                }
            }
        }
        Ok(())
    }

    fn gc_masquerade(&self, network: &str, keep: &[(String, String)]) -> Result<(), Error> {
        validate_owner(network, "gc", "gc")?;
        let _guard = lock::lock(&self.lock_path)?;
        // Chains are per container, so a container is kept if any of its ifnames is.
        let kept: BTreeSet<String> = keep
            .iter()
            .map(|(cid, _)| iptables_masq_chain(network, cid))
            .collect();
        let prefix = format!("name: \"{network}\" id: \"");
        let mut errors = Vec::new();
        for fam in [Family::V4, Family::V6] {
            let listing = match self.nat().run(fam, s(&["-S", "POSTROUTING"])) {
                Ok(o) if o.success => o.stdout,
                _ if fam == Family::V6 => continue,
                Ok(o) => {
                    errors.push(Error::Command {
                        cmd: "iptables -w -t nat -S POSTROUTING".into(),
                        status: o.status,
                        stderr: o.stderr,
                    });
                    continue;
                }
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let stale = stale_jump_targets(&listing, &prefix, "CNI-", &kept);
            for chain in stale {
                self.nat()
                    .remove_chain(fam, "POSTROUTING", &chain, &mut errors);
            }
        }
        collect(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Records every call; answers through a closure.
    struct Fake<F: Fn(&str, &[String]) -> CmdOutput> {
        calls: RefCell<Vec<String>>,
        answer: F,
    }

    impl<F: Fn(&str, &[String]) -> CmdOutput> Runner for Fake<F> {
        fn run(&self, prog: &str, args: &[String]) -> Result<CmdOutput, Error> {
            self.calls
                .borrow_mut()
                .push(format!("{prog} {}", args.join(" ")));
            Ok((self.answer)(prog, args))
        }
    }

    fn ok(stdout: &str) -> CmdOutput {
        CmdOutput {
            success: true,
            status: "exit status: 0".into(),
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }
    fn fail() -> CmdOutput {
        CmdOutput {
            success: false,
            status: "exit status: 1".into(),
            ..Default::default()
        }
    }

    fn rule(addr: &str) -> MasqRule {
        MasqRule {
            network: "s1net".into(),
            container_id: "s1cid1".into(),
            ifname: "eth0".into(),
            addr: addr.parse().unwrap(),
        }
    }

    fn lockfile() -> PathBuf {
        std::env::temp_dir().join(format!("rcni-fw-test-{}.lock", std::process::id()))
    }

    #[test]
    fn reference_rule_vectors_v4() {
        let specs = masq_rule_specs(&rule("10.22.0.5/24"));
        let c = "name: \"s1net\" id: \"s1cid1\"";
        assert_eq!(specs[0].0, "CNI-88a20ff1b49d3eeca9368247");
        assert_eq!(
            specs[0].1,
            s(&[
                "-d",
                "10.22.0.0/24",
                "-j",
                "ACCEPT",
                "-m",
                "comment",
                "--comment",
                c
            ])
        );
        assert_eq!(
            specs[1].1,
            s(&[
                "!",
                "-d",
                "224.0.0.0/4",
                "-j",
                "MASQUERADE",
                "-m",
                "comment",
                "--comment",
                c
            ])
        );
        assert_eq!(specs[2].0, "POSTROUTING");
        assert_eq!(
            specs[2].1,
            s(&[
                "-s",
                "10.22.0.5",
                "-j",
                "CNI-88a20ff1b49d3eeca9368247",
                "-m",
                "comment",
                "--comment",
                c
            ])
        );
    }

    #[test]
    fn reference_rule_vectors_v6() {
        let specs = masq_rule_specs(&rule("fd00:22::5/64"));
        assert_eq!(specs[0].1[1], "fd00:22::/64");
        assert_eq!(specs[1].1[2], "ff00::/8");
        assert_eq!(Family::of(&rule("fd00:22::5/64")).prog(), "ip6tables");
    }

    #[test]
    fn stale_jump_targets_keeps_listed_and_foreign_rules() {
        let listing = "-A POSTROUTING -s 10.0.0.2/32 -m comment --comment \"name: \\\"n1\\\" id: \\\"a\\\"\" -j CNI-aaa\n\
                       -A POSTROUTING -s 10.0.0.3/32 -m comment --comment \"name: \\\"n1\\\" id: \\\"b\\\"\" -j CNI-bbb\n\
                       -A POSTROUTING -s 10.0.0.4/32 -m comment --comment \"name: \\\"n2\\\" id: \\\"c\\\"\" -j CNI-ccc\n\
                       -A POSTROUTING -j MASQUERADE\n";
        let kept: BTreeSet<String> = ["CNI-bbb".to_string()].into();
        let stale = stale_jump_targets(listing, "name: \"n1\" id: \"", "CNI-", &kept);
        assert_eq!(
            stale.into_iter().collect::<Vec<_>>(),
            vec!["CNI-aaa".to_string()]
        );
    }

    #[test]
    fn split_handles_escaped_comment() {
        let line = r#"-A POSTROUTING -s 10.22.0.5/32 -m comment --comment "name: \"s1net\" id: \"s1cid1\"" -j CNI-88a20ff1b49d3eeca9368247"#;
        let t = split_rule_line(line);
        assert_eq!(t[7], "name: \"s1net\" id: \"s1cid1\"");
        assert_eq!(t.last().unwrap(), "CNI-88a20ff1b49d3eeca9368247");
        assert_eq!(t.len(), 10);
    }

    #[test]
    fn add_appends_only_missing_rules() {
        let fake = Fake {
            calls: RefCell::new(Vec::new()),
            // chain absent, no rule present, everything else succeeds
            answer: |_p: &str, a: &[String]| {
                if a[3] == "-S" || a[3] == "-C" {
                    fail()
                } else {
                    ok("")
                }
            },
        };
        let fw = IptablesFirewall::with_runner(fake, lockfile());
        fw.add_masquerade(&[rule("10.22.0.5/24")]).unwrap();
        let calls = fw.runner.calls.borrow();
        let adds: Vec<_> = calls.iter().filter(|c| !c.contains(" -C ")).collect();
        assert_eq!(
            adds[0],
            "iptables -w -t nat -S CNI-88a20ff1b49d3eeca9368247"
        );
        assert_eq!(
            adds[1],
            "iptables -w -t nat -N CNI-88a20ff1b49d3eeca9368247"
        );
        assert!(adds[2].starts_with(
            "iptables -w -t nat -A CNI-88a20ff1b49d3eeca9368247 -d 10.22.0.0/24 -j ACCEPT"
        ));
        assert!(adds[4].starts_with(
            "iptables -w -t nat -A POSTROUTING -s 10.22.0.5 -j CNI-88a20ff1b49d3eeca9368247"
        ));
    }

    #[test]
    fn add_is_idempotent_when_rules_exist() {
        let fake = Fake {
            calls: RefCell::new(Vec::new()),
            answer: |_p: &str, _a: &[String]| ok(""),
        };
        let fw = IptablesFirewall::with_runner(fake, lockfile());
        fw.add_masquerade(&[rule("10.22.0.5/24")]).unwrap();
        assert!(!fw
            .runner
            .calls
            .borrow()
            .iter()
            .any(|c| c.contains(" -A ") || c.contains(" -N ")));
    }

    #[test]
    fn del_without_ips_deletes_jumps_found_by_listing() {
        let listing = "-P POSTROUTING ACCEPT\n\
            -A POSTROUTING -s 10.22.0.5/32 -m comment --comment \"name: \\\"s1net\\\" id: \\\"s1cid1\\\"\" -j CNI-88a20ff1b49d3eeca9368247\n\
            -A POSTROUTING -s 10.22.0.6/32 -j CNI-other\n";
        let fake = Fake {
            calls: RefCell::new(Vec::new()),
            answer: move |p: &str, a: &[String]| {
                if p == "iptables" && a[3] == "-S" && a[4] == "POSTROUTING" {
                    ok(listing)
                } else if p == "ip6tables" && a[3] == "-S" {
                    fail()
                } else {
                    ok("")
                }
            },
        };
        let fw = IptablesFirewall::with_runner(fake, lockfile());
        fw.del_masquerade("s1net", "s1cid1", "eth0").unwrap();
        let calls = fw.runner.calls.borrow();
        assert!(calls.contains(&"iptables -w -t nat -D POSTROUTING -s 10.22.0.5/32 -m comment --comment name: \"s1net\" id: \"s1cid1\" -j CNI-88a20ff1b49d3eeca9368247".to_string()), "{calls:?}");
        assert!(!calls.iter().any(|c| c.contains("CNI-other")));
        assert!(calls.contains(&"iptables -w -t nat -F CNI-88a20ff1b49d3eeca9368247".to_string()));
        assert!(calls.contains(&"iptables -w -t nat -X CNI-88a20ff1b49d3eeca9368247".to_string()));
        assert!(!calls
            .iter()
            .any(|c| c.starts_with("ip6tables") && c.contains(" -X ")));
    }

    #[test]
    fn check_names_missing_rule() {
        let fake = Fake {
            calls: RefCell::new(Vec::new()),
            answer: |_p: &str, a: &[String]| {
                if a[3] == "-C" && a[4] == "POSTROUTING" {
                    fail()
                } else {
                    ok("")
                }
            },
        };
        let fw = IptablesFirewall::with_runner(fake, lockfile());
        let err = fw.check_masquerade(&[rule("10.22.0.5/24")]).unwrap_err();
        assert!(
            err.to_string().contains("-A POSTROUTING -s 10.22.0.5"),
            "{err}"
        );
    }
}
