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

    /// Records one value. The histogram grows to hold it: `saturating_record`
    /// alone clamps to the range the histogram had (it does not auto-resize),
    /// which turned every lag above the first few values into the same number.
    pub fn record(&mut self, value: u64) {
        if self.0.record(value).is_err() {
            // Only beyond what a u64 histogram can grow to: keep it, clamped.
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
    fn percentiles_keep_values_of_any_range() {
        let mut d = Distribution::new();
        for v in 1..=1000u64 {
            d.record(v * 1_000_000);
        }
        assert_eq!(d.len(), 1000);
        let p50 = d.percentile(50.0).unwrap();
        assert!(
            (499_000_000..=501_000_000).contains(&p50),
            "p50 of 1e6..1e9 is {p50}"
        );
        let max = d.percentile(100.0).unwrap();
        assert!((999_000_000..=1_001_000_000).contains(&max), "max is {max}");
        assert!(
            (d.mean() - 500_500_000.0).abs() < 1_000_000.0,
            "mean {}",
            d.mean()
        );
    }

    #[test]
    fn small_values_and_zero_are_not_lost() {
        let mut d = Distribution::new();
        for v in [0u64, 0, 1, 2, 3, 1000, 250_000] {
            d.record(v);
        }
        assert_eq!(d.percentile(0.0), Some(0));
        assert_eq!(d.percentile(50.0), Some(2));
        let max = d.percentile(100.0).unwrap();
        assert!((249_900..=250_200).contains(&max), "max is {max}");
    }

    #[test]
    fn merging_adds_what_the_other_recorded() {
        let (mut a, mut b) = (Distribution::new(), Distribution::new());
        a.record(10);
        b.record(5_000_000);
        a.merge(&b);
        assert_eq!(a.len(), 2);
        assert!(a.percentile(100.0).unwrap() >= 4_990_000);
        assert!(Distribution::new().percentile(50.0).is_none());
    }
}
