//! Unit tests of percentiles, merging and the report's text and JSON.

use std::time::Duration;

use super::*;
use crate::histogram::{merge, new_histogram};
use hdrhistogram::Histogram;

/// A histogram holding 1, 2, ..., 1000 microseconds once each.
fn one_to_a_thousand() -> Histogram<u64> {
    let mut histogram = new_histogram().unwrap();
    for micros in 1..=1000 {
        histogram.record(micros).unwrap();
    }
    histogram
}

fn result(latency_us: Histogram<u64>) -> LoadResult {
    LoadResult {
        workload: "put",
        clients: 64,
        conns: 8,
        elapsed: Duration::from_secs(10),
        ops: latency_us.len(),
        errors: 2,
        latency_us,
        error_samples: vec!["Unavailable: no leader".to_string()],
        prefill: None,
        watch: None,
    }
}

#[test]
fn percentiles_of_a_known_histogram() {
    let histogram = one_to_a_thousand();
    // Below 2048 the histogram is exact at 3 significant digits.
    assert_eq!(quantile_ms(&histogram, 0.50), 0.5);
    assert_eq!(quantile_ms(&histogram, 0.90), 0.9);
    assert_eq!(quantile_ms(&histogram, 0.99), 0.99);
    assert_eq!(quantile_ms(&histogram, 0.999), 0.999);
    assert_eq!(quantile_ms(&histogram, 1.0), 1.0);
}

#[test]
fn merge_adds_counts() {
    let (mut low, mut high) = (new_histogram().unwrap(), new_histogram().unwrap());
    for micros in 1..=500 {
        low.record(micros).unwrap();
        high.record(micros + 500).unwrap();
    }
    let merged = merge([&low, &high]).unwrap();
    assert_eq!(merged.len(), 1000);
    assert_eq!(merged.max(), 1000);
    assert_eq!(quantile_ms(&merged, 0.5), quantile_ms(&one_to_a_thousand(), 0.5));
    assert_eq!(merge([]).unwrap().len(), 0);
}

#[test]
fn report_numbers() {
    let report = Report::new(&result(one_to_a_thousand()));
    assert_eq!(report.ops, 1000);
    assert_eq!(report.throughput, 100.0);
    assert_eq!((report.p50_ms, report.p99_ms, report.max_ms), (0.5, 0.99, 1.0));
    let empty = Report::new(&result(new_histogram().unwrap()));
    assert_eq!(
        (empty.ops, empty.throughput, empty.p50_ms, empty.max_ms),
        (0, 0.0, 0.0, 0.0)
    );
}

#[test]
fn text_report() {
    let mut report = Report::new(&result(one_to_a_thousand()));
    report.ops = 1_234_567;
    report.throughput = 123_456.75;
    assert_eq!(
        report.to_text(),
        "workload:    put\n\
         clients:     64\n\
         conns:       8\n\
         duration:    10.000 s\n\
         ops:         1,234,567\n\
         errors:      2\n\
         throughput:  123,456.8 ops/s\n\
         latency ms:  p50 0.500  p90 0.900  p99 0.990  p99.9 0.999  max 1.000\n\
         first errors:\n  \
         Unavailable: no leader\n"
    );
}

#[test]
fn json_report_is_flat_with_the_documented_keys() {
    let json = Report::new(&result(one_to_a_thousand())).to_json();
    assert_eq!(
        json,
        "{\"workload\":\"put\",\"clients\":64,\"conns\":8,\"duration_s\":10.000,\"ops\":1000,\
         \"errors\":2,\"throughput\":100.0,\"p50_ms\":0.500,\"p90_ms\":0.900,\"p99_ms\":0.990,\
         \"p999_ms\":0.999,\"max_ms\":1.000,\"watchers\":0,\"watch_mode\":\"none\",\
         \"watch_created\":0,\"watch_events\":0,\"watch_errors\":0}\n"
    );
}

fn watch_result() -> WatchResult {
    WatchResult {
        watchers: 1000,
        mode: crate::cli::WatchMode::Idle,
        endpoint: "http://127.0.0.1:2379".to_string(),
        streams: 10,
        created: 999,
        events: 12_345,
        errors: 1,
        error_samples: vec!["watch create refused: mvcc: watcher range is empty".to_string()],
    }
}

#[test]
fn watch_lines_in_text_only_with_watchers() {
    let mut report = Report::new(&result(one_to_a_thousand()));
    assert!(!report.to_text().contains("watch"));
    report.watch = Some(watch_result());
    let text = report.to_text();
    assert!(
        text.ends_with(
            "watchers:    1,000 idle, 999 created, 10 streams on http://127.0.0.1:2379\n\
             watch:       12,345 events received, 1 errors\n\
             first watch errors:\n  \
             watch create refused: mvcc: watcher range is empty\n"
        ),
        "{text}"
    );
}

#[test]
fn watch_fields_in_json() {
    let mut report = Report::new(&result(one_to_a_thousand()));
    report.watch = Some(watch_result());
    assert!(
        report.to_json().ends_with(
            ",\"watchers\":1000,\"watch_mode\":\"idle\",\"watch_created\":999,\
             \"watch_events\":12345,\"watch_errors\":1}\n"
        ),
        "{}",
        report.to_json()
    );
}

#[test]
fn json_strings_are_escaped() {
    let mut json = JsonObject::new();
    json.string("a\"b", "line\nquote\" back\\ bell\u{7}");
    json.float("nan", f64::NAN, 3);
    assert_eq!(
        json.finish(),
        "{\"a\\\"b\":\"line\\nquote\\\" back\\\\ bell\\u0007\",\"nan\":null}\n"
    );
    assert_eq!(JsonObject::new().finish(), "{}\n");
}

#[test]
fn thousands_groups_digits() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(1000), "1,000");
    assert_eq!(thousands(45_123), "45,123");
    assert_eq!(thousands(u64::MAX), "18,446,744,073,709,551,615");
    assert_eq!(thousands_f1(3744.84), "3,744.8");
    assert_eq!(thousands_f1(0.0), "0.0");
}
