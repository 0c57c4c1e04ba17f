//! One container of a pod, as a small state machine:
//!
//! ```text
//! Waiting --start--> Starting --ok--> Running --exit--> Terminated
//!    ^                   |                                  |
//!    +----failed---------+        restart per policy -------+--> Waiting (CrashLoopBackOff)
//! ```

use crate::backoff::Backoff;
pub use crate::runtime::Finished;
use crate::runtime::Started;
use crate::supervisor::Restart;
use tokio::time::Instant;

/// Where a container is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Not running; started again at `retry_at` (now, when `None`) unless the pod is ending.
    Waiting {
        reason: String,
        message: Option<String>,
        retry_at: Option<Instant>,
    },
    /// A shim is creating it.
    Starting { attempt: u32 },
    /// Running under its shim. `started` is Kubernetes' `started` (the startup
    /// probe passed, or there is none); `ready` is its readiness.
    Running {
        attempt: u32,
        started: Started,
        since: Instant,
        startup_passed: bool,
        ready: bool,
    },
    /// Ended and will not be restarted (or the pod is ending).
    Terminated(Finished),
}

/// What part a container plays in its pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An init container that runs to completion before the next one starts.
    Init,
    /// An init container with `restartPolicy: Always`: started in init order,
    /// then kept running beside the app containers.
    Sidecar,
    /// One of `spec.containers`.
    App,
}

impl Role {
    /// The restart type of the container process of this role in a pod with
    /// `pod_policy`, its child spec: sidecars are permanent; init containers
    /// are transient (retried until they succeed) unless the pod says Never.
    pub fn restart(self, pod_policy: &str) -> Restart {
        Restart::from_policy(match self {
            Role::Sidecar => "Always",
            Role::Init if pod_policy == "Never" => "Never",
            Role::Init => "OnFailure",
            Role::App => pod_policy,
        })
    }
}

/// A container and its history within the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSlot {
    /// The container's name in the pod spec.
    pub name: String,
    /// Init, sidecar or app container.
    pub role: Role,
    /// Current state.
    pub state: ContainerState,
    /// The previous start, shown as `lastState`.
    pub last: Option<Finished>,
    /// The latest attempt that was started, if any; restartCount is this number.
    pub latest_attempt: Option<u32>,
    /// Restart delays.
    pub backoff: Backoff,
}

impl ContainerSlot {
    /// A container that has never started.
    pub fn new(name: String, role: Role) -> Self {
        Self {
            name,
            role,
            state: ContainerState::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
                retry_at: None,
            },
            last: None,
            latest_attempt: None,
            backoff: Backoff::default(),
        }
    }

    /// The attempt number the next start uses.
    pub fn next_attempt(&self) -> u32 {
        self.latest_attempt.map_or(0, |a| a + 1)
    }

    /// Whether this init container has run to completion.
    pub fn completed(&self) -> bool {
        matches!(&self.state, ContainerState::Terminated(f) if f.exit.exit_code == 0)
    }

    /// Whether it runs and its startup probe (if any) passed.
    pub fn is_started(&self) -> bool {
        matches!(
            self.state,
            ContainerState::Running {
                startup_passed: true,
                ..
            }
        )
    }

    /// Kubernetes' restartCount.
    pub fn restart_count(&self) -> u32 {
        self.latest_attempt.unwrap_or(0)
    }

    /// Whether a start is due now.
    pub fn start_due(&self, now: Instant) -> bool {
        matches!(&self.state, ContainerState::Waiting { retry_at, .. } if retry_at.is_none_or(|t| t <= now))
    }

    /// Whether its process may still be alive.
    pub fn is_active(&self) -> bool {
        matches!(
            self.state,
            ContainerState::Starting { .. } | ContainerState::Running { .. }
        )
    }

    /// Moves Waiting to Starting; returns the attempt number.
    pub fn begin_start(&mut self) -> u32 {
        let attempt = self.next_attempt();
        self.state = ContainerState::Starting { attempt };
        attempt
    }

    /// Moves Starting to Running.
    pub fn started(&mut self, attempt: u32, started: Started) {
        self.latest_attempt = Some(attempt);
        self.state = ContainerState::Running {
            attempt,
            started,
            since: Instant::now(),
            startup_passed: false,
            ready: false,
        };
    }

    /// Records probe results of the running start `attempt`; false if it is not running.
    pub fn set_probe_state(&mut self, attempt: u32, startup: Option<bool>, readiness: Option<bool>) -> bool {
        match &mut self.state {
            ContainerState::Running {
                attempt: a,
                startup_passed,
                ready,
                ..
            } if *a == attempt => {
                if let Some(s) = startup {
                    *startup_passed = s;
                }
                if let Some(r) = readiness {
                    *ready = r;
                }
                true
            }
            _ => false,
        }
    }

    /// Moves to Waiting after a failure that never made a container (image, config).
    pub fn failed_to_create(&mut self, reason: &str, message: String, retry_at: Instant) {
        self.state = ContainerState::Waiting {
            reason: reason.into(),
            message: Some(message),
            retry_at: Some(retry_at),
        };
    }

    /// Records an exit; the caller decides about restarting with [`ContainerSlot::schedule_restart`].
    pub fn exited(&mut self, finished: Finished) {
        self.latest_attempt = Some(
            self.latest_attempt
                .map_or(finished.attempt, |a| a.max(finished.attempt)),
        );
        self.state = ContainerState::Terminated(finished);
    }

    /// Turns a Terminated container into Waiting for an immediate start, outside the back-off.
    pub fn schedule_immediate_restart(&mut self) {
        if let ContainerState::Terminated(done) = &self.state {
            self.last = Some(done.clone());
            self.state = ContainerState::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
                retry_at: None,
            };
        }
    }

    /// The start that is running, if any.
    pub fn running_attempt(&self) -> Option<u32> {
        match self.state {
            ContainerState::Running { attempt, .. } => Some(attempt),
            _ => None,
        }
    }

    /// Turns a Terminated container into Waiting for its restart after `ran`;
    /// returns the back-off delay (zero for an immediate restart).
    pub fn schedule_restart(&mut self, ran: std::time::Duration, pod_desc: &str) -> std::time::Duration {
        let ContainerState::Terminated(done) = &self.state else {
            return std::time::Duration::ZERO;
        };
        let done = done.clone();
        let delay = self.backoff.next_delay(ran);
        let now = Instant::now();
        self.state = if delay.is_zero() {
            ContainerState::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
                retry_at: None,
            }
        } else {
            ContainerState::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(format!(
                    "back-off {}s restarting failed container={} pod={pod_desc}",
                    delay.as_secs(),
                    self.name
                )),
                retry_at: Some(now + delay),
            }
        };
        self.last = Some(done);
        delay
    }
}
