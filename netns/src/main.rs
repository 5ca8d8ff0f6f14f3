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

fn main() {
    let cli = Cli::parse();
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
