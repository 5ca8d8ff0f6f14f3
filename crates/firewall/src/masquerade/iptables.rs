//! iptables backend with the reference plugins' ipMasq layout (the reference bridge plugin's `ipMasq`), so a
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

use super::Firewall;
use super::MasqRule;
use crate::iptables::{collect, s, stale_jump_targets, ExecRunner, Runner, Table};
use crate::names::{iptables_masq_chain, iptables_masq_comment};
use crate::{lock, validate_owner, validate_rules, Error, Family, LOCK_PATH};

/// The three rule specs (chain, args after the chain) of one address, in reference order.
pub fn masq_rule_specs(rule: &MasqRule) -> Vec<(String, Vec<String>)> {
    let fam = Family::of(rule.ip());
    let chain = iptables_masq_chain(&rule.network, &rule.container_id);
    let comment = iptables_masq_comment(&rule.network, &rule.container_id);
    let subnet = rule.subnet().to_string();
    let ip = rule.ip().to_string();
    let mut accept = s(&["-d", &subnet, "-j", "ACCEPT"]);
    let mut masq = s(&["!", "-d", &fam.multicast().to_string(), "-j", "MASQUERADE"]);
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

/// iptables implementation of [`Firewall`].
pub(crate) struct IptablesMasquerade<R: Runner = ExecRunner> {
    runner: R,
    lock_path: PathBuf,
}

impl IptablesMasquerade<ExecRunner> {
    /// Execs the real binaries, locks [`LOCK_PATH`].
    pub fn new() -> Self {
        Self::with_runner(ExecRunner, PathBuf::from(LOCK_PATH))
    }
}

impl Default for IptablesMasquerade<ExecRunner> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R: Runner> IptablesMasquerade<R> {
    /// Custom runner and lock file (tests).
    pub fn with_runner(runner: R, lock_path: PathBuf) -> Self {
        Self { runner, lock_path }
    }

    fn nat(&self) -> Table<'_, R> {
        Table::new(&self.runner, "nat")
    }

    fn add_locked(&self, rules: &[MasqRule]) -> Result<(), Error> {
        for rule in rules {
            let fam = Family::of(rule.ip());
            let specs = masq_rule_specs(rule);
            self.nat().ensure_chain(fam, &specs[0].0)?;
            for (chain, spec) in specs {
                self.nat().append_unique(fam, &chain, spec)?;
            }
        }
        Ok(())
    }
}

impl<R: Runner> Firewall for IptablesMasquerade<R> {
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
                        Family::of(r.ip()),
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
            let fam = Family::of(rule.ip());
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
    use crate::iptables::fake::{fail, ok, Fake};
    use std::cell::RefCell;

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
        assert_eq!(Family::of(rule("fd00:22::5/64").ip()).prog(), "ip6tables");
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
        let fw = IptablesMasquerade::with_runner(fake, lockfile());
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
        let fw = IptablesMasquerade::with_runner(fake, lockfile());
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
        let fw = IptablesMasquerade::with_runner(fake, lockfile());
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
        let fw = IptablesMasquerade::with_runner(fake, lockfile());
        let err = fw.check_masquerade(&[rule("10.22.0.5/24")]).unwrap_err();
        assert!(
            err.to_string().contains("-A POSTROUTING -s 10.22.0.5"),
            "{err}"
        );
    }
}
