//! The whole plugin skeleton on fuzzed input: verb, CNI_ARGS, CNI_IFNAME, CNI_CONTAINERID and
//! stdin come from the bytes, and a side-effect-free plugin echoes the prevResult (or a fixed
//! result). Properties: no panic, no hang; every call ends with exit 0 or 1; exit 1 always
//! prints a CNI error (JSON with a numeric `code` and a `msg`) on stdout; a successful ADD
//! prints a result that parses back in the version it claims.
#![no_main]

use cni::skel::{run_named, CmdArgs, NetnsPolicy, Plugin};
use cni::{CniError, CniResult};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

struct Echo;

impl Plugin for Echo {
    fn known_args(&self) -> &'static [&'static str] {
        &["IP", "MAC"]
    }
    fn netns_policy(&self) -> NetnsPolicy {
        NetnsPolicy::NotEntered
    }
    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let _ = args.port_mappings()?;
        Ok(args.prev_result()?.unwrap_or_else(|| CniResult {
            cni_version: args.version.as_str().into(),
            ips: vec![cni::IpConfig {
                interface: None,
                address: "10.0.0.2/24".parse().expect("literal"),
                gateway: None,
            }],
            ..Default::default()
        }))
    }
    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        args.prev_result().map(|_| ())
    }
    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        args.prev_result()?
            .ok_or_else(|| CniError::new(cni::codes::INVALID_CONFIG, "no prevResult"))
            .map(|_| ())
    }
    fn gc(&self, args: &CmdArgs) -> Result<(), CniError> {
        args.valid_attachments().map(|_| ())
    }
}

const VERBS: [&str; 8] = [
    "ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION", "", "BOGUS",
];

fuzz_target!(|data: &[u8]| {
    let Some((&verb, rest)) = data.split_first() else {
        return;
    };
    let verb = VERBS[usize::from(verb) % VERBS.len()];
    // Three environment values, one per line, then stdin.
    let mut parts = rest.splitn(4, |&b| b == b'\n');
    let mut field = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (cni_args, ifname, cid) = (field(), field(), field());
    let stdin = parts.next().unwrap_or_default().to_vec();
    let env = |k: &str| -> Option<String> {
        match k {
            "CNI_COMMAND" => Some(verb.to_string()),
            "CNI_ARGS" => Some(cni_args.clone()),
            "CNI_IFNAME" => Some(ifname.clone()),
            "CNI_CONTAINERID" => Some(cid.clone()),
            "CNI_NETNS" => Some("/nonexistent/netns".into()),
            "CNI_PATH" => Some("/nonexistent".into()),
            _ => None,
        }
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let rc = run_named(
        &Echo,
        "fuzz",
        "fuzz",
        &env,
        &mut stdin.as_slice(),
        &mut out,
        &mut err,
    );
    match rc {
        0 => {
            if verb == "ADD" {
                let v: Value = serde_json::from_slice(&out).expect("ADD printed no JSON");
                let ver = v["cniVersion"].as_str().expect("result without cniVersion");
                CniResult::from_value(&v, ver).expect("printed result does not parse back");
            }
        }
        1 => {
            let v: Value = serde_json::from_slice(&out).unwrap_or_else(|e| {
                panic!(
                    "exit 1 without a JSON error ({e}): {:?}",
                    String::from_utf8_lossy(&out)
                )
            });
            assert!(v["code"].is_u64(), "error without numeric code: {v}");
            assert!(v["msg"].is_string(), "error without msg: {v}");
        }
        other => panic!("exit code {other}"),
    }
});
