//! Unit tests without root: the error codes of every way a join can be wrong (the module docs
//! say why each), on paths any user can open; this process's own namespace stands for the
//! owner's. What ADD reports is `host::describe`, tested in the `host` plugin.

use std::path::Path;

use cni::error::codes;
use cni::skel::{CmdArgs, Command, Plugin};
use serde_json::json;

use super::Container;

const OWN: &str = "/proc/self/ns/net";

fn args(command: Command, netns: Option<&str>, target: Option<&str>) -> CmdArgs {
    let mut conf = json!({"cniVersion": "1.1.0", "name": "joined", "type": "container"});
    if let Some(t) = target {
        conf["target"] = json!(t);
    }
    let stdin = serde_json::to_vec(&conf).unwrap();
    CmdArgs::new(command, "joiner", netns.map(Path::new), "eth0", stdin).unwrap()
}

fn check_code(netns: Option<&str>, target: Option<&str>) -> (u32, String) {
    let e = Container
        .check(&args(Command::Check, netns, target))
        .unwrap_err();
    (e.code, e.msg)
}

#[test]
fn a_joiner_given_the_owners_namespace_checks_out() {
    Container
        .check(&args(Command::Check, Some(OWN), Some(OWN)))
        .unwrap();
}

#[test]
fn config_errors_are_code_7() {
    for target in [None, Some(""), Some("run/netns/owner")] {
        let (code, msg) = check_code(Some(OWN), target);
        assert_eq!(code, codes::INVALID_CONFIG, "{target:?}: {msg}");
        assert!(msg.contains("target"), "{msg}");
    }
    // The target is a file but no namespace: the config points at the wrong file.
    let (code, msg) = check_code(Some(OWN), Some("/proc/self/status"));
    assert_eq!(code, codes::INVALID_CONFIG, "{msg}");
    assert!(msg.contains("unknown FS magic"), "{msg}");
}

#[test]
fn a_missing_owner_is_try_again_not_unknown_container() {
    let (code, msg) = check_code(Some(OWN), Some("/proc/self/ns/absent"));
    assert_eq!(code, codes::TRY_AGAIN, "{msg}");
    assert!(
        msg.contains("/proc/self/ns/absent") && msg.contains("does not exist"),
        "{msg}"
    );
    let e = Container
        .add(&args(Command::Add, Some(OWN), Some("/proc/self/ns/absent")))
        .unwrap_err();
    assert_eq!(e.code, codes::TRY_AGAIN);
}

#[test]
fn an_unusable_cni_netns_is_code_8_or_4_when_unset() {
    for netns in ["/proc/self/ns/gone", "/proc/self/status"] {
        let (code, msg) = check_code(Some(netns), Some(OWN));
        assert_eq!(code, codes::INVALID_NETNS, "{netns}: {msg}");
    }
    let (code, msg) = check_code(None, Some(OWN));
    assert_eq!(code, codes::INVALID_ENV, "{msg}");
}

#[test]
fn leaving_never_fails_and_needs_nothing() {
    // No namespace, no target, a target that is gone: DEL touches nothing, so it succeeds.
    for (netns, target) in [(None, None), (Some("/proc/self/ns/gone"), Some("/gone"))] {
        Container.del(&args(Command::Del, netns, target)).unwrap();
    }
}
