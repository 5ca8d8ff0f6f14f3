//! `sandboxd`: the CNM daemon binary (thin: flags, logging, runtime).

use std::path::PathBuf;

use clap::Parser;

/// Docker-style networks, endpoints and sandboxes over CNI plugins, served on a unix socket.
#[derive(Parser, Debug)]
#[command(name = "sandboxd", version, about)]
struct Args {
    /// API socket path.
    #[arg(long, default_value = "/run/sandboxd/sandboxd.sock")]
    socket: PathBuf,
    /// State directory.
    #[arg(long, default_value = "/var/lib/sandboxd")]
    data_dir: PathBuf,
    /// Plugin directories, separated by ':'.
    #[arg(long, default_value = "/opt/cni/bin")]
    cni_path: String,
    /// Directory of conflists for networks with driver "cni".
    #[arg(long, default_value = "/etc/cni/net.d")]
    conf_dir: PathBuf,
    /// Write each sandbox's hosts, resolv.conf and hostname under DIR/<sandbox>/ (use
    /// /etc/netns so `ip netns exec` shows them); off by default.
    #[arg(long, value_name = "DIR")]
    etc_netns: Option<PathBuf>,
    /// No name service on the networks (by default every network but the built-ins bridge,
    /// host and none answers its sandboxes' names on its gateway address, port 53).
    #[arg(long)]
    no_dns: bool,
    /// The host's resolv.conf: where names that are not sandboxd's are forwarded (at most 3
    /// servers, queried from the daemon's namespace), and the search/options lines sandboxes get.
    #[arg(long, value_name = "PATH", default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// At SIGTERM, leave the name service's sockets with a holder process that hands them to
    /// the next start (at most 30 s), so queries sent during a restart are answered by it.
    #[arg(long)]
    dns_handoff: bool,
    /// Internal: be that holder (the sockets arrive as inherited descriptors).
    #[arg(long, value_name = "PATH", hide = true)]
    dns_hold: Option<PathBuf>,
    /// Port of the name service (53; others are for experiments, resolv.conf cannot name one).
    #[arg(long, default_value_t = 53, hide = true)]
    dns_port: u16,
    /// Directory where sandbox namespaces are pinned.
    #[arg(long, default_value = "/run/netns", hide = true)]
    netns_dir: PathBuf,
    /// Also serve Docker's remote network and IPAM driver protocol as plugin NAME
    /// (`docker network create -d NAME --ipam-driver NAME …`; docs/docker-driver.md).
    #[arg(long, value_name = "NAME")]
    docker_plugin: Option<String>,
    /// Directory of the Docker plugin socket (NAME.sock).
    #[arg(long, default_value = "/run/docker/plugins", hide = true)]
    docker_plugin_dir: PathBuf,
    /// Join a cluster for overlay networks: etcd://HOST:PORT[,HOST:PORT…] (etcd v3 API).
    #[arg(long, value_name = "URL")]
    cluster_store: Option<String>,
    /// This node's underlay IPv4 address (VXLAN endpoint); required with --cluster-store.
    #[arg(long, value_name = "IP")]
    advertise_addr: Option<std::net::Ipv4Addr>,
    /// Node name in the cluster (default: the host name).
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// TTL of this node's etcd lease, seconds (slices of a node that stops vanish after it).
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(i64).range(2..=86400))]
    lease_ttl: i64,
    /// Where overlay lease files for the `overlay` CNI plugin are written.
    #[arg(long, default_value = "/run/rcni/overlay", hide = true)]
    overlay_lease_dir: PathBuf,
}

fn cluster_args(args: &Args) -> Result<Option<sandboxd::daemon::ClusterArgs>, String> {
    let Some(store) = &args.cluster_store else {
        if args.advertise_addr.is_some() || args.node_name.is_some() {
            return Err("--advertise-addr and --node-name need --cluster-store".into());
        }
        return Ok(None);
    };
    let endpoints = sandboxd::overlay::parse_store(store)?;
    let advertise = args
        .advertise_addr
        .ok_or("--cluster-store needs --advertise-addr IP (this node's underlay address)")?;
    let node = match &args.node_name {
        Some(n) => n.clone(),
        // /proc rather than a nix feature: the UTS name of this process's namespace.
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .ok_or("cannot read the host name; pass --node-name")?,
    };
    sandboxd::util::check_name("node", &node).map_err(|e| e.to_string())?;
    Ok(Some(sandboxd::daemon::ClusterArgs {
        endpoints,
        advertise,
        node,
        lease_ttl: args.lease_ttl,
        lease_dir: args.overlay_lease_dir.clone(),
    }))
}

fn main() {
    let args = Args::parse();
    if let Some(path) = &args.dns_hold {
        sandboxd::dns::handoff::hold(path);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SANDBOXD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cluster = match cluster_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sandboxd: {e}");
            std::process::exit(2);
        }
    };
    let cfg = sandboxd::daemon::Config {
        socket: args.socket,
        data_dir: args.data_dir,
        cni_path: args
            .cni_path
            .split(':')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect(),
        conf_dir: args.conf_dir,
        netns_dir: args.netns_dir,
        etc_netns: args.etc_netns,
        docker_plugin: args.docker_plugin,
        docker_plugin_dir: args.docker_plugin_dir,
        cluster,
        dns: !args.no_dns,
        dns_port: args.dns_port,
        host_resolv: args.resolv_conf,
        dns_handoff: args.dns_handoff,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sandboxd: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(sandboxd::daemon::run(cfg)) {
        tracing::error!(error = %e, "sandboxd failed");
        eprintln!("sandboxd: {e}");
        std::process::exit(1);
    }
    // Event streams may still hold tasks; do not wait for them.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
}
