//! The runtime side (libcni-compatible): conflist loading, per-invocation config injection
//! (capabilities into `runtimeConfig`, `prevResult`), the ADD/DEL/CHECK/GC/STATUS executors and
//! the result cache.
//! Used by the `netns` CLI and sandboxd; they run our plugins exactly as containerd would.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

// Re-exported: runtimes name it `cni::runtime::RuntimeConf` (libcni's name and place).
use crate::attachment::Attachment;
pub use crate::attachment::RuntimeConf;
use crate::cache::{self, CacheEntry, CACHE_KIND};
use crate::config::{validate_ifname, validate_name, NetConfList};
use crate::error::{codes, CniError};
use crate::exec::{exec_plugin, find_plugin};
use crate::result::CniResult;
use crate::version::{negotiate, Version, SUPPORTED_VERSIONS};

/// Runtime configuration: where plugins and the cache live.
#[derive(Debug, Clone, PartialEq)]
pub struct CniConfig {
    /// Directories searched for plugin binaries (CNI_PATH).
    pub plugin_path: Vec<PathBuf>,
    /// Cache directory (default `/var/lib/cni`).
    pub cache_dir: PathBuf,
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            plugin_path: vec![PathBuf::from("/opt/cni/bin")],
            cache_dir: PathBuf::from("/var/lib/cni"),
        }
    }
}

fn files_with_ext(dir: &Path, exts: &[&str]) -> Result<Vec<PathBuf>, CniError> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| CniError::new(codes::IO_FAILURE, format!("reading {}: {e}", dir.display())))?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.contains(&e))
        })
        .collect();
    // libcni sorts by file name.
    v.sort();
    Ok(v)
}

fn read_file(p: &Path) -> Result<Vec<u8>, CniError> {
    std::fs::read(p)
        .map_err(|e| CniError::new(codes::IO_FAILURE, format!("reading {}: {e}", p.display())))
}

fn with_file(p: &Path, e: CniError) -> CniError {
    CniError {
        msg: format!("{}: {}", p.display(), e.msg),
        ..e
    }
}

/// Append `<dir>/<name>/*.conf` plugin objects unless `loadOnlyInlinedPlugins` (1.1.0).
fn load_plugin_dir(dir: &Path, list: &mut NetConfList) -> Result<(), CniError> {
    if list.load_only_inlined_plugins {
        return Ok(());
    }
    // The name passed validate_name, so it cannot escape `dir`.
    let sub = dir.join(&list.name);
    if !sub.is_dir() {
        return Ok(());
    }
    let mut extra = Vec::new();
    for f in files_with_ext(&sub, &["conf"])? {
        let v: Value = serde_json::from_slice(&read_file(&f)?)
            .map_err(|e| CniError::new(codes::DECODE, format!("{}: {e}", f.display())))?;
        match v {
            Value::Object(m) => extra.push(m),
            _ => {
                return Err(CniError::new(
                    codes::INVALID_CONFIG,
                    format!("{}: plugin config is not an object", f.display()),
                ))
            }
        }
    }
    list.append_plugins(extra)
}

fn load_file(dir: &Path, p: &Path, single: bool) -> Result<NetConfList, CniError> {
    let bytes = read_file(p)?;
    let mut l = if single {
        NetConfList::from_single(&bytes)
    } else {
        NetConfList::parse(&bytes)
    }
    .map_err(|e| with_file(p, e))?;
    load_plugin_dir(dir, &mut l)?;
    Ok(l)
}

/// Load network `name` from `dir`: the first `*.conflist` (by file name) with that name, else
/// the first `*.conf`/`*.json` single config wrapped into a list (libcni order). A broken
/// conflist is an error, as in libcni.
pub fn load_conflist(dir: &Path, name: &str) -> Result<NetConfList, CniError> {
    for p in files_with_ext(dir, &["conflist"])? {
        let bytes = read_file(&p)?;
        let l = NetConfList::parse(&bytes).map_err(|e| with_file(&p, e))?;
        if l.name == name {
            return load_file(dir, &p, false);
        }
    }
    for p in files_with_ext(dir, &["conf", "json"])? {
        let bytes = read_file(&p)?;
        let Ok(c) = crate::config::NetConf::parse(&bytes) else {
            continue;
        };
        if c.name == name {
            return load_file(dir, &p, true);
        }
    }
    Err(CniError::new(
        codes::INVALID_CONFIG,
        format!(
            "no net configuration with name {name:?} in {}",
            dir.display()
        ),
    ))
}

/// Every network in `dir`, conflists first then single configs, each group by file name.
/// Unparsable files are skipped so one broken file does not hide the others.
pub fn list_conflists(dir: &Path) -> Result<Vec<NetConfList>, CniError> {
    let mut out = Vec::new();
    for p in files_with_ext(dir, &["conflist"])? {
        if let Ok(l) = load_file(dir, &p, false) {
            out.push(l);
        }
    }
    for p in files_with_ext(dir, &["conf", "json"])? {
        if let Ok(l) = load_file(dir, &p, true) {
            out.push(l);
        }
    }
    Ok(out)
}

/// The version spoken with a list's plugins (highest of cniVersion ∪ cniVersions we support).
pub fn list_version(list: &NetConfList) -> Result<Version, CniError> {
    negotiate(
        list.cni_version.as_deref(),
        &list.cni_versions,
        &SUPPORTED_VERSIONS,
    )
}

/// Build one plugin's stdin: the plugin object plus `cniVersion` and `name` from the list,
/// `runtimeConfig` (only capabilities set true *and* provided) and `prevResult`.
pub fn plugin_stdin(
    list: &NetConfList,
    version: Version,
    plugin: &Map<String, Value>,
    rt: Option<&RuntimeConf>,
    prev_result: Option<&Value>,
) -> Vec<u8> {
    let mut conf = plugin.clone();
    conf.insert("cniVersion".into(), Value::String(version.as_str().into()));
    conf.insert("name".into(), Value::String(list.name.clone()));
    if let Some(rt) = rt {
        let mut rc = Map::new();
        if let Some(caps) = plugin.get("capabilities").and_then(Value::as_object) {
            for (cap, on) in caps {
                if on.as_bool() == Some(true) {
                    if let Some(v) = rt.capability_args.get(cap) {
                        rc.insert(cap.clone(), v.clone());
                    }
                }
            }
        }
        if !rc.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(rc));
        }
    }
    if let Some(p) = prev_result {
        conf.insert("prevResult".into(), p.clone());
    }
    serde_json::to_vec(&Value::Object(conf)).unwrap_or_default()
}

fn plugin_type(plugin: &Map<String, Value>) -> &str {
    plugin
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

impl CniConfig {
    /// A config with the given plugin path and cache directory.
    pub fn new(plugin_path: Vec<PathBuf>, cache_dir: PathBuf) -> CniConfig {
        CniConfig {
            plugin_path,
            cache_dir,
        }
    }

    fn env(&self, rt: Option<&RuntimeConf>) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some(rt) = rt {
            env.push(("CNI_CONTAINERID".to_string(), rt.container_id.clone()));
            if !rt.netns.is_empty() {
                env.push(("CNI_NETNS".to_string(), rt.netns.clone()));
            }
            env.push(("CNI_IFNAME".to_string(), rt.ifname.clone()));
            let args: Vec<String> = rt.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
            env.push(("CNI_ARGS".to_string(), args.join(";")));
        }
        let path: Vec<String> = self
            .plugin_path
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        env.push(("CNI_PATH".to_string(), path.join(":")));
        env
    }

    fn exec(
        &self,
        plugin: &Map<String, Value>,
        command: &str,
        stdin: &[u8],
        rt: Option<&RuntimeConf>,
    ) -> Result<Vec<u8>, CniError> {
        let bin = find_plugin(plugin_type(plugin), &self.plugin_path)?;
        exec_plugin(&bin, command, stdin, &self.env(rt))
    }

    fn cache_path(&self, list: &NetConfList, rt: &RuntimeConf) -> PathBuf {
        cache::result_path(&self.cache_dir, &list.name, &rt.container_id, &rt.ifname)
    }

    fn validate(list: &NetConfList, rt: &RuntimeConf) -> Result<(), CniError> {
        validate_name("containerID", &rt.container_id)?;
        validate_name("network name", &list.name)?;
        validate_ifname(&rt.ifname)
    }

    /// ADD: plugins in order, each result becoming the next `prevResult`; stops at the first
    /// error without DEL (the runtime must DEL). The final result is cached only on success.
    pub fn add_network_list(
        &self,
        list: &NetConfList,
        rt: &RuntimeConf,
    ) -> Result<CniResult, CniError> {
        Self::validate(list, rt)?;
        let version = list_version(list)?;
        let mut prev: Option<Value> = None;
        let mut last: Option<CniResult> = None;
        for plugin in &list.plugins {
            let stdin = plugin_stdin(list, version, plugin, Some(rt), prev.as_ref());
            let out = self.exec(plugin, "ADD", &stdin, Some(rt))?;
            let v: Value = serde_json::from_slice(&out).map_err(|e| {
                CniError::new(
                    codes::DECODE,
                    format!(
                        "failed to parse result of plugin {:?}: {e}",
                        plugin_type(plugin)
                    ),
                )
            })?;
            // from_value injects the config version into a result without cniVersion.
            let mut res = CniResult::from_value(&v, version.as_str())?;
            res.cni_version = version.as_str().to_string();
            prev = Some(res.to_value(version.as_str())?);
            last = Some(res);
        }
        let result = last.unwrap_or_default();
        let entry = CacheEntry {
            kind: CACHE_KIND.to_string(),
            container_id: rt.container_id.clone(),
            if_name: rt.ifname.clone(),
            network_name: list.name.clone(),
            netns: rt.netns.clone(),
            cni_args: rt
                .args
                .iter()
                .map(|(k, v)| [k.clone(), v.clone()])
                .collect(),
            capability_args: rt.capability_args.clone(),
            config: cache::b64_encode(&list.bytes),
            result: prev,
        };
        cache::write_entry(&self.cache_path(list, rt), &entry)?;
        Ok(result)
    }

    /// The cached final ADD result of an attachment, parsed in the list's version.
    pub fn cached_result(&self, list: &NetConfList, rt: &RuntimeConf) -> Option<CniResult> {
        let version = list_version(list).ok()?;
        let entry = cache::read_entry(&self.cache_path(list, rt)).ok()??;
        CniResult::from_value(entry.result.as_ref()?, version.as_str()).ok()
    }

    /// The cached cache entry of an attachment (config, args, netns used at ADD).
    pub fn cached_entry(&self, list: &NetConfList, rt: &RuntimeConf) -> Option<CacheEntry> {
        cache::read_entry(&self.cache_path(list, rt)).ok()?
    }

    /// The cached result rendered for use as `prevResult`; an unparsable cache file is deleted
    /// and the call proceeds without prevResult (libcni).
    fn cached_prev(&self, list: &NetConfList, rt: &RuntimeConf, version: Version) -> Option<Value> {
        let path = self.cache_path(list, rt);
        match cache::read_entry(&path) {
            Ok(Some(e)) => {
                let r = CniResult::from_value(e.result.as_ref()?, version.as_str()).ok()?;
                r.to_value(version.as_str()).ok()
            }
            Ok(None) => None,
            Err(_) => {
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// DEL: plugins in reverse order, each with the cached final result as `prevResult`
    /// (≥0.4.0); the cache file is removed after success.
    ///
    /// Unlike libcni, a failing plugin does not stop the others: after an ADD that failed
    /// midway (say, a plugin missing after `bridge`), stopping at the first error would leave
    /// the earlier plugins' veth and lease behind forever. Every plugin's DEL runs, and the
    /// errors are reported together; the cache stays until a DEL fully succeeds.
    pub fn del_network_list(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<(), CniError> {
        Self::validate(list, rt)?;
        let version = list_version(list)?;
        let prev = if version.supports_prev_result_on_del() {
            self.cached_prev(list, rt, version)
        } else {
            None
        };
        let mut errors = Vec::new();
        for plugin in list.plugins.iter().rev() {
            let stdin = plugin_stdin(list, version, plugin, Some(rt), prev.as_ref());
            if let Err(e) = self.exec(plugin, "DEL", &stdin, Some(rt)) {
                errors.push(e);
            }
        }
        crate::error::combine(errors)?;
        match std::fs::remove_file(self.cache_path(list, rt)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CniError::new(
                codes::IO_FAILURE,
                format!("removing cached result: {e}"),
            )),
            _ => Ok(()),
        }
    }

    /// CHECK: refused below 0.4.0; success without executing when `disableCheck`; otherwise
    /// plugins in order with the cached result as `prevResult`, stopping at the first error.
    pub fn check_network_list(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<(), CniError> {
        Self::validate(list, rt)?;
        let version = list_version(list)?;
        if !version.supports_check() {
            return Err(CniError::new(
                codes::INCOMPATIBLE_VERSION,
                format!(
                    "configuration version {:?} does not support the CHECK command",
                    version.as_str()
                ),
            ));
        }
        if list.disable_check {
            return Ok(());
        }
        let prev = self.cached_prev(list, rt, version);
        for plugin in &list.plugins {
            let stdin = plugin_stdin(list, version, plugin, Some(rt), prev.as_ref());
            self.exec(plugin, "CHECK", &stdin, Some(rt))?;
        }
        Ok(())
    }

    /// GC: nothing when `disableGC`; DEL every cached attachment of this network that is
    /// not in `valid` (with its cached config, args and netns); then, for ≥1.1.0, GC to every
    /// plugin with `cni.dev/valid-attachments`. Errors are collected and all steps still run.
    pub fn gc_network_list(
        &self,
        list: &NetConfList,
        valid: &[Attachment],
    ) -> Result<(), CniError> {
        if list.disable_gc {
            return Ok(());
        }
        let version = list_version(list)?;
        let mut errors = Vec::new();
        for (_, e) in cache::list_entries(&self.cache_dir) {
            if e.network_name != list.name {
                continue;
            }
            if valid
                .iter()
                .any(|a| a.container_id == e.container_id && a.ifname == e.if_name)
            {
                continue;
            }
            let cached_list = e
                .config_bytes()
                .and_then(|b| NetConfList::parse(&b).ok())
                .unwrap_or_else(|| list.clone());
            let rt = e.runtime_conf();
            if let Err(err) = self.del_network_list(&cached_list, &rt) {
                errors.push(err);
            }
        }
        if version.supports_gc_status() {
            let valid_v = serde_json::to_value(valid).unwrap_or(Value::Array(Vec::new()));
            for plugin in &list.plugins {
                let mut conf = Map::new();
                conf.insert("type".into(), Value::String(plugin_type(plugin).into()));
                for (k, v) in plugin {
                    conf.insert(k.clone(), v.clone());
                }
                conf.insert("cni.dev/valid-attachments".into(), valid_v.clone());
                // libcni also sends the legacy duplicate key.
                conf.insert("cni.dev/attachments".into(), valid_v.clone());
                let stdin = plugin_stdin(list, version, &conf, None, None);
                if let Err(e) = self.exec(plugin, "GC", &stdin, None) {
                    errors.push(e);
                }
            }
        }
        crate::error::combine(errors)
    }

    /// STATUS (≥1.1.0, else a no-op success like libcni): every plugin in order, stopping at the
    /// first failure.
    pub fn status_network_list(&self, list: &NetConfList) -> Result<(), CniError> {
        let version = list_version(list)?;
        if !version.supports_gc_status() {
            return Ok(());
        }
        for plugin in &list.plugins {
            let stdin = plugin_stdin(list, version, plugin, None, None);
            self.exec(plugin, "STATUS", &stdin, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    struct Env {
        dir: PathBuf,
    }

    impl Drop for Env {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    impl Env {
        fn new(tag: &str) -> Env {
            let dir = std::env::temp_dir().join(format!("cni-rt-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            for d in ["bin", "log", "conf", "cache"] {
                std::fs::create_dir_all(dir.join(d)).unwrap();
            }
            Env { dir }
        }

        /// A fake plugin: saves stdin per verb, logs the call, prints `add_result` on ADD.
        fn plugin(&self, name: &str, add_result: &str) {
            self.script(
                name,
                &format!(
                    "cat > \"{d}/log/$n-$CNI_COMMAND-$CNI_CONTAINERID.json\"\n\
                     echo \"$n $CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME $CNI_NETNS $CNI_ARGS\" >> \"{d}/log/calls\"\n\
                     if [ \"$CNI_COMMAND\" = ADD ]; then printf '%s' '{add_result}'; fi\n",
                    d = self.dir.display()
                ),
            );
        }

        fn script(&self, name: &str, body: &str) {
            let p = self.dir.join("bin").join(name);
            std::fs::write(&p, format!("#!/bin/sh\nn=$(basename \"$0\")\n{body}")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }

        fn cfg(&self) -> CniConfig {
            CniConfig::new(
                vec![self.dir.join("nope"), self.dir.join("bin")],
                self.dir.join("cache"),
            )
        }

        fn calls(&self) -> Vec<String> {
            std::fs::read_to_string(self.dir.join("log/calls"))
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect()
        }

        fn stdin_of(&self, plugin: &str, cmd: &str, cid: &str) -> Value {
            let p = self.dir.join(format!("log/{plugin}-{cmd}-{cid}.json"));
            serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
        }
    }

    const R1: &str = r#"{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":"/run/netns/x"}],"ips":[{"address":"10.0.0.2/24","interface":0,"gateway":"10.0.0.1"}]}"#;
    const R2: &str = r#"{"interfaces":[{"name":"eth0","sandbox":"/run/netns/x"}],"ips":[{"address":"10.0.0.2/24","interface":0,"gateway":"10.0.0.1"}],"routes":[{"dst":"0.0.0.0/0"}]}"#;

    fn list(ver: &str, extra: &str) -> NetConfList {
        NetConfList::parse(
            format!(
                r#"{{"cniVersion":"{ver}","name":"net1"{extra},"plugins":[
                  {{"type":"p1","capabilities":{{"portMappings":true,"bandwidth":false}},"keep":"me"}},
                  {{"type":"p2"}}]}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    fn rt(cid: &str) -> RuntimeConf {
        let mut caps = Map::new();
        caps.insert(
            "portMappings".into(),
            json!([{"hostPort":8080,"containerPort":80}]),
        );
        caps.insert("bandwidth".into(), json!({"ingressRate":1}));
        caps.insert("mac".into(), json!("02:00:00:00:00:09"));
        RuntimeConf {
            container_id: cid.into(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            args: vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("K8S_POD_NAME".into(), "p".into()),
            ],
            capability_args: caps,
        }
    }

    #[test]
    fn load_order_and_inlined_plugins() {
        let e = Env::new("load");
        let c = e.dir.join("conf");
        std::fs::write(
            c.join("10-a.conflist"),
            r#"{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"x"}]}"#,
        )
        .unwrap();
        std::fs::write(
            c.join("20-b.conflist"),
            r#"{"cniVersion":"1.0.0","name":"net1","plugins":[{"type":"first"}]}"#,
        )
        .unwrap();
        std::fs::write(
            c.join("30-c.conflist"),
            r#"{"cniVersion":"1.0.0","name":"net1","plugins":[{"type":"shadowed"}]}"#,
        )
        .unwrap();
        std::fs::write(
            c.join("05-single.conf"),
            r#"{"cniVersion":"0.3.1","name":"single","type":"bridge"}"#,
        )
        .unwrap();
        std::fs::write(
            c.join("06-other.json"),
            r#"{"cniVersion":"0.3.1","name":"net1","type":"ignored"}"#,
        )
        .unwrap();
        std::fs::create_dir_all(c.join("net1")).unwrap();
        std::fs::write(c.join("net1/2.conf"), r#"{"type":"second-b"}"#).unwrap();
        std::fs::write(c.join("net1/1.conf"), r#"{"type":"second-a"}"#).unwrap();
        std::fs::write(c.join("net1/skip.txt"), "x").unwrap();

        let l = load_conflist(&c, "net1").unwrap();
        let types: Vec<&str> = l.plugins.iter().map(plugin_type).collect();
        assert_eq!(types, ["first", "second-a", "second-b"]);
        let reparsed = NetConfList::parse(&l.bytes).unwrap();
        assert_eq!(reparsed.plugins.len(), 3);

        let s = load_conflist(&c, "single").unwrap();
        assert_eq!(s.cni_version.as_deref(), Some("0.3.1"));
        assert_eq!(plugin_type(&s.plugins[0]), "bridge");
        assert_eq!(load_conflist(&c, "missing").unwrap_err().code, 7);
        assert_eq!(list_conflists(&c).unwrap().len(), 5);

        std::fs::write(
            c.join("20-b.conflist"),
            r#"{"cniVersion":"1.1.0","name":"net1","loadOnlyInlinedPlugins":"true","plugins":[{"type":"first"}]}"#,
        )
        .unwrap();
        assert_eq!(load_conflist(&c, "net1").unwrap().plugins.len(), 1);
        std::fs::write(c.join("01-broken.conflist"), "{").unwrap();
        assert!(load_conflist(&c, "net1").is_err());
        assert_eq!(list_conflists(&c).unwrap().len(), 5);
    }

    #[test]
    fn add_check_del_chain_with_cache() {
        let e = Env::new("chain");
        e.plugin("p1", R1);
        e.plugin("p2", R2);
        let cfg = e.cfg();
        let l = list("1.0.0", "");
        let r = cfg.add_network_list(&l, &rt("c1")).unwrap();
        assert_eq!(r.cni_version, "1.0.0");
        assert_eq!(r.routes.len(), 1);

        let s1 = e.stdin_of("p1", "ADD", "c1");
        assert_eq!(s1["cniVersion"], "1.0.0");
        assert_eq!(s1["name"], "net1");
        assert_eq!(s1["keep"], "me");
        assert_eq!(
            s1["runtimeConfig"],
            json!({"portMappings":[{"hostPort":8080,"containerPort":80}]})
        );
        assert!(s1.get("prevResult").is_none());
        let s2 = e.stdin_of("p2", "ADD", "c1");
        assert!(s2.get("runtimeConfig").is_none());
        assert_eq!(s2["prevResult"]["cniVersion"], "1.0.0");
        assert_eq!(s2["prevResult"]["ips"][0]["address"], "10.0.0.2/24");
        assert_eq!(
            e.calls()[0],
            "p1 ADD c1 eth0 /run/netns/x IgnoreUnknown=1;K8S_POD_NAME=p"
        );

        // Cache file in libcni's format.
        let path = e.dir.join("cache/results/net1-c1-eth0");
        let raw: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(raw["kind"], "cniCacheV1");
        assert_eq!(raw["containerId"], "c1");
        assert_eq!(raw["netns"], "/run/netns/x");
        assert_eq!(
            raw["cniArgs"],
            json!([["IgnoreUnknown", "1"], ["K8S_POD_NAME", "p"]])
        );
        assert_eq!(
            cache::b64_decode(raw["config"].as_str().unwrap()).unwrap(),
            l.bytes
        );
        assert_eq!(raw["result"]["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(cfg.cached_result(&l, &rt("c1")).unwrap(), r);

        cfg.check_network_list(&l, &rt("c1")).unwrap();
        assert_eq!(
            e.stdin_of("p1", "CHECK", "c1")["prevResult"]["routes"][0]["dst"],
            "0.0.0.0/0"
        );
        let n = e.calls().len();
        let mut dc = list("1.0.0", r#","disableCheck":true"#);
        cfg.check_network_list(&dc, &rt("c1")).unwrap();
        assert_eq!(e.calls().len(), n);
        dc = list("0.3.1", "");
        assert_eq!(cfg.check_network_list(&dc, &rt("c1")).unwrap_err().code, 1);

        cfg.del_network_list(&l, &rt("c1")).unwrap();
        let calls = e.calls();
        assert!(calls[calls.len() - 2].starts_with("p2 DEL c1"));
        assert!(calls[calls.len() - 1].starts_with("p1 DEL c1"));
        assert_eq!(
            e.stdin_of("p1", "DEL", "c1")["prevResult"]["routes"][0]["dst"],
            "0.0.0.0/0"
        );
        assert!(!path.exists());
        // Repeated DEL: no cache, no prevResult, still fine.
        cfg.del_network_list(&l, &rt("c1")).unwrap();
        assert!(e.stdin_of("p1", "DEL", "c1").get("prevResult").is_none());
    }

    #[test]
    fn del_survives_corrupt_cache_and_old_versions_get_no_prev() {
        let e = Env::new("corrupt");
        e.plugin("p1", R1);
        e.plugin("p2", R2);
        let cfg = e.cfg();
        let path = e.dir.join("cache/results/net1-c1-eth0");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "garbage").unwrap();
        cfg.del_network_list(&list("1.0.0", ""), &rt("c1")).unwrap();
        assert!(!path.exists());
        // 0.3.1 has no prevResult on DEL; a legacy (plain result) cache file is still readable.
        let old = list("0.3.1", "");
        std::fs::write(
            &path,
            r#"{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.0.0.2/24"}]}"#,
        )
        .unwrap();
        assert_eq!(cfg.cached_result(&old, &rt("c1")).unwrap().ips.len(), 1);
        cfg.del_network_list(&old, &rt("c1")).unwrap();
        assert!(e.stdin_of("p2", "DEL", "c1").get("prevResult").is_none());
    }

    #[test]
    fn del_runs_every_plugin_even_when_one_is_missing() {
        // A chain that failed midway because p2 is not installed: the runtime's DEL must
        // still reach p1, or p1's veth and lease leak forever.
        let e = Env::new("missing");
        e.plugin("p1", R1);
        let cfg = e.cfg();
        let l = list("1.0.0", "");
        let err = cfg.del_network_list(&l, &rt("c1")).unwrap_err();
        assert!(err.msg.contains("p2"), "{}", err.msg);
        assert!(
            e.calls().iter().any(|c| c.starts_with("p1 DEL c1")),
            "{:?}",
            e.calls()
        );
        // Once the plugin is back, the DEL completes and clears the cache.
        e.plugin("p2", R2);
        cfg.del_network_list(&l, &rt("c1")).unwrap();
    }

    #[test]
    fn gc_deletes_stale_then_gcs_every_plugin() {
        let e = Env::new("gc");
        e.plugin("p1", R1);
        e.plugin("p2", R2);
        let cfg = e.cfg();
        let l = list("1.1.0", "");
        cfg.add_network_list(&l, &rt("c1")).unwrap();
        cfg.add_network_list(&l, &rt("c2")).unwrap();
        // Another network's cache entry is never touched.
        let mut other = list("1.1.0", "");
        other.name = "net10".into();
        cfg.add_network_list(&other, &rt("c3")).unwrap();
        let valid = vec![Attachment {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        }];
        cfg.gc_network_list(&l, &valid).unwrap();
        let calls = e.calls();
        assert!(calls
            .iter()
            .any(|c| c.starts_with("p2 DEL c2 eth0 /run/netns/x")));
        assert!(!calls
            .iter()
            .any(|c| c.contains("DEL c1") || c.contains("DEL c3")));
        let gc = e.stdin_of("p1", "GC", "");
        assert_eq!(
            gc["cni.dev/valid-attachments"],
            json!([{"containerID":"c1","ifname":"eth0"}])
        );
        assert_eq!(gc["cni.dev/attachments"], gc["cni.dev/valid-attachments"]);
        assert_eq!(gc["cniVersion"], "1.1.0");
        assert!(calls.iter().any(|c| c.starts_with("p2 GC")));
        assert!(e.dir.join("cache/results/net1-c1-eth0").exists());
        assert!(!e.dir.join("cache/results/net1-c2-eth0").exists());
        assert!(e.dir.join("cache/results/net10-c3-eth0").exists());

        let n = e.calls().len();
        cfg.gc_network_list(&list("1.1.0", r#","disableGC":"true""#), &[])
            .unwrap();
        assert_eq!(e.calls().len(), n);
        // Errors are collected, every plugin still gets GC.
        e.script("p1", "echo '{\"code\":11,\"msg\":\"busy\"}'; exit 1\n");
        let err = cfg.gc_network_list(&l, &valid).unwrap_err();
        assert_eq!(err.code, 11);
        assert!(e.calls().len() > n);
        assert!(e.calls().last().unwrap().starts_with("p2 GC"));
    }

    #[test]
    fn status_and_errors() {
        let e = Env::new("status");
        e.plugin("p2", R2);
        e.script("p1", "cat >/dev/null; echo '{\"code\":50,\"msg\":\"not ready\",\"details\":\"d\"}'; exit 1\n");
        let cfg = e.cfg();
        let err = cfg.status_network_list(&list("1.1.0", "")).unwrap_err();
        assert_eq!(
            (err.code, err.msg.as_str(), err.details.as_str()),
            (50, "not ready", "d")
        );
        assert!(e.calls().is_empty(), "STATUS stops at the first failure");
        cfg.status_network_list(&list("1.0.0", "")).unwrap();

        // The child's error JSON is returned unchanged; nothing cached on failure.
        let err = cfg
            .add_network_list(&list("1.0.0", ""), &rt("c1"))
            .unwrap_err();
        assert_eq!(err.code, 50);
        assert!(!e.dir.join("cache/results/net1-c1-eth0").exists());
        e.script("p1", "echo oops >&2; exit 1\n");
        let err = cfg
            .add_network_list(&list("1.0.0", ""), &rt("c1"))
            .unwrap_err();
        assert!(err.msg.contains("oops"), "{}", err.msg);
        e.script("p1", "echo notjson; exit 1\n");
        let err = cfg
            .add_network_list(&list("1.0.0", ""), &rt("c1"))
            .unwrap_err();
        assert!(
            err.msg.contains("error parsing its diagnostic message"),
            "{}",
            err.msg
        );

        // Validation happens before anything is executed.
        let mut bad = rt("-bad id");
        assert_eq!(
            cfg.add_network_list(&list("1.0.0", ""), &bad)
                .unwrap_err()
                .code,
            4
        );
        bad = rt("c1");
        bad.ifname = "0123456789abcdef".into();
        assert_eq!(
            cfg.add_network_list(&list("1.0.0", ""), &bad)
                .unwrap_err()
                .code,
            4
        );
        assert!(e.calls().is_empty());
        let missing = NetConfList::parse(
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"absent"}]}"#,
        )
        .unwrap();
        let err = cfg.add_network_list(&missing, &rt("c1")).unwrap_err();
        assert!(
            err.msg
                .starts_with("failed to find plugin \"absent\" in path ["),
            "{}",
            err.msg
        );
    }
}
