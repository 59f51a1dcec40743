//! [`Text`]: Prometheus' text exposition format, one metric family after another, with
//! sample values written as Go's Prometheus client writes them. Used by the node's
//! metrics (`metrics/mod.rs`) and the process metrics (`metrics/process.rs`).

use std::fmt::Write as _;

use raftkv_core::HistogramSnapshot;

/// The text being written, one metric family after another.
#[derive(Default)]
pub(crate) struct Text {
    text: String,
}

impl Text {
    /// The text itself, for writers of whole families (the gRPC and peer counters).
    pub(crate) fn raw(&mut self) -> &mut String {
        &mut self.text
    }

    /// The finished text.
    pub(crate) fn into_string(self) -> String {
        self.text
    }

    /// A family of one sample without labels.
    pub(crate) fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        let _ = writeln!(
            self.text,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
            number(value)
        );
    }

    /// A family of one sample with these labels (`a="x",b="y"`).
    pub(crate) fn labeled(&mut self, name: &str, kind: &str, help: &str, labels: &str, value: f64) {
        let _ = writeln!(
            self.text,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{{labels}}} {}",
            number(value)
        );
    }

    pub(crate) fn histogram(&mut self, name: &str, help: &str, h: &HistogramSnapshot) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in &h.buckets {
            let _ = writeln!(self.text, "{name}_bucket{{le=\"{}\"}} {count}", number(*bound));
        }
        let _ = writeln!(self.text, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(self.text, "{name}_sum {}", number(h.sum_seconds));
        let _ = writeln!(self.text, "{name}_count {}", h.count);
    }
}

/// A sample value as Go's Prometheus client writes it (`1`, `0.001`, `2.5e+09`).
fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}
