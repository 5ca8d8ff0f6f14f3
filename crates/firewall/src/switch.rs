//! DEL and GC clean what ADD made even when the host's backend changed in between (an
//! administrator installed or removed the iptables binary, a kernel lost nf_tables, the
//! configured `backend` was edited): DEL never trusts a fresh backend detection alone.
//!
//! * nftables entries describe themselves (they are elements of our own table carrying the owner
//!   tag), so cleaning them costs one netlink dump and is done whenever nf_tables answers.
//! * iptables entries are recorded: after an iptables ADD, an empty file
//!   `/run/rcni/owners/<feature>/<owner tag>` names the owner; a DEL through nftables looks for
//!   it (one `stat`, no exec on the common path) and runs the iptables DEL too when it is there;
//!   a GC runs the iptables GC when any record of the network is there.
//!
//! The factories of [`crate::masquerade`], [`crate::portmap`] and [`crate::forward`] wrap the
//! chosen backend with the other one through [`Switch`].

use std::path::{Path, PathBuf};

use crate::names::{network_hash, owner_tag};
use crate::{Backend, Error, RUN_DIR};

/// The records of one feature, and which backend is the primary.
pub(crate) struct Switch {
    /// the primary (chosen) backend
    pub backend: Backend,
    dir: PathBuf,
}

impl Switch {
    /// Records under `/run/rcni/owners/<feature>`.
    pub(crate) fn new(backend: Backend, feature: &str) -> Switch {
        Switch::in_dir(backend, Path::new(RUN_DIR).join("owners").join(feature))
    }

    /// Records under `dir` (tests).
    pub(crate) fn in_dir(backend: Backend, dir: PathBuf) -> Switch {
        Switch { backend, dir }
    }

    fn record(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(owner_tag(network, container_id, ifname))
    }

    /// After a successful ADD: an iptables owner is recorded.
    pub(crate) fn added(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<(), Error> {
        if self.backend != Backend::Iptables {
            return Ok(());
        }
        let io = |source| Error::State {
            path: self.dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        std::fs::write(self.record(network, container_id, ifname), b"").map_err(io)
    }

    /// Whether a DEL must also run through the other backend.
    pub(crate) fn del_other(&self, network: &str, container_id: &str, ifname: &str) -> bool {
        match self.backend {
            Backend::Nftables => self.record(network, container_id, ifname).exists(),
            Backend::Iptables => crate::nft_available(),
        }
    }

    /// Whether a GC of `network` must also run through the other backend.
    pub(crate) fn gc_other(&self, network: &str) -> bool {
        match self.backend {
            Backend::Nftables => {
                let prefix = format!("{}-", network_hash(network));
                std::fs::read_dir(&self.dir).is_ok_and(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                })
            }
            Backend::Iptables => crate::nft_available(),
        }
    }

    /// After a DEL that reached iptables: the record goes.
    pub(crate) fn deleted(&self, network: &str, container_id: &str, ifname: &str) {
        // Absent is fine: DEL is idempotent.
        let _ = std::fs::remove_file(self.record(network, container_id, ifname));
    }

    /// After a GC that reached iptables: the records of `network` not in `keep` go.
    pub(crate) fn collected(&self, network: &str, keep: &[(String, String)]) {
        let prefix = format!("{}-", network_hash(network));
        let kept: Vec<String> = keep.iter().map(|(c, i)| owner_tag(network, c, i)).collect();
        for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && !kept.contains(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

impl Switch {
    /// DEL: the primary backend's, then the other's when [`Switch::del_other`] says so; the
    /// record goes when both succeeded.
    pub(crate) fn del(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
        primary: impl FnOnce() -> Result<(), Error>,
        other: impl FnOnce() -> Result<(), Error>,
    ) -> Result<(), Error> {
        let primary = primary();
        let other = self.del_other(network, container_id, ifname).then(other);
        let res = both(primary, other);
        if res.is_ok() {
            self.deleted(network, container_id, ifname);
        }
        res
    }

    /// GC: the primary backend's, then the other's when [`Switch::gc_other`] says so; the
    /// records of the collected owners go when both succeeded.
    pub(crate) fn gc(
        &self,
        network: &str,
        keep: &[(String, String)],
        primary: impl FnOnce() -> Result<(), Error>,
        other: impl FnOnce() -> Result<(), Error>,
    ) -> Result<(), Error> {
        let primary = primary();
        let other = self.gc_other(network).then(other);
        let res = both(primary, other);
        if res.is_ok() {
            self.collected(network, keep);
        }
        res
    }
}

/// Runs the primary teardown, then (when `other` is wanted) the other backend's; both errors are
/// reported (DEL never stops at the first error).
pub(crate) fn both(
    primary: Result<(), Error>,
    other: Option<Result<(), Error>>,
) -> Result<(), Error> {
    let mut errors: Vec<Error> = primary.err().into_iter().collect();
    errors.extend(other.and_then(|r| r.err()));
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(Error::Multiple(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iptables_owners_are_recorded_and_found_by_an_nftables_del() {
        let dir = std::env::temp_dir().join(format!("rcni-switch-{}", std::process::id()));
        let ipt = Switch::in_dir(Backend::Iptables, dir.clone());
        let nft = Switch::in_dir(Backend::Nftables, dir.clone());
        assert!(!nft.del_other("n", "c1", "eth0"));
        ipt.added("n", "c1", "eth0").unwrap();
        ipt.added("n", "c2", "eth0").unwrap();
        assert!(nft.del_other("n", "c1", "eth0"));
        assert!(!nft.del_other("n", "c3", "eth0"));
        assert!(nft.gc_other("n"));
        assert!(!nft.gc_other("other"));
        nft.deleted("n", "c1", "eth0");
        assert!(!nft.del_other("n", "c1", "eth0"));
        nft.collected("n", &[]);
        assert!(!nft.gc_other("n"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn nftables_records_nothing() {
        let dir = std::env::temp_dir().join(format!("rcni-switch-n-{}", std::process::id()));
        Switch::in_dir(Backend::Nftables, dir.clone())
            .added("n", "c", "eth0")
            .unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn both_reports_every_error() {
        assert!(both(Ok(()), None).is_ok());
        assert!(both(Ok(()), Some(Ok(()))).is_ok());
        let e = both(
            Err(Error::Missing("a".into())),
            Some(Err(Error::Missing("b".into()))),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Multiple(ref v) if v.len() == 2), "{e}");
    }
}
