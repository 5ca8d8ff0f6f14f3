//! `netns networks`: every network configuration file in the directory, in libcni's lookup
//! order (conflists, then single configs, each by file name). Broken files are listed with
//! their error instead of being hidden, and a file whose network name is already defined by an
//! earlier file is marked shadowed (libcni uses the first one).

use std::path::Path;

use cni::config::NetConfList;
use serde::Serialize;
use serde_json::Value;

use crate::table::{dash, Table};

/// One configuration file.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NetworkInfo {
    /// Network name (empty when the file does not parse).
    pub name: String,
    /// Configured `cniVersion`.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Plugin types in execution order (including `<dir>/<name>/*.conf` plugins).
    pub plugins: Vec<String>,
    /// File path.
    pub file: String,
    /// An earlier file defines the same network, so this one is never used.
    pub shadowed: bool,
    /// Why the file cannot be used, if it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn files(dir: &Path, exts: &[&str]) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .filter(|p| {
                    p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| exts.contains(&e))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn plugin_type(p: &serde_json::Map<String, Value>) -> String {
    p.get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Types of the `<dir>/<name>/*.conf` plugin objects libcni appends (unless
/// `loadOnlyInlinedPlugins`); unreadable ones show as `?`.
fn extra_plugins(dir: &Path, l: &NetConfList) -> Vec<String> {
    if l.load_only_inlined_plugins {
        return Vec::new();
    }
    files(&dir.join(&l.name), &["conf"])
        .iter()
        .map(|f| {
            std::fs::read(f)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Map<String, Value>>(&b).ok())
                .map(|m| plugin_type(&m))
                .unwrap_or_else(|| "?".into())
        })
        .collect()
}

/// Scan `dir`.
pub fn scan(dir: &Path) -> Vec<NetworkInfo> {
    let mut out: Vec<NetworkInfo> = Vec::new();
    let groups = [(&["conflist"][..], false), (&["conf", "json"][..], true)];
    for (exts, single) in groups {
        for p in files(dir, exts) {
            let parsed = std::fs::read(&p).map_err(|e| e.to_string()).and_then(|b| {
                if single {
                    NetConfList::from_single(&b)
                } else {
                    NetConfList::parse(&b)
                }
                .map_err(|e| e.msg)
            });
            let info = match parsed {
                Ok(l) => {
                    let shadowed = out.iter().any(|o| o.error.is_none() && o.name == l.name);
                    let mut plugins: Vec<String> = l.plugins.iter().map(plugin_type).collect();
                    plugins.extend(extra_plugins(dir, &l));
                    NetworkInfo {
                        name: l.name.clone(),
                        cni_version: l.cni_version.clone().unwrap_or_else(|| "0.1.0".into()),
                        plugins,
                        file: p.display().to_string(),
                        shadowed,
                        error: None,
                    }
                }
                Err(e) => NetworkInfo {
                    name: String::new(),
                    cni_version: String::new(),
                    plugins: Vec::new(),
                    file: p.display().to_string(),
                    shadowed: false,
                    error: Some(e),
                },
            };
            out.push(info);
        }
    }
    out
}

/// Names of the usable networks of `dir`, in lookup order.
pub fn names(dir: &Path) -> Vec<String> {
    scan(dir)
        .into_iter()
        .filter(|n| n.error.is_none() && !n.shadowed)
        .map(|n| n.name)
        .collect()
}

/// Human form.
pub fn render(rows: &[NetworkInfo]) -> String {
    let mut t = Table::new(&["NAME", "VERSION", "PLUGINS", "FILE"]);
    for r in rows {
        let name = match (&r.error, r.shadowed) {
            (Some(_), _) => "(invalid)".to_string(),
            (None, true) => format!("{} (shadowed)", r.name),
            (None, false) => r.name.clone(),
        };
        let plugins = match &r.error {
            Some(e) => format!("error: {e}"),
            None => r.plugins.join(","),
        };
        t.row(vec![
            name,
            dash(r.cni_version.clone()),
            dash(plugins),
            r.file.clone(),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_order_shadowing_and_errors() {
        let dir = std::env::temp_dir().join(format!("netns-networks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("demo")).unwrap();
        std::fs::write(dir.join("10-demo.conflist"), r#"{"cniVersion":"1.0.0","name":"demo","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#).unwrap();
        std::fs::write(dir.join("demo/extra.conf"), r#"{"type":"tuning"}"#).unwrap();
        std::fs::write(
            dir.join("20-demo.conflist"),
            r#"{"cniVersion":"1.0.0","name":"demo","plugins":[{"type":"x"}]}"#,
        )
        .unwrap();
        std::fs::write(dir.join("05-broken.conflist"), "{").unwrap();
        std::fs::write(
            dir.join("30-single.conf"),
            r#"{"name":"single","type":"bridge"}"#,
        )
        .unwrap();
        std::fs::write(dir.join("readme.txt"), "x").unwrap();
        let rows = scan(&dir);
        assert_eq!(rows.len(), 4);
        assert!(rows[0].error.is_some());
        assert_eq!(rows[1].plugins, ["bridge", "portmap", "tuning"]);
        assert!(rows[2].shadowed);
        assert_eq!(rows[3].cni_version, "0.1.0");
        assert_eq!(names(&dir), ["demo", "single"]);
        let text = render(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME"));
        assert!(
            lines[1].starts_with("(invalid)") && lines[1].contains("error:"),
            "{text}"
        );
        assert!(lines[2].contains("bridge,portmap,tuning"), "{text}");
        assert!(lines[3].starts_with("demo (shadowed)"), "{text}");
        // Columns are aligned: FILE starts at the same offset on every line.
        let col = lines[0].find("FILE").unwrap();
        assert!(
            lines[1..].iter().all(|l| l[col..].starts_with('/')),
            "{text}"
        );
        let j = serde_json::to_value(&rows[1]).unwrap();
        assert_eq!(j["cniVersion"], "1.0.0");
        assert!(j.get("error").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
