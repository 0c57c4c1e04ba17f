//! Every metric of `/metrics`, defined once. Names, types, labels and
//! buckets follow kubelet's (`pkg/kubelet/metrics`, `pkg/kubelet/prober`,
//! `pkg/volume/util`); peapod's own are under `peapod_`.

use crate::exponential;
use crate::inventory;
use prometheus::core::Collector;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// kubelet's pod start buckets (`kubelet_pod_start_duration_seconds`, `…_sli_…`).
const POD_START_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0, 300.0, 360.0, 480.0,
    600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];

/// `metrics.DefBuckets`.
const DEFAULT_BUCKETS: &[f64] = prometheus::DEFAULT_BUCKETS;

/// `storage_operation_duration_seconds` buckets.
const STORAGE_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 25.0, 50.0, 120.0, 300.0, 600.0,
];

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())).expect("valid histogram")
}

fn histogram_vec(name: &str, help: &str, buckets: Vec<f64>, labels: &[&str]) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("valid histogram")
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("valid counter")
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter")
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), labels).expect("valid gauge")
}

/// Declares the metrics: one field each, registered in one registry.
macro_rules! metrics {
    ($( $(#[$doc:meta])* $field:ident : $ty:ty = $make:expr ; )*) => {
        /// Every metric of `/metrics`. Fields are public: record through them.
        pub struct Metrics {
            $( $(#[$doc])* pub $field: $ty, )*
            registry: Registry,
        }

        impl Metrics {
            pub(crate) fn new() -> Self {
                let registry = Registry::new();
                $(
                    let $field: $ty = $make;
                    registry.register(Box::new($field.clone())).expect("metric names are unique");
                )*
                Self { $($field,)* registry }
            }

            /// Every field, by name, with the metric it holds (for the test
            /// that every defined metric is recorded somewhere).
            pub fn fields(&self) -> Vec<(&'static str, String)> {
                vec![$( (stringify!($field), self.$field.desc()[0].fq_name.clone()), )*]
            }
        }
    };
}

metrics! {
    /// Pods with a running sandbox (computed from the inventory when scraped).
    running_pods: IntGauge = IntGauge::new("kubelet_running_pods", "Number of pods that have a running pod sandbox").expect("valid gauge");
    /// Containers by `container_state` (`created`, `running`, `exited`), from the inventory.
    running_containers: IntGaugeVec = IntGaugeVec::new(
        Opts::new("kubelet_running_containers", "Number of containers currently running"),
        &["container_state"],
    ).expect("valid gauge");
    /// From the pod's creation to its first Running status.
    pod_start_duration: Histogram = histogram(
        "kubelet_pod_start_duration_seconds",
        "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
        POD_START_BUCKETS,
    );
    /// As `pod_start_duration`, image pulls excluded.
    pod_start_sli_duration: Histogram = histogram(
        "kubelet_pod_start_sli_duration_seconds",
        "Duration in seconds to start a pod, excluding time to pull images and run init containers, measured from pod creation timestamp to when all its containers are reported as started and observed via watch",
        POD_START_BUCKETS,
    );
    /// One pass of a PodActor, by `operation_type` (`create`, `update`, `sync`).
    pod_worker_duration: HistogramVec = histogram_vec(
        "kubelet_pod_worker_duration_seconds",
        "Duration in seconds to sync a single pod. Broken down by operation type: create, update, or sync",
        DEFAULT_BUCKETS.to_vec(),
        &["operation_type"],
    );
    /// Sandboxes created.
    started_pods: IntCounter = counter("kubelet_started_pods_total", "Cumulative number of pods started");
    /// Sandboxes that failed to be created.
    started_pods_errors: IntCounter = counter("kubelet_started_pods_errors_total", "Cumulative number of errors when starting pods");
    /// Container starts, by `container_type` (`container`, `init_container`).
    started_containers: IntCounterVec = counter_vec(
        "kubelet_started_containers_total",
        "Cumulative number of containers started",
        &["container_type"],
    );
    /// Failed container starts, by `container_type` and `code` (the waiting reason).
    started_containers_errors: IntCounterVec = counter_vec(
        "kubelet_started_containers_errors_total",
        "Cumulative number of errors when starting containers",
        &["container_type", "code"],
    );
    /// Runtime operations, by `operation_type`.
    runtime_operations: IntCounterVec = counter_vec(
        "kubelet_runtime_operations_total",
        "Cumulative number of runtime operations by operation type.",
        &["operation_type"],
    );
    /// Failed runtime operations, by `operation_type`.
    runtime_operations_errors: IntCounterVec = counter_vec(
        "kubelet_runtime_operations_errors_total",
        "Cumulative number of runtime operation errors by operation type.",
        &["operation_type"],
    );
    /// Runtime operation latency, by `operation_type`.
    runtime_operations_duration: HistogramVec = histogram_vec(
        "kubelet_runtime_operations_duration_seconds",
        "Duration in seconds of runtime operations. Broken down by operation type.",
        exponential(0.005, 2.5, 14),
        &["operation_type"],
    );
    /// PodActors rebuilt for the same pod uid (the pod's worker restarted), by
    /// `static` (`""` for API pods, as kubelet labels them).
    restarted_pods: IntCounterVec = counter_vec(
        "kubelet_restarted_pods_total",
        "Number of pods that have been restarted because they were deleted and recreated with the same UID while the kubelet was watching them (common for static pods, extremely uncommon for API pods)",
        &["static"],
    );
    /// Pods evicted by the node, by `eviction_signal`.
    evictions: IntCounterVec = counter_vec(
        "kubelet_evictions",
        "Cumulative number of pod evictions by eviction signal",
        &["eviction_signal"],
    );
    /// Probe results.
    probe_total: IntCounterVec = counter_vec(
        "prober_probe_total",
        "Cumulative number of a liveness, readiness or startup probe for a container by result.",
        &["probe_type", "result", "container", "pod", "namespace", "pod_uid"],
    );
    /// Probe latency.
    probe_duration: HistogramVec = histogram_vec(
        "prober_probe_duration_seconds",
        "Duration in seconds for a probe response.",
        DEFAULT_BUCKETS.to_vec(),
        &["probe_type", "container", "pod", "namespace"],
    );
    /// Volume plugin operations, as kubelet's operation executor times them.
    storage_operation_duration: HistogramVec = histogram_vec(
        "storage_operation_duration_seconds",
        "Storage operation duration",
        STORAGE_BUCKETS.to_vec(),
        &["volume_plugin", "operation_name", "status", "migrated"],
    );
    /// Volumes wanted (`desired_state_of_world`) and published (`actual_state_of_world`), by plugin.
    volume_manager_total_volumes: GaugeVec = gauge_vec(
        "volume_manager_total_volumes",
        "Number of volumes in Volume Manager",
        &["plugin_name", "state"],
    );
    volume_stats_capacity_bytes: GaugeVec = gauge_vec(
        "kubelet_volume_stats_capacity_bytes",
        "Capacity in bytes of the volume",
        &["namespace", "persistentvolumeclaim"],
    );
    volume_stats_available_bytes: GaugeVec = gauge_vec(
        "kubelet_volume_stats_available_bytes",
        "Number of available bytes in the volume",
        &["namespace", "persistentvolumeclaim"],
    );
    volume_stats_used_bytes: GaugeVec = gauge_vec(
        "kubelet_volume_stats_used_bytes",
        "Number of used bytes in the volume",
        &["namespace", "persistentvolumeclaim"],
    );
    volume_stats_inodes: GaugeVec = gauge_vec(
        "kubelet_volume_stats_inodes",
        "Maximum number of inodes in the volume",
        &["namespace", "persistentvolumeclaim"],
    );
    volume_stats_inodes_free: GaugeVec = gauge_vec(
        "kubelet_volume_stats_inodes_free",
        "Number of free inodes in the volume",
        &["namespace", "persistentvolumeclaim"],
    );
    volume_stats_inodes_used: GaugeVec = gauge_vec(
        "kubelet_volume_stats_inodes_used",
        "Number of used inodes in the volume",
        &["namespace", "persistentvolumeclaim"],
    );
    /// Restarts of each container (its restartCount), as kube-state-metrics names it.
    container_restarts: IntCounterVec = counter_vec(
        "kube_pod_container_status_restarts_total",
        "The number of container restarts per container.",
        &["namespace", "pod", "uid", "container"],
    );
    /// Actors rebuilt by their supervisor after a crash, by `actor` kind.
    actor_restarts: IntCounterVec = counter_vec(
        "peapod_actor_restarts_total",
        "Actors rebuilt by their supervisor after a crash, by actor kind.",
        &["actor"],
    );
    /// Supervisors that gave up on a child (more crashes than its intensity allows).
    supervisor_escalations: IntCounterVec = counter_vec(
        "peapod_supervisor_escalations_total",
        "Children a supervisor gave up on after more crashes than their restart intensity allows, by actor kind.",
        &["actor"],
    );
    /// Volume plugin calls, by `plugin`, `operation` and `result` (`ok`, `error`, `timeout`).
    plugin_calls: IntCounterVec = counter_vec(
        "peapod_plugin_calls_total",
        "Calls into volume plugins, by plugin, operation and result.",
        &["plugin", "operation", "result"],
    );
    plugin_call_duration: HistogramVec = histogram_vec(
        "peapod_plugin_call_duration_seconds",
        "Duration in seconds of calls into volume plugins.",
        exponential(0.0001, 4.0, 10),
        &["plugin", "operation"],
    );
    /// Store writes, by `operation` (`create`, `update`, `delete`).
    store_write_duration: HistogramVec = histogram_vec(
        "peapod_store_write_duration_seconds",
        "Duration in seconds of writes to the store, by operation.",
        exponential(0.0005, 2.0, 14),
        &["operation"],
    );
    /// Open watches on the store.
    store_watchers: IntGauge = IntGauge::new("peapod_store_watchers", "Watches open on the store.").expect("valid gauge");
    /// Controller passes, by `controller` and `result` (`ok`, `error`).
    controller_reconciles: IntCounterVec = counter_vec(
        "peapod_controller_reconciles_total",
        "Reconcile passes of controllers, by controller and result.",
        &["controller", "result"],
    );
    controller_reconcile_duration: HistogramVec = histogram_vec(
        "peapod_controller_reconcile_duration_seconds",
        "Duration in seconds of controller reconcile passes.",
        DEFAULT_BUCKETS.to_vec(),
        &["controller"],
    );
    /// Service proxy syncs (kube-proxy's name): rendering and applying the nftables transaction.
    proxy_sync_duration: Histogram = histogram(
        "kubeproxy_sync_proxy_rules_duration_seconds",
        "SyncProxyRules latency in seconds",
        &[0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384],
    );
    /// The time the daemon started (for uptime panels).
    start_time: Gauge = Gauge::new("peapod_start_time_seconds", "Start time of the daemon since unix epoch in seconds.").expect("valid gauge");
}

/// The inventory functions that feed the gauges computed at scrape time:
/// each must be called outside this crate (checked by a test).
pub const FEEDERS: &[&str] = &[
    "inventory::update_pod",
    "inventory::update_container",
    "inventory::remove_pod",
    "inventory::remove_container",
    "inventory::container_oom",
    "inventory::owner",
];

impl Metrics {
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The metric names defined here.
    pub fn names(&self) -> Vec<String> {
        self.fields().into_iter().map(|(_, n)| n).collect()
    }

    /// One probe result; `result` is `successful`, `failed` or `unknown`.
    /// As kubelet, a failed probe is counted without a duration.
    #[allow(clippy::too_many_arguments)]
    pub fn observe_probe(
        &self,
        probe_type: &str,
        result: &str,
        container: &str,
        pod: &str,
        namespace: &str,
        pod_uid: &str,
        seconds: Option<f64>,
    ) {
        self.probe_total
            .with_label_values(&[probe_type, result, container, pod, namespace, pod_uid])
            .inc();
        if let Some(s) = seconds {
            self.probe_duration
                .with_label_values(&[probe_type, container, pod, namespace])
                .observe(s);
        }
        if !inventory::probed(pod_uid, probe_type, container) {
            // A late result of a pod already gone: no series may stay behind.
            self.forget_probe(probe_type, container, pod, namespace, pod_uid);
        }
    }

    /// One runtime operation and whether it failed.
    pub fn runtime_operation(&self, operation: &str, seconds: f64, failed: bool) {
        self.runtime_operations.with_label_values(&[operation]).inc();
        self.runtime_operations_duration
            .with_label_values(&[operation])
            .observe(seconds);
        if failed {
            self.runtime_operations_errors.with_label_values(&[operation]).inc();
        }
    }

    /// Sets the gauges kept in the inventory, dropping series of pods gone.
    pub(crate) fn refresh_from_inventory(&self) {
        let snap = inventory::snapshot();
        self.running_pods
            .set(snap.pods.iter().filter(|p| p.sandbox_running).count() as i64);
        self.running_containers.reset();
        for state in ["created", "running", "exited"] {
            let n = snap.containers.iter().filter(|c| c.state.label() == state).count();
            self.running_containers.with_label_values(&[state]).set(n as i64);
        }
        self.volume_manager_total_volumes.reset();
        for p in &snap.pods {
            for (plugins, state) in [
                (&p.volumes_desired, "desired_state_of_world"),
                (&p.volumes_actual, "actual_state_of_world"),
            ] {
                for plugin in plugins {
                    self.volume_manager_total_volumes
                        .with_label_values(&[plugin.as_str(), state])
                        .inc();
                }
            }
        }
        let stats = [
            &self.volume_stats_capacity_bytes,
            &self.volume_stats_available_bytes,
            &self.volume_stats_used_bytes,
            &self.volume_stats_inodes,
            &self.volume_stats_inodes_free,
            &self.volume_stats_inodes_used,
        ];
        for g in stats {
            g.reset();
        }
        for p in &snap.pods {
            for (claim, u) in &p.claims {
                let labels = [p.namespace.as_str(), claim.as_str()];
                let values = [u.capacity, u.available, u.used, u.inodes, u.inodes_free, u.inodes_used];
                for (g, v) in stats.iter().zip(values) {
                    g.with_label_values(&labels).set(v as f64);
                }
            }
        }
        self.container_restarts.reset();
        for c in &snap.containers {
            self.container_restarts
                .with_label_values(&[&c.namespace, &c.pod, &c.pod_uid, &c.container])
                .inc_by(u64::from(c.restarts));
        }
    }

    /// Drops one prober series set of a pod that left the node.
    pub(crate) fn forget_probe(&self, probe_type: &str, container: &str, pod: &str, namespace: &str, uid: &str) {
        for result in ["successful", "failed", "unknown"] {
            let _ = self
                .probe_total
                .remove_label_values(&[probe_type, result, container, pod, namespace, uid]);
        }
        let _ = self
            .probe_duration
            .remove_label_values(&[probe_type, container, pod, namespace]);
    }
}
