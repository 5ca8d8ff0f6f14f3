//! The plugin skeleton: environment and stdin validation, version negotiation, verb dispatch,
//! VERSION, error printing.
//!
//! Order of checks (all before the handler runs, so a rejected call has no side effect):
//! verb → required env vars → containerID/ifname → CNI_ARGS syntax → stdin (code 5) → JSON (6)
//! → network name (7) → version (1) → verb allowed by version (1) → CNI_ARGS keys → netns guard (8).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::de::DeserializeOwned;

use crate::args::CniArgs;
// Re-exported: plugins name it `cni::skel::Attachment` (GC's valid-attachments).
pub use crate::attachment::Attachment;
use crate::config::{validate_ifname, validate_name, NetConf, PortMapping};
use crate::error::{codes, CniError};
use crate::gojson;
use crate::result::CniResult;
use crate::version::{negotiate, Version, CURRENT, SUPPORTED_VERSIONS};

/// A CNI verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// ADD.
    Add,
    /// DEL.
    Del,
    /// CHECK (≥0.4.0).
    Check,
    /// GC (≥1.1.0).
    Gc,
    /// STATUS (≥1.1.0).
    Status,
    /// VERSION.
    Version,
}

impl Command {
    /// Parse `CNI_COMMAND` (exact, upper case as the spec spells it).
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    /// The spelling used in `CNI_COMMAND`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }

    /// Verbs that act on one attachment (container ID + ifname).
    pub fn is_attachment(&self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

/// Everything a handler gets.
#[derive(Debug, Clone)]
pub struct CmdArgs {
    /// The verb.
    pub command: Command,
    /// CNI_CONTAINERID (empty for GC/STATUS).
    pub container_id: String,
    /// CNI_NETNS, `None` if unset or empty.
    pub netns: Option<PathBuf>,
    /// CNI_IFNAME (empty for GC/STATUS).
    pub ifname: String,
    /// CNI_ARGS.
    pub args: CniArgs,
    /// CNI_PATH split on `:`.
    pub path: Vec<PathBuf>,
    /// The raw stdin bytes (the whole config, passed verbatim to delegates).
    pub stdin: Vec<u8>,
    /// The parsed config.
    pub conf: NetConf,
    /// The negotiated config version; results are printed in it.
    pub version: Version,
}

impl CmdArgs {
    /// The arguments of one call, built directly instead of from the environment (unit tests
    /// of plugin logic, in-process callers): `stdin` is the config, whose own version is used.
    /// Nothing is validated beyond decoding the config and its version; no CNI_ARGS, no
    /// CNI_PATH.
    pub fn new(
        command: Command,
        container_id: &str,
        netns: Option<&Path>,
        ifname: &str,
        stdin: Vec<u8>,
    ) -> Result<CmdArgs, CniError> {
        let conf = NetConf::parse(&stdin)?;
        let version = negotiate(
            conf.cni_version.as_deref(),
            &conf.cni_versions,
            &SUPPORTED_VERSIONS,
        )?;
        Ok(CmdArgs {
            command,
            container_id: container_id.to_string(),
            netns: netns.map(Path::to_path_buf),
            ifname: ifname.to_string(),
            args: CniArgs::default(),
            path: Vec::new(),
            stdin,
            conf,
            version,
        })
    }

    /// Decode stdin into the plugin's own config type, Go-style (case-insensitive keys).
    /// Syntax errors are code 6, type errors (wrong type, missing field) code 7.
    pub fn plugin_conf<T: DeserializeOwned>(&self) -> Result<T, CniError> {
        let v: serde_json::Value = serde_json::from_slice(&self.stdin).map_err(|e| {
            CniError::new(
                codes::DECODE,
                format!("failed to parse network configuration: {e}"),
            )
        })?;
        gojson::from_value(v).map_err(|e| {
            CniError::new(
                codes::INVALID_CONFIG,
                format!("invalid network configuration: {e}"),
            )
        })
    }

    /// The parsed `prevResult`, with the version-family rule applied (a prevResult must come from the config's family).
    pub fn prev_result(&self) -> Result<Option<CniResult>, CniError> {
        match &self.conf.prev_result {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => CniResult::from_value(v, self.version.as_str()).map(Some),
        }
    }

    /// GC: the attachments still in use (`cni.dev/valid-attachments`, falling back to the legacy
    /// `cni.dev/attachments`). A missing list is an error rather than "nothing is valid", so a
    /// broken runtime cannot make a plugin wipe every attachment; `null` means an empty list.
    pub fn valid_attachments(&self) -> Result<Vec<Attachment>, CniError> {
        let raw = &self.conf.raw;
        let v = raw
            .get("cni.dev/valid-attachments")
            .or_else(|| raw.get("cni.dev/attachments"))
            .ok_or_else(|| {
                CniError::new(
                    codes::INVALID_CONFIG,
                    "GC without cni.dev/valid-attachments",
                )
            })?;
        if v.is_null() {
            return Ok(Vec::new());
        }
        gojson::from_value(v.clone()).map_err(|e| {
            CniError::new(
                codes::INVALID_CONFIG,
                format!("invalid cni.dev/valid-attachments: {e}"),
            )
        })
    }

    /// `runtimeConfig.portMappings` (empty when absent), accepting containerd's Go field names.
    pub fn port_mappings(&self) -> Result<Vec<PortMapping>, CniError> {
        let Some(rc) = self
            .conf
            .runtime_config
            .as_ref()
            .and_then(|v| v.as_object())
        else {
            return Ok(Vec::new());
        };
        let pm = rc.get("portMappings").or_else(|| {
            rc.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("portMappings"))
                .map(|(_, v)| v)
        });
        match pm {
            None | Some(serde_json::Value::Null) => Ok(Vec::new()),
            Some(v) => PortMapping::list_from_value(v.clone()),
        }
    }
}

/// What the skeleton does about a CNI_NETNS that is the plugin's own namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetnsPolicy {
    /// Reject it (code 8) before the handler runs, unless CNI_NETNS_OVERRIDE is 1/true. For
    /// ADD/CHECK the path must also exist and be a namespace file.
    #[default]
    RejectOwn,
    /// The plugin checks CNI_NETNS itself (the `host` plugin).
    AllowAny,
    /// The plugin never enters CNI_NETNS (IPAM, and meta plugins that only program the host:
    /// `portmap`, `firewall`), so any value is accepted, as the reference does: VM runtimes,
    /// IP-reservation tools and delegating meta-plugins pass paths that are not namespaces, and
    /// only a plugin that enters the namespace has a reason to validate it.
    NotEntered,
}

/// A CNI plugin.
pub trait Plugin {
    /// CNI_ARGS keys this plugin understands (IgnoreUnknown is always allowed).
    fn known_args(&self) -> &'static [&'static str] {
        &[]
    }
    /// Whether the plugin reads CNI_ARGS. Those that do reject unknown keys unless
    /// `IgnoreUnknown` is set (the reference's `LoadArgs`); those that do not (portmap,
    /// firewall, loopback in the reference) accept any CNI_ARGS, even malformed.
    fn reads_cni_args(&self) -> bool {
        true
    }
    /// Netns guard policy.
    fn netns_policy(&self) -> NetnsPolicy {
        NetnsPolicy::RejectOwn
    }
    /// Spec versions this plugin accepts.
    fn supported_versions(&self) -> &'static [&'static str] {
        &SUPPORTED_VERSIONS
    }
    /// ADD; the skeleton prints the result in the config's version.
    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError>;
    /// DEL.
    fn del(&self, args: &CmdArgs) -> Result<(), CniError>;
    /// CHECK.
    fn check(&self, args: &CmdArgs) -> Result<(), CniError>;
    /// GC (default: nothing to collect).
    fn gc(&self, _args: &CmdArgs) -> Result<(), CniError> {
        Ok(())
    }
    /// STATUS (default: ready).
    fn status(&self, _args: &CmdArgs) -> Result<(), CniError> {
        Ok(())
    }
}

/// The version a panic report is printed with (set once the config version is known).
static PANIC_VERSION: OnceLock<&'static str> = OnceLock::new();

/// Real process entry point: runs the plugin against the process environment, stdin and stdout
/// and exits 0 or 1.
///
/// A panic hook prints a CNI error (code 999) on stdout and exits 1; the release profile aborts
/// on panic, and the hook runs before the abort, so the runtime always gets a CNI error.
pub fn run(plugin: &dyn Plugin, about: &str) -> ! {
    std::panic::set_hook(Box::new(|info| {
        let ver = PANIC_VERSION.get().copied().unwrap_or(CURRENT);
        let e = CniError::internal("plugin panicked").with_details(info.to_string());
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", e.to_json(ver));
        let _ = out.flush();
        let _ = writeln!(std::io::stderr(), "panic: {info}");
        std::process::exit(1);
    }));
    let env = |k: &str| std::env::var(k).ok();
    // VERSION reads stdin only to echo the requested version; never block on a terminal.
    // SAFETY: isatty only inspects file descriptor 0.
    let tty = unsafe { libc::isatty(0) } == 1;
    let mut stdin: Box<dyn Read> =
        if tty && std::env::var("CNI_COMMAND").as_deref() == Ok("VERSION") {
            Box::new(std::io::empty())
        } else {
            Box::new(std::io::stdin().lock())
        };
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    let rc = run_with(plugin, about, &env, &mut stdin, &mut stdout, &mut stderr);
    let _ = stdout.flush();
    std::process::exit(rc)
}

fn print_error(stdout: &mut dyn Write, e: &CniError, version: &str) -> i32 {
    let _ = writeln!(stdout, "{}", e.to_json(version));
    let _ = stdout.flush();
    1
}

/// The testable core of [`run`]: returns the exit code.
pub fn run_with(
    plugin: &dyn Plugin,
    about: &str,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    let argv0 = std::env::args().next().unwrap_or_default();
    let name = Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or(argv0);
    run_named(plugin, about, &name, env, stdin, stdout, stderr)
}

/// [`run_with`] for a plugin known by `name` (its trace label) rather than by argv\[0\]: a
/// plugin linked into another one and run in its process (see [`crate::delegate`]).
pub fn run_named(
    plugin: &dyn Plugin,
    about: &str,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    let Some(cmd_s) = get("CNI_COMMAND") else {
        // Go convention: about text and versions on stderr, success.
        let _ = writeln!(
            stderr,
            "{about}\nCNI protocol versions supported: {}",
            plugin.supported_versions().join(", ")
        );
        return 0;
    };
    let Some(cmd) = Command::parse(&cmd_s) else {
        let e = CniError::new(codes::INVALID_ENV, format!("unknown CNI_COMMAND: {cmd_s}"));
        return print_error(stdout, &e, CURRENT);
    };
    if cmd == Command::Version {
        return print_version(plugin, stdin, stdout);
    }
    let tracing = crate::trace::requested(&get);
    if tracing {
        crate::trace::start(name, &cmd_s);
    }
    let rc = dispatch(plugin, cmd, &get, stdin, stdout);
    if tracing {
        if let Some(line) = crate::trace::finish() {
            let _ = writeln!(stderr, "{line}");
        }
    }
    rc
}

fn dispatch(
    plugin: &dyn Plugin,
    cmd: Command,
    get: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
) -> i32 {
    let prepared = prepare(plugin, cmd, get, stdin);
    crate::trace::phase("parse");
    match prepared {
        Err((e, ver)) => print_error(stdout, &e, ver),
        Ok(args) => {
            let ver = args.version.as_str();
            let _ = PANIC_VERSION.set(ver);
            let res = match cmd {
                Command::Add => plugin.add(&args).and_then(|r| r.print(ver, stdout)),
                Command::Del => plugin.del(&args),
                Command::Check => plugin.check(&args),
                Command::Gc => plugin.gc(&args),
                Command::Status => plugin.status(&args),
                Command::Version => Ok(()),
            };
            match res {
                Ok(()) => 0,
                Err(e) => print_error(stdout, &e, ver),
            }
        }
    }
}

fn print_version(plugin: &dyn Plugin, stdin: &mut dyn Read, stdout: &mut dyn Write) -> i32 {
    // The spec says echo the input cniVersion; stdin is read best-effort and never validated,
    // so garbage still yields a normal answer.
    let mut buf = Vec::new();
    let _ = stdin.take(1 << 20).read_to_end(&mut buf);
    let supported = plugin.supported_versions();
    let requested = serde_json::from_slice::<serde_json::Value>(&buf)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(|s| s.as_str())
                .map(str::to_string)
        })
        .filter(|v| supported.contains(&v.as_str()));
    let v = serde_json::json!({
        "cniVersion": requested.as_deref().unwrap_or(CURRENT),
        "supportedVersions": supported,
    });
    let _ = writeln!(stdout, "{v}");
    let _ = stdout.flush();
    0
}

type Failure = (CniError, &'static str);

fn prepare(
    plugin: &dyn Plugin,
    cmd: Command,
    get: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
) -> Result<CmdArgs, Failure> {
    let early = |e: CniError| (e, CURRENT);
    let required: &[&str] = match cmd {
        Command::Add | Command::Check => {
            &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]
        }
        Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
        Command::Gc | Command::Status | Command::Version => &["CNI_PATH"],
    };
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|k| get(k).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(early(CniError::new(
            codes::INVALID_ENV,
            format!("required env variables [{}] missing", missing.join(",")),
        )));
    }
    let (container_id, ifname) = if cmd.is_attachment() {
        let cid = get("CNI_CONTAINERID").unwrap_or_default();
        validate_name("containerID", &cid).map_err(early)?;
        let ifname = get("CNI_IFNAME").unwrap_or_default();
        validate_ifname(&ifname).map_err(early)?;
        (cid, ifname)
    } else {
        (String::new(), String::new())
    };
    let raw_args = get("CNI_ARGS").unwrap_or_default();
    // A plugin that never reads CNI_ARGS ignores it entirely, bad pairs included, as the
    // reference's portmap, firewall and loopback do (none of them delegates).
    let args = match CniArgs::parse(&raw_args) {
        Ok(a) => a,
        Err(_) if !plugin.reads_cni_args() => CniArgs::default(),
        Err(e) => return Err(early(e)),
    };
    let path: Vec<PathBuf> = get("CNI_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    let netns = get("CNI_NETNS").map(PathBuf::from);

    let mut buf = Vec::new();
    stdin.read_to_end(&mut buf).map_err(|e| {
        early(CniError::new(
            codes::IO_FAILURE,
            format!("error reading from stdin: {e}"),
        ))
    })?;
    let conf = NetConf::parse(&buf).map_err(early)?;
    if conf.name.is_empty() {
        return Err(early(CniError::new(
            codes::INVALID_CONFIG,
            "missing network name",
        )));
    }
    validate_name("network name", &conf.name).map_err(early)?;
    let version = negotiate(
        conf.cni_version.as_deref(),
        &conf.cni_versions,
        plugin.supported_versions(),
    )
    .map_err(early)?;
    let vs = version.as_str();
    let verb_err = |v: &str| {
        (
            CniError::new(
                codes::INCOMPATIBLE_VERSION,
                format!("config version does not allow {v}"),
            ),
            vs,
        )
    };
    match cmd {
        Command::Check if !version.supports_check() => return Err(verb_err("CHECK")),
        Command::Gc if !version.supports_gc_status() => return Err(verb_err("GC")),
        Command::Status if !version.supports_gc_status() => return Err(verb_err("STATUS")),
        _ => {}
    }
    if cmd.is_attachment() {
        if plugin.reads_cni_args() {
            args.check_known(plugin.known_args()).map_err(|e| (e, vs))?;
        }
        if plugin.netns_policy() == NetnsPolicy::RejectOwn {
            let override_ = get("CNI_NETNS_OVERRIDE")
                .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
            if let Some(ns) = &netns {
                check_netns(cmd, ns, override_).map_err(|e| (e, vs))?;
            }
        }
    }
    Ok(CmdArgs {
        command: cmd,
        container_id,
        netns,
        ifname,
        args,
        path,
        stdin: buf,
        conf,
        version,
    })
}

const NSFS_MAGIC: i64 = 0x6e73_6673;
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// The filesystem magic of `path` (statfs), to tell namespace files from ordinary ones.
fn fs_magic(path: &Path) -> Result<i64, std::io::Error> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: zeroed statfs is a valid out-parameter for statfs(2).
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statfs.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64)
}

/// The namespace of the calling thread (tests run plugins on threads that unshared).
fn own_netns() -> Option<std::fs::Metadata> {
    std::fs::metadata("/proc/thread-self/ns/net")
        .or_else(|_| std::fs::metadata("/proc/self/ns/net"))
        .ok()
}

/// Validate CNI_NETNS before the handler runs.
///
/// ADD/CHECK: the path must exist and be a namespace file (nsfs, or proc for `/proc/<pid>/ns/net`
/// on old kernels) — code 8. All verbs: refuse the plugin's own namespace (code 8) unless
/// overridden; HEAD's Go skel does this only after the handler ran. DEL tolerates a
/// missing or odd path: it must succeed when the netns is gone.
fn check_netns(cmd: Command, ns: &Path, override_: bool) -> Result<(), CniError> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::metadata(ns) {
        Ok(m) => m,
        Err(e) if cmd == Command::Del => {
            let _ = e;
            return Ok(());
        }
        Err(e) => {
            return Err(CniError::new(
                codes::INVALID_NETNS,
                format!("failed to open netns {:?}: {e}", ns.display().to_string()),
            ))
        }
    };
    if cmd != Command::Del {
        match fs_magic(ns) {
            Ok(m) if m == NSFS_MAGIC || m == PROC_SUPER_MAGIC => {}
            Ok(m) => {
                return Err(CniError::new(
                    codes::INVALID_NETNS,
                    format!("unknown FS magic on {:?}: {m:x}", ns.display().to_string()),
                ))
            }
            Err(e) => {
                return Err(CniError::new(
                    codes::INVALID_NETNS,
                    format!("failed to stat netns {:?}: {e}", ns.display().to_string()),
                ))
            }
        }
    }
    if override_ {
        return Ok(());
    }
    if let Some(own) = own_netns() {
        if own.dev() == meta.dev() && own.ino() == meta.ino() {
            return Err(CniError::new(
                codes::INVALID_NETNS,
                format!(
                    "CNI_NETNS {:?} is the plugin's own network namespace",
                    ns.display().to_string()
                ),
            )
            .with_details("set CNI_NETNS_OVERRIDE=1 to allow it"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{Interface, IpConfig};
    use serde::Deserialize;
    use serde_json::{json, Value};
    use std::cell::RefCell;
    use std::collections::HashMap;

    #[derive(Default)]
    struct TestPlugin {
        calls: RefCell<Vec<(Command, Option<String>)>>,
        versions: Option<&'static [&'static str]>,
        policy: NetnsPolicy,
    }

    impl TestPlugin {
        fn record(&self, a: &CmdArgs) {
            let prev = a.prev_result().map(|p| p.map(|r| r.cni_version));
            self.calls.borrow_mut().push((
                a.command,
                prev.unwrap_or_else(|e| Some(format!("ERR {}", e.msg))),
            ));
        }
    }

    impl Plugin for TestPlugin {
        fn known_args(&self) -> &'static [&'static str] {
            &["IP"]
        }
        fn netns_policy(&self) -> NetnsPolicy {
            self.policy
        }
        fn supported_versions(&self) -> &'static [&'static str] {
            self.versions.unwrap_or(&SUPPORTED_VERSIONS)
        }
        fn add(&self, a: &CmdArgs) -> Result<CniResult, CniError> {
            self.record(a);
            Ok(CniResult {
                cni_version: a.version.as_str().into(),
                interfaces: vec![Interface {
                    name: a.ifname.clone(),
                    sandbox: a
                        .netns
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    ..Default::default()
                }],
                ips: vec![IpConfig {
                    interface: Some(0),
                    address: "10.1.0.5/16".parse().unwrap(),
                    gateway: Some("10.1.0.1".parse().unwrap()),
                }],
                ..Default::default()
            })
        }
        fn del(&self, a: &CmdArgs) -> Result<(), CniError> {
            self.record(a);
            Ok(())
        }
        fn check(&self, a: &CmdArgs) -> Result<(), CniError> {
            self.record(a);
            match a.prev_result()? {
                None => Err(CniError::internal("Required prevResult missing")),
                Some(_) => Ok(()),
            }
        }
        fn gc(&self, a: &CmdArgs) -> Result<(), CniError> {
            self.record(a);
            a.valid_attachments().map(|_| ())
        }
    }

    struct Out {
        rc: i32,
        stdout: String,
        stderr: String,
    }

    impl Out {
        fn json(&self) -> Value {
            serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", self.stdout))
        }
        fn code(&self) -> u64 {
            assert_eq!(self.rc, 1, "stdout: {}", self.stdout);
            self.json()["code"].as_u64().unwrap()
        }
    }

    fn own_ns() -> String {
        "/proc/thread-self/ns/net".to_string()
    }

    fn base_env(cmd: &str) -> HashMap<String, String> {
        let mut e = HashMap::new();
        e.insert("CNI_COMMAND".into(), cmd.into());
        e.insert("CNI_CONTAINERID".into(), "ctr1".into());
        e.insert("CNI_NETNS".into(), own_ns());
        e.insert("CNI_NETNS_OVERRIDE".into(), "1".into());
        e.insert("CNI_IFNAME".into(), "eth0".into());
        e.insert("CNI_PATH".into(), "/opt/cni/bin".into());
        e
    }

    fn call(p: &TestPlugin, env: &HashMap<String, String>, stdin: &[u8]) -> Out {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let getter = |k: &str| env.get(k).cloned();
        let rc = run_with(
            p,
            "test plugin v0",
            &getter,
            &mut &stdin[..],
            &mut o,
            &mut e,
        );
        Out {
            rc,
            stdout: String::from_utf8(o).unwrap(),
            stderr: String::from_utf8(e).unwrap(),
        }
    }

    const CONF: &[u8] = br#"{"cniVersion":"1.0.0","name":"net1","type":"test"}"#;

    fn conf(ver: &str) -> Vec<u8> {
        format!(r#"{{"cniVersion":"{ver}","name":"net1","type":"test"}}"#).into_bytes()
    }

    #[test]
    fn cmd_args_new_takes_the_configs_version() {
        let stdin = br#"{"cniVersion":"0.4.0","name":"n","type":"bridge"}"#.to_vec();
        let a = CmdArgs::new(Command::Del, "c1", None, "eth0", stdin).unwrap();
        assert_eq!(a.version.as_str(), "0.4.0");
        assert_eq!((a.container_id.as_str(), a.ifname.as_str()), ("c1", "eth0"));
        assert_eq!(a.conf.name, "n");
        assert!(a.netns.is_none() && a.path.is_empty() && a.args.pairs.is_empty());
        assert_eq!(
            CmdArgs::new(Command::Add, "c1", None, "eth0", b"{".to_vec())
                .unwrap_err()
                .code,
            codes::DECODE
        );
    }

    #[test]
    fn version_ignores_garbage_stdin() {
        let p = TestPlugin::default();
        let env = HashMap::from([("CNI_COMMAND".to_string(), "VERSION".to_string())]);
        let o = call(&p, &env, b"\x00garbage{");
        assert_eq!(o.rc, 0);
        let v = o.json();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["supportedVersions"], json!(SUPPORTED_VERSIONS));
        let o = call(&p, &env, br#"{"cniVersion":"0.4.0"}"#);
        assert_eq!(o.json()["cniVersion"], "0.4.0");
        let o = call(&p, &env, br#"{"cniVersion":"9.9.9"}"#);
        assert_eq!(o.json()["cniVersion"], "1.1.0");
        assert!(p.calls.borrow().is_empty());
    }

    #[test]
    fn no_command_prints_about_on_stderr() {
        let p = TestPlugin::default();
        let o = call(&p, &HashMap::new(), b"");
        assert_eq!(o.rc, 0);
        assert!(o.stdout.is_empty());
        assert!(o.stderr.contains("test plugin v0"));
        assert!(o
            .stderr
            .contains("0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"));
    }

    #[test]
    fn unknown_command_is_refused() {
        let p = TestPlugin::default();
        let o = call(&p, &base_env("FOO"), CONF);
        assert_eq!(o.code(), 4);
        assert_eq!(o.json()["msg"], "unknown CNI_COMMAND: FOO");
    }

    #[test]
    fn missing_env_named_together() {
        let p = TestPlugin::default();
        let mut env = base_env("ADD");
        env.remove("CNI_NETNS");
        env.insert("CNI_PATH".into(), String::new());
        let o = call(&p, &env, CONF);
        assert_eq!(o.code(), 4);
        assert_eq!(
            o.json()["msg"],
            "required env variables [CNI_NETNS,CNI_PATH] missing"
        );
        for var in ["CNI_CONTAINERID", "CNI_IFNAME"] {
            let mut env = base_env("ADD");
            env.remove(var);
            let o = call(&p, &env, CONF);
            assert_eq!(o.code(), 4);
            assert!(o.json()["msg"].as_str().unwrap().contains(var));
        }
        let mut env = base_env("GC");
        env.remove("CNI_PATH");
        assert_eq!(call(&p, &env, &conf("1.1.0")).code(), 4);
        assert!(p.calls.borrow().is_empty());
    }

    #[test]
    fn del_without_netns_succeeds() {
        let p = TestPlugin::default();
        let mut env = base_env("DEL");
        env.remove("CNI_NETNS");
        let o = call(&p, &env, CONF);
        assert_eq!(o.rc, 0, "{}", o.stdout);
        assert!(o.stdout.is_empty());
        // A netns path that no longer exists is fine for DEL as well.
        env.insert(
            "CNI_NETNS".into(),
            "/run/netns/does-not-exist-cni-test".into(),
        );
        env.remove("CNI_NETNS_OVERRIDE");
        assert_eq!(call(&p, &env, CONF).rc, 0);
        assert_eq!(p.calls.borrow().len(), 2);
    }

    #[test]
    fn ifname_rules() {
        let p = TestPlugin::default();
        for (bad, msg) in [
            ("1234567890abcdef", Some("interface name is too long")),
            ("a/b", None),
            (".", None),
            ("..", None),
            ("a:b", None),
            ("a b", None),
        ] {
            let mut env = base_env("ADD");
            env.insert("CNI_IFNAME".into(), bad.into());
            let o = call(&p, &env, CONF);
            assert_eq!(o.code(), 4, "{bad}");
            if let Some(m) = msg {
                assert_eq!(o.json()["msg"], m);
            }
        }
        assert!(p.calls.borrow().is_empty());
    }

    #[test]
    fn container_id_rules() {
        let p = TestPlugin::default();
        let mut env = base_env("ADD");
        env.insert("CNI_CONTAINERID".into(), "-bad id".into());
        let o = call(&p, &env, CONF);
        assert_eq!(o.code(), 4);
        assert_eq!(o.json()["msg"], "invalid characters in containerID");
    }

    #[test]
    fn bad_json_and_stdin_errors() {
        let p = TestPlugin::default();
        for cmd in ["ADD", "DEL"] {
            assert_eq!(call(&p, &base_env(cmd), b"").code(), 6);
            assert_eq!(call(&p, &base_env(cmd), b"{\"name\":").code(), 6);
        }
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("boom"))
            }
        }
        let env = base_env("ADD");
        let getter = |k: &str| env.get(k).cloned();
        let mut o = Vec::new();
        let rc = run_with(&p, "", &getter, &mut Failing, &mut o, &mut Vec::new());
        assert_eq!(rc, 1);
        let v: Value = serde_json::from_slice(&o).unwrap();
        assert_eq!(v["code"], 5);
        assert!(p.calls.borrow().is_empty());
    }

    #[test]
    fn network_name_rules() {
        let p = TestPlugin::default();
        let o = call(
            &p,
            &base_env("ADD"),
            br#"{"cniVersion":"1.0.0","type":"t"}"#,
        );
        assert_eq!(o.code(), 7);
        assert_eq!(o.json()["msg"], "missing network name");
        for bad in ["a/b", "a b"] {
            let c = format!(r#"{{"cniVersion":"1.0.0","name":"{bad}","type":"t"}}"#);
            assert_eq!(call(&p, &base_env("ADD"), c.as_bytes()).code(), 7);
        }
    }

    #[test]
    fn unsupported_version_is_refused() {
        let p = TestPlugin::default();
        for cmd in ["ADD", "DEL"] {
            let o = call(&p, &base_env(cmd), &conf("9.9.9"));
            assert_eq!(o.code(), 1);
            let d = o.json()["details"].as_str().unwrap().to_string();
            for v in SUPPORTED_VERSIONS {
                assert!(d.contains(v), "{d}");
            }
        }
        let fw = TestPlugin {
            versions: Some(&["0.4.0", "1.0.0", "1.1.0"]),
            ..Default::default()
        };
        assert_eq!(call(&fw, &base_env("ADD"), &conf("0.3.1")).code(), 1);
        assert!(p.calls.borrow().is_empty());
    }

    #[test]
    fn result_shape_per_version() {
        let p = TestPlugin::default();
        let o = call(&p, &base_env("ADD"), br#"{"name":"net1","type":"t"}"#);
        assert_eq!(o.rc, 0, "{}", o.stdout);
        let v = o.json();
        assert_eq!(v["cniVersion"], "0.1.0");
        assert_eq!(v["ip4"]["ip"], "10.1.0.5/16");
        assert!(v.get("interfaces").is_none());
        let v = call(&p, &base_env("ADD"), &conf("0.2.0")).json();
        assert_eq!(v["ip4"]["gateway"], "10.1.0.1");
        for ver in ["0.3.1", "0.4.0"] {
            let v = call(&p, &base_env("ADD"), &conf(ver)).json();
            assert_eq!(v["cniVersion"], ver);
            assert_eq!(v["ips"][0]["version"], "4");
        }
        for ver in ["1.0.0", "1.1.0"] {
            let v = call(&p, &base_env("ADD"), &conf(ver)).json();
            assert_eq!(v["cniVersion"], ver);
            assert!(v["ips"][0].get("version").is_none());
            assert_eq!(v["interfaces"][0]["name"], "eth0");
        }
        // cniVersions negotiation picks the highest supported.
        let c = br#"{"cniVersion":"0.3.1","cniVersions":["1.0.0","1.1.0","2.0.0"],"name":"n","type":"t"}"#;
        assert_eq!(call(&p, &base_env("ADD"), c).json()["cniVersion"], "1.1.0");
    }

    #[test]
    fn check_gc_status_need_recent_versions() {
        let p = TestPlugin::default();
        let o = call(&p, &base_env("CHECK"), &conf("0.3.1"));
        assert_eq!(o.code(), 1);
        assert_eq!(o.json()["msg"], "config version does not allow CHECK");
        assert_eq!(o.json()["cniVersion"], "0.3.1");
        for cmd in ["GC", "STATUS"] {
            let mut env = HashMap::new();
            env.insert("CNI_COMMAND".to_string(), cmd.to_string());
            env.insert("CNI_PATH".to_string(), "/opt/cni/bin".to_string());
            assert_eq!(call(&p, &env, &conf("1.0.0")).code(), 1, "{cmd}");
            let gc = br#"{"cniVersion":"1.1.0","name":"n","type":"t","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#;
            let o = call(&p, &env, gc);
            assert_eq!(o.rc, 0, "{cmd}: {}", o.stdout);
            assert!(o.stdout.is_empty());
        }
        // CHECK without prevResult is the plugin's business.
        let o = call(&p, &base_env("CHECK"), &conf("1.0.0"));
        assert_eq!(o.code(), 999);
        assert_eq!(o.json()["msg"], "Required prevResult missing");
    }

    #[test]
    fn prev_result_must_match_the_config_version_family() {
        let p = TestPlugin::default();
        let c = br#"{"cniVersion":"1.0.0","name":"n","type":"t",
            "prevResult":{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.0.0.2/24"}]}}"#;
        let o = call(&p, &base_env("CHECK"), c);
        assert_ne!(o.rc, 0);
        assert!(o.json()["msg"]
            .as_str()
            .unwrap()
            .contains("unmarshalled CNIVersion is \"0.4.0\""));
        let c = br#"{"cniVersion":"1.0.0","name":"n","type":"t",
            "prevResult":{"ips":[{"address":"10.0.0.2/24"}]}}"#;
        assert_eq!(call(&p, &base_env("CHECK"), c).rc, 0);
        assert_eq!(p.calls.borrow().last().unwrap().1.as_deref(), Some("1.0.0"));
    }

    #[test]
    fn every_error_is_json_on_stdout() {
        let p = TestPlugin::default();
        let o = call(&p, &base_env("ADD"), b"nope");
        let v = o.json();
        assert!(v["code"].is_u64() && v["msg"].is_string());
        assert_eq!(v["cniVersion"], "1.1.0");
        assert!(o.stderr.is_empty());
    }

    #[test]
    fn cni_args_rules() {
        let p = TestPlugin::default();
        let mut env = base_env("ADD");
        env.insert("CNI_ARGS".into(), "K8S_POD_NAME=x;IP=10.1.0.9".into());
        let o = call(&p, &env, CONF);
        assert_ne!(o.rc, 0);
        assert_eq!(o.json()["msg"], "ARGS: unknown args [\"K8S_POD_NAME=x\"]");
        env.insert(
            "CNI_ARGS".into(),
            "IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.1.0.9".into(),
        );
        assert_eq!(call(&p, &env, CONF).rc, 0);
        env.insert("CNI_ARGS".into(), "badpair".into());
        let o = call(&p, &env, CONF);
        assert_eq!(o.json()["msg"], "ARGS: invalid pair \"badpair\"");
        assert_eq!(p.calls.borrow().len(), 1);
    }

    #[test]
    fn own_netns_refused_before_handler() {
        let p = TestPlugin::default();
        for cmd in ["ADD", "CHECK", "DEL"] {
            let mut env = base_env(cmd);
            env.remove("CNI_NETNS_OVERRIDE");
            let o = call(&p, &env, CONF);
            assert_eq!(o.code(), 8, "{cmd}");
            assert!(o.json()["msg"]
                .as_str()
                .unwrap()
                .contains("plugin's own network namespace"));
            env.insert("CNI_NETNS_OVERRIDE".into(), "0".into());
            assert_eq!(call(&p, &env, CONF).code(), 8);
        }
        assert!(p.calls.borrow().is_empty());
        for ov in ["1", "true", "TRUE"] {
            let mut env = base_env("ADD");
            env.insert("CNI_NETNS_OVERRIDE".into(), ov.into());
            assert_eq!(call(&p, &env, CONF).rc, 0, "{ov}");
        }
        // AllowAny leaves the decision to the plugin.
        let host = TestPlugin {
            policy: NetnsPolicy::AllowAny,
            ..Default::default()
        };
        let mut env = base_env("ADD");
        env.remove("CNI_NETNS_OVERRIDE");
        assert_eq!(call(&host, &env, CONF).rc, 0);
    }

    #[test]
    fn netns_must_exist_and_be_a_namespace() {
        let p = TestPlugin::default();
        let mut env = base_env("ADD");
        env.insert(
            "CNI_NETNS".into(),
            "/run/netns/does-not-exist-cni-test".into(),
        );
        assert_eq!(call(&p, &env, CONF).code(), 8);
        let dir = std::env::temp_dir().join(format!("cni-skel-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("notns");
        std::fs::write(&f, b"").unwrap();
        env.insert("CNI_NETNS".into(), f.display().to_string());
        let o = call(&p, &env, CONF);
        assert_eq!(o.code(), 8);
        assert!(o.json()["msg"]
            .as_str()
            .unwrap()
            .contains("unknown FS magic"));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(p.calls.borrow().is_empty());
    }

    #[test]
    fn cmd_args_helpers() {
        let stdin = br#"{"cniVersion":"1.1.0","name":"n","type":"t","Bridge":"cni0",
            "runtimeConfig":{"portMappings":[{"HostPort":18081,"ContainerPort":80,"Protocol":"tcp","HostIP":""}]},
            "cni.dev/attachments":[{"containerID":"a","ifname":"eth0"}]}"#;
        let a = CmdArgs {
            command: Command::Add,
            container_id: "c".into(),
            netns: None,
            ifname: "eth0".into(),
            args: CniArgs::default(),
            path: vec![],
            stdin: stdin.to_vec(),
            conf: NetConf::parse(stdin).unwrap(),
            version: Version::V1_1_0,
        };
        let pm = a.port_mappings().unwrap();
        assert_eq!((pm[0].host_port, pm[0].container_port), (18081, 80));
        assert_eq!(
            a.valid_attachments().unwrap(),
            vec![Attachment {
                container_id: "a".into(),
                ifname: "eth0".into()
            }]
        );
        #[derive(Deserialize)]
        struct Mine {
            bridge: String,
            #[serde(default)]
            mtu: u32,
        }
        let m: Mine = a.plugin_conf().unwrap();
        assert_eq!((m.bridge.as_str(), m.mtu), ("cni0", 0));
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Strict {
            needed: String,
        }
        assert_eq!(a.plugin_conf::<Strict>().unwrap_err().code, 7);
        assert!(a.prev_result().unwrap().is_none());
    }
}
