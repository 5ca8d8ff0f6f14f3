//! `netns`: one debugging CLI for network namespaces, CNI attachments (run through the plugins
//! exactly like a libcni runtime), addresses, routes, neighbours and our firewall entries; and the
//! client of sandboxd (`network`, `sandbox`, `repair`, `events`).

mod attach;
mod cli;
mod ctx;
mod daemon;
mod error;
mod fw;
mod networks;
mod ns;
mod sandboxd;
mod show;
mod table;

use std::io::Write;

use clap::{CommandFactory, Parser};

use cli::{exit, Cli, Cmd};
use ctx::Ctx;
use error::Error;

fn json_out(out: &mut dyn Write, v: &impl serde::Serialize) -> error::Result<()> {
    let s = serde_json::to_string_pretty(v)
        .map_err(|e| Error::Failed(format!("encoding JSON: {e}")))?;
    let _ = writeln!(out, "{s}");
    Ok(())
}

/// A client of the daemon socket chosen by `--daemon` / `SANDBOXD_SOCKET`.
fn client(cli_daemon: Option<&std::path::Path>) -> error::Result<daemon::Client> {
    daemon::Client::new(daemon::socket_path(cli_daemon, &|k| std::env::var(k).ok()))
}

fn run(cli: Cli, ctx: &Ctx, out: &mut dyn Write, err: &mut dyn Write) -> error::Result<()> {
    let sock = cli.daemon.as_deref();
    match cli.command {
        Cmd::Network(cmd) => sandboxd::network(&client(sock)?, &cmd, out),
        Cmd::Sandbox(cmd) => sandboxd::sandbox(&client(sock)?, &cmd, out),
        Cmd::Repair { json } => sandboxd::repair(&client(sock)?, json, out),
        Cmd::Events { json } => sandboxd::events(&client(sock)?, json, out),
        Cmd::Add { name } => {
            ns::add(ctx, &name)?;
            let _ = writeln!(
                out,
                "created namespace {name} ({})",
                ctx.ns_path(&name).display()
            );
            Ok(())
        }
        Cmd::Del { name } => {
            ns::del(ctx, &name, err)?;
            let _ = writeln!(out, "deleted namespace {name}");
            Ok(())
        }
        Cmd::List { json } => {
            let rows = ns::list(ctx)?;
            if json {
                json_out(out, &rows)
            } else {
                let _ = write!(out, "{}", ns::render_list(&rows));
                Ok(())
            }
        }
        // Handled in main: it replaces the process.
        Cmd::Exec { .. } => Ok(()),
        Cmd::Networks { json } => {
            if !ctx.conf_dir.is_dir() {
                return Err(Error::NotFound(format!(
                    "configuration directory {} does not exist; pass --conf-dir or set NETCONFPATH",
                    ctx.conf_dir.display()
                )));
            }
            let rows = networks::scan(&ctx.conf_dir);
            if json {
                json_out(out, &rows)
            } else {
                let _ = write!(out, "{}", networks::render(&rows));
                Ok(())
            }
        }
        Cmd::Attach(a) => attach::attach(ctx, &a, out, err),
        Cmd::Detach(t) => attach::detach(ctx, &t, out),
        Cmd::Check(t) => attach::check(ctx, &t, out),
        Cmd::Gc { network } => attach::gc(ctx, &network, out),
        Cmd::Status { network } => attach::status(ctx, &network, out),
        Cmd::Show { name, json } => {
            let r = show::collect(ctx, &name)?;
            if json {
                json_out(out, &r)
            } else {
                let _ = write!(out, "{}", show::render(&r));
                Ok(())
            }
        }
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "netns", out);
            Ok(())
        }
    }
}

/// A clap usage error as one line (`error: …` and its tips, without the usage block), so every
/// failure of `netns` is one line on stderr that names the problem.
fn usage_line(e: &clap::Error) -> String {
    if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return "netns: a subcommand is missing; see --help".into();
    }
    let text = e.render().to_string();
    let parts: Vec<String> = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(|l| l.trim().trim_start_matches("error:").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    format!("netns: {}; see --help", parts.join(" "))
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{}", usage_line(&e));
            std::process::exit(e.exit_code());
        }
    };
    let ctx = Ctx::resolve(&cli.dirs, &|k| std::env::var(k).ok());
    let mut err = std::io::stderr();
    if let Cmd::Exec { name, command } = &cli.command {
        std::process::exit(ns::exec(&ctx, name, command, &mut err));
    }
    let mut out = std::io::stdout();
    let code = match run(cli, &ctx, &mut out, &mut err) {
        Ok(()) => exit::OK,
        Err(e) => {
            let _ = writeln!(err, "netns: {e}");
            e.exit_code()
        }
    };
    let _ = out.flush();
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_errors_are_one_line() {
        let e = Cli::try_parse_from(["netns", "network", "create", "n", "--driver", "vxlan"])
            .unwrap_err();
        let l = usage_line(&e);
        assert!(!l.contains('\n'), "{l}");
        assert!(
            l.starts_with("netns: invalid value 'vxlan' for '--driver <DRIVER>'"),
            "{l}"
        );
        assert!(l.contains("bridge, cni"), "{l}");
        let e = Cli::try_parse_from(["netns", "sandbox", "create", "s", "--bogus"]).unwrap_err();
        let l = usage_line(&e);
        assert!(
            l.starts_with("netns: unexpected argument '--bogus' found"),
            "{l}"
        );
        assert!(!l.contains('\n') && !l.contains("Usage"), "{l}");
        let e = Cli::try_parse_from(["netns", "network"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(usage_line(&e), "netns: a subcommand is missing; see --help");
    }
}
