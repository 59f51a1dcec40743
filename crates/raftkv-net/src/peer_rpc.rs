//! What every caller of the peer protocol shares: [`PeerRpcClient`] (a client whose
//! requests carry this build's protocol version), [`PeerError`] (how a call failed, and
//! whether it certainly never reached the peer) and [`checked`] (an answer's version
//! check). Below the channel cache, the network and the forward pipes, which all use it.

use raftkv_proto::raftkvpeer::raft_peer_client::RaftPeerClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::faults::Lost;
use crate::peer_protocol::{self, StampRequests};

/// A peer-protocol client whose requests carry this build's protocol version.
pub type PeerRpcClient = RaftPeerClient<InterceptedService<Channel, StampRequests>>;

/// Talking to a peer failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    /// The peer URL is not a valid endpoint.
    #[error("invalid peer url {url:?}: {detail}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// Why.
        detail: String,
    },
    /// The RPC failed on the wire or at the peer.
    #[error("peer rpc failed: {code:?}: {message}")]
    Rpc {
        /// gRPC code.
        code: tonic::Code,
        /// What tonic said.
        message: String,
    },
    /// The peer answered something that does not decode.
    #[error("peer sent an undecodable answer: {0}")]
    Codec(String),
    /// The peer answered without this build's protocol version (`peer_protocol`): it
    /// runs another build, which may have acted on the request.
    #[error("{0}")]
    Protocol(String),
    /// The peer refused the request for its protocol version before handling it.
    #[error("{0}")]
    Refused(String),
}

impl PeerError {
    /// A message the test-only fault plan lost: looks like a timeout, so nobody assumes it
    /// was not delivered.
    pub(crate) fn lost(lost: Lost) -> Self {
        PeerError::Rpc {
            code: tonic::Code::DeadlineExceeded,
            message: lost.to_string(),
        }
    }

    pub(crate) fn rpc(status: tonic::Status) -> Self {
        if peer_protocol::is_refusal(&status) {
            return PeerError::Refused(status.message().to_string());
        }
        let source = std::error::Error::source(&status)
            .map(|s| format!(": {s:?}"))
            .unwrap_or_default();
        PeerError::Rpc {
            code: status.code(),
            message: format!("{}{source}", status.message()),
        }
    }

    /// Whether the request certainly never reached the peer (the connection could not be
    /// made), so retrying it elsewhere cannot apply it twice.
    pub fn not_sent(&self) -> bool {
        match self {
            PeerError::InvalidUrl { .. } | PeerError::Refused(_) => true,
            PeerError::Rpc { code, message } => {
                *code == tonic::Code::Unavailable
                    && (message.contains("tcp connect error")
                        || message.contains("ConnectionRefused")
                        || message.contains("Connection refused"))
            }
            PeerError::Codec(_) | PeerError::Protocol(_) => false,
        }
    }
}

/// The body of a peer's answer, if the answer names this build's protocol version.
pub(crate) fn checked<T>(answer: tonic::Response<T>) -> Result<T, PeerError> {
    peer_protocol::check_answer(answer.metadata()).map_err(PeerError::Protocol)?;
    Ok(answer.into_inner())
}
