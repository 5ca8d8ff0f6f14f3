//! Command-line types (clap derive). Every subcommand has `--help`; the exit codes are part of
//! the long help because scripts depend on them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Exit codes, documented in `--help` (see [`EXIT_CODES_HELP`]).
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// The operation ran and failed (plugin error, kernel error, I/O).
    pub const FAILED: i32 = 1;
    /// Usage error: bad option or value; nothing was changed.
    pub const USAGE: i32 = 2;
    /// A named namespace, network or attachment does not exist; nothing was changed.
    pub const NOT_FOUND: i32 = 3;
}

/// Long-help footer listing the exit codes and the directory lookup order.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  the operation failed (plugin error, kernel error, I/O error); for the sandboxd commands also
     a conflict (409: name taken, network in use, port in use), a daemon failure (5xx) and
     `cannot reach sandboxd`
  2  usage error: bad option or value, or sandboxd rejected the input (4xx) (nothing was changed)
  3  not found: unknown namespace, network, attachment or sandbox (404) (nothing was changed)
  `netns exec` exits with the command's own status (126: cannot execute, 127: not found).

Directories:
  config   --conf-dir, else $NETCONFPATH, else $CNI_CONF_DIR, else /etc/cni/net.d
  plugins  --cni-path, else $CNI_PATH (':'-separated), else /opt/cni/bin
  cache    --cache-dir, else /var/lib/cni (libcni's results/ layout)
  netns    /run/netns (the same pins as `ip netns`)
  etc      $NETNS_ETC_DIR, else /etc/netns: `exec` bind-mounts the files of <etc>/NAME over /etc
  sandboxd --daemon, else $SANDBOXD_SOCKET, else /run/sandboxd/sandboxd.sock
           (used by `network`, `sandbox`, `repair` and `events` only)";

/// One debugging tool for network namespaces, CNI attachments and their firewall entries.
///
/// Runs the CNI plugins exactly like a container runtime (libcni): prevResult chaining,
/// reverse-order DEL, and the result cache under <cache-dir>/results, so attachments made here
/// are visible to (and cleaned up by) any libcni-based runtime using the same cache, and the
/// other way round.
///
/// Also the client of sandboxd: `network`, `sandbox`, `repair` and `events` talk to the daemon
/// over its API socket (--daemon) and touch nothing else.
#[derive(Debug, Parser)]
#[command(name = "netns", version, after_long_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Global directory options.
    #[command(flatten)]
    pub dirs: DirArgs,
    /// sandboxd's API socket, for `network`, `sandbox`, `repair` and `events`
    /// [env: SANDBOXD_SOCKET] [default: /run/sandboxd/sandboxd.sock]
    #[arg(long, global = true, value_name = "PATH")]
    pub daemon: Option<PathBuf>,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Cmd,
}

/// Where configs, plugins and the cache live.
#[derive(Debug, Clone, Args, Default)]
pub struct DirArgs {
    /// Network configuration directory [env: NETCONFPATH, CNI_CONF_DIR] [default: /etc/cni/net.d]
    #[arg(long, global = true, value_name = "DIR")]
    pub conf_dir: Option<PathBuf>,
    /// Plugin directories, ':'-separated [env: CNI_PATH] [default: /opt/cni/bin]
    #[arg(long, global = true, value_name = "PATHS")]
    pub cni_path: Option<String>,
    /// Result cache directory (libcni layout: <DIR>/results/<net>-<id>-<ifname>)
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "/var/lib/cni"
    )]
    pub cache_dir: PathBuf,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create a network namespace pinned at /run/netns/NAME (like `ip netns add`).
    #[command(after_long_help = EXIT_CODES_HELP)]
    Add {
        /// Namespace name (letters, digits, '_', '.', '-'; starts with a letter or digit).
        name: String,
    },
    /// Delete a pinned namespace. Run `netns detach` first, or `netns gc` afterwards.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Del {
        /// Namespace name.
        name: String,
    },
    /// List pinned namespaces and how many CNI attachments each has.
    #[command(after_long_help = EXIT_CODES_HELP)]
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a command inside a namespace (with /sys remounted for it and the files of
    /// /etc/netns/NAME bind-mounted over /etc, like `ip netns exec`).
    #[command(after_long_help = EXIT_CODES_HELP)]
    Exec {
        /// Namespace name.
        name: String,
        /// The command and its arguments (after `--`).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// List the networks found in the configuration directory.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Networks {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Attach a namespace to a network (CNI ADD through every plugin of the conflist).
    #[command(after_long_help = EXIT_CODES_HELP)]
    Attach(AttachArgs),
    /// Detach a namespace from a network (CNI DEL, plugins in reverse order). Idempotent.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Detach(TargetArgs),
    /// Verify an attachment (CNI CHECK with the cached result as prevResult).
    #[command(after_long_help = EXIT_CODES_HELP)]
    Check(TargetArgs),
    /// Garbage-collect a network (CNI GC).
    ///
    /// The valid attachments are the cached attachments of NETWORK whose namespace still
    /// exists, which is what a kubelet computes after a restart: an attachment whose namespace
    /// was deleted without `netns detach` gets a full DEL (with its cached config and args),
    /// then every plugin receives GC with the remaining ones as `cni.dev/valid-attachments`.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Gc {
        /// Network name.
        network: String,
    },
    /// Ask every plugin of a network whether it is ready (CNI STATUS, spec 1.1.0).
    #[command(after_long_help = EXIT_CODES_HELP)]
    Status {
        /// Network name.
        network: String,
    },
    /// Show a namespace: interfaces, addresses, routes, neighbours, attachments and the
    /// firewall entries (table `inet rcni` or iptables nat rules) that belong to them.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Show {
        /// Namespace name.
        name: String,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Networks of sandboxd (Docker-style `network` objects), through the daemon's API.
    ///
    /// Not to be confused with `netns networks`, which lists the conflists of the configuration
    /// directory and needs no daemon.
    #[command(subcommand, after_long_help = EXIT_CODES_HELP)]
    Network(NetworkCmd),
    /// Sandboxes of sandboxd (a namespace plus its endpoints), through the daemon's API.
    #[command(subcommand, after_long_help = EXIT_CODES_HELP)]
    Sandbox(SandboxCmd),
    /// Ask sandboxd to repair now what its start-up reconcile repairs (flushed firewall entries,
    /// vanished bridges, endpoints of deleted namespaces, CNI GC of every network).
    #[command(after_long_help = EXIT_CODES_HELP)]
    Repair {
        /// Print the daemon's JSON report instead of one line per action.
        #[arg(long)]
        json: bool,
    },
    /// Follow sandboxd's change events (one line each) until interrupted.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Events {
        /// Print the daemon's JSON lines as they arrive.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Arguments of `attach`.
#[derive(Debug, Clone, Args)]
pub struct AttachArgs {
    /// The namespace and network.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Publish a port (capability `portMappings`): [HOSTIP:]HOST:CONTAINER[/tcp|udp|sctp],
    /// ports 1-65535, IPv6 host address in brackets. Repeatable.
    #[arg(long = "port", short = 'p', value_name = "HOST:CONTAINER[/PROTO]")]
    pub ports: Vec<String>,
    /// Request an address (capability `ips`), with or without prefix. Repeatable.
    #[arg(long = "ip", value_name = "ADDR")]
    pub ips: Vec<String>,
    /// Request a MAC address for the interface (capability `mac`).
    #[arg(long, value_name = "MAC")]
    pub mac: Option<String>,
    /// CNI_ARGS, `K=V;K=V`. Repeatable (joined with ';').
    #[arg(long = "args", value_name = "K=V;...")]
    pub args: Vec<String>,
    /// Print the CNI result as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Namespace + network + attachment identity.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Namespace name (a pin under /run/netns).
    pub name: String,
    /// Network name (from the configuration directory).
    pub network: String,
    /// Interface name inside the namespace.
    #[arg(long, default_value = "eth0", value_name = "IF")]
    pub ifname: String,
    /// Container ID [default: the one cached for this namespace and network, else NAME].
    #[arg(long, value_name = "ID")]
    pub container_id: Option<String>,
}

/// `netns network …`: sandboxd networks.
#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create a network.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Create(NetworkCreateArgs),
    /// List networks (built-ins included).
    #[command(visible_alias = "list", after_long_help = EXIT_CODES_HELP)]
    Ls {
        /// Print the daemon's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one network: subnets, options, labels and endpoints.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Inspect {
        /// Network name, id or unique id prefix (12+ characters).
        name: String,
        /// Print the daemon's JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Remove a network (refused while it has endpoints, and for the built-ins).
    #[command(visible_alias = "remove", after_long_help = EXIT_CODES_HELP)]
    Rm {
        /// Network name, id or unique id prefix.
        name: String,
    },
    /// Connect a sandbox to one more network (the next interface: eth1, eth2, …).
    #[command(after_long_help = EXIT_CODES_HELP)]
    Connect(ConnectArgs),
    /// Disconnect a sandbox from a network.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Disconnect {
        /// Network name.
        network: String,
        /// Sandbox name.
        sandbox: String,
    },
}

/// Arguments of `network create`.
#[derive(Debug, Clone, Args)]
pub struct NetworkCreateArgs {
    /// Network name (1-64 of letters, digits, '_', '.', '-'; starts with a letter or digit).
    pub name: String,
    /// `bridge` (sandboxd generates the conflist), `cni` (an existing conflist of sandboxd's
    /// --conf-dir, used as is: `-o conflist=NAME`, default the network's name) or `overlay` (a
    /// multi-host network stored in sandboxd's cluster store; needs one IPv4 --subnet).
    #[arg(long, default_value = "bridge", value_parser = ["bridge", "cni", "overlay"])]
    pub driver: String,
    /// Subnet in CIDR notation (network address, e.g. 10.90.0.0/24); repeatable, at most one
    /// IPv4 and one IPv6 in practice. None given: an IPv4 subnet from the daemon's default pool.
    #[arg(long = "subnet", value_name = "CIDR")]
    pub subnets: Vec<String>,
    /// Gateway address; applies to the --subnet containing it. Repeatable (one per subnet).
    #[arg(long = "gateway", value_name = "IP")]
    pub gateways: Vec<String>,
    /// Allocate addresses from this range only; applies to the --subnet containing it.
    /// Repeatable (one per subnet).
    #[arg(long = "ip-range", value_name = "CIDR")]
    pub ip_ranges: Vec<String>,
    /// No masquerade and no route out: sandboxes reach only each other.
    #[arg(long)]
    pub internal: bool,
    /// Enable IPv6; needs an IPv6 --subnet (there is no default IPv6 pool).
    #[arg(long)]
    pub ipv6: bool,
    /// Driver option KEY=VALUE; repeatable. bridge: bridge_name=IFNAME, mtu=N (68-65535),
    /// icc=true|false; cni: conflist=NAME (default: the network's name); overlay:
    /// subnet_len=N (each node's slice, default 24), vni=N, port=N (VXLAN UDP port, 8472).
    #[arg(long = "opt", short = 'o', value_name = "KEY=VALUE")]
    pub opts: Vec<String>,
    /// Label KEY=VALUE; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Print the daemon's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Endpoint options shared by `network connect` and `sandbox create`.
#[derive(Debug, Clone, Args, Default)]
pub struct EndpointArgs {
    /// Static address (no prefix); must lie in the network's subnet and be free.
    #[arg(long, value_name = "IP")]
    pub ip: Option<String>,
    /// Network-scoped alias; repeatable.
    #[arg(long = "alias", value_name = "NAME")]
    pub aliases: Vec<String>,
    /// Publish a port: [HOSTIP:]HOST:CONTAINER[/tcp|udp|sctp], ports 1-65535, an IPv6 host
    /// address in brackets. Bridge networks only. Repeatable.
    #[arg(
        long = "port",
        short = 'p',
        visible_alias = "publish",
        value_name = "HOST:CONTAINER[/PROTO]"
    )]
    pub ports: Vec<String>,
}

/// Arguments of `network connect`.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Network name.
    pub network: String,
    /// Sandbox name.
    pub sandbox: String,
    /// Address, aliases and published ports of the new endpoint.
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    /// Print the daemon's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `netns sandbox …`: sandboxd sandboxes.
#[derive(Debug, Subcommand)]
pub enum SandboxCmd {
    /// Create a sandbox: a namespace pinned at /run/netns/NAME joined to its first network.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Create(SandboxCreateArgs),
    /// List sandboxes.
    #[command(visible_alias = "list", after_long_help = EXIT_CODES_HELP)]
    Ls {
        /// Print the daemon's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one sandbox and its endpoints.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Inspect {
        /// Sandbox name, id or unique id prefix (12+ characters).
        name: String,
        /// Print the daemon's JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Remove a sandbox: every endpoint is torn down and the namespace sandboxd created deleted.
    #[command(visible_alias = "remove", after_long_help = EXIT_CODES_HELP)]
    Rm {
        /// Sandbox name, id or unique id prefix.
        name: String,
    },
}

/// Arguments of `sandbox create`.
#[derive(Debug, Clone, Args)]
pub struct SandboxCreateArgs {
    /// Sandbox name (also the namespace pin /run/netns/NAME).
    pub name: String,
    /// NETWORK (a sandboxd network), `host`, `none` or `container:SANDBOX` (share that
    /// sandbox's namespace).
    #[arg(long, default_value = "bridge", value_name = "MODE")]
    pub network: String,
    /// Address, aliases and published ports of the first endpoint.
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    /// Hostname recorded for the sandbox (RFC 1123, at most 64 characters).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Print the daemon's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn attach_parses_repeated_options() {
        let c = Cli::try_parse_from([
            "netns",
            "attach",
            "c1",
            "net",
            "--port",
            "8080:80",
            "-p",
            "53:53/udp",
            "--ip",
            "10.0.0.5",
            "--mac",
            "02:00:00:00:00:01",
            "--ifname",
            "eth1",
        ])
        .unwrap();
        let Cmd::Attach(a) = c.command else {
            panic!("not attach")
        };
        assert_eq!(a.ports, ["8080:80", "53:53/udp"]);
        assert_eq!(a.ips, ["10.0.0.5"]);
        assert_eq!(a.target.ifname, "eth1");
        assert_eq!(a.target.container_id, None);
    }

    #[test]
    fn exec_keeps_hyphen_args_and_globals_anywhere() {
        let c =
            Cli::try_parse_from(["netns", "exec", "c1", "--", "ping", "-c1", "10.0.0.1"]).unwrap();
        let Cmd::Exec { command, .. } = c.command else {
            panic!("not exec")
        };
        assert_eq!(command, ["ping", "-c1", "10.0.0.1"]);
        let c = Cli::try_parse_from(["netns", "networks", "--conf-dir", "/x"]).unwrap();
        assert_eq!(c.dirs.conf_dir, Some(PathBuf::from("/x")));
    }

    #[test]
    fn usage_errors_are_exit_2() {
        let e = Cli::try_parse_from(["netns", "attach", "c1"]).unwrap_err();
        assert_eq!(e.exit_code(), exit::USAGE);
        let e = Cli::try_parse_from(["netns", "exec", "c1"]).unwrap_err();
        assert_eq!(e.exit_code(), exit::USAGE);
    }

    #[test]
    fn long_help_documents_exit_codes() {
        let mut cmd = Cli::command();
        let help = cmd.render_long_help().to_string();
        assert!(help.contains("3  not found"), "{help}");
        let sub = cmd.find_subcommand_mut("attach").unwrap();
        let help = sub.render_long_help().to_string();
        assert!(help.contains("Exit codes"), "{help}");
        assert!(help.contains("--port"), "{help}");
    }
}
