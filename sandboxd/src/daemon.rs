//! Start-up and shutdown: locks, state, reconcile, the socket (or the one systemd passed), the
//! owner thread and the HTTP server; SIGTERM/SIGINT stop the daemon without touching sandboxes
//! (they keep working while it is down, like Docker's live-restore).

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cni::CniConfig;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::cniops::Runner;
use crate::error::Error;
use crate::http::{router, AppState};
use crate::owner::{Msg, Owner, Request};
use crate::store::Store;

/// Command-line configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// API socket path.
    pub socket: PathBuf,
    /// State directory.
    pub data_dir: PathBuf,
    /// Plugin directories.
    pub cni_path: Vec<PathBuf>,
    /// Directory of user conflists (driver `cni`).
    pub conf_dir: PathBuf,
    /// Directory of pinned namespaces.
    pub netns_dir: PathBuf,
    /// Where per-sandbox hosts/resolv.conf/hostname go (`/etc/netns` for `ip netns exec`);
    /// not written when `None`.
    pub etc_netns: Option<PathBuf>,
    /// Serve Docker's plugin protocol as this plugin name (`--docker-plugin`).
    pub docker_plugin: Option<String>,
    /// Where the Docker plugin socket goes (`<dir>/<name>.sock`).
    pub docker_plugin_dir: PathBuf,
    /// Cluster store (`--cluster-store`): overlay networks over etcd; off when `None`.
    pub cluster: Option<ClusterArgs>,
    /// Name service on every non-built-in network ([`crate::dns`]).
    pub dns: bool,
    /// Its port (53; another one only for benchmarks and experiments).
    pub dns_port: u16,
    /// The host's resolv.conf: upstream servers, and search/options for the sandboxes.
    pub host_resolv: PathBuf,
    /// Keep the name service's sockets open across a SIGTERM restart ([`crate::dns::handoff`]).
    pub dns_handoff: bool,
}

/// `--cluster-store` and its companions (layer 6, [`crate::overlay`]).
#[derive(Debug, Clone)]
pub struct ClusterArgs {
    /// etcd endpoints (`http://HOST:PORT`).
    pub endpoints: Vec<String>,
    /// Underlay address of this node.
    pub advertise: std::net::Ipv4Addr,
    /// Node name.
    pub node: String,
    /// etcd lease TTL in seconds.
    pub lease_ttl: i64,
    /// Directory of the lease files the `overlay` CNI plugin reads.
    pub lease_dir: PathBuf,
}

/// The locks held for the daemon's lifetime.
pub struct Locks {
    _daemon: File,
    _exec: File,
}

fn flock(f: &File, op: libc::c_int) -> std::io::Result<()> {
    // SAFETY: flock on a valid open descriptor owned by `f`; no memory is passed.
    let rc = unsafe { libc::flock(f.as_raw_fd(), op) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Take the data directory's locks.
///
/// `daemon.lock` (exclusive, non-blocking) keeps a second daemon off the same state.
/// `exec.lock` guards against plugins orphaned by a kill -9: every plugin we exec inherits a
/// shared lock on it (the descriptor is made inheritable), so taking it exclusively here waits
/// until plugins started by a previous, killed daemon have finished. Otherwise the reconcile
/// could DEL an attachment while an orphaned ADD is still creating it.
pub fn lock(data_dir: &Path) -> Result<Locks, Error> {
    std::fs::create_dir_all(data_dir).map_err(|e| Error::io("create", data_dir, e))?;
    let open = |name: &str| {
        let p = data_dir.join(name);
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| Error::io("open", p, e))
    };
    let daemon = open("daemon.lock")?;
    // A daemon killed while it was starting a plugin leaves the lock for a moment: the forked
    // child holds every descriptor until its exec closes the close-on-exec ones. A live daemon
    // holds it for good, so give up after a few seconds.
    let t = std::time::Instant::now();
    while flock(&daemon, libc::LOCK_EX | libc::LOCK_NB).is_err() {
        if t.elapsed() > Duration::from_secs(5) {
            return Err(Error::Locked(data_dir.to_path_buf()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let exec = open("exec.lock")?;
    let mut waited = false;
    while flock(&exec, libc::LOCK_EX | libc::LOCK_NB).is_err() {
        if !waited {
            tracing::info!("waiting for plugins started by a previous sandboxd to finish");
            waited = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    flock(&exec, libc::LOCK_SH).map_err(|e| Error::io("lock", data_dir.join("exec.lock"), e))?;
    // SAFETY: F_SETFD on a descriptor we own; clearing FD_CLOEXEC only makes children inherit it.
    let rc = unsafe { libc::fcntl(exec.as_raw_fd(), libc::F_SETFD, 0) };
    if rc != 0 {
        return Err(Error::io(
            "fcntl",
            data_dir.join("exec.lock"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(Locks {
        _daemon: daemon,
        _exec: exec,
    })
}

fn host_netns_path() -> String {
    let me = format!("/proc/{}/ns/net", std::process::id());
    let same = kernel::NetNs::open(Path::new("/proc/1/ns/net"))
        .and_then(|init| kernel::NetNs::open(Path::new(&me)).and_then(|m| m.same_as(&init)));
    if matches!(same, Ok(true)) {
        "/proc/1/ns/net".into()
    } else {
        me
    }
}

/// A listener from systemd socket activation (LISTEN_PID = us, LISTEN_FDS >= 1: fd 3).
fn activated_listener() -> Option<std::os::unix::net::UnixListener> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    // SAFETY: systemd passes the listening socket as fd 3 and nothing else in this process
    // owns it; we take ownership exactly once.
    let l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(3) };
    // Keep the variables from leaking into the plugins we exec. Called at start-up, before
    // any thread of ours that reads the environment exists.
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    Some(l)
}

fn bind_socket(path: &Path) -> Result<std::os::unix::net::UnixListener, Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::io(
                "bind",
                path,
                std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another daemon listens there",
                ),
            ));
        }
        std::fs::remove_file(path).map_err(|e| Error::io("remove stale socket", path, e))?;
    }
    // Created 0600 from the start (umask), so there is no window where others may connect.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let l = std::os::unix::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let l = l.map_err(|e| Error::io("bind", path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io("chmod", path, e))?;
    Ok(l)
}

async fn wait_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the default action (exit) applies, which is still safe.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping (sandboxes stay up)"),
        _ = int.recv() => tracing::info!("SIGINT: stopping (sandboxes stay up)"),
    }
}

/// The Docker plugin face: its state (reconciled), its socket, its server task.
async fn start_docker(
    cfg: &Config,
    name: &str,
) -> Result<(oneshot::Sender<()>, tokio::task::JoinHandle<()>, PathBuf), Error> {
    let data_dir = cfg.data_dir.clone();
    let ipam_dir = cfg.data_dir.join("ipam");
    let (ctx, actions) =
        tokio::task::spawn_blocking(move || crate::docker::open(&data_dir, &ipam_dir))
            .await
            .map_err(|e| Error::Kernel(format!("docker state: {e}")))??;
    for a in actions {
        tracing::info!(action = %a, "reconcile");
    }
    let path = cfg.docker_plugin_dir.join(format!("{name}.sock"));
    let l = bind_socket(&path)?;
    l.set_nonblocking(true)
        .map_err(|e| Error::io("listen", &path, e))?;
    let l = tokio::net::UnixListener::from_std(l).map_err(|e| Error::io("listen", &path, e))?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let app = crate::docker::router(ctx);
    let task = tokio::spawn(async move {
        let _ = axum::serve(l, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await;
    });
    tracing::info!(socket = %path.display(), "docker plugin ready");
    Ok((stop_tx, task, path))
}

/// Run the daemon until SIGTERM/SIGINT.
pub async fn run(cfg: Config) -> Result<(), Error> {
    if let Some(name) = &cfg.docker_plugin {
        crate::docker::check_plugin_name(name).map_err(Error::Kernel)?;
    }
    let locks = lock(&cfg.data_dir)?;
    let store = Store::open(&cfg.data_dir)?;
    let (nets, sbs) = store.load()?;
    let runner = Arc::new(Runner {
        cni: CniConfig::new(cfg.cni_path.clone(), cfg.data_dir.join("cni-cache")),
        netns_dir: cfg.netns_dir.clone(),
        ipam_dir: cfg.data_dir.join("ipam"),
        host_netns: host_netns_path(),
        overlay: std::sync::OnceLock::new(),
    });
    let (tx, rx) = mpsc::unbounded_channel::<Msg>();
    let (events, _) = broadcast::channel(1024);
    let handoff_path = cfg.data_dir.join("dns-handoff.sock");
    let dns = cfg.dns.then(|| {
        let d = crate::dns::Service::new(
            tokio::runtime::Handle::current(),
            cfg.host_resolv.clone(),
            cfg.dns_port,
        );
        // The sockets a previous daemon left with a holder: queries that arrived meanwhile are
        // waiting in them.
        if handoff_path.exists() {
            d.adopt(crate::dns::handoff::adopt(&handoff_path));
            let _ = std::fs::remove_file(cfg.data_dir.join("dns-handoff.pid"));
        }
        Arc::new(d)
    });
    let owner = Owner::new(
        store,
        cfg.conf_dir.clone(),
        runner,
        nets,
        sbs,
        tx.clone(),
        tokio::runtime::Handle::current(),
        events.clone(),
    )
    .with_etc_netns(cfg.etc_netns.clone())
    .with_dns(dns.clone(), cfg.host_resolv.clone());
    let overlay = match &cfg.cluster {
        None => None,
        Some(c) => {
            let otx = tx.clone();
            let h = crate::overlay::start(
                crate::overlay::Config {
                    endpoints: c.endpoints.clone(),
                    advertise: c.advertise,
                    node: c.node.clone(),
                    lease_ttl: c.lease_ttl,
                    prefix: crate::overlay::DEFAULT_PREFIX.into(),
                    lease_dir: c.lease_dir.clone(),
                    state_dir: cfg.data_dir.join("overlay"),
                    ipam_dir: cfg.data_dir.join("ipam"),
                    cni_state_dir: cfg.data_dir.join("overlay-cni"),
                },
                move |m| {
                    let _ = otx.send(Msg::Overlay(m));
                },
            )
            .map_err(Error::Kernel)?;
            Some(h)
        }
    };
    let mut owner = owner.with_overlay(overlay);
    let owner = tokio::task::spawn_blocking(move || {
        let r = owner.startup();
        (owner, r)
    })
    .await
    .map_err(|e| Error::Kernel(format!("start-up reconcile panicked: {e}")))?;
    let (owner, actions) = owner;
    match actions {
        Ok(actions) => {
            for a in actions {
                tracing::info!(action = %a, "reconcile");
            }
        }
        Err(e) => return Err(Error::Kernel(format!("start-up: {e}"))),
    }
    let owner_thread = std::thread::Builder::new()
        .name("sandboxd-owner".into())
        .spawn(move || owner.run(rx))
        .map_err(|e| Error::io("spawn owner thread", "", e))?;

    let docker = match &cfg.docker_plugin {
        Some(name) => Some(start_docker(&cfg, name).await?),
        None => None,
    };

    let (std_listener, created) = match activated_listener() {
        Some(l) => (l, false),
        None => (bind_socket(&cfg.socket)?, true),
    };
    std_listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("listen", &cfg.socket, e))?;
    let listener = tokio::net::UnixListener::from_std(std_listener)
        .map_err(|e| Error::io("listen", &cfg.socket, e))?;
    tracing::info!(socket = %cfg.socket.display(), data_dir = %cfg.data_dir.display(), "sandboxd ready");

    let app = router(AppState {
        tx: tx.clone(),
        events,
    });
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await;
    });
    wait_signal().await;
    // Let running plugin jobs finish so their outcome is recorded; new mutations get 503.
    let (done_tx, done_rx) = oneshot::channel();
    if tx.send(Msg::Api(Request::Shutdown(done_tx))).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(30), done_rx).await;
    }
    let _ = stop_tx.send(());
    // Event streams never end on their own; do not wait for them long.
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    if created {
        let _ = std::fs::remove_file(&cfg.socket);
    }
    if let Some((stop, task, path)) = docker {
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        let _ = std::fs::remove_file(path);
    }
    if let (true, Some(d)) = (cfg.dns_handoff, &dns) {
        let fds = d.export();
        if !fds.is_empty() {
            match crate::dns::handoff::spawn_holder(&handoff_path, &fds) {
                Ok(pid) => {
                    let _ =
                        std::fs::write(cfg.data_dir.join("dns-handoff.pid"), format!("{pid}\n"));
                    tracing::info!(
                        pid,
                        sockets = fds.len(),
                        "DNS sockets kept for the next start"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "cannot keep the DNS sockets"),
            }
        }
    }
    drop(tx);
    drop(owner_thread);
    drop(locks);
    tracing::info!("sandboxd stopped");
    Ok(())
}
