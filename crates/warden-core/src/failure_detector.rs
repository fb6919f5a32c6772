//! Failure detectors as pure maths over arrival times: a fixed deadline, and the phi-accrual
//! detector of Hayashibara et al. (2004) with Akka's parameters as the reference.
//!
//! Nothing here reads a clock or owns a thread: callers feed heartbeat arrival times and ask
//! at a given instant. The hang watchdog uses the fixed-deadline rule; the
//! cluster layer will score nodes with [`PhiAccrual`].
//!
//! ```
//! use std::time::Duration;
//! use warden_core::failure_detector::{PhiAccrual, PhiParams};
//!
//! let mut peer = PhiAccrual::new(PhiParams::akka());
//! for beat in 0..20u64 {
//!     peer.heartbeat(Duration::from_secs(beat)); // one heartbeat a second
//! }
//! let last = Duration::from_secs(19);
//! assert!(!peer.is_suspect(last + Duration::from_secs(1)));  // on time
//! assert!(peer.is_suspect(last + Duration::from_secs(30)));  // long silent
//! ```

use std::collections::VecDeque;
use std::time::Duration;

/// A fixed deadline: suspected once `deadline` has passed since the last sign of life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// How long silence is tolerated.
    pub deadline: Duration,
}

impl Deadline {
    /// Whether `since_last` (time since the last sign of life) exceeds the deadline.
    pub fn is_suspect(&self, since_last: Duration) -> bool {
        since_last > self.deadline
    }
}

/// Parameters of a [`PhiAccrual`] detector. [`PhiParams::akka`] gives Akka cluster's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhiParams {
    /// Suspicion level above which the peer is considered down (Akka: 8).
    pub threshold: f64,
    /// Inter-arrival samples kept (Akka: 1000).
    pub max_samples: usize,
    /// Floor of the standard deviation, so that a very regular history does not make every
    /// small delay look fatal (Akka: 100 ms).
    pub min_std_deviation: Duration,
    /// A pause that is tolerated on top of the mean interval (Akka: 3 s).
    pub acceptable_pause: Duration,
    /// The interval assumed before any sample exists (Akka: 1 s).
    pub first_heartbeat_estimate: Duration,
}

impl PhiParams {
    /// Akka cluster's defaults: threshold 8, 1000 samples, 100 ms minimum deviation, 3 s
    /// acceptable pause, 1 s first estimate.
    pub fn akka() -> Self {
        PhiParams {
            threshold: 8.0,
            max_samples: 1000,
            min_std_deviation: Duration::from_millis(100),
            acceptable_pause: Duration::from_secs(3),
            first_heartbeat_estimate: Duration::from_secs(1),
        }
    }
}

/// The phi-accrual failure detector: instead of a yes/no deadline it gives a suspicion level
/// phi = -log10(P(a heartbeat arrives later than now)), from the distribution of past
/// inter-arrival times. phi 1 means a 10% chance that the peer is still alive and merely
/// late, phi 8 one in 10^8.
///
/// Arrival times are `Duration`s since any fixed origin chosen by the caller.
#[derive(Debug, Clone)]
pub struct PhiAccrual {
    params: PhiParams,
    intervals_ms: VecDeque<f64>,
    sum: f64,
    sum_sq: f64,
    last: Option<Duration>,
}

impl PhiAccrual {
    /// A detector with no heartbeat yet. The history is seeded with two samples around
    /// `first_heartbeat_estimate` (mean ± a quarter), as Akka does.
    pub fn new(params: PhiParams) -> Self {
        let mut d = PhiAccrual { params, intervals_ms: VecDeque::new(), sum: 0.0, sum_sq: 0.0, last: None };
        let mean = params.first_heartbeat_estimate.as_secs_f64() * 1000.0;
        d.push(mean - mean / 4.0);
        d.push(mean + mean / 4.0);
        d
    }

    /// The parameters.
    pub fn params(&self) -> &PhiParams {
        &self.params
    }

    fn push(&mut self, interval_ms: f64) {
        if self.intervals_ms.len() >= self.params.max_samples.max(1) {
            if let Some(old) = self.intervals_ms.pop_front() {
                self.sum -= old;
                self.sum_sq -= old * old;
            }
        }
        self.intervals_ms.push_back(interval_ms);
        self.sum += interval_ms;
        self.sum_sq += interval_ms * interval_ms;
    }

    /// Records a heartbeat that arrived at `at`. An arrival earlier than the previous one is
    /// ignored (it carries no interval).
    pub fn heartbeat(&mut self, at: Duration) {
        if let Some(last) = self.last {
            if at < last {
                return;
            }
            self.push((at - last).as_secs_f64() * 1000.0);
        }
        self.last = Some(at);
    }

    /// Mean and standard deviation of the intervals, in ms.
    pub fn stats_ms(&self) -> (f64, f64) {
        let n = self.intervals_ms.len().max(1) as f64;
        let mean = self.sum / n;
        let variance = (self.sum_sq / n - mean * mean).max(0.0);
        (mean, variance.sqrt())
    }

    /// The suspicion level at `now`; 0 before the first heartbeat.
    pub fn phi(&self, now: Duration) -> f64 {
        let Some(last) = self.last else { return 0.0 };
        let elapsed_ms = now.saturating_sub(last).as_secs_f64() * 1000.0;
        let (mean, std) = self.stats_ms();
        let mean = mean + self.params.acceptable_pause.as_secs_f64() * 1000.0;
        let std = std.max(self.params.min_std_deviation.as_secs_f64() * 1000.0);
        phi_of(elapsed_ms, mean, std)
    }

    /// Whether phi at `now` is above the threshold.
    pub fn is_suspect(&self, now: Duration) -> bool {
        self.phi(now) > self.params.threshold
    }
}

/// phi for an elapsed time under a normal distribution of intervals, with the logistic
/// approximation of the normal CDF that Akka uses (error below 1.4e-4). With
/// `a = y (1.5976 + 0.070566 y^2)` the chance of a later heartbeat is `1 / (1 + e^a)`, so
/// `phi = ln(1 + e^a) / ln 10`, computed in a form that neither overflows nor underflows.
fn phi_of(elapsed_ms: f64, mean_ms: f64, std_ms: f64) -> f64 {
    let y = (elapsed_ms - mean_ms) / std_ms;
    let a = y * (1.5976 + 0.070566 * y * y);
    let ln_one_plus_exp_a = if a > 0.0 { a + (-a).exp().ln_1p() } else { a.exp().ln_1p() };
    ln_one_plus_exp_a / std::f64::consts::LN_10
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_fixed_deadline_suspects_only_past_it() {
        let d = Deadline { deadline: ms(100) };
        assert!(!d.is_suspect(ms(100)));
        assert!(d.is_suspect(ms(101)));
    }

    #[test]
    fn phi_is_zero_before_any_heartbeat_and_grows_with_silence() {
        let mut d = PhiAccrual::new(PhiParams::akka());
        assert_eq!(d.phi(ms(10_000)), 0.0);
        for i in 0..=20 {
            d.heartbeat(ms(1000 * i));
        }
        let last = ms(20_000);
        let mut prev = 0.0;
        for silence in [0, 500, 1000, 2000, 3000, 3500, 4000, 4500, 5000, 6000] {
            let phi = d.phi(last + ms(silence));
            assert!(phi >= prev, "phi never falls as silence grows: {phi} after {prev}");
            if silence >= 3500 {
                assert!(phi > prev, "phi grows once silence nears the expected interval: {phi} after {prev}");
            }
            prev = phi;
        }
        // At the mean plus the acceptable pause, phi is log10(2): an even chance.
        assert!((d.phi(last + ms(4000)) - 2f64.log10()).abs() < 1e-3);
    }

    #[test]
    fn akka_parameters_suspect_a_regular_peer_after_about_four_seconds() {
        // Heartbeats every second: mean 1 s, deviation floored at 100 ms, plus a 3 s pause.
        let mut d = PhiAccrual::new(PhiParams::akka());
        for i in 0..=100 {
            d.heartbeat(ms(1000 * i));
        }
        let last = ms(100_000);
        assert!(!d.is_suspect(last + ms(3_500)), "phi {}", d.phi(last + ms(3_500)));
        assert!(d.is_suspect(last + ms(5_000)), "phi {}", d.phi(last + ms(5_000)));
        // phi crosses 8 between the two.
        let cross = (3_500..5_000).step_by(10).find(|&t| d.is_suspect(last + ms(t))).unwrap();
        assert!((4_000..4_800).contains(&cross), "crossed at {cross} ms");
    }

    #[test]
    fn jittery_history_widens_the_distribution() {
        let p = PhiParams { acceptable_pause: Duration::ZERO, ..PhiParams::akka() };
        let mut steady = PhiAccrual::new(p);
        let mut jittery = PhiAccrual::new(p);
        let (mut t1, mut t2) = (0u64, 0u64);
        for i in 0..200u64 {
            t1 += 100;
            t2 += if i % 2 == 0 { 20 } else { 180 };
            steady.heartbeat(ms(t1));
            jittery.heartbeat(ms(t2));
        }
        // The same silence is less suspicious after an irregular history.
        assert!(jittery.phi(ms(t2 + 400)) < steady.phi(ms(t1 + 400)));
    }

    #[test]
    fn the_sample_window_is_bounded_and_slides() {
        let p = PhiParams { max_samples: 10, ..PhiParams::akka() };
        let mut d = PhiAccrual::new(p);
        for i in 0..=100 {
            d.heartbeat(ms(50 * i));
        }
        let (mean, std) = d.stats_ms();
        assert!((mean - 50.0).abs() < 1e-6, "old samples (and the seed) have left: {mean}");
        assert!(std < 1e-3);
    }

    #[test]
    fn out_of_order_arrivals_are_ignored_and_phi_stays_finite() {
        let mut d = PhiAccrual::new(PhiParams::akka());
        d.heartbeat(ms(1000));
        d.heartbeat(ms(500));
        d.heartbeat(ms(2000));
        let phi = d.phi(ms(1_000_000_000));
        assert!(phi.is_finite() && phi > 8.0, "{phi}");
    }
}
