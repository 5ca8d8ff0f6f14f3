//! The iptables command layer shared by every iptables half of a feature (masquerade, port
//! forwarding, the forward filter): a [`Runner`] that execs `iptables -w` / `ip6tables -w` with
//! argument vectors (never through a shell), one [`Table`] abstraction over it, and the parsing
//! of `iptables -S` listings. No feature logic lives here.

use std::collections::BTreeSet;
use std::process::Command;

use crate::{Error, Family};

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
        self.add_unique(fam, chain, false, spec)
    }

    /// Insert `spec` first in `chain` unless an identical rule is there.
    pub(crate) fn insert_first_unique(
        &self,
        fam: Family,
        chain: &str,
        spec: Vec<String>,
    ) -> Result<(), Error> {
        self.add_unique(fam, chain, true, spec)
    }

    /// Appends (or inserts first) `spec` unless it is already in `chain`.
    fn add_unique(
        &self,
        fam: Family,
        chain: &str,
        first: bool,
        spec: Vec<String>,
    ) -> Result<(), Error> {
        if self.exists(fam, chain, &spec)? {
            return Ok(());
        }
        let mut args = if first {
            s(&["-I", chain, "1"])
        } else {
            s(&["-A", chain])
        };
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
        for r in rules(&listing) {
            if r.target() == Some(chain) {
                let mut args = s(&["-D", parent]);
                args.extend(r.args);
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

/// One rule of an `iptables -S` listing, as the listing API ([`crate::list`]), DEL and GC all
/// read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListedRule {
    /// the chain it is in
    pub chain: String,
    /// its arguments after `-A <chain>` (what `-D <chain>` takes)
    pub args: Vec<String>,
    /// the line as listed
    pub line: String,
}

impl ListedRule {
    /// The argument after the first `flag` (`-j`, `--comment`, `-p`, …).
    pub(crate) fn arg(&self, flag: &str) -> Option<&str> {
        self.args
            .windows(2)
            .find(|w| w[0] == flag)
            .map(|w| w[1].as_str())
    }
    /// Its jump target.
    pub(crate) fn target(&self) -> Option<&str> {
        self.arg("-j")
    }
    /// Its comment, empty when it has none.
    pub(crate) fn comment(&self) -> &str {
        self.arg("--comment").unwrap_or_default()
    }
}

/// The rules (`-A` lines) of an `iptables -S` listing.
pub(crate) fn rules(listing: &str) -> Vec<ListedRule> {
    listing
        .lines()
        .filter_map(|line| {
            let mut toks = split_rule_line(line);
            if toks.len() < 2 || toks[0] != "-A" {
                return None;
            }
            let args = toks.split_off(2);
            Some(ListedRule {
                chain: toks.swap_remove(1),
                args,
                line: line.to_string(),
            })
        })
        .collect()
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
    rules(listing)
        .iter()
        .filter(|r| r.comment().starts_with(comment_prefix))
        .filter_map(|r| r.target())
        .filter(|t| t.starts_with(target_prefix) && !kept.contains(*t))
        .map(str::to_string)
        .collect()
}

/// Several steps failed: none, one, or all of them as [`Error::Multiple`].
pub(crate) fn collect(mut errors: Vec<Error>) -> Result<(), Error> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(Error::Multiple(errors)),
    }
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

/// True when `iptables -w -t nat -S POSTROUTING` succeeds.
pub(crate) fn available() -> bool {
    ExecRunner
        .run("iptables", &s(&["-w", "-t", "nat", "-S", "POSTROUTING"]))
        .map(|o| o.success)
        .unwrap_or(false)
}

#[cfg(test)]
pub(crate) mod fake {
    //! A recording [`Runner`] for the unit tests of every iptables half.
    use super::*;
    use std::cell::RefCell;

    /// Records every call; answers through a closure.
    pub(crate) struct Fake<F: Fn(&str, &[String]) -> CmdOutput> {
        pub(crate) calls: RefCell<Vec<String>>,
        pub(crate) answer: F,
    }

    impl<F: Fn(&str, &[String]) -> CmdOutput> Runner for Fake<F> {
        fn run(&self, prog: &str, args: &[String]) -> Result<CmdOutput, Error> {
            self.calls
                .borrow_mut()
                .push(format!("{prog} {}", args.join(" ")));
            Ok((self.answer)(prog, args))
        }
    }

    pub(crate) fn ok(stdout: &str) -> CmdOutput {
        CmdOutput {
            success: true,
            status: "exit status: 0".into(),
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }
    pub(crate) fn fail() -> CmdOutput {
        CmdOutput {
            success: false,
            status: "exit status: 1".into(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
