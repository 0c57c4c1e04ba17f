//! peapod's Prometheus metrics: one registry and every metric definition,
//! named as kubelet and cAdvisor name theirs wherever an equivalent exists,
//! so existing dashboards and alerts work unchanged.
//!
//! Other crates record through [`metrics()`]: counters and histograms as
//! things happen, and the [`inventory`] of the node's live pods and
//! containers, from which the gauges (`kubelet_running_pods` …) and the
//! cAdvisor-style per-container series are computed when scraped. Series of
//! a pod leave with it ([`inventory::remove_pod`]), so cardinality follows
//! the pods on the node, never the pods it has ever run.
//!
//! This crate is a leaf: it depends on `prometheus` and nothing of ours.

#![forbid(unsafe_code)]

pub mod cadvisor;
mod defs;
pub mod health;
pub mod inventory;

pub use defs::{Metrics, FEEDERS};
use prometheus::Encoder;
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

/// kubelet's `ExponentialBuckets(start, factor, count)`.
fn exponential(start: f64, factor: f64, count: usize) -> Vec<f64> {
    (0..count)
        .scan(start, |b, _| {
            let v = *b;
            *b *= factor;
            Some(v)
        })
        .collect()
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Serialises the refresh of the gauges computed from the inventory with
/// the gather that reads them, so two scrapes never see a half-filled set.
static RENDER: Mutex<()> = Mutex::new(());

/// The node's metrics, created at first use.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Measures one operation in wall-clock time for a histogram (actors keep
/// their logic on tokio's pausable clock; what a metric reports is real time).
#[derive(Debug, Clone, Copy)]
pub struct Timer(Instant);

impl Timer {
    /// Starts measuring.
    pub fn start() -> Self {
        Self(Instant::now())
    }

    /// Seconds since the start.
    pub fn seconds(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// The content type of the text exposition format.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn encode(families: &[prometheus::proto::MetricFamily], out: &mut Vec<u8>) {
    // Encoding to memory fails only on an invalid family, which the
    // registry's validation at registration rules out.
    let _ = prometheus::TextEncoder::new().encode(families, out);
}

/// `/metrics`: kubelet's and peapod's own series, then the cAdvisor ones
/// (which `/metrics/cadvisor` serves alone, as kubelet splits them). Reads
/// cgroups: call it off the actor threads.
pub fn render() -> Vec<u8> {
    let mut out = Vec::with_capacity(64 << 10);
    {
        let _guard = RENDER.lock().unwrap_or_else(|p| p.into_inner());
        let m = metrics();
        m.refresh_from_inventory();
        encode(&m.registry().gather(), &mut out);
    }
    out.extend(render_cadvisor());
    out
}

/// `/metrics/cadvisor`: the per-container series read from the cgroups now.
pub fn render_cadvisor() -> Vec<u8> {
    let mut out = Vec::with_capacity(64 << 10);
    encode(&cadvisor::gather(&inventory::snapshot()), &mut out);
    out
}

/// `/metrics/probes`: the prober series alone, as kubelet serves them.
pub fn render_probes() -> Vec<u8> {
    let m = metrics();
    let mut families = Vec::new();
    families.extend(prometheus::core::Collector::collect(&m.probe_total));
    families.extend(prometheus::core::Collector::collect(&m.probe_duration));
    families.retain(|f| !f.get_metric().is_empty());
    let mut out = Vec::new();
    encode(&families, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_buckets_are_reproduced() {
        let b = exponential(0.005, 2.5, 14);
        assert_eq!(b.len(), 14);
        assert!((b[1] - 0.0125).abs() < 1e-12);
        assert!((b[13] - 0.005 * 2.5f64.powi(13)).abs() < 1e-6);
    }

    #[test]
    fn every_definition_is_registered_and_rendered_with_help_and_type() {
        let m = metrics();
        m.started_pods.inc();
        m.observe_probe("Liveness", "failed", "c", "p", "ns", "uid-render", Some(0.001));
        let text = String::from_utf8(render()).unwrap();
        assert!(text.contains("# TYPE kubelet_started_pods_total counter"), "{text}");
        assert!(text.contains("# HELP kubelet_running_pods "), "{text}");
        // (Its value depends on what other tests put in the shared inventory.)
        assert!(text.lines().any(|l| l.starts_with("kubelet_running_pods ")), "{text}");
        let names = m.names();
        assert!(names.len() > 30, "{names:?}");
        for n in &names {
            assert!(
                n.starts_with("kubelet_")
                    || n.starts_with("prober_")
                    || n.starts_with("storage_")
                    || n.starts_with("volume_manager_")
                    || n.starts_with("peapod_")
                    || n.starts_with("kubeproxy_")
                    || n.starts_with("kube_"),
                "{n}"
            );
        }
        let uid_owner = inventory::owner();
        inventory::update_pod("uid-render", |p| p.owner = uid_owner);
        inventory::remove_pod("uid-render", uid_owner);
    }
}
