//! CNI_ARGS (`K1=V1;K2=V2`). Properties: no panic; what parses renders back (`to_env`) to a
//! string that parses to the same pairs.
#![no_main]

use cni::CniArgs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(a) = CniArgs::parse(s) else { return };
    let _ = a.ignore_unknown();
    let _ = a.check_known(&["IP", "MAC", "K8S_POD_NAME"]);
    let env = a.to_env();
    let b = CniArgs::parse(&env)
        .unwrap_or_else(|e| panic!("to_env output {env:?} does not parse: {e:?}"));
    assert_eq!(a, b, "round trip through {env:?}");
});
