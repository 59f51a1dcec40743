//! [`PeerTraffic`]: etcd's metrics of the network between members, per peer, as etcd's
//! `rafthttp` exports them, so the etcd dashboards' network panels and the etcd-mixin
//! alerts on slow or failing member communication read raftkv:
//!
//! - `etcd_network_peer_sent_bytes_total{To}` / `etcd_network_peer_received_bytes_total{From}`:
//!   the peer protocol's message bytes this member sent to a peer and received from it:
//!   Raft's messages both ways (appends, votes, snapshots, and their answers; a message
//!   to this member names its sender), and the calls members make by URL: writes a
//!   follower forwards, read-index, lease and membership calls (counted by the caller,
//!   both ways).
//! - `etcd_network_peer_sent_failures_total{To}`: calls to a peer that failed on the way
//!   (unreachable, timed out, broken stream).
//! - `etcd_network_peer_round_trip_time_seconds{To}`: round trips of a small probe sent to
//!   every peer every [`PROBE_INTERVAL`] (etcd probes too, every 4 s), with etcd's buckets
//!   (0.1 ms doubling 16 times). Replication round trips include the follower's disk
//!   sync, so they are not what this measures.
//!
//! The probes are sent by `PeerConnections::probe_round_trips`. Peers are labelled by
//! member id in hex, as etcd labels them. Counting costs relaxed
//! atomic adds on the replication path; the map of peers is locked only when a client
//! for a peer is made and when the metrics are rendered.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use raftkv_core::histogram::Histogram;
use raftkv_core::types::NodeId;

/// How often every peer is probed for its round-trip time.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// etcd's buckets of `etcd_network_peer_round_trip_time_seconds`: 0.1 ms doubling 16 times.
pub const ETCD_PEER_RTT_BUCKETS: [f64; 16] = [
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048, 0.4096,
    0.8192, 1.6384, 3.2768,
];

/// One peer's counters.
#[derive(Debug)]
pub struct PeerCounters {
    /// Request bytes sent to the peer.
    pub sent_bytes: AtomicU64,
    /// Answer bytes received from the peer.
    pub received_bytes: AtomicU64,
    /// Calls to the peer that failed.
    pub sent_failures: AtomicU64,
    /// Probe round trips.
    pub round_trip: Histogram,
}

impl Default for PeerCounters {
    fn default() -> Self {
        Self {
            sent_bytes: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            sent_failures: AtomicU64::new(0),
            round_trip: Histogram::new(&ETCD_PEER_RTT_BUCKETS),
        }
    }
}

impl PeerCounters {
    /// A request of `bytes` went out.
    pub fn sent(&self, bytes: usize) {
        self.sent_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// An answer of `bytes` came back.
    pub fn received(&self, bytes: usize) {
        self.received_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A call failed.
    pub fn failed(&self) {
        self.sent_failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every peer's counters. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct PeerTraffic {
    peers: Arc<Mutex<Peers>>,
}

#[derive(Debug, Default)]
struct Peers {
    by_id: BTreeMap<NodeId, Arc<PeerCounters>>,
    /// Peer URL -> id, for calls made by URL (forwarded writes, read index, leases).
    ids: HashMap<String, NodeId>,
}

impl PeerTraffic {
    /// The counters of `peer`, made on first use.
    pub fn peer(&self, peer: NodeId) -> Arc<PeerCounters> {
        self.peers.lock().by_id.entry(peer).or_default().clone()
    }

    /// The counters of `peer`, reached at `url` (so calls by URL count for it too).
    pub fn peer_at(&self, peer: NodeId, url: &str) -> Arc<PeerCounters> {
        let mut peers = self.peers.lock();
        peers.ids.insert(url.to_string(), peer);
        peers.by_id.entry(peer).or_default().clone()
    }

    /// The counters of the peer at `url`, if its id is known.
    pub fn by_url(&self, url: &str) -> Option<Arc<PeerCounters>> {
        let peers = self.peers.lock();
        let id = peers.ids.get(url)?;
        peers.by_id.get(id).cloned()
    }

    /// Forget peers no longer in the membership (their series leave the scrape).
    pub fn retain(&self, members: impl Fn(NodeId) -> bool) {
        let mut peers = self.peers.lock();
        peers.by_id.retain(|id, _| members(*id));
        peers.ids.retain(|_, id| members(*id));
    }

    /// The families in Prometheus' text format, HELP texts as etcd's.
    pub fn render(&self, out: &mut String) {
        let peers: Vec<(NodeId, Arc<PeerCounters>)> = self
            .peers
            .lock()
            .by_id
            .iter()
            .map(|(id, c)| (*id, c.clone()))
            .collect();
        // (name, help, label, which counter)
        type Family = (
            &'static str,
            &'static str,
            &'static str,
            fn(&PeerCounters) -> &AtomicU64,
        );
        let counters: [Family; 3] = [
            (
                "etcd_network_peer_sent_bytes_total",
                "The total number of bytes sent to peers.",
                "To",
                |c| &c.sent_bytes,
            ),
            (
                "etcd_network_peer_received_bytes_total",
                "The total number of bytes received from peers.",
                "From",
                |c| &c.received_bytes,
            ),
            (
                "etcd_network_peer_sent_failures_total",
                "The total number of send failures from peers.",
                "To",
                |c| &c.sent_failures,
            ),
        ];
        for (name, help, label, field) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (id, c) in &peers {
                let _ = writeln!(
                    out,
                    "{name}{{{label}=\"{id:x}\"}} {}",
                    field(c).load(Ordering::Relaxed)
                );
            }
        }
        let name = "etcd_network_peer_round_trip_time_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Round-Trip-Time histogram between peers\n# TYPE {name} histogram"
        );
        for (id, c) in &peers {
            let h = c.round_trip.snapshot();
            for (bound, count) in &h.buckets {
                let _ = writeln!(out, "{name}_bucket{{To=\"{id:x}\",le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(out, "{name}_bucket{{To=\"{id:x}\",le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum{{To=\"{id:x}\"}} {}", h.sum_seconds);
            let _ = writeln!(out, "{name}_count{{To=\"{id:x}\"}} {}", h.count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_found_by_url_and_rendered_by_hex_id() {
        let traffic = PeerTraffic::default();
        assert!(
            traffic.by_url("http://b:2380").is_none(),
            "unknown until registered"
        );
        traffic.peer_at(0xab, "http://b:2380").sent(10);
        let counters = traffic.by_url("http://b:2380");
        assert!(counters.is_some_and(|c| c.sent_bytes.load(Ordering::Relaxed) == 10));
        traffic.peer(0xab).round_trip.observe(Duration::from_micros(150));
        let mut text = String::new();
        traffic.render(&mut text);
        assert!(
            text.contains("etcd_network_peer_sent_bytes_total{To=\"ab\"} 10\n"),
            "{text}"
        );
        assert!(
            text.contains("etcd_network_peer_received_bytes_total{From=\"ab\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("etcd_network_peer_round_trip_time_seconds_bucket{To=\"ab\",le=\"0.0001\"} 0\n")
                && text.contains(
                    "etcd_network_peer_round_trip_time_seconds_bucket{To=\"ab\",le=\"0.0002\"} 1\n"
                ),
            "{text}"
        );
        // A member that left takes its series and its URL along.
        traffic.retain(|id| id != 0xab);
        assert!(traffic.by_url("http://b:2380").is_none());
        let mut text = String::new();
        traffic.render(&mut text);
        assert!(!text.contains("To=\"ab\""), "{text}");
    }
}
