//! Summaries of repeated measurements: median, minimum, 90th percentile (nearest rank), maximum.
//!
//! Every figure the benchmark reports is one of these over many runs; a single run is never a
//! figure. Values are milliseconds (or KiB for memory), as `f64`.
use std::time::Duration;

use serde_json::{json, Value};

/// A set of samples and its summary.
#[derive(Debug, Clone, Default)]
pub(crate) struct Samples {
    pub(crate) values: Vec<f64>,
}

impl Samples {
    pub(crate) fn push(&mut self, value: f64) {
        self.values.push(value);
    }

    pub(crate) fn push_ms(&mut self, duration: Duration) {
        self.values.push(ms(duration));
    }

    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }

    fn sorted(&self) -> Vec<f64> {
        let mut sorted = self.values.clone();
        sorted.sort_by(f64::total_cmp);
        sorted
    }

    /// The median (mean of the two middle values for an even count); NaN when empty.
    pub(crate) fn median(&self) -> f64 {
        let s = self.sorted();
        match s.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => s[n / 2],
            n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        }
    }

    pub(crate) fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }

    pub(crate) fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }

    /// Nearest-rank percentile `p` (0–100).
    pub(crate) fn percentile(&self, p: f64) -> f64 {
        let s = self.sorted();
        if s.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
        s[rank.clamp(1, s.len()) - 1]
    }

    pub(crate) fn p90(&self) -> f64 {
        self.percentile(90.0)
    }

    /// `median (min–p90)` with one decimal.
    pub(crate) fn brief(&self) -> String {
        if self.values.is_empty() {
            return "—".into();
        }
        format!("{:.1} ({:.1}–{:.1})", self.median(), self.min(), self.p90())
    }

    pub(crate) fn to_json(&self) -> Value {
        let round = |v: f64| (v * 1000.0).round() / 1000.0;
        json!({
            "n": self.len(),
            "median": round(self.median()),
            "min": round(self.min()),
            "p90": round(self.p90()),
            "max": round(self.max()),
            "samples": self.values.iter().map(|v| round(*v)).collect::<Vec<_>>(),
        })
    }
}

/// Milliseconds as a float.
pub(crate) fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_nearest_rank_percentiles_follow_their_definitions() {
        let mut s = Samples::default();
        for v in [5.0, 1.0, 3.0, 2.0, 4.0, 6.0, 7.0, 8.0, 9.0, 10.0] {
            s.push(v);
        }
        assert_eq!(s.median(), 5.5);
        assert_eq!(s.min(), 1.0);
        assert_eq!(s.p90(), 9.0);
        assert_eq!(s.max(), 10.0);
    }
}
