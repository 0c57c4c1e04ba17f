//! The node's settings, from the daemon's flags.

use crate::runtime::cni::NetworkConfig;

/// What an operator configures about this node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's name (events' `source.host`, `spec.nodeName`).
    pub node_name: String,
    /// The node's address, reported as `status.hostIP`.
    pub node_ip: String,
    /// Pod networking.
    pub network: NetworkConfig,
    /// `pids.max` of every pod cgroup; `None` leaves it unlimited.
    pub pod_pids_limit: Option<i64>,
    /// CPU (millicores) and memory (bytes) kept back from pods, as kubelet's
    /// `--system-reserved`; allocatable is capacity minus this.
    pub reserved_cpu_millis: i64,
    pub reserved_memory_bytes: i64,
    /// How often pods check their volumes' usage against limits (kubelet's housekeeping).
    pub housekeeping: std::time::Duration,
    /// How often projected volumes are written again from the store (kubelet's `--sync-frequency`).
    pub sync_frequency: std::time::Duration,
    /// How long Events are kept after their last occurrence (the API server's `--event-ttl`).
    pub event_ttl: std::time::Duration,
    /// Containers that name no seccomp profile run under RuntimeDefault
    /// (kubelet's `--seccomp-default`); false leaves them Unconfined.
    pub seccomp_default: bool,
    /// A container's log file is rotated before it passes this many bytes
    /// (kubelet's `--container-log-max-size`); 0: never.
    pub container_log_max_size: u64,
    /// Log files kept per container start, the live one included
    /// (kubelet's `--container-log-max-files`).
    pub container_log_max_files: u32,
    /// The most pods the node takes (kubelet's `--max-pods`): its `pods` capacity.
    pub max_pods: i64,
    /// How pulls reach registries: credentials, CAs, plain HTTP, mirrors.
    pub registries: crate::image::RegistryConfig,
    /// When unused images are removed (kubelet's image GC flags).
    pub image_gc: crate::image_gc::ImageGcPolicy,
    /// The nftables table (family `ip`) the service proxy programs; empty: no proxy.
    pub service_proxy_table: String,
    /// The cluster's DNS as pods' `resolv.conf` names it (kubelet's
    /// `--cluster-dns`, `--cluster-domain`); `None`: pods get the host's.
    pub cluster_dns: Option<crate::runtime::etc::ClusterDns>,
    /// The DNS server this node runs; `None`: none.
    pub dns_server: Option<crate::dns::DnsConfig>,
    /// How nodes sharing a store choose the one that runs the scheduler and
    /// the one that runs the controllers; `None`: this node runs both (its store is its own).
    pub leader_election: Option<crate::leader::ElectionTiming>,
    /// How long a node may stay silent before it is called unreachable
    /// (kube-controller-manager's `--node-monitor-grace-period`).
    pub node_monitor_grace_period: std::time::Duration,
    /// How often the node posts its status and renews its Lease (kubelet's
    /// `--node-status-update-frequency`, 10 s).
    pub heartbeat: std::time::Duration,
    /// Where other nodes reach this one for its pods' logs, exec, attach
    /// and port-forward (kubelet's port); `None`: they cannot (a lone node).
    pub daemon_endpoint: Option<DaemonEndpoint>,
}

/// The node's listener for other nodes, as its Node publishes it.
#[derive(Debug, Clone)]
pub struct DaemonEndpoint {
    /// `status.daemonEndpoints.kubeletEndpoint.Port`, at the node's InternalIP.
    pub port: u16,
    /// The CA (PEM) that signed the listener's certificate, in the Node's
    /// [`DAEMON_CA_ANNOTATION`] annotation.
    pub ca_pem: String,
}

/// The Node annotation with the CA of its daemon endpoint's certificate.
pub const DAEMON_CA_ANNOTATION: &str = "peapod.io/daemon-endpoint-ca";

impl NodeConfig {
    /// What pods may request in all: capacity minus what is reserved.
    pub fn allocatable(&self) -> peapod_core::resources::Amounts {
        let cap = capacity();
        peapod_core::resources::Amounts {
            cpu_millis: (cap.cpu_millis - self.reserved_cpu_millis).max(0),
            memory_bytes: (cap.memory_bytes - self.reserved_memory_bytes).max(0),
        }
    }
}

/// The machine's CPUs (online) and memory (`MemTotal`), read once: actors
/// ask on every admission and must not read files on their threads.
pub fn capacity() -> peapod_core::resources::Amounts {
    static CAPACITY: std::sync::OnceLock<peapod_core::resources::Amounts> = std::sync::OnceLock::new();
    *CAPACITY.get_or_init(read_capacity)
}

fn read_capacity() -> peapod_core::resources::Amounts {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        })
        .unwrap_or(0);
    peapod_core::resources::Amounts {
        cpu_millis: cpus * 1000,
        memory_bytes: mem_kib * 1024,
    }
}

/// The first global IPv4 address of the interface holding the default route,
/// else of any interface, else loopback.
pub fn detect_node_ip() -> String {
    let default_if = std::fs::read_to_string("/proc/net/route").ok().and_then(|t| {
        t.lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() > 2 && f[1] == "00000000")
            .map(|f| f[0].to_string())
    });
    let addrs: Vec<(String, std::net::Ipv4Addr)> = nix::ifaddrs::getifaddrs()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            let ip = a.address?.as_sockaddr_in()?.ip();
            (!ip.is_loopback() && !ip.is_link_local()).then_some((a.interface_name, ip))
        })
        .collect();
    addrs
        .iter()
        .find(|(i, _)| Some(i) == default_if.as_ref())
        .or(addrs.first())
        .map(|(_, ip)| ip.to_string())
        .unwrap_or_else(|| "127.0.0.1".into())
}
