//! Executing other plugins: IPAM delegation from a plugin, and the runtime's plugin exec
//! ("must delegate" verbs, libcni's error decoding, the ETXTBSY retry).
//!
//! Built-in delegates. A plugin binary may link another plugin (bridge links host-local) and
//! register it with [`register_builtin`]. A delegation still looks the type up in CNI_PATH
//! first, and runs the linked copy in process only when the binary found there is ours, of the
//! same build epoch: its file carries the builtin's marker string. Anything else found there (a
//! user's own `host-local`, the reference one, an older build of ours) is exec'd as always, so
//! the binary in CNI_PATH stays the one whose behaviour the user gets. Saving the exec, the pipes
//! and the wait cuts about a millisecond from every ADD and DEL. The in-process call goes through
//! the same skeleton ([`crate::skel::run_named`]) with the environment the child would have had,
//! so its validation, result and error JSON are byte for byte those of the exec'd binary.
//!
//! Recognising the binary reads it once and searches the marker; the verdict is cached in
//! `/run/rcni/builtin-<name>` keyed by device, inode, size, mtime and ctime, so any
//! replacement of the file (cp, install, package upgrade, even an in-place write) is
//! re-examined, and a later call costs one `statx` and one small read.

use std::path::Path;

use crate::error::{codes, CniError};
// Re-exported: the exec machinery is shared with the runtime side and lives in `exec`.
use crate::exec::CNI_VARS;
pub use crate::exec::{exec_plugin, find_plugin};
use crate::result::CniResult;
use crate::skel::{CmdArgs, Plugin};

/// A plugin linked into this binary that may replace the exec of the CNI_PATH binary of the
/// same name when that binary is ours (see the module docs).
pub struct Builtin {
    /// CNI type name (`host-local`).
    pub name: &'static str,
    /// The plugin.
    pub plugin: &'static (dyn Plugin + Sync),
    /// A string that only binaries of this plugin and build epoch contain.
    pub marker: &'static str,
}

static BUILTINS: std::sync::OnceLock<Vec<Builtin>> = std::sync::OnceLock::new();

/// Register the plugins linked into this binary; call once, before [`crate::skel::run`].
pub fn register_builtin(builtins: Vec<Builtin>) {
    let _ = BUILTINS.set(builtins);
}

/// Directory of the cached "this file is ours" verdicts (tmpfs: gone at reboot).
const VERDICT_DIR: &str = "/run/rcni";

/// Identity of a file's current content as the kernel sees it, for the verdict cache.
fn file_identity(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(format!(
        "{} {} {} {}.{} {}.{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ))
}

/// Whether `haystack` contains `needle`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, _)) = needle.split_first() else {
        return true;
    };
    let mut from = 0;
    while let Some(pos) = haystack[from..].iter().position(|&b| b == first) {
        let at = from + pos;
        if haystack[at..].starts_with(needle) {
            return true;
        }
        from = at + 1;
    }
    false
}

/// Is the binary at `bin` ours, carrying `b.marker`? Cached per file identity.
fn is_builtin_binary(bin: &Path, b: &Builtin) -> bool {
    let Some(identity) = file_identity(bin) else {
        return false;
    };
    let cache = Path::new(VERDICT_DIR).join(format!("builtin-{}", b.name));
    let key = format!("{} {}\n{}\n", bin.display(), identity, b.marker);
    if std::fs::read_to_string(&cache).is_ok_and(|c| c == key) {
        return true;
    }
    // Plugin binaries are a few MB; anything much larger is not one of ours.
    let Ok(data) = std::fs::read(bin) else {
        return false;
    };
    if data.len() > 64 << 20 || !contains(&data, b.marker.as_bytes()) {
        return false;
    }
    // The file may have changed while we read it: cache only an identity seen before and after.
    if file_identity(bin).as_deref() == Some(identity.as_str()) {
        let tmp =
            Path::new(VERDICT_DIR).join(format!(".builtin-{}.{}", b.name, std::process::id()));
        let saved = std::fs::create_dir_all(VERDICT_DIR)
            .and_then(|()| std::fs::write(&tmp, &key))
            .and_then(|()| std::fs::rename(&tmp, &cache));
        if saved.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    true
}

/// Run a builtin in this process with the environment `env` (the CNI_* variables a child
/// would get; other variables come from this process, as a child would inherit them).
fn run_builtin(
    b: &Builtin,
    command: &str,
    stdin: &[u8],
    env: &[(String, String)],
) -> Result<Vec<u8>, CniError> {
    let get = |k: &str| -> Option<String> {
        if k == "CNI_COMMAND" {
            return Some(command.to_string());
        }
        if let Some((_, v)) = env.iter().find(|(name, _)| name == k) {
            return Some(v.clone());
        }
        if CNI_VARS.contains(&k) {
            return None;
        }
        std::env::var(k).ok()
    };
    let mut out = Vec::new();
    let mut input = stdin;
    let rc = crate::skel::run_named(
        b.plugin,
        "",
        b.name,
        &get,
        &mut input,
        &mut out,
        &mut std::io::stderr(),
    );
    if rc == 0 {
        return Ok(out);
    }
    Err(CniError::from_json(&out).unwrap_or_else(|| {
        CniError::internal(format!(
            "built-in {} failed without an error: {:?}",
            b.name,
            String::from_utf8_lossy(&out)
        ))
    }))
}

/// The CNI_* environment of `args`, as a delegate should see it.
pub fn env_of(args: &CmdArgs) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if !args.container_id.is_empty() {
        env.push(("CNI_CONTAINERID".to_string(), args.container_id.clone()));
    }
    if let Some(ns) = &args.netns {
        env.push(("CNI_NETNS".to_string(), ns.display().to_string()));
    }
    if !args.ifname.is_empty() {
        env.push(("CNI_IFNAME".to_string(), args.ifname.clone()));
    }
    if !args.args.pairs.is_empty() {
        env.push(("CNI_ARGS".to_string(), args.args.to_env()));
    }
    let path: Vec<String> = args.path.iter().map(|p| p.display().to_string()).collect();
    env.push(("CNI_PATH".to_string(), path.join(":")));
    env
}

fn delegate(
    plugin_type: &str,
    command: &str,
    stdin: &[u8],
    args: &CmdArgs,
) -> Result<Vec<u8>, CniError> {
    let bin = find_plugin(plugin_type, &args.path)?;
    let builtin = BUILTINS
        .get()
        .and_then(|list| list.iter().find(|b| b.name == plugin_type));
    if let Some(b) = builtin {
        if is_builtin_binary(&bin, b) {
            return run_builtin(b, command, stdin, &env_of(args));
        }
    }
    exec_plugin(&bin, command, stdin, &env_of(args))
}

/// Delegate ADD (same environment, the given stdin) and parse the result in the config version.
pub fn delegate_add(
    plugin_type: &str,
    stdin: &[u8],
    args: &CmdArgs,
) -> Result<CniResult, CniError> {
    let out = delegate(plugin_type, "ADD", stdin, args)?;
    let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| {
        CniError::new(
            codes::DECODE,
            format!("failed to parse result of delegated plugin {plugin_type:?}: {e}"),
        )
    })?;
    CniResult::from_value(&v, args.version.as_str())
}

/// Delegate DEL.
pub fn delegate_del(plugin_type: &str, stdin: &[u8], args: &CmdArgs) -> Result<(), CniError> {
    delegate(plugin_type, "DEL", stdin, args).map(|_| ())
}

/// Delegate CHECK.
pub fn delegate_check(plugin_type: &str, stdin: &[u8], args: &CmdArgs) -> Result<(), CniError> {
    delegate(plugin_type, "CHECK", stdin, args).map(|_| ())
}

/// Delegate STATUS.
pub fn delegate_status(plugin_type: &str, stdin: &[u8], args: &CmdArgs) -> Result<(), CniError> {
    delegate(plugin_type, "STATUS", stdin, args).map(|_| ())
}

/// Delegate GC.
pub fn delegate_gc(plugin_type: &str, stdin: &[u8], args: &CmdArgs) -> Result<(), CniError> {
    delegate(plugin_type, "GC", stdin, args).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::CniArgs;
    use crate::config::NetConf;
    use crate::skel::Command;
    use crate::version::Version;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn delegate_uses_our_env_and_stdin() {
        let dir = std::env::temp_dir().join(format!("cni-deleg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log");
        script(
            &dir,
            "ipam",
            &format!(
                "cat > {l}.stdin\necho \"$CNI_COMMAND|$CNI_CONTAINERID|$CNI_NETNS|$CNI_IFNAME|$CNI_ARGS|$CNI_PATH\" > {l}\n\
                 [ \"$CNI_COMMAND\" = ADD ] && echo '{{\"ips\":[{{\"address\":\"10.1.0.7/16\",\"gateway\":\"10.1.0.1\"}}]}}'\nexit 0\n",
                l = log.display()
            ),
        );
        script(&dir, "noexec-not", "exit 0\n");
        std::fs::set_permissions(
            dir.join("noexec-not"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let stdin = br#"{"cniVersion":"1.0.0","name":"n","type":"bridge","ipam":{"type":"ipam"}}"#;
        let args = CmdArgs {
            command: Command::Add,
            container_id: "c1".into(),
            netns: Some("/run/netns/x".into()),
            ifname: "eth0".into(),
            args: CniArgs::parse("IgnoreUnknown=1").unwrap(),
            path: vec![dir.join("missing"), dir.clone()],
            stdin: stdin.to_vec(),
            conf: NetConf::parse(stdin).unwrap(),
            version: Version::V1_0_0,
        };
        let r = delegate_add("ipam", stdin, &args).unwrap();
        assert_eq!(r.cni_version, "1.0.0");
        assert_eq!(r.ips[0].address.to_string(), "10.1.0.7/16");
        assert_eq!(
            std::fs::read_to_string(&log).unwrap().trim(),
            format!(
                "ADD|c1|/run/netns/x|eth0|IgnoreUnknown=1|{}:{}",
                dir.join("missing").display(),
                dir.display()
            )
        );
        assert_eq!(
            std::fs::read(format!("{}.stdin", log.display())).unwrap(),
            stdin
        );
        delegate_del("ipam", stdin, &args).unwrap();
        assert!(std::fs::read_to_string(&log).unwrap().starts_with("DEL|"));

        let e = find_plugin("noexec-not", &args.path).unwrap_err();
        assert!(e
            .msg
            .starts_with("failed to find plugin \"noexec-not\" in path ["));
        assert!(find_plugin("../ipam", &args.path).is_err());
        script(
            &dir,
            "fails",
            "echo '{\"code\":7,\"msg\":\"bad subnet\"}'; exit 1\n",
        );
        let e = delegate_add("fails", stdin, &args).unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (7, "bad subnet"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn marker_search_finds_needles_anywhere() {
        assert!(contains(
            b"xxrcni-builtin host-localyy",
            b"rcni-builtin host-local"
        ));
        assert!(contains(b"rrrcni", b"rcni"));
        assert!(!contains(b"rcn", b"rcni"));
        assert!(!contains(b"", b"r"));
        assert!(contains(b"abc", b""));
    }
}
