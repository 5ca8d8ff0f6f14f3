//! Durable state: one JSON file per network (`networks/<name>.json`) and per sandbox
//! (`sandboxes/<name>.json`) under the data directory, each replaced atomically (write a
//! temporary file, fsync it, rename it over the old one, fsync the directory). A reader after a
//! crash sees either the old or the new version of a file, never a torn one; why files and not
//! redb is in docs/decisions.md.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Error;
use crate::model::{NetworkRec, SandboxRec};

/// The state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

fn fsync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync", dir, e))
}

/// Atomically replace `path` with `bytes` (tmp + fsync + rename + fsync dir).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("json.tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))?;
    fsync_dir(dir)
}

fn remove_durable(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Ok(()) => fsync_dir(path.parent().unwrap_or(Path::new("."))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

fn load_dir<T: DeserializeOwned>(dir: &Path) -> Result<Vec<T>, Error> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io("read", dir, e))?;
    let mut paths: Vec<PathBuf> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        match p.extension().and_then(|e| e.to_str()) {
            Some("json") => {
                let bytes = std::fs::read(&p).map_err(|e| Error::io("read", &p, e))?;
                let v = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::Decode { path: p, source: e })?;
                out.push(v);
            }
            // A temporary file is a write that never reached its rename: the old version
            // (or no file) is the truth.
            Some("tmp") => {
                let _ = std::fs::remove_file(&p);
            }
            _ => {}
        }
    }
    Ok(out)
}

impl Store {
    /// Open (creating) the state directory.
    pub fn open(dir: &Path) -> Result<Store, Error> {
        for sub in ["networks", "sandboxes"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| Error::io("create", &d, e))?;
        }
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn net_path(&self, name: &str) -> PathBuf {
        self.dir.join("networks").join(format!("{name}.json"))
    }

    fn sb_path(&self, name: &str) -> PathBuf {
        self.dir.join("sandboxes").join(format!("{name}.json"))
    }

    fn save<T: Serialize>(path: &Path, v: &T) -> Result<(), Error> {
        let bytes = serde_json::to_vec_pretty(v).map_err(|e| Error::Decode {
            path: path.to_path_buf(),
            source: e,
        })?;
        write_atomic(path, &bytes)
    }

    /// Persist a network (names are validated before they get here: no path escapes).
    pub fn save_network(&self, n: &NetworkRec) -> Result<(), Error> {
        Self::save(&self.net_path(&n.network.name), n)
    }

    /// Forget a network.
    pub fn remove_network(&self, name: &str) -> Result<(), Error> {
        remove_durable(&self.net_path(name))
    }

    /// Persist a sandbox.
    pub fn save_sandbox(&self, s: &SandboxRec) -> Result<(), Error> {
        Self::save(&self.sb_path(&s.name), s)
    }

    /// Forget a sandbox.
    pub fn remove_sandbox(&self, name: &str) -> Result<(), Error> {
        remove_durable(&self.sb_path(name))
    }

    /// Everything persisted.
    pub fn load(&self) -> Result<(Vec<NetworkRec>, Vec<SandboxRec>), Error> {
        Ok((
            load_dir(&self.dir.join("networks"))?,
            load_dir(&self.dir.join("sandboxes"))?,
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn atomic_write_replaces_and_tmp_is_ignored() {
        let dir = std::env::temp_dir().join(format!("sandboxd-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Store::open(&dir).unwrap();
        let p = dir.join("networks/x.json");
        write_atomic(&p, b"{}").unwrap();
        write_atomic(&p, b"[]").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"[]");
        std::fs::write(dir.join("sandboxes/half.json.tmp"), b"{").unwrap();
        std::fs::remove_file(&p).unwrap();
        let (n, sb) = s.load().unwrap();
        assert!(n.is_empty() && sb.is_empty());
        assert!(!dir.join("sandboxes/half.json.tmp").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
