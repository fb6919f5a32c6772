//! Reliability figures per actor path: failure count and rate, MTBF, MTTR and availability.
//!
//! Definitions (all measured by the supervisor's clock, per child path; a dynamic child is
//! counted under its spec's path, `/sup/{id}`, so that figures stay bounded):
//!
//! * **up time**: time during which the child had a running incarnation; **repair time**:
//!   time from a failure being detected until the new incarnation is ready.
//! * **failures**: abnormal exits (panic, error, hang, kill, other exit reason, failed
//!   restart). Normal exits are not failures.
//! * **failure rate**: failures within the last hour, per hour.
//! * **MTBF** (mean time between failures) = up time / failures: the mean time a child runs
//!   before it fails.
//! * **MTTR** (mean time to repair) = repair time / completed repairs.
//! * **availability** = MTBF / (MTBF + MTTR); with no failure yet it is 1.
//!
//! The arithmetic is pure ([`Reliability`]); the supervisor feeds it events with instants.
//!
//! ```
//! use std::time::Duration;
//! use warden_core::stats::Reliability;
//!
//! let t0 = tokio::time::Instant::now();
//! let mut child = Reliability::default();
//! child.ready(t0);                                  // up
//! child.failed(t0 + Duration::from_secs(90));       // ran 90 s, then failed
//! child.ready(t0 + Duration::from_secs(100));       // repaired in 10 s
//! let now = child.snapshot(t0 + Duration::from_secs(100));
//! assert_eq!((now.failures, now.mtbf_s, now.mttr_s), (1, Some(90.0), Some(10.0)));
//! assert!((now.availability - 0.9).abs() < 1e-9);
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The window of the failure rate.
pub const RATE_WINDOW: Duration = Duration::from_secs(3600);
/// Failures remembered for the rate; a child failing faster than this per hour is reported at
/// this rate (the bound keeps memory fixed).
pub const RATE_SAMPLES: usize = 10_000;

/// The running tally of one path.
#[derive(Debug, Clone, Default)]
pub struct Reliability {
    failures: u64,
    repairs: u64,
    up: Duration,
    down: Duration,
    up_since: Option<Instant>,
    down_since: Option<Instant>,
    recent: VecDeque<Instant>,
}

/// Figures at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct StatsSnapshot {
    /// Failures so far.
    pub failures: u64,
    /// Failures within the last hour, per hour.
    pub failure_rate_per_hour: f64,
    /// Total up time, in seconds.
    pub up_s: f64,
    /// Total repair time, in seconds.
    pub repair_s: f64,
    /// Mean time between failures, in seconds (`None` before the first failure).
    pub mtbf_s: Option<f64>,
    /// Mean time to repair, in seconds (`None` before the first completed repair).
    pub mttr_s: Option<f64>,
    /// MTBF / (MTBF + MTTR); 1 with no failure yet.
    pub availability: f64,
}

impl Reliability {
    /// An incarnation is ready at `now` (first start or end of a repair). Returns the repair
    /// time when this ends a repair.
    pub fn ready(&mut self, now: Instant) -> Option<Duration> {
        let repaired = self.down_since.take().map(|t| now.saturating_duration_since(t));
        if let Some(d) = repaired {
            self.down += d;
            self.repairs += 1;
        }
        if self.up_since.is_none() {
            self.up_since = Some(now);
        }
        repaired
    }

    /// A failure was detected at `now`; repair starts.
    pub fn failed(&mut self, now: Instant) {
        self.failures += 1;
        if let Some(t) = self.up_since.take() {
            self.up += now.saturating_duration_since(t);
        }
        if self.down_since.is_none() {
            self.down_since = Some(now);
        }
        if self.recent.len() >= RATE_SAMPLES {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
    }

    /// The child stopped for good (not a failure being repaired): time stops counting.
    pub fn stopped(&mut self, now: Instant) {
        if let Some(t) = self.up_since.take() {
            self.up += now.saturating_duration_since(t);
        }
        self.down_since = None;
    }

    fn totals(&self, now: Instant) -> (Duration, Duration) {
        let up = self.up + self.up_since.map(|t| now.saturating_duration_since(t)).unwrap_or_default();
        let down = self.down + self.down_since.map(|t| now.saturating_duration_since(t)).unwrap_or_default();
        (up, down)
    }

    fn recent_failures(&self, now: Instant) -> usize {
        self.recent.iter().filter(|t| now.saturating_duration_since(**t) <= RATE_WINDOW).count()
    }

    /// The figures at `now`.
    pub fn snapshot(&self, now: Instant) -> StatsSnapshot {
        let (up, down) = self.totals(now);
        figures(self.failures, self.repairs, up, down, self.recent_failures(now))
    }
}

fn figures(failures: u64, repairs: u64, up: Duration, down: Duration, recent: usize) -> StatsSnapshot {
    let mtbf = (failures > 0).then(|| up.as_secs_f64() / failures as f64);
    let mttr = (repairs > 0).then(|| down.as_secs_f64() / repairs as f64);
    let availability = match (mtbf, mttr) {
        (Some(b), Some(r)) if b + r > 0.0 => b / (b + r),
        // Failed, never repaired yet: up time over all time observed.
        (Some(_), None) if (up + down).as_secs_f64() > 0.0 => up.as_secs_f64() / (up + down).as_secs_f64(),
        _ => 1.0,
    };
    StatsSnapshot {
        failures,
        failure_rate_per_hour: recent as f64 * 3600.0 / RATE_WINDOW.as_secs_f64(),
        up_s: up.as_secs_f64(),
        repair_s: down.as_secs_f64(),
        mtbf_s: mtbf,
        mttr_s: mttr,
        availability,
    }
}

/// The most distinct paths a tree's registry tallies separately.
pub const MAX_PATHS: usize = 10_000;
/// Where paths past [`MAX_PATHS`] are tallied together.
pub const OVERFLOW_PATH: &str = "(overflow)";

/// The tallies of every path of a tree.
#[derive(Debug, Default)]
pub struct StatsRegistry {
    paths: Mutex<HashMap<String, Reliability>>,
}

impl StatsRegistry {
    pub(crate) fn update(&self, path: &str, f: impl FnOnce(&mut Reliability)) {
        let mut paths = self.paths.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = paths.get_mut(path) {
            return f(r);
        }
        // Bounded: past MAX_PATHS distinct paths (dynamic children given unique spec ids, say),
        // new paths are tallied together under OVERFLOW_PATH.
        let key = if paths.len() < MAX_PATHS { path } else { OVERFLOW_PATH };
        if key == OVERFLOW_PATH && !paths.contains_key(OVERFLOW_PATH) {
            tracing::warn!(
                max_paths = MAX_PATHS,
                "reliability figures: too many distinct paths; new ones are tallied under {OVERFLOW_PATH}"
            );
        }
        f(paths.entry(key.to_string()).or_default())
    }

    /// The figures of one path.
    pub fn path(&self, path: &str) -> Option<StatsSnapshot> {
        let now = Instant::now();
        self.paths.lock().unwrap_or_else(|e| e.into_inner()).get(path).map(|r| r.snapshot(now))
    }

    /// The figures of every path at or under `prefix` together: failures, up and repair
    /// times are summed, then MTBF, MTTR and availability computed from the sums.
    pub fn subtree(&self, prefix: &str) -> StatsSnapshot {
        let now = Instant::now();
        let paths = self.paths.lock().unwrap_or_else(|e| e.into_inner());
        let (mut failures, mut repairs, mut up, mut down, mut recent) = (0, 0, Duration::ZERO, Duration::ZERO, 0);
        for (p, r) in paths.iter() {
            let inside = p == prefix || (p.starts_with(prefix) && p.as_bytes().get(prefix.len()) == Some(&b'/'));
            if inside {
                let (u, d) = r.totals(now);
                failures += r.failures;
                repairs += r.repairs;
                up += u;
                down += d;
                recent += r.recent_failures(now);
            }
        }
        figures(failures, repairs, up, down, recent)
    }

    /// Every path with its figures.
    pub fn all(&self) -> Vec<(String, StatsSnapshot)> {
        let now = Instant::now();
        let mut v: Vec<_> = self
            .paths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(p, r)| (p.clone(), r.snapshot(now)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtbf_mttr_and_availability_follow_their_definitions() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut r = Reliability::default();
        r.ready(t0);
        r.failed(t0 + s(100)); // up 100
        r.ready(t0 + s(101)); // repaired in 1
        r.failed(t0 + s(401)); // up 300
        r.ready(t0 + s(404)); // repaired in 3
        let snap = r.snapshot(t0 + s(404));
        assert_eq!(snap.failures, 2);
        assert_eq!(snap.mtbf_s, Some(200.0));
        assert_eq!(snap.mttr_s, Some(2.0));
        assert!((snap.availability - 200.0 / 202.0).abs() < 1e-12);
        assert_eq!(snap.failure_rate_per_hour, 2.0);
        // An hour later the rate has decayed, the means have not.
        let later = r.snapshot(t0 + s(404 + 3600));
        assert_eq!(later.failure_rate_per_hour, 0.0);
        assert_eq!(later.mttr_s, Some(2.0));
    }

    #[test]
    fn no_failure_means_full_availability_and_no_means() {
        let t0 = Instant::now();
        let mut r = Reliability::default();
        r.ready(t0);
        let snap = r.snapshot(t0 + Duration::from_secs(10));
        assert_eq!((snap.mtbf_s, snap.mttr_s, snap.availability), (None, None, 1.0));
        assert_eq!(snap.up_s, 10.0);
    }

    #[test]
    fn a_repair_in_progress_counts_as_down_time() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut r = Reliability::default();
        r.ready(t0);
        r.failed(t0 + s(30));
        let snap = r.snapshot(t0 + s(40));
        assert_eq!(snap.mttr_s, None);
        assert!((snap.availability - 0.75).abs() < 1e-12, "30 up, 10 down: {snap:?}");
    }

    #[test]
    fn subtrees_sum_their_paths() {
        let reg = StatsRegistry::default();
        let t0 = Instant::now();
        for p in ["/a/x", "/a/y", "/ab/z"] {
            reg.update(p, |r| {
                r.ready(t0);
                r.failed(t0);
                r.ready(t0);
            });
        }
        assert_eq!(reg.subtree("/a").failures, 2, "/ab is not under /a");
        assert_eq!(reg.subtree("/").failures, 0, "prefix must be a path");
        assert_eq!(reg.subtree("/a/x").failures, 1);
        assert_eq!(reg.all().len(), 3);
    }

    #[test]
    fn the_registry_is_bounded() {
        let reg = StatsRegistry::default();
        let t0 = Instant::now();
        for i in 0..MAX_PATHS + 5 {
            reg.update(&format!("/t/c{i}"), |r| r.failed(t0));
        }
        assert_eq!(reg.all().len(), MAX_PATHS + 1);
        assert_eq!(reg.path(OVERFLOW_PATH).map(|s| s.failures), Some(5));
    }

    #[test]
    fn the_rate_memory_is_bounded() {
        let t0 = Instant::now();
        let mut r = Reliability::default();
        for _ in 0..RATE_SAMPLES + 50 {
            r.failed(t0);
        }
        assert_eq!(r.recent.len(), RATE_SAMPLES);
        assert_eq!(r.failures as usize, RATE_SAMPLES + 50);
    }
}
