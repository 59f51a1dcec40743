//! Latency histograms and the final report, as text and as JSON.
//!
//! Every client records into its own HDR histogram (no sharing, no locks on the hot
//! path); [`crate::histogram::merge`] adds them up once the run is over. [`Report`] turns a
//! [`LoadResult`] into the numbers people quote (throughput, p50 ... max in
//! milliseconds) and renders them; the JSON is written by hand with [`JsonObject`],
//! flat, one line. The watch fields (`watchers`, `watch_mode`, `watch_created`,
//! `watch_events`, `watch_errors`) are always in the JSON (0 and `"none"` without
//! `--watchers`); the text shows them only for a run with watchers.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Error, Result};
use crate::histogram::quantile_ms;
use crate::watchers::WatchResult;
use crate::workload::LoadResult;

/// The numbers of one load run, ready to print.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Workload name (`put`, `get`, `get-serializable`, `txn`).
    pub workload: String,
    /// Concurrent clients.
    pub clients: usize,
    /// gRPC connections.
    pub conns: usize,
    /// Length of the measured phase, seconds.
    pub duration_s: f64,
    /// Successful operations.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Successful operations per second.
    pub throughput: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 90th percentile latency, ms.
    pub p90_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// 99.9th percentile latency, ms.
    pub p999_ms: f64,
    /// Largest latency, ms.
    pub max_ms: f64,
    /// The first distinct error messages.
    pub error_samples: Vec<String>,
    /// What the `--watchers` saw, if the run had any.
    pub watch: Option<WatchResult>,
}

impl Report {
    /// The report of `result`.
    pub fn new(result: &LoadResult) -> Self {
        let duration_s = result.elapsed.as_secs_f64();
        let latency = &result.latency_us;
        Report {
            workload: result.workload.to_string(),
            clients: result.clients,
            conns: result.conns,
            duration_s,
            ops: result.ops,
            errors: result.errors,
            throughput: if duration_s > 0.0 {
                result.ops as f64 / duration_s
            } else {
                0.0
            },
            p50_ms: quantile_ms(latency, 0.50),
            p90_ms: quantile_ms(latency, 0.90),
            p99_ms: quantile_ms(latency, 0.99),
            p999_ms: quantile_ms(latency, 0.999),
            max_ms: latency.max() as f64 / 1000.0,
            error_samples: result.error_samples.clone(),
            watch: result.watch.clone(),
        }
    }

    /// The human-readable report, several lines ending in a newline.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = writeln!(out, "workload:    {}", self.workload);
        let _ = writeln!(out, "clients:     {}", self.clients);
        let _ = writeln!(out, "conns:       {}", self.conns);
        let _ = writeln!(out, "duration:    {:.3} s", self.duration_s);
        let _ = writeln!(out, "ops:         {}", thousands(self.ops));
        let _ = writeln!(out, "errors:      {}", thousands(self.errors));
        let _ = writeln!(out, "throughput:  {} ops/s", thousands_f1(self.throughput));
        let _ = writeln!(
            out,
            "latency ms:  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms
        );
        if !self.error_samples.is_empty() {
            let _ = writeln!(out, "first errors:");
            for sample in &self.error_samples {
                let _ = writeln!(out, "  {sample}");
            }
        }
        if let Some(watch) = &self.watch {
            let _ = writeln!(
                out,
                "watchers:    {} {}, {} created, {} stream{} on {}",
                thousands(watch.watchers as u64),
                watch.mode.name(),
                thousands(watch.created),
                thousands(watch.streams as u64),
                if watch.streams == 1 { "" } else { "s" },
                watch.endpoint
            );
            let _ = writeln!(
                out,
                "watch:       {} events received, {} errors",
                thousands(watch.events),
                thousands(watch.errors)
            );
            if !watch.error_samples.is_empty() {
                let _ = writeln!(out, "first watch errors:");
                for sample in &watch.error_samples {
                    let _ = writeln!(out, "  {sample}");
                }
            }
        }
        out
    }

    /// The report as one flat JSON object on one line, ending in a newline.
    pub fn to_json(&self) -> String {
        let mut json = JsonObject::new();
        json.string("workload", &self.workload);
        json.uint("clients", self.clients as u64);
        json.uint("conns", self.conns as u64);
        json.float("duration_s", self.duration_s, 3);
        json.uint("ops", self.ops);
        json.uint("errors", self.errors);
        json.float("throughput", self.throughput, 1);
        json.float("p50_ms", self.p50_ms, 3);
        json.float("p90_ms", self.p90_ms, 3);
        json.float("p99_ms", self.p99_ms, 3);
        json.float("p999_ms", self.p999_ms, 3);
        json.float("max_ms", self.max_ms, 3);
        // The watch fields are always there, zero and "none" without watchers.
        let watch = self.watch.as_ref();
        json.uint("watchers", watch.map_or(0, |w| w.watchers as u64));
        json.string("watch_mode", watch.map_or("none", |w| w.mode.name()));
        json.uint("watch_created", watch.map_or(0, |w| w.created));
        json.uint("watch_events", watch.map_or(0, |w| w.events));
        json.uint("watch_errors", watch.map_or(0, |w| w.errors));
        json.finish()
    }
}

/// A flat JSON object written field by field.
#[derive(Debug, Default)]
pub struct JsonObject {
    out: String,
}

impl JsonObject {
    /// An empty object.
    pub fn new() -> Self {
        Self::default()
    }

    fn key(&mut self, key: &str) {
        self.out.push(if self.out.is_empty() { '{' } else { ',' });
        push_json_string(&mut self.out, key);
        self.out.push(':');
    }

    /// Adds a string field.
    pub fn string(&mut self, key: &str, value: &str) {
        self.key(key);
        push_json_string(&mut self.out, value);
    }

    /// Adds an unsigned integer field.
    pub fn uint(&mut self, key: &str, value: u64) {
        self.key(key);
        let _ = write!(self.out, "{value}");
    }

    /// Adds a number with `decimals` digits after the point (`null` if not finite).
    pub fn float(&mut self, key: &str, value: f64, decimals: usize) {
        self.key(key);
        if value.is_finite() {
            let _ = write!(self.out, "{value:.decimals$}");
        } else {
            self.out.push_str("null");
        }
    }

    /// The object's text, with a trailing newline.
    pub fn finish(mut self) -> String {
        if self.out.is_empty() {
            self.out.push('{');
        }
        self.out.push_str("}\n");
        self.out
    }
}

/// Appends `text` as a JSON string literal.
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A non-negative number with one decimal and grouped thousands: `3,744.8`.
fn thousands_f1(x: f64) -> String {
    let tenths = (x.max(0.0) * 10.0).round() as u64;
    format!("{}.{}", thousands(tenths / 10), tenths % 10)
}

/// Writes `contents` to `path`.
pub fn write_file(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(|source| Error::Io {
        context: "cannot write",
        target: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests;
