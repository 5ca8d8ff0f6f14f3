//! iptables side of the `firewall` plugin, in the reference `firewall` plugin's layout, table
//! `filter`, for each address family the attachment uses:
//!
//! ```text
//! FORWARD (position 1): -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD
//! CNI-FORWARD (position 1): -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN
//! CNI-FORWARD (appended, per address):
//!     -d <ip>/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
//!     -s <ip>/32 -j ACCEPT                                  (/128 for IPv6)
//! ingressPolicy same-bridge / isolated:
//! FORWARD (position 1): -m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge)" -j CNI-ISOLATION-STAGE-1
//! CNI-ISOLATION-STAGE-1: -i <br> ! -o <br> -j CNI-ISOLATION-STAGE-2
//!                        -i <br> -o <br> -j DROP             (isolated only)
//!                        -j RETURN
//! CNI-ISOLATION-STAGE-2: -o <br> -j DROP
//!                        -j RETURN
//! ```
//!
//! The per-address rules carry no comment (exactly the reference rules, so either plugin can
//! remove the other's). Their owner is recorded in `/run/rcni/forward/<owner tag>` (one
//! address per line), which is what DEL without prevResult and GC read.
//! Commands are exec'd as `iptables -w …` with argument vectors, never through a shell.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::{validate_bridge, DropFallback, ForwardAttachment, ForwardFirewall, IngressPolicy};
use crate::iptables::{collect, s, ExecRunner, Runner, Table};
use crate::names::{network_hash, owner_tag};
use crate::{lock, validate_owner, Error, Family, LOCK_PATH, RUN_DIR};

/// Chain holding the per-address accept rules.
pub const FORWARD_CHAIN: &str = "CNI-FORWARD";
/// Reference default of `iptablesAdminChainName`.
pub const DEFAULT_ADMIN_CHAIN: &str = "CNI-ADMIN";
/// Comment on the FORWARD -> CNI-FORWARD jump.
pub const FORWARD_COMMENT: &str = "CNI firewall plugin rules";
/// Comment on the CNI-FORWARD -> admin chain jump.
pub const ADMIN_COMMENT: &str = "CNI firewall plugin admin overrides";
/// First isolation stage (matches the input bridge).
pub const ISOLATION_STAGE_1: &str = "CNI-ISOLATION-STAGE-1";
/// Second isolation stage (drops towards other isolated bridges).
pub const ISOLATION_STAGE_2: &str = "CNI-ISOLATION-STAGE-2";
/// Comment on the FORWARD -> stage-1 jump.
pub const ISOLATION_COMMENT: &str = "CNI firewall plugin rules (ingressPolicy: same-bridge)";

/// Directory of the owner records of the iptables per-address rules.
pub fn state_dir() -> PathBuf {
    Path::new(RUN_DIR).join("forward")
}

/// The addresses recorded for an owner's accept rules (empty: none recorded).
pub(crate) fn recorded_ips(network: &str, container_id: &str, ifname: &str) -> Vec<IpAddr> {
    IptablesForward::<ExecRunner>::read_state(&state_dir().join(owner_tag(
        network,
        container_id,
        ifname,
    )))
}

/// `iptablesAdminChainName` must be a valid iptables chain name (≤28 bytes, printable, no
/// whitespace, not an option-looking word).
pub fn validate_chain_name(name: &str) -> Result<(), Error> {
    let bad = |reason| Error::Invalid {
        what: "iptablesAdminChainName",
        value: name.to_string(),
        reason,
    };
    if name.is_empty() || name.len() > 28 {
        return Err(bad("must be 1 to 28 bytes"));
    }
    if name.starts_with('-') || name.starts_with('!') {
        return Err(bad("must not start with - or !"));
    }
    if name
        .chars()
        .any(|c| !c.is_ascii_graphic() || c == '"' || c == '\'')
    {
        return Err(bad("must be printable ASCII without spaces or quotes"));
    }
    if matches!(
        name,
        "ACCEPT" | "DROP" | "RETURN" | "QUEUE" | "FORWARD" | "INPUT" | "OUTPUT" | "CNI-FORWARD"
    ) {
        return Err(bad("is a reserved chain or target name"));
    }
    Ok(())
}

/// The two reference rules of one address (arguments after the chain name).
pub fn per_ip_specs(ip: &IpAddr) -> [Vec<String>; 2] {
    let host = match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    };
    [
        s(&[
            "-d",
            &host,
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED",
            "-j",
            "ACCEPT",
        ]),
        s(&["-s", &host, "-j", "ACCEPT"]),
    ]
}

fn jump_spec(comment: &str, target: &str) -> Vec<String> {
    s(&["-m", "comment", "--comment", comment, "-j", target])
}

/// Whether `iptables -S FORWARD` output shows a DROP policy.
pub fn policy_is_drop(listing: &str) -> bool {
    listing
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["-P", "FORWARD", "DROP"])
}

/// The iptables implementation of [`ForwardFirewall`] (also used by the nftables backend for
/// its fallback rules, under the lock it already holds).
pub(crate) struct IptablesForward<R: Runner = ExecRunner> {
    runner: R,
    lock_path: PathBuf,
    state_dir: PathBuf,
    admin: String,
}

impl IptablesForward<ExecRunner> {
    /// Real commands, [`LOCK_PATH`], [`state_dir`].
    pub fn new(admin_chain: &str) -> Self {
        Self::with_runner(
            ExecRunner,
            PathBuf::from(LOCK_PATH),
            state_dir(),
            admin_chain,
        )
    }
}

impl<R: Runner> IptablesForward<R> {
    /// For tests: a recording runner and private paths.
    pub fn with_runner(runner: R, lock_path: PathBuf, state_dir: PathBuf, admin: &str) -> Self {
        Self {
            runner,
            lock_path,
            state_dir,
            admin: admin.to_string(),
        }
    }

    fn filter(&self) -> Table<'_, R> {
        Table::new(&self.runner, "filter")
    }

    fn setup_chains(&self, fam: Family) -> Result<(), Error> {
        self.filter().ensure_chain(fam, FORWARD_CHAIN)?;
        self.filter().ensure_chain(fam, &self.admin)?;
        self.filter().insert_first_unique(
            fam,
            "FORWARD",
            jump_spec(FORWARD_COMMENT, FORWARD_CHAIN),
        )?;
        self.filter()
            .insert_first_unique(fam, FORWARD_CHAIN, jump_spec(ADMIN_COMMENT, &self.admin))
    }

    fn state_file(&self, network: &str, cid: &str, ifname: &str) -> PathBuf {
        self.state_dir.join(owner_tag(network, cid, ifname))
    }

    fn read_state(path: &Path) -> Vec<IpAddr> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    fn write_state(&self, path: &Path, ips: &BTreeSet<IpAddr>) -> Result<(), Error> {
        let err = |source| Error::Lock {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&self.state_dir).map_err(err)?;
        let body: String = ips.iter().map(|ip| format!("{ip}\n")).collect();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, body).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }

    fn remove_ips(&self, ips: &BTreeSet<IpAddr>, errors: &mut Vec<Error>) {
        let mut present: Vec<(Family, bool)> = Vec::new();
        for ip in ips {
            let fam = Family::of(*ip);
            let has_chain = match present.iter().find(|(f, _)| *f == fam) {
                Some((_, p)) => *p,
                None => {
                    let p = self
                        .filter()
                        .chain_exists(fam, FORWARD_CHAIN)
                        .unwrap_or(false);
                    present.push((fam, p));
                    p
                }
            };
            if !has_chain {
                continue;
            }
            for spec in per_ip_specs(ip) {
                match self.filter().exists(fam, FORWARD_CHAIN, &spec) {
                    Ok(true) => {
                        let mut a = vec!["-D".to_string(), FORWARD_CHAIN.to_string()];
                        a.extend(spec);
                        if let Err(e) = self.filter().run_ok(fam, a) {
                            errors.push(e);
                        }
                    }
                    Ok(false) => {}
                    Err(e) => errors.push(e),
                }
            }
        }
    }

    fn isolation_specs(bridge: &str, policy: IngressPolicy) -> Vec<(&'static str, Vec<String>)> {
        let mut v = vec![
            (
                ISOLATION_STAGE_1,
                s(&["-i", bridge, "!", "-o", bridge, "-j", ISOLATION_STAGE_2]),
            ),
            (ISOLATION_STAGE_2, s(&["-o", bridge, "-j", "DROP"])),
        ];
        if policy == IngressPolicy::Isolated {
            v.push((
                ISOLATION_STAGE_1,
                s(&["-i", bridge, "-o", bridge, "-j", "DROP"]),
            ));
        }
        v
    }

    fn fams(v4: bool, v6: bool) -> Vec<Family> {
        let mut f = Vec::new();
        if v4 {
            f.push(Family::V4);
        }
        if v6 {
            f.push(Family::V6);
        }
        f
    }

    pub(crate) fn add_isolation_locked(
        &self,
        bridge: &str,
        policy: IngressPolicy,
        v4: bool,
        v6: bool,
    ) -> Result<(), Error> {
        if policy == IngressPolicy::Open {
            return Ok(());
        }
        validate_bridge(bridge)?;
        for fam in Self::fams(v4, v6) {
            for chain in [ISOLATION_STAGE_1, ISOLATION_STAGE_2] {
                self.filter().ensure_chain(fam, chain)?;
                // The trailing RETURN stays last: bridge rules are inserted at position 1.
                self.filter()
                    .append_unique(fam, chain, s(&["-j", "RETURN"]))?;
            }
            for (chain, spec) in Self::isolation_specs(bridge, policy) {
                self.filter().insert_first_unique(fam, chain, spec)?;
            }
            self.filter().insert_first_unique(
                fam,
                "FORWARD",
                jump_spec(ISOLATION_COMMENT, ISOLATION_STAGE_1),
            )?;
        }
        Ok(())
    }

    pub(crate) fn del_isolation_locked(&self, bridge: &str) -> Result<(), Error> {
        validate_bridge(bridge)?;
        let mut errors = Vec::new();
        for fam in [Family::V4, Family::V6] {
            for (chain, spec) in Self::isolation_specs(bridge, IngressPolicy::Isolated) {
                match self.filter().exists(fam, chain, &spec) {
                    Ok(true) => {
                        let mut args = s(&["-D", chain]);
                        args.extend(spec);
                        if let Err(e) = self.filter().run_ok(fam, args) {
                            errors.push(e);
                        }
                    }
                    Ok(false) => {}
                    // Hosts without IPv6 netfilter are common: only IPv4 failures count.
                    Err(e) if fam == Family::V4 => errors.push(e),
                    Err(_) => {}
                }
            }
        }
        collect(errors)
    }

    pub(crate) fn check_isolation_locked(
        &self,
        bridge: &str,
        policy: IngressPolicy,
        v4: bool,
        v6: bool,
    ) -> Result<(), Error> {
        if policy == IngressPolicy::Open {
            return Ok(());
        }
        validate_bridge(bridge)?;
        for fam in Self::fams(v4, v6) {
            let mut want = Self::isolation_specs(bridge, policy);
            want.push(("FORWARD", jump_spec(ISOLATION_COMMENT, ISOLATION_STAGE_1)));
            for (chain, spec) in want {
                if !self.filter().chain_exists(fam, chain)?
                    || !self.filter().exists(fam, chain, &spec)?
                {
                    return Err(Error::Missing(format!(
                        "{} {chain} lacks rule {}",
                        fam.prog(),
                        spec.join(" ")
                    )));
                }
            }
        }
        Ok(())
    }
}

impl<R: Runner> ForwardFirewall for IptablesForward<R> {
    fn add_forward(&self, att: &ForwardAttachment) -> Result<Vec<String>, Error> {
        validate_owner(&att.network, &att.container_id, &att.ifname)?;
        if att.ips.is_empty() {
            return Ok(Vec::new());
        }
        let _guard = lock::lock(&self.lock_path)?;
        self.add_locked(att)?;
        Ok(Vec::new())
    }

    fn del_forward(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
        known_ips: &[IpAddr],
    ) -> Result<(), Error> {
        validate_owner(network, container_id, ifname)?;
        let _guard = lock::lock(&self.lock_path)?;
        self.del_locked(network, container_id, ifname, known_ips)
    }

    fn check_forward(&self, att: &ForwardAttachment) -> Result<(), Error> {
        validate_owner(&att.network, &att.container_id, &att.ifname)?;
        let _guard = lock::lock(&self.lock_path)?;
        self.check_locked(att)
    }

    fn gc_forward(&self, network: &str, keep: &[(String, String)]) -> Result<(), Error> {
        let _guard = lock::lock(&self.lock_path)?;
        self.gc_locked(network, keep)
    }

    fn add_isolation(
        &self,
        bridge: &str,
        policy: IngressPolicy,
        v4: bool,
        v6: bool,
    ) -> Result<(), Error> {
        let _guard = lock::lock(&self.lock_path)?;
        self.add_isolation_locked(bridge, policy, v4, v6)
    }

    fn del_isolation(&self, bridge: &str) -> Result<(), Error> {
        let _guard = lock::lock(&self.lock_path)?;
        self.del_isolation_locked(bridge)
    }

    fn check_isolation(
        &self,
        bridge: &str,
        policy: IngressPolicy,
        v4: bool,
        v6: bool,
    ) -> Result<(), Error> {
        let _guard = lock::lock(&self.lock_path)?;
        self.check_isolation_locked(bridge, policy, v4, v6)
    }
}

impl<R: Runner> DropFallback for IptablesForward<R> {
    fn chain(&self) -> &'static str {
        FORWARD_CHAIN
    }

    /// True when this family's FORWARD policy is DROP (read-only `-S FORWARD`). A missing
    /// binary or table counts as "not dropping".
    fn policy_drops(&self, fam: Family) -> bool {
        match self.filter().run(fam, s(&["-S", "FORWARD"])) {
            Ok(out) if out.success => policy_is_drop(&out.stdout),
            _ => false,
        }
    }

    /// Whether an owner record exists for this attachment.
    fn has_state(&self, network: &str, cid: &str, ifname: &str) -> bool {
        self.state_file(network, cid, ifname).exists()
    }

    /// ADD without taking the lock (the caller holds it).
    fn add_locked(&self, att: &ForwardAttachment) -> Result<(), Error> {
        let fams: BTreeSet<Family> = att.ips.iter().map(|ip| Family::of(*ip)).collect();
        for fam in &fams {
            self.setup_chains(*fam)?;
        }
        let path = self.state_file(&att.network, &att.container_id, &att.ifname);
        let mut owned: BTreeSet<IpAddr> = Self::read_state(&path).into_iter().collect();
        owned.extend(att.ips.iter().copied());
        // Record first: if a rule command fails midway, DEL still knows what to remove.
        self.write_state(&path, &owned)?;
        for ip in &att.ips {
            for spec in per_ip_specs(ip) {
                self.filter()
                    .append_unique(Family::of(*ip), FORWARD_CHAIN, spec)?;
            }
        }
        Ok(())
    }

    /// DEL without taking the lock.
    fn del_locked(
        &self,
        network: &str,
        cid: &str,
        ifname: &str,
        known: &[IpAddr],
    ) -> Result<(), Error> {
        let path = self.state_file(network, cid, ifname);
        let mut ips: BTreeSet<IpAddr> = Self::read_state(&path).into_iter().collect();
        ips.extend(known.iter().copied());
        let mut errors = Vec::new();
        self.remove_ips(&ips, &mut errors);
        if errors.is_empty() {
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    errors.push(Error::Lock {
                        path: path.display().to_string(),
                        source: e,
                    });
                }
            }
        }
        collect(errors)
    }

    /// CHECK without taking the lock.
    fn check_locked(&self, att: &ForwardAttachment) -> Result<(), Error> {
        let fams: BTreeSet<Family> = att.ips.iter().map(|ip| Family::of(*ip)).collect();
        for fam in fams {
            for chain in [FORWARD_CHAIN, self.admin.as_str()] {
                if !self.filter().chain_exists(fam, chain)? {
                    return Err(Error::Missing(format!(
                        "{} chain {chain} does not exist in table filter",
                        fam.prog()
                    )));
                }
            }
            if !self
                .filter()
                .exists(fam, "FORWARD", &jump_spec(FORWARD_COMMENT, FORWARD_CHAIN))?
            {
                return Err(Error::Missing(format!(
                    "{} FORWARD has no jump to {FORWARD_CHAIN}",
                    fam.prog()
                )));
            }
            if !self
                .filter()
                .exists(fam, FORWARD_CHAIN, &jump_spec(ADMIN_COMMENT, &self.admin))?
            {
                return Err(Error::Missing(format!(
                    "{} {FORWARD_CHAIN} has no jump to {}",
                    fam.prog(),
                    self.admin
                )));
            }
        }
        for ip in &att.ips {
            for spec in per_ip_specs(ip) {
                if !self
                    .filter()
                    .exists(Family::of(*ip), FORWARD_CHAIN, &spec)?
                {
                    return Err(Error::Missing(format!(
                        "{} {FORWARD_CHAIN} lacks rule {}",
                        Family::of(*ip).prog(),
                        spec.join(" ")
                    )));
                }
            }
        }
        Ok(())
    }

    /// GC without taking the lock: every owner record of `network` not kept.
    fn gc_locked(&self, network: &str, keep: &[(String, String)]) -> Result<(), Error> {
        let prefix = format!("{}-", network_hash(network));
        let kept: BTreeSet<String> = keep.iter().map(|(c, i)| owner_tag(network, c, i)).collect();
        let entries = match std::fs::read_dir(&self.state_dir) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(Error::Lock {
                    path: self.state_dir.display().to_string(),
                    source: e,
                })
            }
        };
        let mut errors = Vec::new();
        for ent in entries.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&prefix) || name.ends_with(".tmp") || kept.contains(&name) {
                continue;
            }
            let ips: BTreeSet<IpAddr> = Self::read_state(&ent.path()).into_iter().collect();
            let before = errors.len();
            self.remove_ips(&ips, &mut errors);
            if errors.len() == before {
                let _ = std::fs::remove_file(ent.path());
            }
        }
        collect(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iptables::CmdOutput;
    use std::cell::RefCell;

    /// Records commands; `-C`/`-S` succeed only for specs added earlier (a tiny iptables model).
    #[derive(Default)]
    struct Model {
        log: RefCell<Vec<String>>,
        rules: RefCell<Vec<(String, String, Vec<String>)>>,
        chains: RefCell<Vec<(String, String)>>,
        policy_drop: bool,
    }

    impl Runner for Model {
        fn run(&self, prog: &str, args: &[String]) -> Result<CmdOutput, Error> {
            self.log
                .borrow_mut()
                .push(format!("{prog} {}", args.join(" ")));
            let a = &args[3..];
            let ok = |b: bool, out: &str| CmdOutput {
                success: b,
                status: if b { "0".into() } else { "1".into() },
                stdout: out.into(),
                stderr: String::new(),
            };
            let chain = a[1].clone();
            let key = (prog.to_string(), chain.clone());
            Ok(match a[0].as_str() {
                "-S" if chain == "FORWARD" => ok(
                    true,
                    if self.policy_drop {
                        "-P FORWARD DROP\n"
                    } else {
                        "-P FORWARD ACCEPT\n"
                    },
                ),
                "-S" => ok(self.chains.borrow().contains(&key), ""),
                "-N" => {
                    self.chains.borrow_mut().push(key);
                    ok(true, "")
                }
                "-C" => ok(
                    self.rules
                        .borrow()
                        .iter()
                        .any(|(p, c, r)| *p == prog && *c == chain && r == &a[2..]),
                    "",
                ),
                "-I" => {
                    self.rules
                        .borrow_mut()
                        .insert(0, (prog.into(), chain, a[3..].to_vec()));
                    ok(true, "")
                }
                "-A" => {
                    self.rules
                        .borrow_mut()
                        .push((prog.into(), chain, a[2..].to_vec()));
                    ok(true, "")
                }
                "-D" => {
                    self.rules
                        .borrow_mut()
                        .retain(|(p, c, r)| !(*p == prog && *c == chain && r == &a[2..]));
                    ok(true, "")
                }
                _ => ok(false, ""),
            })
        }
    }

    fn fw(dir: &Path) -> IptablesForward<Model> {
        IptablesForward::with_runner(
            Model::default(),
            dir.join("lock"),
            dir.join("state"),
            DEFAULT_ADMIN_CHAIN,
        )
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rcni-fwd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn att(cid: &str, ips: &[&str]) -> ForwardAttachment {
        ForwardAttachment {
            network: "n".into(),
            container_id: cid.into(),
            ifname: "eth0".into(),
            ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn reference_rule_vectors() {
        let [a, b] = per_ip_specs(&"10.1.0.2".parse().unwrap());
        assert_eq!(
            a.join(" "),
            "-d 10.1.0.2/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
        );
        assert_eq!(b.join(" "), "-s 10.1.0.2/32 -j ACCEPT");
        let [_, b6] = per_ip_specs(&"fd00::2".parse().unwrap());
        assert_eq!(b6.join(" "), "-s fd00::2/128 -j ACCEPT");
        assert!(policy_is_drop("-P FORWARD DROP\n-A FORWARD -j X\n"));
        assert!(!policy_is_drop("-P FORWARD ACCEPT\n"));
    }

    #[test]
    fn add_builds_layout_once_and_del_uses_the_owner_record() {
        let d = tmp("add");
        let f = fw(&d);
        let a = att("c1", &["10.1.0.2", "fd00::2"]);
        f.add_forward(&a).unwrap();
        f.add_forward(&a).unwrap();
        let rules = f.runner.rules.borrow().clone();
        let v4: Vec<_> = rules.iter().filter(|r| r.0 == "iptables").collect();
        assert_eq!(v4.len(), 4, "{v4:?}");
        assert_eq!(v4.iter().filter(|r| r.1 == "FORWARD").count(), 1);
        f.check_forward(&a).unwrap();
        // DEL without prevResult: the owner record names the addresses
        f.del_forward("n", "c1", "eth0", &[]).unwrap();
        let left = f.runner.rules.borrow().clone();
        assert_eq!(left.len(), 4, "only jumps stay: {left:?}");
        assert!(f.check_forward(&a).is_err());
        f.del_forward("n", "c1", "eth0", &[]).unwrap();
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn gc_removes_unlisted_owners_of_the_network_only() {
        let d = tmp("gc");
        let f = fw(&d);
        f.add_forward(&att("c1", &["10.1.0.2"])).unwrap();
        f.add_forward(&att("c2", &["10.1.0.3"])).unwrap();
        let mut other = att("c3", &["10.2.0.3"]);
        other.network = "m".into();
        f.add_forward(&other).unwrap();
        f.gc_forward("n", &[("c2".into(), "eth0".into())]).unwrap();
        assert!(f.check_forward(&att("c2", &["10.1.0.3"])).is_ok());
        assert!(f.check_forward(&att("c1", &["10.1.0.2"])).is_err());
        assert!(f.check_forward(&other).is_ok());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn isolation_rules() {
        let d = tmp("iso");
        let f = fw(&d);
        f.add_isolation("br1", IngressPolicy::Isolated, true, false)
            .unwrap();
        f.check_isolation("br1", IngressPolicy::Isolated, true, false)
            .unwrap();
        assert!(f
            .check_isolation("br2", IngressPolicy::SameBridge, true, false)
            .is_err());
        let rules = f.runner.rules.borrow().clone();
        let st1: Vec<String> = rules
            .iter()
            .filter(|r| r.1 == ISOLATION_STAGE_1)
            .map(|r| r.2.join(" "))
            .collect();
        assert_eq!(st1.last().unwrap(), "-j RETURN");
        assert!(st1.contains(&"-i br1 -o br1 -j DROP".to_string()));
        assert!(st1.contains(&"-i br1 ! -o br1 -j CNI-ISOLATION-STAGE-2".to_string()));
        assert!(f
            .add_isolation("-j", IngressPolicy::SameBridge, true, false)
            .is_err());
        // Removal takes br1's rules only; the chains, RETURNs and the jump stay.
        f.add_isolation("br2", IngressPolicy::SameBridge, true, false)
            .unwrap();
        f.del_isolation("br1").unwrap();
        f.del_isolation("br1").unwrap();
        assert!(f
            .check_isolation("br1", IngressPolicy::SameBridge, true, false)
            .is_err());
        f.check_isolation("br2", IngressPolicy::SameBridge, true, false)
            .unwrap();
        let left: Vec<String> = f
            .runner
            .rules
            .borrow()
            .iter()
            .map(|r| r.2.join(" "))
            .collect();
        assert!(!left.iter().any(|r| r.contains("br1")), "{left:?}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn admin_chain_names() {
        assert!(validate_chain_name("CNI-ADMIN").is_ok());
        assert!(validate_chain_name("MY_ADMIN").is_ok());
        for bad in ["", "a b", "-j", "DROP", &"x".repeat(29)] {
            assert!(validate_chain_name(bad).is_err(), "{bad:?}");
        }
    }
}
