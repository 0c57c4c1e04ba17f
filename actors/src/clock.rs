//! Time for actors: `tokio::time::Instant` (tests pause it), and durations
//! from user input turned into deadlines without overflow. Kubernetes lets
//! `terminationGracePeriodSeconds` be any non-negative int64; a deadline that
//! far is clamped to [`FAR`] from now, which no pod outlives.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::time::Duration;
use tokio::time::Instant;

/// The furthest a deadline is set: a hundred years.
pub const FAR: Duration = Duration::from_secs(100 * 365 * 86_400);

/// A duration of `secs` seconds from user input: negative is zero, more than [`FAR`] is [`FAR`].
pub fn secs(secs: i64) -> Duration {
    Duration::from_secs(secs.max(0) as u64).min(FAR)
}

/// `now + d`, clamped to `now + FAR`.
pub fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d.min(FAR)).unwrap_or(now)
}

/// `base + d`, clamped to `base + FAR`.
pub fn add(base: Instant, d: Duration) -> Instant {
    base.checked_add(d.min(FAR)).unwrap_or(base)
}

/// The monotonic instant of a wall-clock time (past or future).
pub fn instant_of_time(t: &Time) -> Instant {
    // k8s-openapi's timestamps carry no clock; chrono's reads it.
    let diff =
        t.0.as_millisecond()
            .saturating_sub(chrono::Utc::now().timestamp_millis());
    let now = Instant::now();
    if diff >= 0 {
        add(now, Duration::from_millis(diff as u64))
    } else {
        now.checked_sub(Duration::from_millis(diff.unsigned_abs()))
            .unwrap_or(now)
    }
}

/// The monotonic instant of an RFC 3339 time (now, if unreadable).
pub fn instant_of(rfc3339: &str) -> Instant {
    match rfc3339.parse::<k8s_openapi::jiff::Timestamp>() {
        Ok(t) => instant_of_time(&Time(t)),
        Err(_) => Instant::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_clamp_instead_of_overflowing() {
        assert_eq!(secs(i64::MAX), FAR);
        assert_eq!(secs(-5), Duration::ZERO);
        let d = after(secs(i64::MAX));
        assert!(d > Instant::now() + Duration::from_secs(86_400 * 365));
    }

    #[tokio::test]
    async fn wall_times_map_to_instants() {
        let past = instant_of("2000-01-01T00:00:00Z");
        assert!(past <= Instant::now());
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(60)).to_rfc3339();
        let at = instant_of(&soon);
        let left = at - Instant::now();
        assert!(
            left > Duration::from_secs(58) && left <= Duration::from_secs(61),
            "{left:?}"
        );
    }
}
