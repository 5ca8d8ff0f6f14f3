//! libcni-compatible result cache (`<cacheDir>/results/<network>-<container id>-<ifname>`).
//!
//! `<cache_dir>/results/<net>-<cid>-<ifname>` holds the `cniCacheV1` JSON: the final ADD result
//! plus the config, args and capabilities used, so DEL/CHECK/GC work after a config change or a
//! runtime restart. Directory 0700, file 0600, written atomically (temporary file + rename).
//! Legacy files holding just the result JSON are still read.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::attachment::RuntimeConf;
use crate::error::{codes, CniError};

/// The `kind` of the current cache format.
pub const CACHE_KIND: &str = "cniCacheV1";

/// One cache file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CacheEntry {
    /// Always [`CACHE_KIND`] for files we write; empty for legacy files.
    #[serde(default)]
    pub kind: String,
    /// Container ID.
    #[serde(rename = "containerId", default)]
    pub container_id: String,
    /// Interface name.
    #[serde(rename = "ifName", default)]
    pub if_name: String,
    /// Network (list) name.
    #[serde(rename = "networkName", default)]
    pub network_name: String,
    /// Netns path used at ADD.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub netns: String,
    /// CNI_ARGS used at ADD, as `[["K","V"],…]`.
    #[serde(rename = "cniArgs", default, skip_serializing_if = "Vec::is_empty")]
    pub cni_args: Vec<[String; 2]>,
    /// Capability arguments used at ADD.
    #[serde(
        rename = "capabilityArgs",
        default,
        skip_serializing_if = "Map::is_empty"
    )]
    pub capability_args: Map<String, Value>,
    /// The conflist bytes, base64 (Go's encoding of `[]byte`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub config: String,
    /// The final ADD result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

impl CacheEntry {
    /// The runtime parameters this attachment was added with (what DEL and CHECK must reuse).
    pub fn runtime_conf(&self) -> RuntimeConf {
        RuntimeConf {
            container_id: self.container_id.clone(),
            netns: self.netns.clone(),
            ifname: self.if_name.clone(),
            args: self
                .cni_args
                .iter()
                .map(|[k, v]| (k.clone(), v.clone()))
                .collect(),
            capability_args: self.capability_args.clone(),
        }
    }

    /// The decoded `config` bytes.
    pub fn config_bytes(&self) -> Option<Vec<u8>> {
        if self.config.is_empty() {
            None
        } else {
            b64_decode(&self.config)
        }
    }
}

/// Path of the cache file of an attachment.
pub fn result_path(cache_dir: &Path, net: &str, container_id: &str, ifname: &str) -> PathBuf {
    cache_dir
        .join("results")
        .join(format!("{net}-{container_id}-{ifname}"))
}

fn io_err(what: &str, p: &Path, e: &std::io::Error) -> CniError {
    CniError::new(codes::IO_FAILURE, format!("{what} {}: {e}", p.display()))
}

/// Write `entry` atomically to `path` (parent created 0700, file 0600).
pub fn write_entry(path: &Path, entry: &CacheEntry) -> Result<(), CniError> {
    let dir = path
        .parent()
        .ok_or_else(|| CniError::internal(format!("invalid cache path {}", path.display())))?;
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_err("creating cache dir", dir, &e))?;
    let data = serde_json::to_vec(entry)
        .map_err(|e| CniError::internal(format!("encoding cache entry: {e}")))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let res = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err("writing cache file", path, &e));
    }
    Ok(())
}

/// Read a cache file. `Ok(None)` when absent; a legacy file (plain result JSON) becomes an entry
/// with only `result` set; an unparsable file is an error (callers delete it).
pub fn read_entry(path: &Path) -> Result<Option<CacheEntry>, CniError> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("reading cache file", path, &e)),
    };
    let v: Value = serde_json::from_slice(&data).map_err(|e| {
        CniError::new(
            codes::DECODE,
            format!("parsing cache file {}: {e}", path.display()),
        )
    })?;
    if v.get("kind").and_then(Value::as_str) == Some(CACHE_KIND) {
        let e: CacheEntry = serde_json::from_value(v).map_err(|e| {
            CniError::new(
                codes::DECODE,
                format!("parsing cache file {}: {e}", path.display()),
            )
        })?;
        return Ok(Some(e));
    }
    if !v.is_object() {
        return Err(CniError::new(
            codes::DECODE,
            format!("parsing cache file {}: not an object", path.display()),
        ));
    }
    Ok(Some(CacheEntry {
        result: Some(v),
        ..Default::default()
    }))
}

/// Every `cniCacheV1` entry under `<cache_dir>/results` (unreadable and legacy files skipped:
/// they do not name their attachment).
pub fn list_entries(cache_dir: &Path) -> Vec<(PathBuf, CacheEntry)> {
    let Ok(rd) = std::fs::read_dir(cache_dir.join("results")) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| match read_entry(&p) {
            Ok(Some(e)) if e.kind == CACHE_KIND => Some((p, e)),
            _ => None,
        })
        .collect()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (Go's `encoding/json` for `[]byte`).
pub fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let idx = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        for (i, x) in idx.iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(B64[*x as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decode standard base64 (padding optional, whitespace ignored); `None` on invalid input.
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let mut vals = Vec::with_capacity(s.len());
    for c in s.bytes() {
        match c {
            b'A'..=b'Z' => vals.push(c - b'A'),
            b'a'..=b'z' => vals.push(c - b'a' + 26),
            b'0'..=b'9' => vals.push(c - b'0' + 52),
            b'+' => vals.push(62),
            b'/' => vals.push(63),
            b'=' | b'\n' | b'\r' | b' ' => {}
            _ => return None,
        }
    }
    if vals.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(vals.len() * 3 / 4);
    for chunk in vals.chunks(4) {
        let mut n = 0u32;
        for (i, v) in chunk.iter().enumerate() {
            n |= u32::from(*v) << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len() - 1]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_known_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64_encode(plain.as_bytes()), enc);
            assert_eq!(b64_decode(enc).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(b64_decode(&b64_encode(&all)).unwrap(), all);
        assert!(b64_decode("Zm9v!").is_none());
        assert!(b64_decode("Z").is_none());
    }

    #[test]
    fn write_read_modes_and_legacy() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("cni-cache-{}", std::process::id()));
        let p = result_path(&dir, "net", "cid", "eth0");
        let e = CacheEntry {
            kind: CACHE_KIND.into(),
            container_id: "cid".into(),
            if_name: "eth0".into(),
            network_name: "net".into(),
            netns: "/run/netns/x".into(),
            cni_args: vec![["K".into(), "V".into()]],
            config: b64_encode(b"{}"),
            result: Some(serde_json::json!({"cniVersion":"1.0.0"})),
            ..Default::default()
        };
        write_entry(&p, &e).unwrap();
        assert_eq!(read_entry(&p).unwrap(), Some(e.clone()));
        let raw: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(raw["kind"], "cniCacheV1");
        assert_eq!(raw["containerId"], "cid");
        assert_eq!(raw["ifName"], "eth0");
        assert_eq!(raw["networkName"], "net");
        assert_eq!(raw["cniArgs"], serde_json::json!([["K", "V"]]));
        assert_eq!(raw["config"], "e30=");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(p.parent().unwrap()), 0o700);
        assert_eq!(list_entries(&dir).len(), 1);
        let legacy = result_path(&dir, "net", "old", "eth0");
        std::fs::write(&legacy, br#"{"cniVersion":"0.4.0","ips":[]}"#).unwrap();
        let l = read_entry(&legacy).unwrap().unwrap();
        assert_eq!(l.result.unwrap()["cniVersion"], "0.4.0");
        assert_eq!(list_entries(&dir).len(), 1);
        std::fs::write(&legacy, b"garbage").unwrap();
        assert!(read_entry(&legacy).is_err());
        assert_eq!(read_entry(&result_path(&dir, "x", "y", "z")).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
