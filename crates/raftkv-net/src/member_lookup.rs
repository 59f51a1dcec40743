//! How a member that joins a running cluster learns its own id: etcd's way. `etcdctl
//! member add` makes the id and prints only the name and URLs to start the member with;
//! the new member asks the members in `--initial-cluster` for the membership (the peer
//! protocol's `Members`) and takes the id listed with its own peer URL.

use std::time::{Duration, Instant};

use crate::PeerConnections;
use crate::tls::ClientTls;

/// Why the lookup found no id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberLookupError {
    /// `--initial-cluster` names no other member to ask.
    #[error("--initial-cluster lists no other member to ask for this member's id")]
    NoPeers,
    /// Nobody listed the URL before the deadline.
    #[error(
        "no member lists {own} within {waited:?}: add this member first (etcdctl member add \
         NAME --peer-urls={own}) or pass its id with --id; the peers answered: {answers}"
    )]
    NotListed {
        /// This member's peer URL.
        own: String,
        /// How long the lookup tried.
        waited: Duration,
        /// Each peer's last answer.
        answers: String,
    },
}

/// Ask `peers` (peer URLs) until one lists `own_peer_url`, for at most `deadline`.
/// Retried in rounds: a follower may not have applied the `MemberAdd` yet, and the
/// operator may start the member a moment before adding it.
pub async fn find_own_id(
    peers: &[String],
    own_peer_url: &str,
    deadline: Duration,
    tls: Option<ClientTls>,
) -> Result<u64, MemberLookupError> {
    if peers.is_empty() {
        return Err(MemberLookupError::NoPeers);
    }
    let connections = PeerConnections::new(Duration::from_secs(2)).with_tls(tls);
    let started = Instant::now();
    let mut answers = Vec::new();
    loop {
        answers.clear();
        for peer in peers {
            match connections.members(peer, Duration::from_secs(2)).await {
                Ok(members) => match members.iter().find(|(_, url)| url == own_peer_url) {
                    Some((id, _)) => return Ok(*id),
                    None => answers.push(format!("{peer}: {} members, not this one", members.len())),
                },
                Err(e) => answers.push(format!("{peer}: {e}")),
            }
        }
        if started.elapsed() >= deadline {
            return Err(MemberLookupError::NotListed {
                own: own_peer_url.to_string(),
                waited: started.elapsed(),
                answers: answers.join("; "),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
