//! The physical floor: what the machine costs before raftkv does anything.
//!
//! A replicated write cannot be faster than one durable append plus one network round
//! trip, so these two numbers put every benchmark result in proportion:
//! - **fdatasync 4 KiB**: append 4 KiB to a file in the chosen directory and
//!   `sync_data()` it, `count` times; the time of each append plus sync.
//! - **loopback rtt**: a 64-byte ping-pong over a TCP connection on 127.0.0.1 (Nagle
//!   off on both ends) to an echo listener this process starts on port 0.
//!
//! Both are recorded in microseconds like the load runs and reported as p50 and p99.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::cli::FloorConfig;
use crate::error::{Error, Result};
use crate::histogram;
use crate::report::JsonObject;

/// Bytes per fdatasync append.
pub const APPEND_BYTES: usize = 4096;
/// Bytes per ping and per pong.
pub const PING_BYTES: usize = 64;
/// Round trips before measuring, to warm up the connection.
const WARMUP_ROUND_TRIPS: usize = 16;

/// The floor numbers, milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct FloorResult {
    /// Samples of each measurement.
    pub count: usize,
    /// Median append + fdatasync.
    pub fdatasync_p50_ms: f64,
    /// 99th percentile append + fdatasync.
    pub fdatasync_p99_ms: f64,
    /// Median loopback round trip.
    pub rtt_p50_ms: f64,
    /// 99th percentile loopback round trip.
    pub rtt_p99_ms: f64,
}

impl FloorResult {
    /// Two lines: `fdatasync 4KiB: p50 X ms p99 Y ms` and `loopback rtt: ...`.
    pub fn to_text(&self) -> String {
        format!(
            "fdatasync 4KiB: p50 {:.3} ms p99 {:.3} ms\nloopback rtt: p50 {:.3} ms p99 {:.3} ms\n",
            self.fdatasync_p50_ms, self.fdatasync_p99_ms, self.rtt_p50_ms, self.rtt_p99_ms
        )
    }

    /// One flat JSON object.
    pub fn to_json(&self) -> String {
        let mut json = JsonObject::new();
        json.string("workload", "floor");
        json.uint("count", self.count as u64);
        json.float("fdatasync_4k_p50_ms", self.fdatasync_p50_ms, 3);
        json.float("fdatasync_4k_p99_ms", self.fdatasync_p99_ms, 3);
        json.float("loopback_rtt_p50_ms", self.rtt_p50_ms, 3);
        json.float("loopback_rtt_p99_ms", self.rtt_p99_ms, 3);
        json.finish()
    }
}

/// Measures both floors, one after the other.
pub async fn run(config: &FloorConfig) -> Result<FloorResult> {
    let (dir, count) = (config.dir.clone(), config.count);
    let fdatasync = tokio::task::spawn_blocking(move || fdatasync_latency(&dir, count)).await??;
    let rtt = loopback_rtt(count).await?;
    Ok(FloorResult {
        count,
        fdatasync_p50_ms: histogram::quantile_ms(&fdatasync, 0.50),
        fdatasync_p99_ms: histogram::quantile_ms(&fdatasync, 0.99),
        rtt_p50_ms: histogram::quantile_ms(&rtt, 0.50),
        rtt_p99_ms: histogram::quantile_ms(&rtt, 0.99),
    })
}

/// Appends [`APPEND_BYTES`] to a fresh file in `dir` and syncs it, `count` times
/// (blocking). The file is removed afterwards; `dir` is created if missing.
pub fn fdatasync_latency(dir: &Path, count: usize) -> Result<Histogram<u64>> {
    let io = |context: &'static str, target: &Path| {
        let target = target.display().to_string();
        move |source| Error::Io {
            context,
            target,
            source,
        }
    };
    std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    let path = dir.join(format!("raftkv-bench-floor-{}.tmp", std::process::id()));
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(io("cannot create", &path))?;
    let block = [0xa5u8; APPEND_BYTES];
    let mut histogram = histogram::new_histogram()?;
    let mut outcome = Ok(());
    for _ in 0..count {
        let started = std::time::Instant::now();
        outcome = file.write_all(&block).and_then(|()| file.sync_data());
        if outcome.is_err() {
            break;
        }
        histogram.saturating_record(micros(started.elapsed()));
    }
    drop(file);
    // Best effort: a leftover temp file is not worth hiding the measurement for.
    let _ = std::fs::remove_file(&path);
    outcome.map_err(io("cannot append and sync", &path))?;
    Ok(histogram)
}

/// Times `count` round trips of [`PING_BYTES`] over loopback TCP to an echo task.
pub async fn loopback_rtt(count: usize) -> Result<Histogram<u64>> {
    let io = |context: &'static str| {
        move |source| Error::Io {
            context,
            target: "127.0.0.1".to_string(),
            source,
        }
    };
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io("cannot listen on"))?;
    let address = listener.local_addr().map_err(io("no local address on"))?;
    let echo_task = tokio::spawn(echo(listener));
    let mut stream = TcpStream::connect(address)
        .await
        .map_err(io("cannot connect to"))?;
    stream.set_nodelay(true).map_err(io("cannot set nodelay on"))?;
    let mut histogram = histogram::new_histogram()?;
    let (ping, mut pong) = ([0x5au8; PING_BYTES], [0u8; PING_BYTES]);
    for round in 0..WARMUP_ROUND_TRIPS + count {
        let started = Instant::now();
        stream.write_all(&ping).await.map_err(io("cannot write to"))?;
        stream
            .read_exact(&mut pong)
            .await
            .map_err(io("cannot read from"))?;
        if round >= WARMUP_ROUND_TRIPS {
            histogram.saturating_record(micros(started.elapsed()));
        }
    }
    drop(stream);
    // The echo task's end-of-file error is its normal way out.
    let _ = echo_task.await;
    Ok(histogram)
}

/// Echoes [`PING_BYTES`] at a time to the first connection; ends with the error its
/// client's close causes (end of file).
async fn echo(listener: TcpListener) -> std::io::Result<()> {
    let (mut stream, _) = listener.accept().await?;
    stream.set_nodelay(true)?;
    let mut buffer = [0u8; PING_BYTES];
    loop {
        stream.read_exact(&mut buffer).await?;
        stream.write_all(&buffer).await?;
    }
}

fn micros(elapsed: std::time::Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_shapes() {
        let result = FloorResult {
            count: 10,
            fdatasync_p50_ms: 1.5,
            fdatasync_p99_ms: 2.25,
            rtt_p50_ms: 0.031,
            rtt_p99_ms: 0.1,
        };
        assert_eq!(
            result.to_text(),
            "fdatasync 4KiB: p50 1.500 ms p99 2.250 ms\nloopback rtt: p50 0.031 ms p99 0.100 ms\n"
        );
        assert_eq!(
            result.to_json(),
            "{\"workload\":\"floor\",\"count\":10,\"fdatasync_4k_p50_ms\":1.500,\
             \"fdatasync_4k_p99_ms\":2.250,\"loopback_rtt_p50_ms\":0.031,\"loopback_rtt_p99_ms\":0.100}\n"
        );
    }
}
