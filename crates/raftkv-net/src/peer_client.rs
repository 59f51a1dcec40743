//! [`PeerClient`]: the client side of the peer protocol towards one target, and what
//! its calls share: one unary call with the fault plan and traffic counters around it,
//! the mapping of a failed call to openraft's error, the test-only duplicate send. The
//! network (`network.rs`) and the pipelined append (`stream_append.rs`) both build on it.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{NetworkError, RPCError, Unreachable};
use raftkv_core::codec;
use raftkv_core::types::{NodeId, TypeConfig};
use raftkv_proto::raftkvpeer::RaftBytes;
use tonic::Code;

use crate::faults::NetFaults;
use crate::peer_rpc::{PeerError, PeerRpcClient, checked};
use crate::peer_traffic::PeerCounters;

/// The client side of the peer protocol towards one target.
pub struct PeerClient {
    pub(crate) target: NodeId,
    pub(crate) peer_url: String,
    pub(crate) client: Result<PeerRpcClient, PeerError>,
    pub(crate) faults: NetFaults,
    /// etcd's per-peer network metrics (bytes each way, failed calls).
    pub(crate) traffic: Arc<PeerCounters>,
}

pub(crate) type RpcError = RPCError<TypeConfig>;

pub(crate) fn network(e: &(impl std::error::Error + 'static)) -> RpcError {
    RPCError::Network(NetworkError::new(e))
}

/// Map a failed call: unreachable peers, and peers that refuse this build's protocol
/// version (`peer_protocol`), make openraft back off; anything else is a plain network
/// error.
pub(crate) fn from_status(status: tonic::Status) -> RpcError {
    match status.code() {
        Code::Unavailable | Code::FailedPrecondition => RPCError::Unreachable(Unreachable::new(&status)),
        _ => network(&status),
    }
}

/// Test-only (the fault plan's duplication): `data` sent again as `rpc` after `after`,
/// so it arrives late and out of order; its answer is ignored, as a duplicated packet's
/// would be.
pub(crate) fn send_duplicate(
    rpc: RaftRpc,
    client: PeerRpcClient,
    data: Vec<u8>,
    after: Duration,
    timeout: Duration,
) {
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        let mut req = tonic::Request::new(RaftBytes { data });
        req.set_timeout(timeout);
        let _ = rpc.send(client, req).await;
    });
}

/// The unary Raft RPCs (snapshots stream through `full_snapshot`, replication through
/// `stream_append`).
#[derive(Clone, Copy)]
pub(crate) enum RaftRpc {
    AppendEntries,
    Vote,
    PreVote,
    TransferLeader,
}

impl RaftRpc {
    pub(crate) async fn send(
        self,
        mut client: PeerRpcClient,
        request: tonic::Request<RaftBytes>,
    ) -> Result<tonic::Response<RaftBytes>, tonic::Status> {
        match self {
            RaftRpc::AppendEntries => client.append_entries(request).await,
            RaftRpc::Vote => client.vote(request).await,
            RaftRpc::PreVote => client.pre_vote(request).await,
            RaftRpc::TransferLeader => client.transfer_leader(request).await,
        }
    }
}

impl PeerClient {
    pub(crate) fn client(&self) -> Result<PeerRpcClient, Unreachable<TypeConfig>> {
        self.client.clone().map_err(|e| Unreachable::new(&e))
    }

    /// One unary call; the peer answers `Result<Resp, E>` where `E` is openraft's error on
    /// its side (a stopped Raft, say), which reaches openraft here as a network error.
    pub(crate) async fn unary<Req, Resp, E>(
        &mut self,
        rpc: RaftRpc,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned + 'static,
    {
        let client = self.client().map_err(RPCError::Unreachable)?;
        let data = codec::encode(request).map_err(|e| network(&e))?;
        let duplicate = self
            .faults
            .before_request(&self.peer_url, timeout, true)
            .await
            .map_err(|lost| network(&lost))?;
        if let Some(after) = duplicate {
            send_duplicate(rpc, client.clone(), data.clone(), after, timeout);
        }
        self.traffic.sent(data.len());
        let mut req = tonic::Request::new(RaftBytes { data });
        req.set_timeout(timeout);
        let answer = rpc.send(client, req).await.map_err(|status| {
            self.traffic.failed();
            from_status(status)
        })?;
        self.faults
            .after_response(&self.peer_url)
            .map_err(|lost| network(&lost))?;
        let answer = checked(answer).map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        self.traffic.received(answer.data.len());
        let result: Result<Resp, E> = codec::decode(&answer.data).map_err(|e| network(&e))?;
        result.map_err(|e| network(&e))
    }
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerClient({} at {})", self.target, self.peer_url)
    }
}
