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
        self.0.saturating_record(value);
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
