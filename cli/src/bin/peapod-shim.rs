//! `peapod-shim`: the per-container helper the daemon runs (create, start
//! and babysit a container; exec in it; pin a pod's namespaces). A binary of
//! its own, as containerd's shims are, so that each container start maps,
//! relocates and forks a small program rather than the whole daemon and CLI:
//! the loader's relocations alone were about 300 page faults per start.

#[path = "../shim_cli.rs"]
mod shim_cli;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "peapod-shim",
    version,
    about = "peapod's per-container helper (run by the daemon)"
)]
struct Cli {
    #[command(subcommand)]
    what: shim_cli::ShimCommand,
}

fn main() {
    shim_cli::main(Cli::parse().what);
}
