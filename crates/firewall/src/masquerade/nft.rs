//! Masquerade on nftables (the default backend), in the suite's table `inet rcni`, changed by
//! exactly one netlink transaction per call, never by exec'ing `nft`.
//!
//! Layout (as `nft list table inet rcni` prints it):
//!
//! ```text
//! table inet rcni {
//!     set masq4 { type ipv4_addr
//!         elements = { 10.22.0.5 comment "<nethash>-<ownerhash> net: n1, id: c1, if: eth0" } }
//!     set masq6 { type ipv6_addr
//!         elements = { fd00:22::5 comment "<nethash>-<ownerhash> net: n1, id: c1, if: eth0" } }
//!     chain postrouting {
//!         type nat hook postrouting priority srcnat; policy accept;
//!         ip daddr 224.0.0.0/4 return comment "rcni: multicast4"
//!         ip6 daddr ff00::/8 return comment "rcni: multicast6"
//!         ip saddr 10.22.0.0/24 ip daddr 10.22.0.0/24 return comment "<nethash>:10.22.0.0/24 net: n1"
//!         ip6 saddr fd00:22::/64 ip6 daddr fd00:22::/64 return comment "<nethash>:fd00:22::/64 net: n1"
//!         ip saddr @masq4 masquerade comment "rcni: masquerade4"
//!         ip6 saddr @masq6 masquerade comment "rcni: masquerade6"
//!     }
//! }
//! ```
//!
//! This is the reference semantics (masquerade a container address unless the destination is
//! in its own subnet or multicast) with per-container state reduced to one set element:
//!
//! * `<nethash>` = 16 hex of sha512(network); `<ownerhash>` = 16 hex of
//!   sha512(container id, NUL, ifname). The element comment starts with that owner tag, so DEL
//!   (even with no netns and no prevResult, plugins#810) and GC find an attachment's addresses by
//!   dumping only our two sets.
//! * ADD reads the base chain (its size follows the number of subnets, not containers), looks
//!   each address up by key, and in the steady state sends a transaction holding only the new
//!   elements. The first ADD of a subnet inserts its exemption rule after the multicast returns.
//!   Table, sets and chain are created without NLM_F_EXCL, so racing plugin processes are safe.
//! * Two kernel costs are avoided on purpose, both measured while designing this: verdict-map
//!   jumps make every commit re-validate the table by walking all map elements (cost grows with
//!   containers), and deleting anything makes the closing of the netlink socket wait for an RCU
//!   grace period (~10 ms). ADD therefore uses plain sets and deletes nothing unless it takes
//!   over an address from a stale owner.
//! * DEL/GC delete the elements and, when a network has no address left in a subnet, that
//!   subnet's exemption rule.
//! * All read-modify-write runs under the flock on [`crate::LOCK_PATH`].

use std::net::IpAddr;
use std::path::PathBuf;

use nftnl::ProtoFamily;

use super::encode::lower;
use super::plan::{
    has_subnet_rule, masq_set, owned_by, plan_add, plan_remove, stale_in, Elem, Op, RuleInfo,
    BASE_CHAIN, FIXED_MASQ4, FIXED_MASQ6, FIXED_MCAST4, FIXED_MCAST6,
};
use super::{Firewall, MasqRule};
use crate::nft::netlink::Nl;
use crate::nft::TABLE;
use crate::{lock, validate_owner, validate_rules, Error, Family, LOCK_PATH};

/// The nftables implementation of [`Firewall`].
pub(crate) struct NftMasquerade {
    lock_path: PathBuf,
}

impl NftMasquerade {
    /// Uses [`LOCK_PATH`].
    pub(crate) fn new() -> Self {
        Self {
            lock_path: PathBuf::from(LOCK_PATH),
        }
    }

    fn apply(nl: &mut Nl, ops: &[Op], what: &str) -> Result<(), Error> {
        crate::nft::apply(nl, ProtoFamily::Inet, ops, lower, what)
    }

    /// One element of a family's set by key (kernel keyed lookup, O(1)); None if absent or if
    /// the table/set does not exist yet.
    fn get_elem(nl: &mut Nl, key: IpAddr) -> Result<Option<Elem>, Error> {
        Ok(Self::elems(nl, Family::of(key), Some(key))?
            .into_iter()
            .next())
    }

    fn elems(nl: &mut Nl, fam: Family, key: Option<IpAddr>) -> Result<Vec<Elem>, Error> {
        let k = key.map(|k| match k {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        });
        Ok(nl
            .set_elems(ProtoFamily::Inet, masq_set(fam), k.as_deref())?
            .into_iter()
            .filter_map(|e| Elem::from_raw(&e.key, e.comment))
            .collect())
    }

    fn dump_base_rules(nl: &mut Nl) -> Result<Option<Vec<RuleInfo>>, Error> {
        nl.chain_rules(ProtoFamily::Inet, BASE_CHAIN)
    }

    fn all_elems(nl: &mut Nl) -> Result<Vec<Elem>, Error> {
        let mut all = Self::elems(nl, Family::V4, None)?;
        all.extend(Self::elems(nl, Family::V6, None)?);
        Ok(all)
    }
}

impl Firewall for NftMasquerade {
    fn add_masquerade(&self, rules: &[MasqRule]) -> Result<(), Error> {
        validate_rules(rules)?;
        if rules.is_empty() {
            return Ok(());
        }
        let _guard = lock::lock(&self.lock_path)?;
        let mut nl = Nl::open()?;
        let base = Self::dump_base_rules(&mut nl)?;
        let mut lookup_err = None;
        let ops = plan_add(
            rules,
            base.as_deref(),
            &mut |ip| match Self::get_elem(&mut nl, ip) {
                Ok(e) => e,
                Err(e) => {
                    lookup_err.get_or_insert(e);
                    None
                }
            },
        );
        if let Some(e) = lookup_err {
            return Err(e);
        }
        Self::apply(&mut nl, &ops, "add masquerade")
    }

    fn del_masquerade(&self, network: &str, container_id: &str, ifname: &str) -> Result<(), Error> {
        validate_owner(network, container_id, ifname)?;
        let _guard = lock::lock(&self.lock_path)?;
        let mut nl = Nl::open()?;
        let all = Self::all_elems(&mut nl)?;
        let base = Self::dump_base_rules(&mut nl)?.unwrap_or_default();
        let ops = plan_remove(
            network,
            &all,
            &base,
            &owned_by(network, container_id, ifname),
        );
        Self::apply(&mut nl, &ops, "delete masquerade")
    }

    fn check_masquerade(&self, rules: &[MasqRule]) -> Result<(), Error> {
        validate_rules(rules)?;
        if rules.is_empty() {
            return Ok(());
        }
        let _guard = lock::lock(&self.lock_path)?;
        let mut nl = Nl::open()?;
        let Some(base) = Self::dump_base_rules(&mut nl)? else {
            return Err(Error::Missing(format!(
                "chain inet {TABLE} {BASE_CHAIN} does not exist"
            )));
        };
        for fixed in [FIXED_MCAST4, FIXED_MCAST6, FIXED_MASQ4, FIXED_MASQ6] {
            if !base.iter().any(|r| r.comment == fixed) {
                return Err(Error::Missing(format!(
                    "rule \"{fixed}\" missing from chain inet {TABLE} {BASE_CHAIN}"
                )));
            }
        }
        for r in rules {
            let want = owned_by(&r.network, &r.container_id, &r.ifname);
            let set = masq_set(Family::of(r.ip()));
            match Self::get_elem(&mut nl, r.ip())? {
                None => {
                    return Err(Error::Missing(format!(
                        "element {} not in set inet {TABLE} {set} (network {:?}, container {:?}, ifname {:?})",
                        r.ip(),
                        r.network,
                        r.container_id,
                        r.ifname
                    )))
                }
                Some(e) if !want(&e) => {
                    return Err(Error::Missing(format!(
                        "element {} in set inet {TABLE} {set} belongs to \"{}\", expected container {:?} ifname {:?}",
                        r.ip(),
                        e.comment,
                        r.container_id,
                        r.ifname
                    )))
                }
                Some(_) => {}
            }
            if !has_subnet_rule(&base, &r.network, &r.subnet()) {
                return Err(Error::Missing(format!(
                    "no exemption rule for subnet {} of network {:?} in chain inet {TABLE} {BASE_CHAIN}",
                    r.subnet(),
                    r.network
                )));
            }
        }
        Ok(())
    }

    fn gc_masquerade(&self, network: &str, keep: &[(String, String)]) -> Result<(), Error> {
        validate_owner(network, "gc", "gc")?;
        for (cid, ifname) in keep {
            validate_owner(network, cid, ifname)?;
        }
        let _guard = lock::lock(&self.lock_path)?;
        let mut nl = Nl::open()?;
        let all = Self::all_elems(&mut nl)?;
        let base = Self::dump_base_rules(&mut nl)?.unwrap_or_default();
        let ops = plan_remove(network, &all, &base, &stale_in(network, keep));
        // Element deletions come first in the plan, rule deletions last, so chunks (which keep
        // each transaction well under the socket buffer) never remove a rule still needed.
        for chunk in ops.chunks(512) {
            Self::apply(&mut nl, chunk, "garbage-collect masquerade")?;
        }
        Ok(())
    }
}

/// Every element of our two address sets and every rule of the base chain.
pub(crate) fn list(nl: &mut Nl) -> Result<Vec<crate::entry::Entry>, Error> {
    crate::nft::entries(
        nl,
        ProtoFamily::Inet,
        &[masq_set(Family::V4), masq_set(Family::V6)],
        &[BASE_CHAIN],
        &|_, e| crate::nft::addr_key(e),
    )
}
