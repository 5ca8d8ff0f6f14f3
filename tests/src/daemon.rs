//! One way to run sandboxd in a test: a child process with its own socket, data directory and
//! log, started and stopped by PID, and driven with clients that share no code with it (curl for
//! the HTTP API, the `netns` binary for the CLI). Every suite that needs a daemon (the API, the
//! CLI, names, the Docker face, overlay nodes) builds on this one, adding only its own flags.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{bin_dir, plugin_bin};

/// A sandboxd child process and where it keeps things. Dropped while running: SIGKILL when the
/// test is already failing, SIGTERM otherwise (a stop that must be clean is [`Sandboxd::stop`]).
pub struct Sandboxd {
    child: Option<Child>,
    /// The API socket.
    pub socket: PathBuf,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// The daemon's stderr, appended across restarts.
    pub log_path: PathBuf,
    /// A command the daemon runs under (for example `nsenter -t PID -m -n --`).
    prefix: Vec<OsString>,
    /// Flags after `--socket`/`--data-dir`; `--cni-path` and `--conf-dir` are added when not set.
    args: Vec<OsString>,
    env: Vec<(String, String)>,
}

impl Sandboxd {
    /// A daemon with this socket and data directory (created); its log is `<data_dir>/log`,
    /// its plugins are the workspace's binaries and its conflists go to `<data_dir>/net.d`
    /// unless [`Sandboxd::arg`] sets `--cni-path`/`--conf-dir`. Not started yet.
    pub fn new(socket: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> Sandboxd {
        let data_dir = data_dir.into();
        std::fs::create_dir_all(&data_dir).unwrap();
        Sandboxd {
            child: None,
            socket: socket.into(),
            log_path: data_dir.join("log"),
            data_dir,
            prefix: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// One more flag or value.
    pub fn arg(mut self, a: impl Into<OsString>) -> Sandboxd {
        self.args.push(a.into());
        self
    }

    /// Several flags.
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, v: I) -> Sandboxd {
        self.args.extend(v.into_iter().map(Into::into));
        self
    }

    /// An environment variable of the daemon (`SANDBOXD_LOG`, …).
    pub fn env(mut self, k: &str, v: &str) -> Sandboxd {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Run the daemon under this command (its arguments end with `--`).
    pub fn under<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, v: I) -> Sandboxd {
        self.prefix = v.into_iter().map(Into::into).collect();
        self
    }

    /// Write the log somewhere else than `<data_dir>/log`.
    pub fn log_to(mut self, p: impl Into<PathBuf>) -> Sandboxd {
        self.log_path = p.into();
        self
    }

    fn has_flag(&self, f: &str) -> bool {
        self.args.iter().any(|a| a == f)
    }

    /// Start the process without waiting for it to answer.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "sandboxd is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut cmd = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(plugin_bin("sandboxd"));
                c
            }
            None => Command::new(plugin_bin("sandboxd")),
        };
        cmd.arg("--socket")
            .arg(&self.socket)
            .arg("--data-dir")
            .arg(&self.data_dir);
        if !self.has_flag("--cni-path") {
            cmd.arg("--cni-path").arg(bin_dir());
        }
        if !self.has_flag("--conf-dir") {
            cmd.arg("--conf-dir").arg(self.data_dir.join("net.d"));
        }
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(cmd.spawn().unwrap());
    }

    /// Wait until the API answers `GET /v1/_ping` with 200, failing at once if the process
    /// exits and after `secs` otherwise.
    pub fn wait_ready(&mut self, secs: u64) {
        let t = Instant::now();
        loop {
            if self.try_api("GET", "/v1/_ping", None).0 == 200 {
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                panic!("sandboxd exited with {st}: {}", self.log());
            }
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "sandboxd did not answer in {secs} s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// [`Sandboxd::spawn`] and [`Sandboxd::wait_ready`] (30 s).
    pub fn start(&mut self) {
        self.spawn();
        self.wait_ready(30);
    }

    /// Take over a daemon process started another way (socket activation).
    pub fn adopt(&mut self, c: Child) {
        assert!(self.child.is_none(), "sandboxd is already running");
        self.child = Some(c);
    }

    /// Give the process back to the caller (a stop whose checks differ from [`Sandboxd::stop`]).
    pub fn take_child(&mut self) -> Child {
        self.child.take().expect("sandboxd is not running")
    }

    /// Whether the process was started and not stopped.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// The daemon's PID.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.as_ref().expect("sandboxd is not running").id()).unwrap()
    }

    /// Stop with SIGTERM by PID; the exit must be clean within 10 s and the socket gone.
    pub fn stop(&mut self) {
        self.stop_with(libc::SIGTERM);
    }

    /// Stop with `sig` (SIGTERM or SIGINT) by PID, as [`Sandboxd::stop`].
    pub fn stop_with(&mut self, sig: libc::c_int) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let pid = i32::try_from(c.id()).unwrap();
        // SAFETY: kill(2) on the PID of our own child, which has not been reaped yet.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
        let t = Instant::now();
        let st = loop {
            if let Some(st) = c.try_wait().unwrap() {
                break st;
            }
            if t.elapsed() > Duration::from_secs(10) {
                let _ = c.kill();
                let _ = c.wait();
                panic!("sandboxd ignored signal {sig} for 10 s: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(st.success(), "sandboxd exit status {st}: {}", self.log());
        assert!(
            !self.socket.exists(),
            "socket left behind after a clean stop"
        );
    }

    /// SIGKILL by PID and reap.
    pub fn kill9(&mut self) {
        let mut c = self.child.take().expect("sandboxd is not running");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// One API call with curl: (status, body as JSON, or as a string when not JSON, curl's
    /// exit code). Status 0 means no HTTP answer; curl's code tells why: 7, the daemon was down
    /// (connection refused); 52 or 56, it died with the request in hand.
    pub fn try_api_exit(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value, i32) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "60",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ])
        .arg("--unix-socket")
        .arg(&self.socket);
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        cmd.arg(format!("http://localhost{path}"));
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let code: u16 = code.trim().parse().unwrap_or(0);
        let v = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()));
        (code, v, out.status.code().unwrap_or(-1))
    }

    /// [`Sandboxd::try_api_exit`] without curl's exit code.
    pub fn try_api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let (code, v, _) = self.try_api_exit(method, path, body);
        (code, v)
    }

    /// `netns --daemon SOCKET args…` (the CLI as a user runs it; `$SANDBOXD_SOCKET` removed).
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(plugin_bin("netns"))
            .arg("--daemon")
            .arg(&self.socket)
            .args(args)
            .env_remove("SANDBOXD_SOCKET")
            .output()
            .unwrap()
    }

    /// [`Sandboxd::cli`] that must succeed: its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "netns {args:?} failed ({:?}): {}{}\n--- sandboxd log:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A file under the data directory.
    pub fn data(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.data_dir.join(rel)
    }
}

impl Drop for Sandboxd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if !std::thread::panicking() {
                // SAFETY: kill(2) on the PID of our own child, which has not been reaped yet.
                unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
                let t = Instant::now();
                while matches!(c.try_wait(), Ok(None)) && t.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A suite's own daemon type wraps a [`Sandboxd`] in its field `d` and adds its requests; this
/// makes every [`Sandboxd`] method callable on the wrapper.
#[macro_export]
macro_rules! wraps_sandboxd {
    ($t:ty) => {
        impl std::ops::Deref for $t {
            type Target = $crate::daemon::Sandboxd;
            fn deref(&self) -> &$crate::daemon::Sandboxd {
                &self.d
            }
        }
        impl std::ops::DerefMut for $t {
            fn deref_mut(&mut self) -> &mut $crate::daemon::Sandboxd {
                &mut self.d
            }
        }
    };
}
