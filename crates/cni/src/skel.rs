//! The plugin skeleton: environment and stdin validation, version negotiation, verb dispatch,
//! VERSION, error printing (reference §1.2, §1.3, scenarios 1–18).
//!
//! Order of checks (all before the handler runs, so a rejected call has no side effect):
//! verb → required env vars → containerID/ifname → CNI_ARGS syntax → stdin (code 5) → JSON (6)
//! → network name (7) → version (1) → verb allowed by version (1) → CNI_ARGS keys → netns guard (8).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::args::CniArgs;
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

/// One attachment in a GC request (`cni.dev/valid-attachments`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    /// Container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name.
    #[serde(rename = "ifname")]
    pub ifname: String,
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

    /// The parsed `prevResult`, with the version-family rule of §1.7 applied.
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
}

/// A CNI plugin.
pub trait Plugin {
    /// CNI_ARGS keys this plugin understands (IgnoreUnknown is always allowed).
    fn known_args(&self) -> &'static [&'static str] {
        &[]
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
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    let Some(cmd_s) = get("CNI_COMMAND") else {
        // Go convention: about text and versions on stderr, success (scenario 2).
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
    match prepare(plugin, cmd, &get, stdin) {
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
    // so garbage still yields a normal answer (scenario 1).
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
    let args = CniArgs::parse(&get("CNI_ARGS").unwrap_or_default()).map_err(early)?;
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
        args.check_known(plugin.known_args()).map_err(|e| (e, vs))?;
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
/// overridden; HEAD's Go skel does this only after the handler ran (scenario 17). DEL tolerates a
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
