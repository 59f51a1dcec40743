//! The latency histograms every measurement records into: one shape for all of them
//! (1 us .. 60 s at 3 significant digits), added up once a run is over, read out in
//! milliseconds. Shared by the load runs, the floor measurement and the report.

use hdrhistogram::Histogram;

use crate::error::{Error, Result};

/// The largest latency a histogram holds, in its unit: larger samples are clamped to
/// it. One minute in microseconds; the request timeout is far below it.
const HIGHEST_TRACKABLE: u64 = 60_000_000;

/// An empty histogram of 1..=60e6 units at 3 significant digits (exact below 2048).
pub fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HIGHEST_TRACKABLE, 3).map_err(|e| Error::Histogram(e.to_string()))
}

/// The sum of `histograms` (all made by [`new_histogram`]).
pub fn merge<'a>(histograms: impl IntoIterator<Item = &'a Histogram<u64>>) -> Result<Histogram<u64>> {
    let mut total = new_histogram()?;
    for histogram in histograms {
        total
            .add(histogram)
            .map_err(|e| Error::Histogram(e.to_string()))?;
    }
    Ok(total)
}

/// The value at quantile `q` (0..=1) of a histogram in microseconds, in milliseconds.
pub fn quantile_ms(histogram: &Histogram<u64>, q: f64) -> f64 {
    histogram.value_at_quantile(q) as f64 / 1000.0
}
