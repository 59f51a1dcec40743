//! [`PeerConnections`]: the channel cache. A tonic `Channel` is a handle to one HTTP/2
//! connection that multiplexes every RPC and reconnects by itself; we create one per peer
//! URL, lazily, and hand out clones.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use raftkv_core::codec;
use raftkv_core::{Command, Error, LeaseAnswer, LeaseCall, MembershipChange, Response};
use raftkv_proto::raftkvpeer::raft_peer_client::RaftPeerClient;
use raftkv_proto::raftkvpeer::{RaftBytes, ReadIndexRequest};
use tonic::transport::{Channel, Endpoint};

use crate::MAX_PEER_MESSAGE_BYTES;
use crate::faults::NetFaults;
use crate::forward_pipe::ForwardPipes;
use crate::peer_protocol::StampRequests;
use crate::peer_rpc::{PeerError, PeerRpcClient, checked};
use crate::peer_traffic::{PROBE_INTERVAL, PeerTraffic};
use crate::tls::ClientTls;

/// Shared cache of channels to peers, keyed by peer URL. Cheap to clone.
#[derive(Clone, Default)]
pub struct PeerConnections {
    /// Held only to look up or insert a channel, never across an `.await`.
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    connect_timeout: Duration,
    faults: NetFaults,
    forward_pipes: ForwardPipes,
    traffic: PeerTraffic,
    /// How `https://` peers are dialed; `None`: such URLs are refused.
    tls: Option<ClientTls>,
}

impl PeerConnections {
    /// A cache whose connections give up connecting after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            channels: Arc::default(),
            connect_timeout,
            faults: NetFaults::default(),
            forward_pipes: ForwardPipes::default(),
            traffic: PeerTraffic::default(),
            tls: None,
        }
    }

    /// Dial `https://` peer URLs with this TLS configuration.
    pub fn with_tls(mut self, tls: Option<ClientTls>) -> Self {
        self.tls = tls;
        self
    }

    /// The per-peer network metrics of everything sent through these connections.
    pub fn traffic(&self) -> &PeerTraffic {
        &self.traffic
    }

    /// The test-only network faults every peer call goes through (a no-op without the
    /// `net-faults` feature).
    pub fn faults(&self) -> &NetFaults {
        &self.faults
    }

    /// Run one peer call through the fault plan: it may be delayed, lost before it
    /// leaves, or its answer lost after the peer acted.
    async fn call<T>(
        &self,
        url: &str,
        timeout: Duration,
        call: impl Future<Output = Result<T, PeerError>>,
    ) -> Result<T, PeerError> {
        self.faults
            .before_request(url, timeout, false)
            .await
            .map_err(PeerError::lost)?;
        let answer = call.await.inspect_err(|_| {
            if let Some(counters) = self.traffic.by_url(url) {
                counters.failed();
            }
        })?;
        self.faults.after_response(url).map_err(PeerError::lost)?;
        Ok(answer)
    }

    /// Count a unary call's bytes for the peer at `url` (if its id is known).
    fn count_bytes(&self, url: &str, sent: usize, received: usize) {
        if let Some(counters) = self.traffic.by_url(url) {
            counters.sent(sent);
            counters.received(received);
        }
    }

    /// The channel to `url`, created on first use.
    pub fn channel(&self, url: &str) -> Result<Channel, PeerError> {
        if let Some(channel) = self.channels.lock().get(url) {
            return Ok(channel.clone());
        }
        let invalid = |detail: String| PeerError::InvalidUrl {
            url: url.to_string(),
            detail,
        };
        // tonic refuses `https://` without TLS settings of its own: the endpoint gets
        // `http://` and the connector does TLS for the same host and port.
        let (dial, tls) = match url.strip_prefix("https://") {
            Some(rest) => match &self.tls {
                Some(tls) => (format!("http://{rest}"), Some(tls)),
                None => return Err(invalid("an https peer URL, but no peer TLS is configured".into())),
            },
            None => (url.to_string(), None),
        };
        let endpoint = Endpoint::from_shared(dial)
            .map_err(|e| invalid(e.to_string()))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = match tls {
            Some(tls) => endpoint.connect_with_connector_lazy(tls.connector()),
            None => endpoint.connect_lazy(),
        };
        Ok(self
            .channels
            .lock()
            .entry(url.to_string())
            .or_insert(channel)
            .clone())
    }

    /// A peer-protocol client for `url`.
    pub fn client(&self, url: &str) -> Result<PeerRpcClient, PeerError> {
        Ok(
            RaftPeerClient::with_interceptor(self.channel(url)?, StampRequests)
                .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES),
        )
    }

    /// Ask the leader at `url` for a read index.
    pub async fn read_index(&self, url: &str, timeout: Duration) -> Result<Result<u64, Error>, PeerError> {
        let mut request = tonic::Request::new(ReadIndexRequest {});
        request.set_timeout(timeout);
        let mut client = self.client(url)?;
        let answer = self
            .call(url, timeout, async {
                client.read_index(request).await.map_err(PeerError::rpc)
            })
            .await?;
        let answer = checked(answer)?;
        self.count_bytes(url, 0, answer.data.len());
        codec::decode(&answer.data).map_err(|e| PeerError::Codec(e.to_string()))
    }

    /// Forward a validated client write to the leader at `url` (over its forward stream,
    /// `forward_pipe.rs`); returns the leader's answer and the term of the entry that
    /// carried it.
    pub async fn forward(
        &self,
        url: &str,
        command: &Command,
        timeout: Duration,
    ) -> Result<Result<(Response, u64), Error>, PeerError> {
        let size = codec::encoded_len(command).map_err(|e| PeerError::Codec(e.to_string()))?;
        self.call(url, timeout, async {
            let answer =
                self.forward_pipes
                    .send(url, || self.client(url), command.clone(), size, &self.traffic)?;
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => Err(PeerError::Rpc {
                    code: tonic::Code::Unknown,
                    message: format!("the forward stream to {url} stopped with the write in flight"),
                }),
                Err(_) => Err(PeerError::Rpc {
                    code: tonic::Code::DeadlineExceeded,
                    message: format!("no answer from the leader at {url} within {timeout:?}"),
                }),
            }
        })
        .await
    }
}

impl PeerConnections {
    /// Ask the leader at `url` to make a membership change.
    pub async fn change_membership(
        &self,
        url: &str,
        change: &MembershipChange,
        timeout: Duration,
    ) -> Result<Result<(), Error>, PeerError> {
        let data = codec::encode(change).map_err(|e| PeerError::Codec(e.to_string()))?;
        let sent = data.len();
        let mut request = tonic::Request::new(RaftBytes { data });
        request.set_timeout(timeout);
        let mut client = self.client(url)?;
        let answer = self
            .call(url, timeout, async {
                client.change_membership(request).await.map_err(PeerError::rpc)
            })
            .await?;
        let answer = checked(answer)?;
        self.count_bytes(url, sent, answer.data.len());
        codec::decode(&answer.data).map_err(|e| PeerError::Codec(e.to_string()))
    }

    /// Ask the leader at `url` to answer a lease call (keep-alive, time-to-live).
    pub async fn lease(
        &self,
        url: &str,
        call: &LeaseCall,
        timeout: Duration,
    ) -> Result<Result<LeaseAnswer, Error>, PeerError> {
        let data = codec::encode(call).map_err(|e| PeerError::Codec(e.to_string()))?;
        let sent = data.len();
        let mut request = tonic::Request::new(RaftBytes { data });
        request.set_timeout(timeout);
        let mut client = self.client(url)?;
        let answer = self
            .call(url, timeout, async {
                client.lease(request).await.map_err(PeerError::rpc)
            })
            .await?;
        let answer = checked(answer)?;
        self.count_bytes(url, sent, answer.data.len());
        codec::decode(&answer.data).map_err(|e| PeerError::Codec(e.to_string()))
    }

    /// The membership the member at `url` knows: (id, peer URL) of each member.
    pub async fn members(&self, url: &str, timeout: Duration) -> Result<Vec<(u64, String)>, PeerError> {
        let mut request = tonic::Request::new(RaftBytes { data: Vec::new() });
        request.set_timeout(timeout);
        let mut client = self.client(url)?;
        let answer = self
            .call(url, timeout, async {
                client.members(request).await.map_err(PeerError::rpc)
            })
            .await?;
        codec::decode(&checked(answer)?.data).map_err(|e| PeerError::Codec(e.to_string()))
    }

    /// One empty exchange with `url` (the round-trip probe).
    pub async fn probe(&self, url: &str, timeout: Duration) -> Result<(), PeerError> {
        let mut request = tonic::Request::new(RaftBytes { data: Vec::new() });
        request.set_timeout(timeout);
        let mut client = self.client(url)?;
        let answer = self
            .call(url, timeout, async {
                client.probe(request).await.map_err(PeerError::rpc)
            })
            .await?;
        checked(answer).map(|_| ())
    }

    /// Probe each of `peers` (id, peer URL) once and record the round trips in
    /// [`PeerConnections::traffic`]; a probe that fails counts as a failed call.
    pub async fn probe_round_trips(&self, peers: &[(raftkv_core::types::NodeId, String)]) {
        for (id, url) in peers {
            let counters = self.traffic.peer_at(*id, url);
            let started = std::time::Instant::now();
            match self.probe(url, PROBE_INTERVAL).await {
                Ok(()) => counters.round_trip.observe(started.elapsed()),
                Err(_) => counters.failed(),
            }
        }
    }
}
