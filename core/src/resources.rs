//! What a pod asks of the node: effective requests (for admission), limits
//! (for the pod cgroup) and its QoS class, by Kubernetes' rules
//! (`k8s.io/component-helpers/resource` and `qos.GetPodQOS`).

use crate::quantity::Quantity;
use k8s_openapi::api::core::v1::{Container, PodSpec};

/// CPU in millicores and memory in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amounts {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
}

impl Amounts {
    fn add(self, o: Amounts) -> Amounts {
        Amounts {
            cpu_millis: self.cpu_millis.saturating_add(o.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(o.memory_bytes),
        }
    }
    fn max(self, o: Amounts) -> Amounts {
        Amounts {
            cpu_millis: self.cpu_millis.max(o.cpu_millis),
            memory_bytes: self.memory_bytes.max(o.memory_bytes),
        }
    }
}

fn get(c: &Container, limits: bool, name: &str) -> Option<Quantity> {
    let r = c.resources.as_ref()?;
    let map = if limits { r.limits.as_ref() } else { r.requests.as_ref() }?;
    Quantity::parse(&map.get(name)?.0).ok()
}

/// A container's requests (requests default to limits, as the API server defaults them).
pub fn container_requests(c: &Container) -> Amounts {
    let pick = |n: &str| get(c, false, n).or_else(|| get(c, true, n));
    Amounts {
        cpu_millis: pick("cpu").map_or(0, |q| q.milli_value()),
        memory_bytes: pick("memory").map_or(0, |q| q.value()),
    }
}

/// A container's limits, each `None` when unset.
pub fn container_limits(c: &Container) -> (Option<i64>, Option<i64>) {
    (
        get(c, true, "cpu").map(|q| q.milli_value()),
        get(c, true, "memory").map(|q| q.value()),
    )
}

/// Whether an init container is a sidecar (`restartPolicy: Always`).
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The pod's effective requests: app containers plus sidecars, or the largest
/// init container (plus the sidecars started before it) if that is more.
pub fn pod_requests(spec: &PodSpec) -> Amounts {
    let mut sidecars = Amounts::default();
    let mut init_peak = Amounts::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c);
        if is_sidecar(c) {
            sidecars = sidecars.add(r);
            init_peak = init_peak.max(sidecars);
        } else {
            init_peak = init_peak.max(sidecars.add(r));
        }
    }
    let app = spec
        .containers
        .iter()
        .map(container_requests)
        .fold(Amounts::default(), Amounts::add);
    app.add(sidecars).max(init_peak)
}

/// The pod-level limits kubelet puts on the pod cgroup: a resource is limited
/// only when every container limits it. `(cpu_millis, memory_bytes)`.
pub fn pod_limits(spec: &PodSpec) -> (Option<i64>, Option<i64>) {
    let sum = |containers: Vec<&Container>, idx: usize| -> Option<i64> {
        containers.iter().try_fold(0i64, |acc, c| {
            let (cpu, mem) = container_limits(c);
            Some(acc.saturating_add(if idx == 0 { cpu? } else { mem? }))
        })
    };
    let regular: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten().filter(|c| is_sidecar(c)))
        .collect();
    let inits: Vec<&Container> = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| !is_sidecar(c))
        .collect();
    let limit = |idx: usize| -> Option<i64> {
        if regular.is_empty() {
            return None;
        }
        let app = sum(regular.clone(), idx)?;
        inits.iter().try_fold(app, |acc, c| Some(acc.max(sum(vec![*c], idx)?)))
    };
    (limit(0), limit(1))
}

/// kubelet's `guaranteedOOMScoreAdj` and `besteffortOOMScoreAdj`.
pub const GUARANTEED_OOM_SCORE_ADJ: i32 = -997;
pub const BEST_EFFORT_OOM_SCORE_ADJ: i32 = 1000;

/// A container's `oom_score_adj`, as kubelet's `GetContainerOOMScoreAdjust`:
/// Guaranteed -997, BestEffort 1000, Burstable `1000 - 1000 * request /
/// capacity` kept within 3..=999 (so it stays above Guaranteed and below
/// BestEffort). Computed in i128: a request near i64::MAX must not overflow.
pub fn oom_score_adj(spec: &PodSpec, c: &Container, memory_capacity: i64) -> i32 {
    match qos_class(spec) {
        "Guaranteed" => return GUARANTEED_OOM_SCORE_ADJ,
        "BestEffort" => return BEST_EFFORT_OOM_SCORE_ADJ,
        _ => {}
    }
    let request = i128::from(get(c, false, "memory").map_or(0, |q| q.value()).max(0));
    let capacity = i128::from(memory_capacity.max(1));
    let adj = 1000 - (1000 * request) / capacity;
    let low = i128::from(1000 + GUARANTEED_OOM_SCORE_ADJ);
    if adj < low {
        low as i32
    } else if adj >= i128::from(BEST_EFFORT_OOM_SCORE_ADJ) {
        BEST_EFFORT_OOM_SCORE_ADJ - 1
    } else {
        adj as i32
    }
}

/// The pod's QoS class: `Guaranteed`, `Burstable` or `BestEffort`.
pub fn qos_class(spec: &PodSpec) -> &'static str {
    let all: Vec<&Container> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &all {
        for name in ["cpu", "memory"] {
            let req = get(c, false, name).filter(|q| !q.is_zero());
            let lim = get(c, true, name).filter(|q| !q.is_zero());
            any |= req.is_some() || lim.is_some();
            match (req, lim) {
                (_, None) => guaranteed = false,
                (Some(r), Some(l)) if r.milli_value() != l.milli_value() => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// kubelet's `MilliCPUToShares`: cgroup v1 `cpu.shares` for a cpu request.
pub fn cpu_shares(milli: i64) -> u64 {
    // Computed wide: a quantity near i64::MAX must not overflow. kubelet
    // clamps to the kernel's range, 2..=262144.
    let shares = i128::from(milli.max(0)) * 1024 / 1000;
    shares.clamp(2, MAX_SHARES as i128) as u64
}

/// The largest `cpu.shares` the kernel takes (kubelet's `MaxShares`).
pub const MAX_SHARES: u64 = 262_144;

/// The largest CFS quota the kernel takes, in microseconds (2^44 - 1).
pub const MAX_QUOTA_US: i64 = (1 << 44) - 1;

/// kubelet's `MilliCPUToQuota` for a 100 ms period (minimum 1 ms), clamped
/// to what the kernel takes: a limit that large limits nothing.
pub fn cpu_quota(milli: i64, period_us: u64) -> i64 {
    let quota = i128::from(milli.max(0)) * i128::from(period_us) / 1000;
    quota.clamp(1000, i128::from(MAX_QUOTA_US)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    fn c(name: &str, req: serde_json::Value, lim: serde_json::Value) -> serde_json::Value {
        json!({"name": name, "resources": {"requests": req, "limits": lim}})
    }

    #[test]
    fn huge_cpu_amounts_clamp_to_the_kernel_range() {
        assert_eq!(cpu_shares(i64::MAX), MAX_SHARES);
        assert_eq!(cpu_shares(250), 256);
        assert_eq!(cpu_shares(1), 2);
        assert_eq!(cpu_quota(i64::MAX, 100_000), MAX_QUOTA_US);
        assert_eq!(cpu_quota(500, 100_000), 50_000);
        assert_eq!(cpu_quota(1, 100_000), 1000);
    }

    #[test]
    fn oom_score_adj_per_qos_class() {
        const GI: i64 = 1 << 30;
        let score = |s: &serde_json::Value| {
            let sp = spec(s.clone());
            let c = sp.containers[0].clone();
            oom_score_adj(&sp, &c, 8 * GI)
        };
        assert_eq!(score(&json!({"containers": [{"name": "a"}]})), 1000);
        assert_eq!(
            score(&json!({"containers": [c("a", json!({}), json!({"cpu": "1", "memory": "1Gi"}))]})),
            -997
        );
        // Burstable: 1 GiB of 8 GiB requested -> 1000 - 125.
        assert_eq!(
            score(&json!({"containers": [c("a", json!({"memory": "1Gi"}), json!({}))]})),
            875
        );
        // No memory request: 1000 would equal BestEffort, so 999.
        assert_eq!(
            score(&json!({"containers": [c("a", json!({"cpu": "100m"}), json!({}))]})),
            999
        );
        // More than the node has: floored at 3, above Guaranteed.
        assert_eq!(
            score(&json!({"containers": [c("a", json!({"memory": "16Gi"}), json!({}))]})),
            3
        );
        // A request near i64::MAX does not overflow.
        assert_eq!(
            score(&json!({"containers": [c("a", json!({"memory": "9223372036854775807"}), json!({}))]})),
            3
        );
    }

    #[test]
    fn qos_classes() {
        let none = spec(json!({"containers": [{"name": "a"}]}));
        assert_eq!(qos_class(&none), "BestEffort");
        let g = spec(json!({"containers": [c("a", json!({}), json!({"cpu": "1", "memory": "1Gi"}))]}));
        assert_eq!(qos_class(&g), "Guaranteed");
        let g2 = spec(
            json!({"containers": [c("a", json!({"cpu": "1000m", "memory": "1Gi"}), json!({"cpu": "1", "memory": "1Gi"}))]}),
        );
        assert_eq!(qos_class(&g2), "Guaranteed");
        let b = spec(json!({"containers": [c("a", json!({"cpu": "100m"}), json!({"cpu": "1", "memory": "1Gi"}))]}));
        assert_eq!(qos_class(&b), "Burstable");
        let b2 = spec(json!({"containers": [
            c("a", json!({}), json!({"cpu": "1", "memory": "1Gi"})),
            {"name": "b"}]}));
        assert_eq!(qos_class(&b2), "Burstable");
        let b3 = spec(json!({"containers": [c("a", json!({"memory": "10Mi"}), json!({}))]}));
        assert_eq!(qos_class(&b3), "Burstable");
    }

    #[test]
    fn requests_count_init_containers_and_sidecars() {
        let s = spec(json!({
            "initContainers": [
                c("init", json!({"cpu": "2", "memory": "10Mi"}), json!({})),
                {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m", "memory": "5Mi"}}},
            ],
            "containers": [
                c("a", json!({"cpu": "300m"}), json!({"memory": "64Mi"})),
                c("b", json!({"cpu": "200m"}), json!({})),
            ]
        }));
        let r = pod_requests(&s);
        // cpu: max(2000, 300+200+100); memory: max(10Mi, 64Mi + 5Mi).
        assert_eq!(r.cpu_millis, 2000);
        assert_eq!(r.memory_bytes, 69 * 1024 * 1024);
    }

    #[test]
    fn pod_limits_only_when_every_container_has_one() {
        let s = spec(json!({"containers": [
            c("a", json!({}), json!({"cpu": "500m", "memory": "64Mi"})),
            c("b", json!({}), json!({"cpu": "250m"}))]}));
        assert_eq!(pod_limits(&s), (Some(750), None));
        let s = spec(json!({
            "initContainers": [c("i", json!({}), json!({"cpu": "2", "memory": "1Mi"}))],
            "containers": [c("a", json!({}), json!({"cpu": "500m", "memory": "64Mi"}))]}));
        assert_eq!(pod_limits(&s), (Some(2000), Some(64 << 20)));
    }

    #[test]
    fn kubelet_cpu_conversions() {
        assert_eq!(cpu_shares(0), 2);
        assert_eq!(cpu_shares(250), 256);
        assert_eq!(cpu_shares(1000), 1024);
        assert_eq!(cpu_quota(500, 100_000), 50_000);
        assert_eq!(cpu_quota(1, 100_000), 1000);
    }
}
