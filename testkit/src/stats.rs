//! Latency and lag distributions: an HDR histogram (3 significant digits, so a
//! percentile is within 0.1 % of the exact sample) that keeps constant memory
//! however many values a run records, and merges across tasks.

use hdrhistogram::Histogram;

/// Recorded values (any unit the caller picks) and their percentiles.
#[derive(Debug, Clone)]
pub struct Distribution(Histogram<u64>);

impl Default for Distribution {
    fn default() -> Self {
        Self::new()
    }
}

impl Distribution {
    /// An empty one; it grows to whatever range is recorded.
    pub fn new() -> Self {
        // Refused only for more than 5 significant digits; 3 is a constant.
        Self(Histogram::new(3).unwrap_or_else(|e| panic!("histogram with 3 digits: {e}")))
    }

    /// Records one value.
    pub fn record(&mut self, value: u64) {
        // `record` grows the range; `saturating_record` never does (it clamps to
        // the initial range of 1..=2, which made every percentile 1 or 2), so it is
        // only the fallback for values beyond what the histogram can ever track.
        if self.0.record(value).is_err() {
            self.0.saturating_record(value);
        }
    }

    /// Adds everything `other` recorded.
    pub fn merge(&mut self, other: &Self) {
        // Both auto-resize, so adding cannot run out of range.
        let _ = self.0.add(&other.0);
    }

    /// How many values were recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value at percentile `p` (0–100; 100 is the maximum), `None` when
    /// nothing was recorded.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        (!self.is_empty()).then(|| self.0.value_at_percentile(p))
    }

    /// The mean, 0 when nothing was recorded.
    pub fn mean(&self) -> f64 {
        if self.is_empty() { 0.0 } else { self.0.mean() }
    }
}

#[cfg(test)]
mod tests {
    use super::Distribution;

    #[test]
    fn percentiles_follow_the_recorded_values_whatever_their_range() {
        let mut d = Distribution::new();
        assert_eq!(d.percentile(50.0), None);
        for v in 1..=1_000u64 {
            d.record(v * 1_000_000); // up to 10⁹: beyond any fixed small range
        }
        let p50 = d.percentile(50.0).unwrap();
        let p99 = d.percentile(99.0).unwrap();
        assert!((499_000_000..=501_000_000).contains(&p50), "p50 {p50}");
        assert!((989_000_000..=991_000_000).contains(&p99), "p99 {p99}");
        assert!(d.percentile(100.0).unwrap() >= 999_000_000);
        let mut other = Distribution::new();
        other.record(7);
        d.merge(&other);
        assert_eq!(d.len(), 1_001);
        assert_eq!(d.percentile(0.0), Some(7));
    }
}
