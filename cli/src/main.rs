//! `peapod`: the daemon, the shim, and the client verbs.

mod api;
mod client;
mod commands;
mod configdata;
mod cp;
mod daemon;
mod exec;
mod explain;
mod gotemplate;
mod https;
mod jsonpath;
mod metrics_server;
mod nodeproxy;
mod output;
mod portforward;
mod progress;
mod remote;
mod rollout;
mod services;
mod shim_cli;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "peapod",
    version,
    about = "Run Kubernetes pods from ordinary manifests on one bare-metal node"
)]
pub struct Cli {
    /// The daemon's API socket.
    #[arg(
        long,
        global = true,
        env = "PEAPOD_SOCKET",
        default_value = "/run/peapod/peapod.sock"
    )]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node daemon (store, actors, API).
    Daemon(Box<daemon::DaemonArgs>),
    /// Internal: the per-container helper process.
    #[command(hide = true)]
    Shim {
        #[command(subcommand)]
        what: shim_cli::ShimCommand,
    },
    /// Create or update objects from manifests.
    Apply(commands::ApplyArgs),
    /// Create objects from manifests (fails if they exist).
    Create(commands::CreateArgs),
    /// List objects.
    Get(commands::GetArgs),
    /// Show details of objects, with events.
    Describe(commands::DescribeArgs),
    /// Delete objects.
    Delete(commands::DeleteArgs),
    /// Print a container's logs.
    Logs(commands::LogsArgs),
    /// Run a command in a container: `peapod exec -it POD -- sh`.
    Exec(exec::ExecArgs),
    /// Document a kind or a field (`pods.spec.containers`), from Kubernetes' schemas.
    Explain(explain::ExplainArgs),
    /// Attach to a running container's own process (`-i` stdin, `-t` its terminal).
    Attach(exec::AttachArgs),
    /// Forward local ports to a pod's ports: `peapod port-forward POD 8080:80`.
    PortForward(portforward::PortForwardArgs),
    /// Copy files into or out of a container (`POD:PATH`; the image needs tar).
    Cp(cp::CpArgs),
    /// Set the number of replicas of a ReplicaSet, ReplicationController …
    Scale(commands::ScaleArgs),
    /// Make a Service for the pods of a pod, deployment, replica set … (`expose deploy/web --port 80`).
    Expose(commands::ExposeArgs),
    /// Add, change or remove labels of objects (`k=v`, `k-`).
    Label(commands::LabelArgs),
    /// Add, change or remove annotations of objects (`k=v`, `k-`).
    Annotate(commands::LabelArgs),
    /// Change an object with a strategic, merge or JSON patch.
    Patch(commands::PatchArgs),
    /// Edit an object in $KUBE_EDITOR or $EDITOR.
    Edit(commands::EditArgs),
    /// Mark a node unschedulable (its daemon pods still run there).
    Cordon(commands::NodeArgs),
    /// Mark a node schedulable again.
    Uncordon(commands::NodeArgs),
    /// Add or remove node taints (`key=value:NoSchedule`, `key-`).
    Taint(commands::TaintArgs),
    /// Manage the rollout of a Deployment.
    Rollout {
        #[command(subcommand)]
        what: rollout::RolloutCommand,
    },
    /// Change fields of objects (`set image`).
    Set {
        #[command(subcommand)]
        what: SetCommand,
    },
    /// List the volume plugins the daemon loaded.
    Plugins(commands::PluginsArgs),
    /// Show the daemon's live supervision tree: each actor, what it
    /// supervises, its state, and how often it was restarted after a crash.
    Tree(commands::TreeArgs),
    /// Print a kubeconfig for the daemon's HTTPS listener (`--listen-https`):
    /// the node's CA and an admin token. Run as root on the node:
    /// `peapod kubeconfig > kc && kubectl --kubeconfig kc get pods`.
    Kubeconfig {
        /// The daemon's root dir, which holds `pki/`.
        #[arg(long, default_value = "/var/lib/peapod")]
        root_dir: PathBuf,
        /// The server URL to write (default: the address the daemon listens on).
        #[arg(long)]
        server: Option<String>,
        /// The token file the daemon reads (its --token-auth-file).
        #[arg(long)]
        token_auth_file: Option<PathBuf>,
    },
    /// Print a shell completion script: `source <(peapod completion bash)`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Manage the local image store.
    Image {
        #[command(subcommand)]
        what: commands::ImageCommand,
        /// The daemon's root dir, which holds the image store.
        #[arg(long, global = true, default_value = "/var/lib/peapod")]
        root_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum SetCommand {
    /// Set the images of containers of a pod or a pod template (`c=busybox:1.36`, `*=…`).
    Image(rollout::SetImageArgs),
}

fn main() {
    let cli = Cli::parse_from(namespace_after_verb(std::env::args().collect()));
    // The shim must stay single-threaded: no runtime, no logging threads before it.
    if let Command::Shim { what } = cli.command {
        shim_cli::main(what);
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("PEAPOD_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let client = || client::Client::new(cli.socket.clone());
    let res = match cli.command {
        Command::Shim { .. } => unreachable!("handled above"),
        Command::Daemon(args) => daemon::run(*args),
        Command::Completion { shell } => {
            use clap::CommandFactory;
            use std::io::Write;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "peapod", &mut script);
            // A reader that stops early (`| head`) is no error.
            match std::io::stdout().write_all(&script) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other.map_err(Into::into),
            }
        }
        Command::Kubeconfig {
            root_dir,
            server,
            token_auth_file,
        } => https::kubeconfig(&root_dir, server.as_deref(), token_auth_file.as_deref()).map(|k| print!("{k}")),
        Command::Apply(a) => commands::apply(&client(), a),
        Command::Create(a) => commands::create(&client(), a),
        Command::Get(a) => commands::get(&client(), a),
        Command::Describe(a) => commands::describe(&client(), a),
        Command::Delete(a) => commands::delete(&client(), a),
        Command::Logs(a) => commands::logs(&client(), a),
        Command::Exec(a) => match exec::exec(&client(), a) {
            Ok(code) => std::process::exit(code),
            Err(e) => Err(e),
        },
        Command::Explain(a) => explain::explain(a),
        Command::Attach(a) => match exec::attach(&client(), a) {
            Ok(code) => std::process::exit(code),
            Err(e) => Err(e),
        },
        Command::PortForward(a) => portforward::port_forward(&client(), a),
        Command::Cp(a) => cp::cp(&client(), a),
        Command::Scale(a) => commands::scale(&client(), a),
        Command::Expose(a) => commands::expose(&client(), a),
        Command::Label(a) => commands::label(&client(), a),
        Command::Annotate(a) => commands::annotate(&client(), a),
        Command::Patch(a) => commands::patch(&client(), a),
        Command::Edit(a) => commands::edit(&client(), a),
        Command::Rollout { what } => rollout::rollout(&client(), what),
        Command::Cordon(a) => commands::cordon(&client(), a, true),
        Command::Uncordon(a) => commands::cordon(&client(), a, false),
        Command::Taint(a) => commands::taint(&client(), a),
        Command::Set {
            what: SetCommand::Image(a),
        } => rollout::set_image(&client(), a),
        Command::Plugins(a) => commands::plugins(&client(), a),
        Command::Tree(a) => commands::tree(&client(), a),
        Command::Image { what, root_dir } => commands::image(what, &root_dir),
    };
    if let Err(e) = res {
        eprintln!("{e:#}");
        std::process::exit(1);
    }
}

/// kubectl takes `-n NS` anywhere, `kubectl -n kube-system get pods`
/// included; the verbs here take it after themselves, so a namespace given
/// before the verb is moved behind it.
fn namespace_after_verb(args: Vec<String>) -> Vec<String> {
    let mut out = vec![args.first().cloned().unwrap_or_default()];
    let mut moved = Vec::new();
    let mut i = 1;
    while i < args.len() {
        let a = &args[i];
        match a.as_str() {
            "-n" | "--namespace" if i + 1 < args.len() => {
                moved.extend([a.clone(), args[i + 1].clone()]);
                i += 2;
            }
            _ if a.starts_with("--namespace=") || (a.starts_with("-n") && a.len() > 2 && !a.starts_with("--")) => {
                moved.push(a.clone());
                i += 1;
            }
            // The global flag that takes a value, in its two spellings.
            "--socket" if i + 1 < args.len() => {
                out.extend([a.clone(), args[i + 1].clone()]);
                i += 2;
            }
            _ if a.starts_with('-') => {
                out.push(a.clone());
                i += 1;
            }
            _ => {
                // The verb: the namespace goes right after it.
                out.push(a.clone());
                out.append(&mut moved);
                out.extend(args[i + 1..].iter().cloned());
                return out;
            }
        }
    }
    out.extend(moved);
    out
}

#[cfg(test)]
mod tests {
    use super::namespace_after_verb;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn a_namespace_before_the_verb_moves_behind_it() {
        for (given, wanted) in [
            ("peapod -n kube-system get pods", "peapod get -n kube-system pods"),
            (
                "peapod --socket /s --namespace=a delete pod x",
                "peapod --socket /s delete --namespace=a pod x",
            ),
            ("peapod -nfoo logs p", "peapod logs -nfoo p"),
            ("peapod get pods -n x", "peapod get pods -n x"),
        ] {
            assert_eq!(namespace_after_verb(words(given)), words(wanted), "{given}");
        }
    }
}
