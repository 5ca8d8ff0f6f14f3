//! prevResult / result parsing in every version, and conversion between versions.
//! Properties: no panic, no hang; a result rendered in version V, parsed back as V and rendered
//! again gives the same JSON (conversion is stable), for every V and every source version.
#![no_main]

use cni::CniResult;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    for conf_ver in cni::SUPPORTED_VERSIONS {
        let Ok(r) = CniResult::from_value(&v, conf_ver) else {
            continue;
        };
        for to in cni::SUPPORTED_VERSIONS {
            let Ok(out) = r.to_value(to) else { continue };
            let back = CniResult::from_value(&out, to)
                .unwrap_or_else(|e| panic!("{to} output does not parse as {to}: {e:?}\n{out}"));
            let again = back
                .to_value(to)
                .unwrap_or_else(|e| panic!("re-render in {to} failed: {e:?}"));
            assert_eq!(out, again, "conversion to {to} is not stable");
            let mut buf = Vec::new();
            back.print(to, &mut buf).expect("print");
        }
    }
});
