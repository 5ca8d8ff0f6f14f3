//! Finding and executing a plugin binary: shared by the runtime side ([`crate::runtime`], which
//! runs a conflist) and the plugin side ([`crate::delegate`], which runs an IPAM delegate), so
//! the runtime does not depend on the plugin skeleton (reference §1.8 libcni error decoding,
//! §1.9 ETXTBSY retry).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command as Proc, Stdio};

use crate::error::{codes, CniError};

/// Environment variables a runtime sets per call; the parent's values are never inherited for
/// these, only what the caller passes.
pub(crate) const CNI_VARS: [&str; 6] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

/// Find plugin binary `name` in the `path` directories (first match wins).
pub fn find_plugin(name: &str, path: &[PathBuf]) -> Result<PathBuf, CniError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.contains('\0') {
        return Err(CniError::new(
            codes::INVALID_CONFIG,
            format!("invalid plugin name {name:?}"),
        ));
    }
    for dir in path {
        let p = dir.join(name);
        if let Ok(m) = std::fs::metadata(&p) {
            use std::os::unix::fs::PermissionsExt;
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return Ok(p);
            }
        }
    }
    let dirs: Vec<String> = path.iter().map(|p| p.display().to_string()).collect();
    Err(CniError::internal(format!(
        "failed to find plugin {name:?} in path [{}]",
        dirs.join(" ")
    )))
}

/// Execute `bin` with `CNI_COMMAND=command`, `stdin` on its stdin and `env` (the CNI_* variables
/// to set; other variables of this process are inherited). Returns stdout on success. On a
/// non-zero exit the child's error JSON is returned unchanged; without one, a message built from
/// stderr (libcni). The child's stderr is passed through to ours. "Text file busy" (a binary
/// still being written) is retried up to 5 times, 1 s apart, like libcni.
pub fn exec_plugin(
    bin: &Path,
    command: &str,
    stdin: &[u8],
    env: &[(String, String)],
) -> Result<Vec<u8>, CniError> {
    let mut attempt = 0;
    let child = loop {
        let mut cmd = Proc::new(bin);
        for k in CNI_VARS {
            cmd.env_remove(k);
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .env("CNI_COMMAND", command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match cmd.spawn() {
            Ok(c) => break c,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 5 => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            Err(e) => {
                return Err(CniError::internal(format!(
                    "failed to execute plugin {}: {e}",
                    bin.display()
                )))
            }
        }
    };
    let mut child = child;
    // Write stdin from a thread so a plugin that prints before reading cannot deadlock us.
    let writer = child.stdin.take().map(|mut w| {
        let data = stdin.to_vec();
        std::thread::spawn(move || {
            let _ = w.write_all(&data);
        })
    });
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::internal(format!("failed to run plugin {}: {e}", bin.display())))?;
    if let Some(w) = writer {
        let _ = w.join();
    }
    if !out.stderr.is_empty() {
        let _ = std::io::stderr().write_all(&out.stderr);
    }
    if out.status.success() {
        return Ok(out.stdout);
    }
    if let Some(e) = CniError::from_json(&out.stdout) {
        return Err(e);
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        Err(CniError::internal(format!("netplugin failed: {stderr:?}")))
    } else {
        Err(CniError::internal(format!(
            "netplugin failed but error parsing its diagnostic message {:?}: {}",
            String::from_utf8_lossy(&out.stdout).trim(),
            out.status
        )))
    }
}
