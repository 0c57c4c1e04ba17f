//! The shim's command line, shared by `peapod-shim` (what the daemon runs)
//! and `peapod shim` (the same commands inside the one binary, for a node
//! where only `peapod` was installed).
//!
//! The shim must stay single-threaded: no runtime, no logging threads
//! before libcontainer forks (see `peapod_actors::runtime::shim`).

use clap::Subcommand;
use std::path::PathBuf;

/// Sets up the process as every shim command needs it, runs `what`, exits.
pub fn main(what: ShimCommand) -> ! {
    // The daemon runs with umask 077; what libcontainer creates inside a
    // container (mount points, device nodes) needs the usual 022.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    // Errors only: libcontainer's init logs into the container's own stderr.
    // fmt writes synchronously from the calling thread: no threads are started.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PEAPOD_SHIM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    std::process::exit(run(what));
}

#[derive(Subcommand)]
pub enum ShimCommand {
    Run {
        #[arg(long)]
        config: PathBuf,
        /// The attempt's lock, inherited from the daemon.
        #[arg(long)]
        lock_fd: Option<i32>,
    },
    Exec {
        #[arg(long)]
        state_root: PathBuf,
        #[arg(long)]
        id: String,
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// Run as the container's own process runs (a user's exec).
        #[arg(long)]
        as_container: bool,
        /// With --as-container: give the command a terminal; libcontainer's
        /// console socket is made here and the master passed on over stdin.
        #[arg(long, requires = "as_container")]
        tty_socket: Option<PathBuf>,
        /// With --tty-socket: the terminal's size when the command starts, `WIDTHxHEIGHT`.
        #[arg(long, requires = "tty_socket", value_parser = parse_size)]
        tty_size: Option<(u16, u16)>,
        #[arg(last = true)]
        args: Vec<String>,
    },
    Sandbox {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        hostname: String,
        #[arg(long, value_delimiter = ',', default_value = "net,ipc,uts")]
        namespaces: Vec<String>,
    },
}

/// `WIDTHxHEIGHT`, a terminal's size.
fn parse_size(text: &str) -> Result<(u16, u16), String> {
    let (w, h) = text.split_once('x').ok_or("want WIDTHxHEIGHT")?;
    Ok((
        w.parse().map_err(|e| format!("width {w:?}: {e}"))?,
        h.parse().map_err(|e| format!("height {h:?}: {e}"))?,
    ))
}

/// Runs one shim command in this (single-threaded) process; the exit code.
pub fn run(what: ShimCommand) -> i32 {
    use peapod_actors::runtime::shim;
    match what {
        ShimCommand::Run { config, lock_fd } => {
            let cfg = match std::fs::read_to_string(&config)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
            {
                Ok(c) => c,
                Err(e) => {
                    println!(
                        "{}",
                        serde_json::json!({"result": "failed", "message": format!("{}: {e}", config.display())})
                    );
                    return 1;
                }
            };
            shim::run(&cfg, lock_fd)
        }
        ShimCommand::Exec {
            state_root,
            id,
            timeout_ms,
            as_container,
            tty_socket,
            tty_size,
            args,
        } => match as_container {
            true => shim::exec_as_container(&state_root, &id, args, tty_socket.as_deref(), tty_size),
            false => shim::exec(&state_root, &id, args, timeout_ms.map(std::time::Duration::from_millis)),
        },
        ShimCommand::Sandbox {
            dir,
            hostname,
            namespaces,
        } => match shim::sandbox(&dir, &hostname, &namespaces) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("{e}");
                1
            }
        },
    }
}
