//! Leader election on a `coordination.k8s.io/v1` Lease in `kube-system`, as
//! client-go's `leaderelection` does it for kube-scheduler and
//! kube-controller-manager: when nodes share a store, one node at a time runs
//! the scheduler, and one runs the controllers.
//!
//! - A candidate takes the Lease when nobody holds it, or when the record it
//!   observed has not changed for the record's `leaseDurationSeconds`
//!   (measured on the candidate's own clock from when it saw the record, so
//!   clocks need not agree). Writes are compare-and-swap on resourceVersion,
//!   so two candidates never both win.
//! - The holder renews every retry period; when renewals have failed for the
//!   renew deadline it stops leading before its Lease can expire elsewhere.
//! - The identity is the node name: a node restarted under the same name
//!   takes its own Lease back at once (the old process is gone).

use actix::prelude::*;
use peapod_core::kinds;
use peapod_core::object;
use peapod_core::store::{Store, StoreError, StoreResult};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The Lease the controllers' leader holds (kube-controller-manager's name).
pub const CONTROLLERS_LEASE: &str = "kube-controller-manager";
/// The Lease the scheduler's leader holds.
pub const SCHEDULER_LEASE: &str = "kube-scheduler";
/// Where leader Leases live.
pub const LEASE_NAMESPACE: &str = "kube-system";

/// The timing of an election (kube-controller-manager's `--leader-elect-*` flags).
#[derive(Debug, Clone, Copy)]
pub struct ElectionTiming {
    /// How long a Lease is good for without renewal (15 s).
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops leading (10 s).
    pub renew_deadline: Duration,
    /// How often candidates try, and the leader renews (2 s).
    pub retry_period: Duration,
}

impl Default for ElectionTiming {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Told to the node when it starts or stops leading for `lease`.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct Leadership {
    pub lease: &'static str,
    pub leading: bool,
}

/// What a candidate remembers of the record it last saw.
#[derive(Default)]
pub struct Candidate {
    identity: String,
    /// The record (holder, renewTime, resourceVersion) and when it was first seen so.
    observed: Option<(String, Instant)>,
}

fn now_micro() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl Candidate {
    /// A candidate named `identity`.
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            identity: identity.into(),
            observed: None,
        }
    }

    /// One try: takes or renews `lease`. `Ok(true)`: this candidate holds it now.
    pub async fn try_acquire_or_renew(
        &mut self,
        store: &dyn Store,
        lease: &str,
        timing: &ElectionTiming,
    ) -> StoreResult<bool> {
        let resource = kinds::lease().resource();
        let seconds = i64::try_from(timing.lease_duration.as_secs()).unwrap_or(i64::MAX);
        let now = Instant::now();
        let cur = match store.get(&resource, LEASE_NAMESPACE, lease).await {
            Ok(cur) => cur,
            Err(StoreError::NotFound { .. }) => {
                let record = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": lease, "namespace": LEASE_NAMESPACE, "uid": object::new_uid(),
                        "creationTimestamp": object::now_rfc3339()},
                    "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": seconds,
                        "acquireTime": now_micro(), "renewTime": now_micro(), "leaseTransitions": 0}});
                return match store.create(&resource, record).await {
                    Ok(_) => Ok(true),
                    Err(StoreError::AlreadyExists { .. }) => Ok(false),
                    Err(e) => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let spec = &cur["spec"];
        let holder = spec["holderIdentity"].as_str().unwrap_or("").to_string();
        let record = format!(
            "{holder}|{}|{}",
            spec["renewTime"].as_str().unwrap_or(""),
            object::resource_version(&cur)
        );
        let seen_at = match &self.observed {
            Some((r, at)) if *r == record => *at,
            _ => {
                self.observed = Some((record, now));
                now
            }
        };
        let duration = spec["leaseDurationSeconds"]
            .as_u64()
            .map_or(timing.lease_duration, Duration::from_secs);
        let held_elsewhere = !holder.is_empty() && holder != self.identity;
        if held_elsewhere && now.saturating_duration_since(seen_at) < duration {
            return Ok(false);
        }
        let mut next: Value = cur.clone();
        next["spec"]["holderIdentity"] = json!(self.identity);
        next["spec"]["leaseDurationSeconds"] = json!(seconds);
        next["spec"]["renewTime"] = json!(now_micro());
        if holder != self.identity {
            next["spec"]["acquireTime"] = json!(now_micro());
            let transitions = spec["leaseTransitions"].as_i64().unwrap_or(0);
            next["spec"]["leaseTransitions"] = json!(transitions.saturating_add(1));
        }
        match store.update(&resource, next).await {
            Ok(_) => Ok(true),
            // Someone else wrote first (renewed or took it): not ours this round.
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Runs the election for `lease` for as long as the future lives, telling
/// `to` each time this node starts or stops leading.
pub async fn run(
    store: Arc<dyn Store>,
    lease: &'static str,
    identity: String,
    timing: ElectionTiming,
    to: Recipient<Leadership>,
) {
    let mut candidate = Candidate::new(identity);
    let mut leading = false;
    let mut last_renewed = Instant::now();
    loop {
        match candidate.try_acquire_or_renew(&*store, lease, &timing).await {
            Ok(true) => {
                last_renewed = Instant::now();
                if !leading {
                    leading = true;
                    tracing::info!("leading {lease} now");
                    to.do_send(Leadership { lease, leading });
                }
            }
            Ok(false) => {
                if leading {
                    leading = false;
                    tracing::warn!("{lease}: another node took the lease; no longer leading");
                    to.do_send(Leadership { lease, leading });
                }
            }
            Err(e) => {
                tracing::warn!("{lease} lease: {e}");
                if leading && last_renewed.elapsed() >= timing.renew_deadline {
                    leading = false;
                    tracing::warn!(
                        "{lease}: not renewed for {:?}; no longer leading",
                        timing.renew_deadline
                    );
                    to.do_send(Leadership { lease, leading });
                }
            }
        }
        tokio::time::sleep(timing.retry_period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peapod_core::store::SqliteStore;

    fn timing() -> ElectionTiming {
        ElectionTiming {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    fn holder(v: &Value) -> String {
        v["spec"]["holderIdentity"].as_str().unwrap_or("").to_string()
    }

    #[tokio::test(start_paused = true)]
    async fn one_candidate_leads_and_another_takes_over_only_after_the_lease_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("s.db")).unwrap());
        let (mut a, mut b) = (Candidate::new("a"), Candidate::new("b"));
        let t = timing();
        assert!(a.try_acquire_or_renew(&*store, "l", &t).await.unwrap());
        assert!(!b.try_acquire_or_renew(&*store, "l", &t).await.unwrap(), "held by a");
        // a renews: b sees a new record each time and keeps waiting.
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(2)).await;
            assert!(a.try_acquire_or_renew(&*store, "l", &t).await.unwrap());
            assert!(!b.try_acquire_or_renew(&*store, "l", &t).await.unwrap());
        }
        // a stops renewing: b waits one lease duration from when it last saw a change.
        tokio::time::advance(Duration::from_secs(14)).await;
        assert!(!b.try_acquire_or_renew(&*store, "l", &t).await.unwrap());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(b.try_acquire_or_renew(&*store, "l", &t).await.unwrap());
        let lease = store
            .get(&kinds::lease().resource(), LEASE_NAMESPACE, "l")
            .await
            .unwrap();
        assert_eq!(holder(&lease), "b");
        assert_eq!(lease["spec"]["leaseTransitions"], 1);
        // a comes back: b holds it now.
        assert!(!a.try_acquire_or_renew(&*store, "l", &t).await.unwrap());
        // A restarted b (a new candidate, same name) takes its own lease back at once.
        let mut b2 = Candidate::new("b");
        assert!(b2.try_acquire_or_renew(&*store, "l", &t).await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn two_candidates_racing_for_a_free_lease_never_both_win() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("s.db")).unwrap());
        let t = timing();
        let mut wins = 0;
        for round in 0..20 {
            let lease = format!("race-{round}");
            let (mut a, mut b) = (Candidate::new("a"), Candidate::new("b"));
            let (ra, rb) = tokio::join!(
                a.try_acquire_or_renew(&*store, &lease, &t),
                b.try_acquire_or_renew(&*store, &lease, &t)
            );
            let (ra, rb) = (ra.unwrap(), rb.unwrap());
            assert!(!(ra && rb), "round {round}: both won");
            wins += usize::from(ra || rb);
        }
        assert_eq!(wins, 20, "someone wins each free lease");
    }
}
