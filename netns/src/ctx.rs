//! Resolution of the directories every command uses (flags, then the environment variables
//! libcni-based tools read, then the defaults), plus lookups shared by the subcommands.

use std::path::{Path, PathBuf};

use cni::cache::{self, CacheEntry};
use kernel::NetNs;

use crate::cli::DirArgs;
use crate::error::{Error, Result};

/// Where pinned namespaces live (`ip netns`).
pub const NETNS_DIR: &str = "/run/netns";
/// Default configuration directory.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
/// Default plugin directory.
pub const DEFAULT_CNI_PATH: &str = "/opt/cni/bin";

/// Resolved directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ctx {
    /// Network configuration directory.
    pub conf_dir: PathBuf,
    /// Plugin search path.
    pub plugin_path: Vec<PathBuf>,
    /// Result cache directory.
    pub cache_dir: PathBuf,
    /// Directory of namespace pins.
    pub netns_dir: PathBuf,
}

impl Ctx {
    /// Resolve from flags and an environment lookup (injected for tests): config dir from
    /// `--conf-dir`, `NETCONFPATH`, `CNI_CONF_DIR`, default; plugins from `--cni-path`,
    /// `CNI_PATH`, default. Empty variables count as unset.
    pub fn resolve(args: &DirArgs, env: &dyn Fn(&str) -> Option<String>) -> Ctx {
        let env = |k: &str| env(k).filter(|v| !v.is_empty());
        let conf_dir = args
            .conf_dir
            .clone()
            .or_else(|| env("NETCONFPATH").map(PathBuf::from))
            .or_else(|| env("CNI_CONF_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONF_DIR));
        let path = args
            .cni_path
            .clone()
            .filter(|p| !p.is_empty())
            .or_else(|| env("CNI_PATH"))
            .unwrap_or_else(|| DEFAULT_CNI_PATH.to_string());
        Ctx {
            conf_dir,
            plugin_path: path
                .split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect(),
            cache_dir: args.cache_dir.clone(),
            netns_dir: PathBuf::from(NETNS_DIR),
        }
    }

    /// The runtime-side executor.
    pub fn cni(&self) -> cni::CniConfig {
        cni::CniConfig::new(self.plugin_path.clone(), self.cache_dir.clone())
    }

    /// Path of the pin of namespace `name`.
    pub fn ns_path(&self, name: &str) -> PathBuf {
        self.netns_dir.join(name)
    }

    /// Open an existing namespace; a missing one is [`Error::NotFound`] listing those that
    /// exist and how to create it.
    pub fn open_ns(&self, name: &str) -> Result<NetNs> {
        check_ns_name(name)?;
        let path = self.ns_path(name);
        match NetNs::open(&path) {
            Ok(ns) => Ok(ns),
            Err(e) if e.is_not_found() => Err(Error::NotFound(format!(
                "namespace {name:?} not found in {} (found: {}); create it with `netns add {name}`",
                self.netns_dir.display(),
                found_list(&kernel::netns::list_pinned(&self.netns_dir).unwrap_or_default()),
            ))),
            Err(e) => Err(Error::Failed(format!("{e}"))),
        }
    }

    /// Cached attachments whose netns is the pin of `name` (by path, or by namespace identity
    /// when the cache recorded another path to the same namespace, e.g. /var/run/netns).
    pub fn attachments_of(&self, name: &str, ns: Option<&NetNs>) -> Vec<CacheEntry> {
        let path = self.ns_path(name);
        cache::list_entries(&self.cache_dir)
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| same_ns(&e.netns, &path, ns))
            .collect()
    }
}

fn same_ns(cached: &str, path: &Path, ns: Option<&NetNs>) -> bool {
    if cached.is_empty() {
        return false;
    }
    if Path::new(cached) == path {
        return true;
    }
    match (ns, NetNs::open(Path::new(cached))) {
        (Some(ns), Ok(other)) => ns.same_as(&other).unwrap_or(false),
        _ => false,
    }
}

/// "a, b" or "none".
pub fn found_list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// A namespace name that can be used as a path component (like `ip netns`).
pub fn check_ns_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(Error::Usage(format!(
            "invalid namespace name {name:?}: must be a single path component"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(conf: Option<&str>, path: Option<&str>) -> DirArgs {
        DirArgs {
            conf_dir: conf.map(PathBuf::from),
            cni_path: path.map(str::to_string),
            cache_dir: PathBuf::from("/var/lib/cni"),
        }
    }

    #[test]
    fn lookup_order() {
        let env = |k: &str| match k {
            "NETCONFPATH" => Some("/nc".to_string()),
            "CNI_CONF_DIR" => Some("/ccd".to_string()),
            "CNI_PATH" => Some("/a::/b".to_string()),
            _ => None,
        };
        let c = Ctx::resolve(&dirs(Some("/flag"), Some("/p")), &env);
        assert_eq!(c.conf_dir, PathBuf::from("/flag"));
        assert_eq!(c.plugin_path, [PathBuf::from("/p")]);
        let c = Ctx::resolve(&dirs(None, None), &env);
        assert_eq!(c.conf_dir, PathBuf::from("/nc"));
        assert_eq!(c.plugin_path, [PathBuf::from("/a"), PathBuf::from("/b")]);
        let only_ccd = |k: &str| match k {
            "NETCONFPATH" => Some(String::new()),
            "CNI_CONF_DIR" => Some("/ccd".to_string()),
            _ => None,
        };
        let c = Ctx::resolve(&dirs(None, None), &only_ccd);
        assert_eq!(c.conf_dir, PathBuf::from("/ccd"));
        assert_eq!(c.plugin_path, [PathBuf::from(DEFAULT_CNI_PATH)]);
        let c = Ctx::resolve(&dirs(None, None), &|_| None);
        assert_eq!(c.conf_dir, PathBuf::from(DEFAULT_CONF_DIR));
    }

    #[test]
    fn ns_names() {
        for bad in ["", ".", "..", "a/b"] {
            assert!(matches!(check_ns_name(bad), Err(Error::Usage(_))), "{bad}");
        }
        check_ns_name("web-1").unwrap();
        assert_eq!(found_list(&[]), "none");
        assert_eq!(found_list(&["a".into(), "b".into()]), "a, b");
    }

    #[test]
    fn missing_namespace_is_not_found_with_hint() {
        let c = Ctx {
            netns_dir: PathBuf::from("/nonexistent-netns-dir"),
            ..Ctx::resolve(&dirs(None, None), &|_| None)
        };
        let Err(Error::NotFound(m)) = c.open_ns("x") else {
            panic!("expected not found")
        };
        assert!(
            m.contains("(found: none)") && m.contains("netns add x"),
            "{m}"
        );
    }
}
