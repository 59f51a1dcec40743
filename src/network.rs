//! The network of a single-node cluster: there is nobody to talk to. openraft still wants
//! a `RaftNetworkFactory`; every call answers `Unreachable`, which openraft treats as a
//! peer being down (it backs off). Peers over gRPC replace this with `raftkv-net`.

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use raftkv_core::types::{MemberNode, NodeId, TypeConfig};

/// Factory of [`NoPeer`] clients.
pub(crate) struct SingleNodeNetwork;

/// A "connection" to a peer that does not exist.
pub(crate) struct NoPeer(NodeId);

#[derive(Debug, thiserror::Error)]
#[error("node {0} is not reachable: this node runs without a peer network")]
struct NoPeerNetwork(NodeId);

impl NoPeer {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<NodeId, MemberNode, E> {
        RPCError::Unreachable(Unreachable::new(&NoPeerNetwork(self.0)))
    }
}

impl RaftNetworkFactory<TypeConfig> for SingleNodeNetwork {
    type Network = NoPeer;

    async fn new_client(&mut self, target: NodeId, _node: &MemberNode) -> Self::Network {
        NoPeer(target)
    }
}

impl RaftNetwork<TypeConfig> for NoPeer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, MemberNode, RaftError<NodeId>>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, MemberNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, MemberNode, RaftError<NodeId>>> {
        Err(self.unreachable())
    }
}
