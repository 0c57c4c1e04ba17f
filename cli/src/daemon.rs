//! `peapod daemon`: opens the store, starts the node's actor tree and serves the API.

use crate::api::{self, ApiState};
use crate::metrics_server;
use anyhow::{Context, Result};
use peapod_actors::config::{detect_node_ip, NodeConfig};
use peapod_actors::events::{EventKind, EventRecorder};
use peapod_actors::metered_store::MeteredStore;
use peapod_actors::node::{ensure_default_namespaces, NodeSpec};
use peapod_actors::runtime::cni::NetworkConfig;
use peapod_actors::runtime::{NodePaths, Runtime};
use peapod_actors::supervisor::{Intensity, Tree};
use peapod_core::store::{EncryptedStore, EtcdConfig, EtcdStore, EtcdTls, Keys, SqliteStore, Store};
use peapod_metrics::health::{self, Component};
use peapod_volumes::{VolumeConfig, VolumeManager};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

/// The daemon's flags; every one has an embedded default.
#[derive(clap::Args)]
pub struct DaemonArgs {
    /// Persistent state.
    #[arg(long, default_value = "/var/lib/peapod")]
    root_dir: PathBuf,
    /// Sockets, namespaces, container state.
    #[arg(long, default_value = "/run/peapod")]
    run_dir: PathBuf,
    /// Where objects live: `sqlite` (one file under --root-dir, for a single
    /// machine) or `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`, the etcd cluster
    /// that nodes of one cluster share (keys under PREFIX, default `/peapod`).
    #[arg(long, default_value = "sqlite")]
    store: String,
    /// CA bundle that signed the etcd members' certificates (turns on TLS), as kube-apiserver's flag.
    #[arg(long)]
    etcd_cafile: Option<PathBuf>,
    /// This node's client certificate for etcd (with --etcd-keyfile).
    #[arg(long)]
    etcd_certfile: Option<PathBuf>,
    /// The key of --etcd-certfile.
    #[arg(long)]
    etcd_keyfile: Option<PathBuf>,
    /// How often etcd's history older than one interval is compacted, as
    /// kube-apiserver's flag; `0` never (another client compacts).
    #[arg(long, default_value = "5m")]
    etcd_compaction_interval: String,
    /// Nodes that share a store elect one to run the scheduler and one to run
    /// the controllers (on by default with an etcd store; a SQLite store is
    /// one node's alone, which then runs both).
    #[arg(long, action = clap::ArgAction::Set)]
    leader_elect: Option<bool>,
    /// How long a leader's Lease lasts unrenewed, as kube-controller-manager's flag.
    #[arg(long, default_value = "15s")]
    leader_elect_lease_duration: String,
    /// How long a leader tries to renew before it stops leading.
    #[arg(long, default_value = "10s")]
    leader_elect_renew_deadline: String,
    /// How often candidates try for the Lease, and the leader renews it.
    #[arg(long, default_value = "2s")]
    leader_elect_retry_period: String,
    /// How long a node's heartbeats may stop before the node is called
    /// unreachable and tainted, as kube-controller-manager's flag.
    #[arg(long, default_value = "40s")]
    node_monitor_grace_period: String,
    /// How often this node posts its status and renews its Lease (kubelet's
    /// flag). Keep it well under the grace period: a check that falls
    /// between two heartbeats more than the grace apart calls the node unreachable.
    #[arg(long, default_value = "10s")]
    node_status_update_frequency: String,
    /// With a shared store: the port other nodes reach this one on (at its
    /// --node-ip) for its pods' logs, exec, attach and port-forward, as
    /// kubelet's --port; 0 picks a free one. Published in the Node.
    #[arg(long, default_value_t = 10250)]
    kubelet_port: u16,
    /// The keys Secrets are sealed with (default `<root-dir>/secret-encryption.keys`,
    /// made at first start). Every node of a cluster needs the same file.
    #[arg(long)]
    encryption_key_file: Option<PathBuf>,
    /// CNI configuration directory; peapod writes its default network here
    /// when it holds no configuration, and an operator's file replaces it.
    #[arg(long, default_value = "/etc/peapod/cni/net.d")]
    cni_conf_dir: PathBuf,
    /// CNI plugin directories, colon-separated.
    #[arg(long, default_value = "/usr/lib/cni:/opt/cni/bin", value_delimiter = ':')]
    cni_bin_dir: Vec<PathBuf>,
    /// The default network's bridge.
    #[arg(long, default_value = "peapod0")]
    cni_bridge: String,
    /// The default network's pod CIDR; published as the Node's `spec.podCIDR`.
    /// Default: a range claimed from --cluster-cidr when that is given, else 10.88.0.0/16.
    #[arg(long)]
    pod_cidr: Option<String>,
    /// Every node's pod ranges together (kube-controller-manager's flag).
    /// Set on the nodes of a cluster: each routes the other nodes' ranges
    /// through their addresses (host-gw), and pod traffic within it is not
    /// masqueraded. Without --pod-cidr a node claims its range from it.
    #[arg(long)]
    cluster_cidr: Option<String>,
    /// The size of the range a node claims from --cluster-cidr
    /// (kube-controller-manager's flag).
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Where Services' cluster IPs come from (the first is `kubernetes`'), as
    /// kube-apiserver's flag.
    #[arg(long, default_value = peapod_core::service::DEFAULT_CLUSTER_IP_RANGE)]
    service_cluster_ip_range: String,
    /// Where NodePorts come from, as kube-apiserver's flag.
    #[arg(long, default_value = peapod_core::service::DEFAULT_NODE_PORT_RANGE)]
    service_node_port_range: String,
    /// The nftables table (family `ip`) the service proxy programs; empty:
    /// no service proxy on this node.
    #[arg(long, default_value = "peapod")]
    service_proxy_table: String,
    /// The cluster's DNS zone (kubelet's flag).
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The `kube-system/kube-dns` address pods' resolv.conf names (kubelet's
    /// flag; default: the tenth address of --service-cluster-ip-range);
    /// `none`: no cluster DNS, pods get the host's resolvers.
    #[arg(long)]
    cluster_dns: Option<String>,
    /// Where this node's DNS server listens, UDP and TCP (default: the pod
    /// network's gateway, port 53); kube-dns's endpoint.
    #[arg(long)]
    dns_listen: Option<std::net::SocketAddr>,
    /// Resolvers for names outside the cluster's zone, `IP[:PORT]`;
    /// repeatable (default: the nameservers of the host's /etc/resolv.conf).
    #[arg(long = "dns-upstream")]
    dns_upstreams: Vec<String>,
    /// Remove the service proxy's table, then exit (as `kube-proxy --cleanup`):
    /// service traffic stops being forwarded.
    #[arg(long)]
    cleanup: bool,
    /// The node's IP for `status.hostIP` (default: the default route's interface address).
    #[arg(long)]
    node_ip: Option<String>,
    /// The node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// Maximum number of processes in one pod (0: unlimited).
    #[arg(long, default_value_t = 4096)]
    pod_pids_limit: i64,
    /// CPU kept back from pods, as a quantity (`500m`, `1`).
    #[arg(long, default_value = "0")]
    reserved_cpu: String,
    /// Memory kept back from pods, as a quantity (`512Mi`).
    #[arg(long, default_value = "0")]
    reserved_memory: String,
    /// Directory of volume plugins (`*.so`); repeat for several, loaded in order.
    #[arg(long = "plugin-dir", default_value = "/usr/lib/peapod/plugins")]
    plugin_dirs: Vec<PathBuf>,
    /// Operator configuration of volume plugins: `<dir>/<plugin>.yaml` (or
    /// `.yml`, `.json`), passed to the plugin at `init`.
    #[arg(long, default_value = "/etc/peapod/plugins")]
    plugin_config_dir: PathBuf,
    /// Host path prefix hostPath volumes may use; repeat for several. Unset: every path is allowed.
    #[arg(long = "host-path-allow")]
    host_path_allow: Vec<PathBuf>,
    /// Deadline of each volume plugin call, in seconds.
    #[arg(long, default_value_t = 30)]
    plugin_timeout: u64,
    /// How often pods compare volume usage with limits, in seconds.
    #[arg(long, default_value_t = 10)]
    housekeeping_interval: u64,
    /// How often pods write their configMap, secret, downwardAPI and
    /// projected volumes again from the store, in seconds (kubelet's
    /// `--sync-frequency`); a change the node is told of is written at once.
    #[arg(long, default_value_t = 60)]
    sync_frequency: u64,
    /// Seconds an Event is kept after it last happened.
    #[arg(long, default_value_t = 3600)]
    event_ttl: u64,
    /// Restart intensity of the actor tree: an actor that crashes more than
    /// this many times within --actor-restart-period is given up on (its
    /// supervisor escalates).
    #[arg(long, default_value_t = 5)]
    actor_max_restarts: u32,
    /// The window of --actor-max-restarts, in seconds.
    #[arg(long, default_value_t = 60)]
    actor_restart_period: u64,
    /// Containers that name no seccomp profile run under RuntimeDefault;
    /// `--seccomp-default=false` leaves them Unconfined, as kubelet does by default.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    seccomp_default: bool,
    /// A container's log is rotated before it passes this size, as a quantity
    /// (`10Mi`, kubelet's default); `0` never rotates.
    #[arg(long, default_value = "10Mi")]
    container_log_max_size: String,
    /// Log files kept per container start, the live one included (at least 2).
    #[arg(long, default_value_t = 5)]
    container_log_max_files: u32,
    /// The most pods the scheduler binds to this node (its `pods` capacity), as kubelet's --max-pods.
    #[arg(long, default_value_t = 110)]
    max_pods: i64,
    /// Threads (actix arbiters) that run pod actors; 0: one per CPU, at least 2.
    #[arg(long, default_value_t = 0)]
    pod_threads: usize,
    /// Where Prometheus scrapes `/metrics` (and `/metrics/cadvisor`,
    /// `/metrics/probes`, `/healthz`, `/readyz`); port 0 picks a free one.
    /// The bound address is written to `<run-dir>/metrics-address`.
    #[arg(long, default_value = "127.0.0.1:10255")]
    metrics_address: String,
    /// Serve no metrics listener.
    #[arg(long)]
    no_metrics: bool,
    #[command(flatten)]
    registries: crate::commands::RegistryArgs,
    #[command(flatten)]
    https: crate::https::HttpsArgs,
    /// Image filesystem usage (percent) at which unused images are removed; 100 never (kubelet's flag).
    #[arg(long, default_value_t = 85)]
    image_gc_high_threshold: u8,
    /// Usage image garbage collection frees down to (kubelet's flag).
    #[arg(long, default_value_t = 80)]
    image_gc_low_threshold: u8,
    /// Images first seen less than this long ago are never collected (kubelet's flag).
    #[arg(long, default_value = "2m")]
    image_minimum_gc_age: String,
    /// How often image filesystem usage is looked at (kubelet: 5m, fixed).
    #[arg(long, default_value = "5m")]
    image_gc_period: String,
}

/// Raises the soft limit of open files to the hard limit, as Go programs
/// (kubelet, containerd) do: the daemon holds one connection per running
/// container, and a default soft limit of 1024 would make waits on shims fail.
fn raise_nofile_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("raising the open files limit from {soft} to {hard}: {e}");
            }
        }
    }
}

/// One malloc arena for all threads unless the operator set
/// `MALLOC_ARENA_MAX`. glibc gives each thread that allocates its own arena
/// (up to eight per core); after a burst of pod starts, which runs hundreds
/// of short blocking-pool threads, those arenas keep their freed memory, and
/// a 500-pod burst left 107–158 MiB resident against 78 MiB with two arenas.
/// One arena left 1.1 MiB less resident than two, in a fresh daemon and after
/// a 2,000-lifecycle soak alike (per-thread caches spare most allocations
/// the arena's lock). Runs before any thread exists, as mallopt must.
fn cap_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no thread is
        // allocating concurrently this early in start-up.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    }
}

/// How often freed heap memory is handed back to the kernel.
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Hands memory glibc keeps after frees back to the kernel, every
/// [`TRIM_EVERY`]. A transient peak (a relist, the Event expiry listing every
/// Event, a burst of pod starts) otherwise stays resident: a 1000-lifecycle
/// soak went 30.6 → 41.7 MiB at the first Event expiry and stayed there, with
/// nothing live behind it.
fn trim_heap_periodically() {
    actix_rt::spawn(async {
        let mut every = tokio::time::interval(TRIM_EVERY);
        loop {
            every.tick().await;
            // SAFETY: malloc_trim only returns free pages to the kernel; it is
            // thread-safe (it takes each arena's lock) and touches no live
            // allocation. Run on the blocking pool: it walks the arenas.
            let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
        }
    });
}

/// Modes of the node's state: the root dir may be traversed (0711, as
/// containerd's), what is below it is the daemon's alone.
const PRIVATE_DIRS: &[&str] = &["images", "pods", "logs", "plugins", "cni", "seccomp"];
const PRIVATE_FILES: &[&str] = &["store.db", "store.db-wal", "store.db-shm"];

/// Tightens what an earlier daemon (or an older peapod, which ran with
/// umask 022) left readable; new files are private through the umask.
fn restrict_state(paths: &NodePaths) -> Result<()> {
    let chmod = |p: &std::path::Path, mode: u32| -> Result<()> {
        match std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r.with_context(|| format!("chmod {:o} {}", mode, p.display())),
        }
    };
    chmod(&paths.root, 0o711)?;
    chmod(&paths.run, 0o711)?;
    for d in PRIVATE_DIRS {
        let dir = paths.root.join(d);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        chmod(&dir, 0o700)?;
    }
    for f in PRIVATE_FILES {
        chmod(&paths.root.join(f), 0o600)?;
    }
    Ok(())
}

/// kubelet's own `oom_score_adj` (-999): the node's agent is the last thing
/// the OOM killer should pick. Lowering it needs CAP_SYS_RESOURCE, which some
/// nodes withhold even from root; the daemon then runs with what it has.
fn protect_from_oom_killer() {
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "-999") {
        tracing::warn!("setting the daemon's oom_score_adj to -999: {e} (no CAP_SYS_RESOURCE?)");
    }
}

/// The cluster DNS address pods are told of and the server this node runs
/// for it, unless `--cluster-dns none`.
fn cluster_dns(
    args: &DaemonArgs,
    allocator: &peapod_core::service::alloc::Allocator,
    pod_cidr: &str,
) -> Result<Option<(String, peapod_actors::dns::DnsConfig)>> {
    let ip = match args.cluster_dns.as_deref() {
        Some("none") => return Ok(None),
        Some(ip) => {
            let parsed: std::net::Ipv4Addr = ip
                .parse()
                .map_err(|_| anyhow::anyhow!("--cluster-dns {ip:?}: not an IPv4 address (or `none`)"))?;
            if !allocator.ips.contains(parsed) {
                anyhow::bail!(
                    "--cluster-dns {ip}: not in --service-cluster-ip-range {}",
                    allocator.ips
                );
            }
            ip.to_string()
        }
        None => allocator.ips.nth(9).to_string(),
    };
    let listen = match args.dns_listen {
        Some(l) => l,
        None => {
            let gateway = peapod_core::service::IpRange::parse(pod_cidr)
                .map_err(|e| anyhow::anyhow!("--pod-cidr: {e}"))?
                .nth(0);
            std::net::SocketAddr::new(gateway.into(), 53)
        }
    };
    // Without a service proxy nothing forwards kube-dns's address: pods are
    // told the server's own (which must then be on port 53).
    let ip = if args.service_proxy_table.is_empty() {
        if listen.port() != 53 {
            anyhow::bail!(
                "--dns-listen {listen}: with no service proxy (--service-proxy-table \"\") pods reach the DNS server directly, so it must listen on port 53"
            );
        }
        listen.ip().to_string()
    } else {
        ip
    };
    let upstreams = if args.dns_upstreams.is_empty() {
        peapod_actors::dns::upstreams_of(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
    } else {
        args.dns_upstreams
            .iter()
            .map(|u| {
                u.parse::<std::net::SocketAddr>()
                    .or_else(|_| {
                        u.parse::<std::net::IpAddr>()
                            .map(|ip| std::net::SocketAddr::new(ip, 53))
                    })
                    .map_err(|_| anyhow::anyhow!("--dns-upstream {u:?}: not IP or IP:PORT"))
            })
            .collect::<Result<_>>()?
    };
    Ok(Some((
        ip,
        peapod_actors::dns::DnsConfig {
            listen,
            domain: args.cluster_domain.trim_end_matches('.').to_string(),
            upstreams,
        },
    )))
}

/// The node's pod range: --pod-cidr, or one claimed from --cluster-cidr
/// (through the store, before anything else uses it), or the lone node's default.
fn pod_cidr(args: &DaemonArgs, store: &StoreChoice, node_name: &str, paths: &NodePaths) -> Result<String> {
    let (None, Some(cluster)) = (&args.pod_cidr, &args.cluster_cidr) else {
        return Ok(args.pod_cidr.clone().unwrap_or_else(|| "10.88.0.0/16".into()));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start a runtime to claim the pod range")?;
    let range = runtime.block_on(async {
        let store = store.clone().without_compaction().open(paths).await?;
        peapod_actors::nodeipam::claim(&*store, node_name, cluster, args.node_cidr_mask_size)
            .await
            .map_err(anyhow::Error::msg)
    })?;
    tracing::info!("node {node_name} has pod range {range} from --cluster-cidr {cluster}");
    Ok(range)
}

/// The backend `--store` names.
#[derive(Clone)]
enum StoreChoice {
    /// The node's SQLite file.
    Sqlite,
    /// etcd, compacted every interval (zero: never).
    Etcd(EtcdConfig, std::time::Duration),
}

impl StoreChoice {
    /// The same store, opened for a moment (no compaction started).
    fn without_compaction(self) -> Self {
        match self {
            StoreChoice::Etcd(config, _) => StoreChoice::Etcd(config, std::time::Duration::ZERO),
            other => other,
        }
    }

    async fn open(self, paths: &NodePaths) -> Result<Box<dyn Store>> {
        Ok(match self {
            StoreChoice::Sqlite => Box::new(SqliteStore::open(paths.store_db())?),
            StoreChoice::Etcd(config, interval) => {
                let store = EtcdStore::connect(config).await?;
                if !interval.is_zero() {
                    // Runs for the daemon's life.
                    drop(store.compact_every(interval));
                }
                Box::new(store)
            }
        })
    }
}

/// Reads the store flags (and the TLS files they name), so a mistake stops the daemon before anything starts.
fn store_choice(args: &DaemonArgs) -> Result<StoreChoice> {
    if args.store == "sqlite" {
        return Ok(StoreChoice::Sqlite);
    }
    if !args.store.starts_with("etcd://") {
        anyhow::bail!(
            "--store {:?}: either `sqlite` or etcd://HOST:PORT[,HOST:PORT...][/PREFIX]",
            args.store
        );
    }
    let mut config = EtcdConfig::parse(&args.store).map_err(|e| anyhow::anyhow!("--store {e}"))?;
    let read = |flag: &str, p: &PathBuf| std::fs::read(p).with_context(|| format!("--{flag} {}", p.display()));
    config.tls = match (&args.etcd_cafile, &args.etcd_certfile, &args.etcd_keyfile) {
        (None, None, None) => None,
        (Some(ca), cert, key) => Some(EtcdTls {
            ca: read("etcd-cafile", ca)?,
            identity: match (cert, key) {
                (Some(c), Some(k)) => Some((read("etcd-certfile", c)?, read("etcd-keyfile", k)?)),
                (None, None) => None,
                _ => anyhow::bail!("--etcd-certfile and --etcd-keyfile go together"),
            },
        }),
        (None, _, _) => anyhow::bail!("--etcd-certfile needs --etcd-cafile (the CA that signed the members)"),
    };
    let interval = duration_flag("etcd-compaction-interval", &args.etcd_compaction_interval)?;
    Ok(StoreChoice::Etcd(config, interval))
}

/// A duration flag in Go's notation (`15s`, `2m`).
fn duration_flag(flag: &str, v: &str) -> Result<std::time::Duration> {
    let nanos = crate::commands::go_duration_nanos(v).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))?;
    std::time::Duration::try_from_secs_f64(nanos / 1e9).map_err(|e| anyhow::anyhow!("--{flag} {v:?}: {e}"))
}

/// The election's timing, checked as kube-controller-manager checks it; `None` when this node leads alone.
fn leader_election(args: &DaemonArgs, store: &StoreChoice) -> Result<Option<peapod_actors::leader::ElectionTiming>> {
    if !args.leader_elect.unwrap_or(matches!(store, StoreChoice::Etcd(..))) {
        return Ok(None);
    }
    let timing = peapod_actors::leader::ElectionTiming {
        lease_duration: duration_flag("leader-elect-lease-duration", &args.leader_elect_lease_duration)?,
        renew_deadline: duration_flag("leader-elect-renew-deadline", &args.leader_elect_renew_deadline)?,
        retry_period: duration_flag("leader-elect-retry-period", &args.leader_elect_retry_period)?,
    };
    if timing.retry_period.is_zero() || timing.renew_deadline <= timing.retry_period {
        anyhow::bail!(
            "--leader-elect-renew-deadline must be greater than --leader-elect-retry-period (and that above 0)"
        );
    }
    if timing.lease_duration <= timing.renew_deadline {
        anyhow::bail!("--leader-elect-lease-duration must be greater than --leader-elect-renew-deadline");
    }
    Ok(Some(timing))
}

/// Runs until killed.
pub fn run(args: DaemonArgs) -> Result<()> {
    if args.cleanup {
        return peapod_actors::proxy::cleanup(&args.service_proxy_table).map_err(anyhow::Error::msg);
    }
    let store_choice = store_choice(&args)?;
    let leader_election = leader_election(&args, &store_choice)?;
    // Everything the daemon creates is its own unless it says otherwise, and
    // sockets are born with their final mode (no window before a chmod).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    cap_malloc_arenas();
    raise_nofile_limit();
    protect_from_oom_killer();
    // Read once here, so admissions never read /proc on an actor thread.
    let _ = peapod_actors::config::capacity();
    let allocator = peapod_core::service::alloc::Allocator {
        ips: peapod_core::service::IpRange::parse(&args.service_cluster_ip_range)
            .map_err(|e| anyhow::anyhow!("--service-cluster-ip-range: {e}"))?,
        ports: peapod_core::service::PortRange::parse(&args.service_node_port_range)
            .map_err(|e| anyhow::anyhow!("--service-node-port-range: {e}"))?,
    };
    let paths = NodePaths::new(args.root_dir.clone(), args.run_dir.clone());
    std::fs::create_dir_all(&paths.root).with_context(|| format!("create {}", paths.root.display()))?;
    std::fs::create_dir_all(&paths.run).with_context(|| format!("create {}", paths.run.display()))?;
    restrict_state(&paths)?;
    let exe = std::env::current_exe().context("locate the peapod binary")?;
    let node_name = args.node_name.clone().unwrap_or_else(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into())
    });
    let pod_cidr = pod_cidr(&args, &store_choice, &node_name, &paths)?;
    let dns = cluster_dns(&args, &allocator, &pod_cidr)?;
    let quantity = |flag: &str, v: &str| {
        peapod_core::quantity::Quantity::parse(v).map_err(|e| anyhow::anyhow!("--{flag} {v:?}: {e}"))
    };
    let node_ip = args.node_ip.clone().unwrap_or_else(detect_node_ip);
    // Other nodes of a shared store reach this one's pods through its daemon endpoint.
    let daemon_endpoint = match &store_choice {
        StoreChoice::Sqlite => None,
        StoreChoice::Etcd(..) => Some(bind_daemon_endpoint(&args.root_dir, &node_ip, args.kubelet_port)?),
    };
    let config = NodeConfig {
        node_name: node_name.clone(),
        node_ip,
        daemon_endpoint: daemon_endpoint.as_ref().map(|(e, _, _)| e.clone()),
        network: NetworkConfig {
            conf_dir: args.cni_conf_dir,
            bin_dirs: args.cni_bin_dir,
            bridge: args.cni_bridge,
            pod_cidr,
            ipam_dir: paths.root.join("cni").join("ipam"),
            cluster_cidr: args.cluster_cidr,
        },
        pod_pids_limit: (args.pod_pids_limit > 0).then_some(args.pod_pids_limit),
        reserved_cpu_millis: quantity("reserved-cpu", &args.reserved_cpu)?.milli_value(),
        reserved_memory_bytes: quantity("reserved-memory", &args.reserved_memory)?.value(),
        housekeeping: std::time::Duration::from_secs(args.housekeeping_interval.max(1)),
        sync_frequency: std::time::Duration::from_secs(args.sync_frequency.max(1)),
        event_ttl: std::time::Duration::from_secs(args.event_ttl.max(1)),
        seccomp_default: args.seccomp_default,
        container_log_max_size: {
            let v = &args.container_log_max_size;
            u64::try_from(quantity("container-log-max-size", v)?.value())
                .map_err(|_| anyhow::anyhow!("--container-log-max-size {v:?}: must not be negative"))?
        },
        container_log_max_files: match args.container_log_max_files {
            n if n >= 2 => n,
            n => anyhow::bail!("--container-log-max-files {n}: must be at least 2 (the live file and one rotated)"),
        },
        max_pods: match args.max_pods {
            n if n >= 1 => n,
            n => anyhow::bail!("--max-pods {n}: must be at least 1"),
        },
        registries: args.registries.config()?,
        service_proxy_table: args.service_proxy_table.clone(),
        cluster_dns: dns.as_ref().map(|(ip, _)| peapod_actors::runtime::etc::ClusterDns {
            nameserver: ip.clone(),
            domain: args.cluster_domain.clone(),
        }),
        dns_server: dns.as_ref().map(|(_, server)| server.clone()),
        leader_election,
        node_monitor_grace_period: duration_flag("node-monitor-grace-period", &args.node_monitor_grace_period)?,
        heartbeat: match duration_flag("node-status-update-frequency", &args.node_status_update_frequency)? {
            d if d.is_zero() => anyhow::bail!("--node-status-update-frequency 0s: must be more than zero"),
            d => d,
        },
        image_gc: {
            let (high, low) = (args.image_gc_high_threshold, args.image_gc_low_threshold);
            if high > 100 {
                anyhow::bail!("--image-gc-high-threshold {high}: must be a percentage, 0 to 100");
            }
            if low >= high {
                anyhow::bail!("--image-gc-low-threshold {low}: must be less than --image-gc-high-threshold ({high})");
            }
            peapod_actors::image_gc::ImageGcPolicy {
                high_percent: high,
                low_percent: low,
                min_age: duration_flag("image-minimum-gc-age", &args.image_minimum_gc_age)?,
                period: duration_flag("image-gc-period", &args.image_gc_period)?,
            }
        },
    };
    if config.node_monitor_grace_period < config.heartbeat.saturating_mul(2) {
        tracing::warn!(
            "--node-monitor-grace-period {:?} is less than twice --node-status-update-frequency {:?}: \
             a node leading the controllers will call live nodes unreachable between their heartbeats",
            config.node_monitor_grace_period,
            config.heartbeat
        );
    }
    if let Err(e) = peapod_actors::runtime::cgroups::limit_all_pods(config.allocatable().memory_bytes) {
        tracing::error!("capping the memory of all pods at the allocatable memory: {e}");
    }
    let (volumes, refused) = VolumeManager::new(VolumeConfig {
        plugin_dirs: args.plugin_dirs,
        host_path_allow: args.host_path_allow,
        call_timeout: std::time::Duration::from_secs(args.plugin_timeout.max(1)),
        node_name: node_name.clone(),
        state_dir: paths.root.join("plugins"),
        config_dir: args.plugin_config_dir,
    });
    for r in &refused {
        tracing::error!("{r}");
    }
    for p in volumes.registry().all() {
        tracing::info!(
            "loaded volume plugin {} {} (ABI {}.{}) from {}",
            p.name,
            p.version,
            p.abi_major,
            p.abi_minor,
            p.path.display()
        );
    }
    let volumes = Arc::new(volumes);
    let shim = peapod_actors::runtime::shim::ShimProgram::beside(&exe);
    if shim.under_peapod {
        tracing::warn!(
            "no {} beside {}: shims run as `peapod shim` (the whole binary at each container start)",
            peapod_actors::runtime::shim::SHIM_NAME,
            exe.display()
        );
    }
    let rt = Runtime::new(paths.clone(), shim, config, volumes.clone()).map_err(anyhow::Error::msg)?;
    let socket = paths.api_socket();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    peapod_metrics::metrics().start_time.set(started.as_secs_f64());
    let key_file = args.encryption_key_file.clone().unwrap_or_else(|| paths.secret_keys());
    actix_rt::System::new().block_on(async move {
        // Up first, so /readyz tells how far the start has come.
        let store_slot = metrics_server::StoreSlot::default();
        if !args.no_metrics {
            let server = metrics_server::start(&args.metrics_address, &paths.run, store_slot.clone())?;
            actix_rt::spawn(server);
        }
        // Secrets are sealed before any backend sees them (the key file is made at first start).
        let had_keys = key_file.exists();
        let keys = Keys::load_or_create(&key_file)?;
        let sealed = EncryptedStore::new(store_choice.open(&paths).await?, keys, &["secrets"]);
        if !had_keys {
            // A node that joins a cluster with keys of its own could read no Secret.
            if let Err(e) = sealed.list("secrets", None).await {
                let _ = std::fs::remove_file(&key_file);
                anyhow::bail!(
                    "{e}: the store holds Secrets sealed with keys this node does not have; \
                     copy {} from a node of the cluster (or pass --encryption-key-file)",
                    key_file.display()
                );
            }
        }
        // After a key rotation (a new first line in the key file), every
        // Secret is sealed again with the new key before anything reads it.
        match sealed.reseal_stale().await {
            Ok(0) => {}
            Ok(n) => tracing::info!("sealed {n} Secrets again with the first key of {}", key_file.display()),
            Err(errors) => {
                for e in errors {
                    tracing::error!("a Secret could not be sealed again (it stays as it was): {e}");
                }
            }
        }
        let link = daemon_endpoint.as_ref().map(|_| {
            Arc::new(crate::nodeproxy::NodeLink::new(node_name.clone(), |p| {
                sealed.keys().derive(p)
            }))
        });
        let store: Arc<dyn Store> = Arc::new(MeteredStore::new(sealed));
        let _ = store_slot.set(store.clone());
        health::set(Component::Store, true);
        ensure_default_namespaces(&*store).await?;
        let events = EventRecorder::new(store.clone(), node_name.clone());
        for r in &refused {
            events.node_event(EventKind::Warning, "FailedLoadPlugin", r.to_string());
        }
        for e in volumes.init_plugins().await {
            tracing::error!("{e}");
            events.node_event(EventKind::Warning, "FailedInitPlugin", e.to_string());
        }
        // Loaded and initialised; a plugin that failed is reported, not waited for.
        health::set(Component::Plugins, true);
        if let Err(e) = peapod_actors::binder::ensure_default_class(&*store, &volumes).await {
            tracing::error!("creating the default StorageClass: {e}");
        }
        let target_port = args.https.listen_https.map(|a| a.port()).filter(|p| *p != 0);
        let kubernetes = crate::services::SystemService::kubernetes(&allocator, target_port);
        if let Err(e) = kubernetes.ensure(&*store, &allocator).await {
            tracing::error!("{e}");
        }
        let store_for_endpoints = store.clone();
        if let Some((ip, server)) = &dns {
            let kube_dns = crate::services::SystemService::kube_dns(ip.clone(), server.listen.port());
            let res = async {
                kube_dns.ensure(&*store, &allocator).await?;
                kube_dns
                    .set_endpoints(&*store, Some((server.listen.ip().to_string(), server.listen.port())))
                    .await
                    .map_err(|e| e.to_string())
            };
            if let Err(e) = res.await {
                tracing::error!("the kube-dns service: {e}");
            }
        }
        crate::services::repair_periodically(store.clone(), allocator);
        let tree = Tree::default();
        let threads = match args.pod_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()).max(2),
            n => n,
        };
        let arbiters: Vec<actix::ArbiterHandle> = (0..threads).map(|_| actix::Arbiter::new().handle()).collect();
        trim_heap_periodically();
        let node = peapod_actors::node::run(NodeSpec {
            rt: rt.clone(),
            store: store.clone(),
            node_name,
            tree: tree.clone(),
            intensity: Intensity {
                max_restarts: args.actor_max_restarts,
                period: std::time::Duration::from_secs(args.actor_restart_period.max(1)),
            },
            arbiters: Arc::new(arbiters),
        });
        let _ = std::fs::remove_file(&socket);
        let state = actix_web::web::Data::new(ApiState {
            store,
            paths: paths.clone(),
            volumes,
            tree,
            runtime: rt.clone(),
            allocator,
            link: link.clone(),
        });
        let local_state = state.clone();
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(local_state.clone())
                .app_data(actix_web::web::PayloadConfig::new(8 << 20))
                .configure(routes)
        })
        .workers(1)
        .bind_uds(&socket)
        .with_context(|| format!("listen on {}", socket.display()))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
        tracing::info!("peapod daemon serving on {}", socket.display());
        // In-cluster clients reach the listener as the kubernetes service.
        let mut https_args = args.https.clone();
        https_args.service_names = vec![
            kubernetes.cluster_ip.clone(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            format!("kubernetes.default.svc.{}", args.cluster_domain.trim_end_matches('.')),
        ];
        let https = match args.https.listen_https {
            Some(listen) => Some(serve_https(&args.root_dir, &https_args, listen, state.clone())?),
            None => None,
        };
        // The `kubernetes` service reaches the HTTPS listener at the node's address.
        // The address it is bound to; a wildcard means the node's; loopback
        // is out of the pods' reach, so the service gets no endpoint then.
        let api_endpoint = https.as_ref().and_then(|(_, bound)| {
            let ip = bound.ip();
            if ip.is_loopback() {
                tracing::warn!("the HTTPS listener is on {bound}: pods cannot reach it through the kubernetes service");
                None
            } else if ip.is_unspecified() {
                Some((rt.config.node_ip.clone(), bound.port()))
            } else {
                Some((ip.to_string(), bound.port()))
            }
        });
        if let Err(e) = kubernetes.set_endpoints(&*store_for_endpoints, api_endpoint).await {
            tracing::error!("writing the kubernetes service's endpoints: {e}");
        }
        let https = https.map(|(server, _)| server);
        let daemon_endpoint = match (daemon_endpoint, link) {
            (Some((endpoint, listener, tls)), Some(link)) => Some(serve_daemon_endpoint(
                listener,
                tls,
                state.clone(),
                link,
                endpoint.port,
            )?),
            _ => None,
        };
        let daemon_endpoint = async move {
            match daemon_endpoint {
                Some(server) => server.await,
                None => std::future::pending().await,
            }
        };
        let https = async move {
            match https {
                Some(server) => server.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = server.run() => r?,
            r = https => r?,
            r = daemon_endpoint => r?,
            why = node => {
                // The root supervisor gave up: exit so the daemon's own supervisor restarts it.
                // Containers keep running under their shims and are re-adopted.
                anyhow::bail!("giving up: {why}");
            }
        }
        Ok(())
    })
}

/// Binds the daemon endpoint other nodes reach (bound here, before the
/// node registers, so the Node publishes the port a 0 picked) and makes its
/// certificate from the node's CA.
fn bind_daemon_endpoint(
    root: &std::path::Path,
    node_ip: &str,
    port: u16,
) -> Result<(
    peapod_actors::config::DaemonEndpoint,
    std::net::TcpListener,
    rustls::ServerConfig,
)> {
    let ip: std::net::IpAddr = node_ip
        .parse()
        .map_err(|e| anyhow::anyhow!("--node-ip {node_ip:?}: {e}"))?;
    let listen = std::net::SocketAddr::new(ip, port);
    let listener =
        std::net::TcpListener::bind(listen).with_context(|| format!("--kubelet-port: listen on {listen}"))?;
    let bound = listener.local_addr()?;
    let (tls, ca_pem) = crate::https::daemon_endpoint_config(root, &bound)?;
    Ok((
        peapod_actors::config::DaemonEndpoint {
            port: bound.port(),
            ca_pem,
        },
        listener,
        tls,
    ))
}

/// Serves other nodes: only their forwarded pod logs, exec, attach and
/// port-forward, and only with a node's token (`nodeproxy::admit`).
fn serve_daemon_endpoint(
    listener: std::net::TcpListener,
    tls: rustls::ServerConfig,
    state: actix_web::web::Data<ApiState>,
    link: Arc<crate::nodeproxy::NodeLink>,
    port: u16,
) -> Result<actix_web::dev::Server> {
    let link = actix_web::web::Data::from(link);
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(state.clone())
            .app_data(link.clone())
            .wrap(actix_web::middleware::from_fn(crate::nodeproxy::admit))
            .configure(routes)
    })
    .workers(1)
    .listen_rustls_0_23(listener, tls)
    .context("serve the daemon endpoint")?;
    tracing::info!("serving other nodes on port {port}");
    Ok(server.run())
}

/// The API's routes, on the unix socket and the HTTPS listener alike.
fn routes(cfg: &mut actix_web::web::ServiceConfig) {
    use actix_web::web::{get, route};
    cfg.route("/version", get().to(api::version))
        .route("/openapi/v2", get().to(api::openapi_v2))
        .route("/openapi/v3", get().to(api::openapi_v3))
        .route("/openapi/v3/{tail:.*}", get().to(api::openapi_v3_document))
        .route("/api", get().to(api::api_versions))
        .route("/apis", get().to(api::api_groups))
        .route("/api/{version}", get().to(api::resource_list))
        .route("/api/{version}/{tail:.*}", route().to(api::resource))
        .route("/apis/{group}", get().to(api::api_group_versions))
        .route("/apis/{group}/{version}", get().to(api::resource_list))
        .route("/apis/{group}/{version}/{tail:.*}", route().to(api::resource))
        .route("/peapod/v1/plugins", get().to(api::plugins))
        .route("/peapod/v1/tree", get().to(api::tree));
}

/// Starts the HTTPS listener: every request needs a bearer token of an
/// admin (`https::authenticate`). The address bound (a port 0 picks one) is
/// recorded for `peapod kubeconfig`.
fn serve_https(
    root: &std::path::Path,
    args: &crate::https::HttpsArgs,
    listen: std::net::SocketAddr,
    state: actix_web::web::Data<ApiState>,
) -> Result<(actix_web::dev::Server, std::net::SocketAddr)> {
    let token_file = match &args.token_auth_file {
        Some(p) => p.clone(),
        None => crate::https::ensure_token_file(root)?,
    };
    let tokens = actix_web::web::Data::new(crate::https::Tokens::new(token_file)?);
    let tls = crate::https::server_config(root, args, &listen)?;
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(state.clone())
            .app_data(tokens.clone())
            .app_data(actix_web::web::PayloadConfig::new(8 << 20))
            .wrap(actix_web::middleware::from_fn(crate::https::authenticate))
            .configure(routes)
    })
    .workers(2)
    .on_connect(crate::https::note_client_certificate)
    .bind_rustls_0_23(listen, tls)
    .with_context(|| format!("listen on https://{listen}"))?;
    let bound = server.addrs().first().copied().unwrap_or(listen);
    let record = crate::https::listen_record(root);
    std::fs::write(&record, bound.to_string()).with_context(|| format!("write {}", record.display()))?;
    tracing::info!("peapod daemon serving HTTPS on {bound}");
    Ok((server.run(), bound))
}
