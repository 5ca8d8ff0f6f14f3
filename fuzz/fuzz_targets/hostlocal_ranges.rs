//! host-local's range configuration (`ipam` with `subnet`/`ranges`/`rangeStart`/`rangeEnd`/
//! `gateway`, `runtimeConfig.ipRanges`, requested IPs). Properties: no panic, no hang: building
//! range sets and walking the allocation cursor a bounded number of steps terminates.
#![no_main]

use host_local::config::{IpamConfig, RawNetConf};
use host_local::range::{RangeIter, RangeSet, RawRange};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = cni::gojson::from_slice::<Vec<RawRange>>(data) {
        if let Ok(set) = RangeSet::from_raw(&raw) {
            // A validated range is well formed: bounds in the subnet, in order, one family.
            for r in &set.0 {
                assert!(
                    r.subnet.contains(&r.start) && r.subnet.contains(&r.end),
                    "{r:?}"
                );
                assert!(r.start <= r.end, "{r:?}");
                assert_eq!(r.start.is_ipv4(), r.subnet.addr().is_ipv4(), "{r:?}");
                assert_eq!(r.is_ipv4(), set.is_ipv4(), "mixed families in {set}");
            }
            let _ = set.capacity();
            let _ = set.to_string();
            let _ = set.overlaps(&set);
            for (ip, r) in RangeIter::new(&set, None).take(64) {
                assert!(r.contains(ip), "cursor gave {ip} outside {r}");
                assert!(set.contains(ip));
            }
        }
    }
    let Ok(raw) = cni::gojson::from_slice::<RawNetConf>(data) else {
        return;
    };
    let args_ip = raw.name.split_once('=').map(|(_, ip)| ip.to_string());
    let Ok(cfg) = IpamConfig::load(raw, args_ip.as_deref()) else {
        return;
    };
    let _ = cfg.plan_requests();
    let _ = cfg.network_dir();
    for set in &cfg.range_sets {
        let last = set.0.first().map(|r| r.end);
        for (ip, r) in RangeIter::new(set, last).take(64) {
            assert!(r.contains(ip), "cursor gave {ip} outside {r}");
        }
    }
});
