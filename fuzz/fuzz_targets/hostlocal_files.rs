//! host-local's on-disk formats: lease file names and contents, and the owner index file.
//! Properties: no panic; lease content written for an owner parses back to that owner; an index
//! decodes, re-encodes and decodes again to the same leases.
#![no_main]

use host_local::index::{decode, Listing};
use host_local::store::{classify, lease_content, Owner};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let _ = classify(&s);
    let _ = Owner::parse(&s);
    // Lease contents written for (cid, ifname) read back as that owner.
    if let Some((cid, ifname)) = s.split_once('\n') {
        let (cid, ifname) = (cid.trim(), ifname.trim());
        let ok_name = |x: &str| {
            !x.is_empty()
                && x.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if ok_name(cid) && ok_name(ifname) {
            let content = lease_content(cid, ifname);
            match Owner::parse(&content) {
                Owner::Attachment { cid: c, ifname: i } => {
                    assert_eq!((c.as_str(), i.as_str()), (cid, ifname))
                }
                other => panic!("{content:?} parsed as {other:?}"),
            }
        }
    }
    let leases = decode(&s);
    let listing = Listing {
        leases: leases.clone(),
        ..Default::default()
    };
    let text = listing.encode();
    assert_eq!(decode(&text), leases, "index round trip through {text:?}");
});
