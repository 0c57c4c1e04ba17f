//! kubelet's CrashLoopBackOff schedule: the first restart is immediate, then
//! 10 s doubling to a 300 s cap; a container that ran for 600 s resets it.

use std::time::Duration;

/// Restart delays of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    cap: Duration,
    reset_after: Duration,
    next: Option<Duration>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(
            Duration::from_secs(10),
            Duration::from_secs(300),
            Duration::from_secs(600),
        )
    }
}

impl Backoff {
    /// A schedule with the given first delay, cap, and reset threshold.
    pub fn new(initial: Duration, cap: Duration, reset_after: Duration) -> Self {
        Self {
            initial,
            cap,
            reset_after,
            next: None,
        }
    }

    /// The delay before restarting a container that just exited after running for `ran`.
    pub fn next_delay(&mut self, ran: Duration) -> Duration {
        if ran >= self.reset_after {
            self.next = None;
        }
        match self.next {
            None => {
                self.next = Some(self.initial);
                Duration::ZERO
            }
            Some(d) => {
                self.next = Some((d * 2).min(self.cap));
                d
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_doubles_to_cap_and_resets() {
        let mut b = Backoff::default();
        let short = Duration::from_secs(1);
        let got: Vec<u64> = (0..9).map(|_| b.next_delay(short).as_secs()).collect();
        assert_eq!(got, [0, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(b.next_delay(Duration::from_secs(600)).as_secs(), 0);
        assert_eq!(b.next_delay(short).as_secs(), 10);
    }

    /// Drives the schedule the way the pod actor does: exit, sleep the delay,
    /// run, exit again, on tokio's paused clock.
    #[tokio::test(start_paused = true)]
    async fn restarts_follow_the_schedule_in_paused_time() {
        let mut b = Backoff::default();
        let t0 = tokio::time::Instant::now();
        let mut starts = vec![];
        for _ in 0..4 {
            let started = tokio::time::Instant::now();
            starts.push(started.duration_since(t0).as_secs());
            tokio::time::sleep(Duration::from_secs(1)).await; // the container runs 1 s and crashes
            let delay = b.next_delay(tokio::time::Instant::now() - started);
            tokio::time::sleep(delay).await;
        }
        assert_eq!(starts, [0, 1, 12, 33]);
        // A container that stayed up for 10 minutes restarts at once.
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(b.next_delay(Duration::from_secs(600)), Duration::ZERO);
    }
}
