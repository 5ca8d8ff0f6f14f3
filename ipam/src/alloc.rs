//! The allocator and the verbs' data-directory logic, free of protocol types so it can be unit
//! tested directly. Locking follows the reference: the network's lock is taken
//! once per range set, so a dual-stack ADD interleaves with other writers exactly as the
//! reference's does, and a failure in a later set releases what earlier sets reserved.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::IpamConfig;
use crate::error::Error;
use crate::index::{IndexedLease, Listing};
use crate::range::{RangeIter, RangeSet};
use crate::store::{lease_content, LeaseWriter, Store};

/// One address handed out by ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// Range set index.
    pub set: usize,
    /// Address with the subnet's prefix.
    pub address: IpNet,
    /// Gateway of the range it came from.
    pub gateway: IpAddr,
}

fn with_prefix(ip: IpAddr, subnet: &IpNet) -> IpNet {
    // The prefix comes from a validated subnet of the same family, so this cannot fail;
    // fall back to a host route rather than panic.
    IpNet::new(ip, subnet.prefix_len()).unwrap_or_else(|_| IpNet::from(ip))
}

/// ADD: one address per range set for (cid, ifname). Config problems (requested address is a
/// gateway or fits no set) are reported before the data directory is touched.
pub fn add(cfg: &IpamConfig, cid: &str, ifname: &str) -> Result<Vec<Allocation>, Error> {
    let plan = cfg.plan_requests()?;
    let store = Store::open(cfg.network_dir())?;
    let mut done: Vec<Allocation> = Vec::with_capacity(cfg.range_sets.len());
    for (idx, (set, req)) in cfg.range_sets.iter().zip(plan).enumerate() {
        match allocate_in_set(&store, set, idx, req, cid, ifname) {
            Ok(a) => done.push(a),
            Err(e) => {
                rollback(&store, &done, cid, ifname);
                return Err(e);
            }
        }
    }
    Ok(done)
}

/// Release exactly the leases this call created (the reference releases everything the
/// attachment holds, including a pre-existing lease that caused a duplicate error; we don't).
fn rollback(store: &Store, done: &[Allocation], cid: &str, ifname: &str) {
    if done.is_empty() {
        return;
    }
    let content = lease_content(cid, ifname);
    if let Ok(_guard) = store.lock() {
        for a in done {
            if let Err(e) = store.remove_if_owned(a.address.addr(), &content) {
                eprintln!("host-local: rollback of {}: {e}", a.address.addr());
            }
        }
    }
}

fn allocate_in_set(
    store: &Store,
    set: &RangeSet,
    idx: usize,
    requested: Option<IpAddr>,
    cid: &str,
    ifname: &str,
) -> Result<Allocation, Error> {
    let _guard = store.lock()?;
    cni::trace::phase("lock");
    let mut listing = store.listing()?;
    cni::trace::phase("listing");
    let writer = store.writer(cid, ifname)?;
    // Every exit below leaves the owner index matching what this call did to the directory.
    let outcome = allocate_with(
        store,
        &mut listing,
        &writer,
        set,
        idx,
        requested,
        cid,
        ifname,
    );
    cni::trace::phase("claim");
    if outcome.is_ok() {
        store.save_and_seal(&mut listing);
    } else {
        store.save_listing(&listing);
    }
    cni::trace::phase("index");
    outcome
}

/// Remember a lease `writer` just linked, so the next call need not read it.
fn note_claimed(listing: &mut Listing, writer: &LeaseWriter<'_>, ip: IpAddr) {
    match writer.inode() {
        Some(ino) => listing.insert(IndexedLease {
            ip,
            name: ip.to_string(),
            ino,
            content: writer.content().to_string(),
        }),
        // Unknown inode: leave it out; the next listing reads the file once.
        None => listing.dirty = true,
    }
}

#[allow(clippy::too_many_arguments)]
fn allocate_with(
    store: &Store,
    listing: &mut Listing,
    writer: &LeaseWriter<'_>,
    set: &RangeSet,
    idx: usize,
    requested: Option<IpAddr>,
    cid: &str,
    ifname: &str,
) -> Result<Allocation, Error> {
    if let Some(ip) = requested {
        // plan_requests guarantees the set holds ip and ip is not the gateway.
        let Some(range) = set.range_for(ip) else {
            return Err(Error::RequestedTaken {
                idx,
                ip,
                set: set.to_string(),
            });
        };
        // A lease named differently but for the same address (e.g. non-canonical IPv6 text
        // written by another tool) also makes it unavailable.
        if listing.leases.iter().any(|l| l.ip == ip) || !writer.claim(ip)? {
            return Err(Error::RequestedTaken {
                idx,
                ip,
                set: set.to_string(),
            });
        }
        note_claimed(listing, writer, ip);
        note_last_reserved(store, idx, ip);
        return Ok(Allocation {
            set: idx,
            address: with_prefix(ip, &range.subnet),
            gateway: range.gateway,
        });
    }

    if let Some(ip) = store
        .get_by_id(listing, cid, ifname)
        .into_iter()
        .find(|ip| set.contains(*ip))
    {
        return Err(Error::Duplicate {
            idx,
            ip,
            cid: cid.to_string(),
        });
    }
    let taken: HashSet<IpAddr> = listing
        .leases
        .iter()
        .map(|l| l.ip)
        .filter(|ip| set.contains(*ip))
        .collect();
    for (ip, range) in RangeIter::new(set, store.last_reserved(idx)) {
        if taken.contains(&ip) {
            continue;
        }
        if writer.claim(ip)? {
            note_claimed(listing, writer, ip);
            note_last_reserved(store, idx, ip);
            return Ok(Allocation {
                set: idx,
                address: with_prefix(ip, &range.subnet),
                gateway: range.gateway,
            });
        }
    }
    Err(Error::Exhausted {
        idx,
        set: set.to_string(),
    })
}

/// The cursor only steers round robin: failing to write it must not fail an ADD whose lease
/// is already on disk (the reference would return an error and leak the lease).
fn note_last_reserved(store: &Store, idx: usize, ip: IpAddr) {
    if let Err(e) = store.set_last_reserved(idx, ip) {
        eprintln!("host-local: {e}");
    }
}

/// DEL: release the attachment's leases (any range; legacy id-only fallback). Idempotent and
/// independent of the configured ranges; a missing directory means nothing to release.
pub fn del(cfg: &IpamConfig, cid: &str, ifname: &str) -> Result<Vec<IpAddr>, Error> {
    let Some(store) = Store::open_existing(cfg.network_dir())? else {
        return Ok(Vec::new());
    };
    let _guard = store.lock()?;
    store.release_by_id(cid, ifname)
}

/// CHECK: the attachment (or its legacy container ID) holds at least one lease.
pub fn check(cfg: &IpamConfig, cid: &str, ifname: &str) -> Result<(), Error> {
    let found = match Store::open_existing(cfg.network_dir())? {
        Some(store) => store.find_by_id(cid, ifname)?,
        None => false,
    };
    if found {
        Ok(())
    } else {
        Err(Error::NotFound(cid.to_string()))
    }
}

/// GC: keep only leases owned by `valid` attachments (container ID, ifname).
pub fn gc(cfg: &IpamConfig, valid: &[(String, String)]) -> Result<Vec<IpAddr>, Error> {
    let Some(store) = Store::open_existing(cfg.network_dir())? else {
        return Ok(Vec::new());
    };
    let _guard = store.lock()?;
    store.gc(valid)
}

/// STATUS: every range set still has a free address (leases are counted, not read).
pub fn status(cfg: &IpamConfig) -> Result<(), Error> {
    let leases: Vec<IpAddr> = match Store::open_existing(cfg.network_dir())? {
        Some(store) => store.leases()?.into_iter().map(|(ip, _)| ip).collect(),
        None => Vec::new(),
    };
    for set in &cfg.range_sets {
        let used = leases
            .iter()
            .filter(|ip| set.range_for(**ip).is_some_and(|r| r.gateway != **ip))
            .collect::<HashSet<_>>()
            .len() as u128;
        if used >= set.capacity() {
            return Err(Error::StatusExhausted(set.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::RawNetConf;
    use std::path::{Path, PathBuf};

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "hl-unit-{tag}-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn cfg(dir: &Path, ipam: serde_json::Value, args_ip: Option<&str>) -> IpamConfig {
        let mut ipam = ipam;
        ipam["dataDir"] = serde_json::json!(dir.to_str().unwrap());
        let raw: RawNetConf = serde_json::from_value(
            serde_json::json!({"cniVersion":"1.0.0","name":"net","ipam":ipam}),
        )
        .unwrap();
        IpamConfig::load(raw, args_ip).unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.join("net"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != crate::index::INDEX_FILE)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn round_robin_wrap_and_layout() {
        let t = TempDir::new("rr");
        let c = cfg(
            &t.0,
            serde_json::json!({"ranges":[[{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.10","rangeEnd":"10.1.0.12"}],
                                          [{"subnet":"fd00::/64","rangeStart":"fd00::2"}]]}),
            None,
        );
        let a = add(&c, "c1", "eth0").unwrap();
        assert_eq!(a[0].address.to_string(), "10.1.0.10/24");
        assert_eq!(a[1].address.to_string(), "fd00::2/64");
        add(&c, "c2", "eth0").unwrap();
        add(&c, "c3", "eth0").unwrap();
        assert_eq!(
            add(&c, "c4", "eth0").unwrap_err().to_string(),
            "failed to allocate for range 0: no IP addresses available in range set: 10.1.0.10-10.1.0.12"
        );
        // Set 0 failed first, so set 1's cursor did not move; release and wrap.
        assert_eq!(del(&c, "c1", "eth0").unwrap().len(), 2);
        let a = add(&c, "c5", "eth0").unwrap();
        assert_eq!(a[0].address.addr().to_string(), "10.1.0.10");
        assert_eq!(a[1].address.addr().to_string(), "fd00::5");
        let content = std::fs::read(t.0.join("net/10.1.0.10")).unwrap();
        assert_eq!(content, b"c5\r\neth0");
        assert!(names(&t.0).contains(&"last_reserved_ip.1".to_string()));
        assert!(names(&t.0).contains(&"lock".to_string()));
    }

    #[test]
    fn duplicate_and_other_ifname() {
        let t = TempDir::new("dup");
        let c = cfg(&t.0, serde_json::json!({"subnet":"10.1.0.0/24"}), None);
        add(&c, "c1", "eth0").unwrap();
        assert_eq!(
            add(&c, "c1", "eth0").unwrap_err().to_string(),
            "failed to allocate for range 0: 10.1.0.2 has been allocated to c1, duplicate allocation is not allowed"
        );
        assert_eq!(
            add(&c, "c1", "eth1").unwrap()[0].address.to_string(),
            "10.1.0.3/24"
        );
        assert_eq!(del(&c, "c1", "eth1").unwrap().len(), 1);
        assert!(t.0.join("net/10.1.0.2").exists());
        check(&c, "c1", "eth0").unwrap();
        assert_eq!(
            check(&c, "c9", "eth0").unwrap_err().to_string(),
            "host-local: Failed to find address added by container c9"
        );
    }

    #[test]
    fn later_set_failure_releases_earlier_sets() {
        let t = TempDir::new("rb");
        let c = cfg(
            &t.0,
            serde_json::json!({"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.2.0.0/30"}]]}),
            None,
        );
        add(&c, "c1", "eth0").unwrap();
        let e = add(&c, "c2", "eth0").unwrap_err().to_string();
        assert!(e.contains("range 1: no IP addresses available"), "{e}");
        assert!(!t.0.join("net/10.1.0.3").exists());
        assert!(t.0.join("net/10.1.0.2").exists());
    }

    #[test]
    fn legacy_leases_and_gc() {
        let t = TempDir::new("gc");
        let c = cfg(&t.0, serde_json::json!({"subnet":"10.1.0.0/24"}), None);
        add(&c, "c1", "eth0").unwrap();
        add(&c, "c2", "eth0").unwrap();
        std::fs::write(t.0.join("net/10.1.0.50"), "old").unwrap();
        std::fs::write(t.0.join("net/10.1.0.51"), "gone").unwrap();
        std::fs::write(t.0.join("net/10.1.0.52"), "").unwrap();
        std::fs::write(t.0.join("net/.host-local-tmp.1.0"), "c9\r\neth0").unwrap();
        // Legacy id-only lease counts as a duplicate and is released by DEL.
        assert!(add(&c, "old", "eth7")
            .unwrap_err()
            .to_string()
            .contains("10.1.0.50 has been allocated to old"));
        let removed = gc(
            &c,
            &[("c1".into(), "eth0".into()), ("old".into(), "eth0".into())],
        )
        .unwrap();
        let mut removed: Vec<String> = removed.iter().map(|i| i.to_string()).collect();
        removed.sort();
        assert_eq!(removed, ["10.1.0.3", "10.1.0.51", "10.1.0.52"]);
        assert_eq!(
            names(&t.0),
            ["10.1.0.2", "10.1.0.50", "last_reserved_ip.0", "lock"]
        );
        assert_eq!(del(&c, "old", "eth0").unwrap().len(), 1);
        gc(&c, &[]).unwrap();
        assert_eq!(names(&t.0), ["last_reserved_ip.0", "lock"]);
    }

    #[test]
    fn status_counts_leases() {
        let t = TempDir::new("st");
        let c = cfg(&t.0, serde_json::json!({"subnet":"10.2.0.0/30"}), None);
        status(&c).unwrap();
        add(&c, "c1", "eth0").unwrap();
        assert_eq!(
            status(&c).unwrap_err().to_string(),
            "no IP addresses available in range set: 10.2.0.1-10.2.0.2"
        );
        assert_eq!(status(&c).unwrap_err().code(), 50);
    }

    #[test]
    fn requested_ip_taken() {
        let t = TempDir::new("req");
        let c = cfg(
            &t.0,
            serde_json::json!({"subnet":"10.1.0.0/24"}),
            Some("10.1.0.9"),
        );
        assert_eq!(
            add(&c, "c1", "eth0").unwrap()[0].address.to_string(),
            "10.1.0.9/24"
        );
        assert_eq!(
            add(&c, "c2", "eth0").unwrap_err().to_string(),
            "failed to allocate for range 0: requested IP address 10.1.0.9 is not available in range set 10.1.0.1-10.1.0.254"
        );
    }

    #[test]
    fn named_temp_fallback_links_atomically_and_cleans_up() {
        let t = TempDir::new("named");
        let store = Store::open(t.0.join("net")).unwrap();
        {
            let w = crate::store::LeaseWriter::new_named(&store, "c1", "eth0").unwrap();
            assert!(w.claim("10.1.0.2".parse().unwrap()).unwrap());
            assert!(!w.claim("10.1.0.2".parse().unwrap()).unwrap());
        }
        assert_eq!(names(&t.0), ["10.1.0.2", "lock"]);
        assert_eq!(
            std::fs::read(t.0.join("net/10.1.0.2")).unwrap(),
            b"c1\r\neth0"
        );
    }

    fn listing_of(dir: &Path) -> Listing {
        let store = Store::open(dir.join("net")).unwrap();
        let _guard = store.lock().unwrap();
        store.listing().unwrap()
    }

    #[test]
    fn owner_index_spares_reading_known_leases() {
        let t = TempDir::new("idx");
        let c = cfg(&t.0, serde_json::json!({"subnet":"10.1.0.0/24"}), None);
        for i in 0..20 {
            add(&c, &format!("c{i}"), "eth0").unwrap();
        }
        let l = listing_of(&t.0);
        assert_eq!(l.leases.len(), 20);
        assert_eq!(l.files_read, 0, "every lease came from the index");
        assert!(!l.dirty);
        // On a file system with multigrain timestamps the directory is not even listed.
        let multigrain = crate::store::Store::open(t.0.join("net"))
            .unwrap()
            .multigrain();
        assert_eq!(l.sealed, multigrain);
        assert!(add(&c, "c3", "eth0")
            .unwrap_err()
            .to_string()
            .contains("10.1.0.5 has been allocated to c3"));
        assert_eq!(del(&c, "c3", "eth0").unwrap().len(), 1);
        let l = listing_of(&t.0);
        assert_eq!((l.leases.len(), l.files_read, l.dirty), (19, 0, false));
    }

    #[test]
    fn owner_index_sees_leases_written_by_others() {
        let t = TempDir::new("idx-foreign");
        let c = cfg(&t.0, serde_json::json!({"subnet":"10.1.0.0/24"}), None);
        add(&c, "c1", "eth0").unwrap();
        // The reference plugin (or a writer killed before updating the index) adds a lease.
        std::fs::write(t.0.join("net/10.1.0.9"), "ref\r\neth0").unwrap();
        let l = listing_of(&t.0);
        assert_eq!((l.files_read, l.sealed), (1, false), "the seal is broken");
        let e = add(&c, "ref", "eth0").unwrap_err().to_string();
        assert!(e.contains("10.1.0.9 has been allocated to ref"), "{e}");
        // It replaces c1's lease under the same name (a new file, hence a new inode).
        let tmp = t.0.join("net/replacement");
        std::fs::write(&tmp, "other\r\neth0").unwrap();
        std::fs::rename(&tmp, t.0.join("net/10.1.0.2")).unwrap();
        assert!(
            del(&c, "c1", "eth0").unwrap().is_empty(),
            "not c1's any more"
        );
        assert!(t.0.join("net/10.1.0.2").exists());
        assert_eq!(del(&c, "other", "eth0").unwrap().len(), 1);
        assert_eq!(del(&c, "ref", "eth0").unwrap().len(), 1);
        let l = listing_of(&t.0);
        assert!(l.leases.is_empty());
    }

    #[test]
    fn a_corrupt_or_stale_index_costs_reads_not_correctness() {
        let t = TempDir::new("idx-corrupt");
        let c = cfg(&t.0, serde_json::json!({"subnet":"10.1.0.0/24"}), None);
        add(&c, "c1", "eth0").unwrap();
        add(&c, "c2", "eth0").unwrap();
        let index = t.0.join("net").join(crate::index::INDEX_FILE);
        std::fs::write(&index, "garbage\n10.1.0.2\t1\tnot-c1\n").unwrap();
        assert!(add(&c, "c1", "eth0").is_err(), "duplicate still detected");
        // A lease removed behind our back (GC by another tool) is dropped from the index.
        std::fs::remove_file(t.0.join("net/10.1.0.3")).unwrap();
        assert_eq!(
            add(&c, "c3", "eth0").unwrap()[0].address.to_string(),
            "10.1.0.4/24"
        );
        let l = listing_of(&t.0);
        let owners: Vec<(&str, &str)> = l
            .leases
            .iter()
            .map(|x| (x.name.as_str(), x.content.as_str()))
            .collect();
        assert_eq!(
            owners,
            [("10.1.0.2", "c1\r\neth0"), ("10.1.0.4", "c3\r\neth0")]
        );
        assert_eq!(l.files_read, 0);
    }
}
