//! Percentiles over repeated measurements, through hdrhistogram.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Latency samples in nanoseconds.
pub struct Samples {
    hist: Histogram<u64>,
}

impl Samples {
    pub fn new() -> Self {
        // 1 ns to 100 s, 3 significant digits.
        let hist = Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("static histogram bounds are valid");
        Samples { hist }
    }

    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).clamp(1, 100_000_000_000);
        // Bounds are clamped above, so recording cannot fail.
        let _ = self.hist.record(ns);
    }

    pub fn merge(&mut self, other: &Samples) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    pub fn percentile_us(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

/// The median of a list of figures.
pub fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// The spread (min, max) of a list of figures.
pub fn spread(xs: &[f64]) -> (f64, f64) {
    xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}
