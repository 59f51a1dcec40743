//! etcd's Election service: [`Client::campaign`], [`Client::proclaim`],
//! [`Client::leader`], [`Client::observe`] and [`Client::resign`].
//!
//! A campaign waits (server side) until it leads, within the client's request timeout
//! (the server removes the campaigner's key when the call is abandoned). Leadership is
//! held under the caller's lease (keep it alive with [`Client::keep_alive`]).
//!
//! **Fencing (etcd issue 11457).** Leadership held through a lease is not exclusive while
//! the leader is paused past the lease's TTL: fence the leader's writes with
//! [`LeaderKey::fence`], a compare of the key's create revision.
//!
//! **Caveat.** An [`Observer`] is one stream from one server: it ends when that server
//! fails (observe again to continue).

use raftkv_core::kv::{Compare, CompareResult, CompareTarget, KeyValue, ResponseHeader, Revision};
use raftkv_proto::v3electionpb as pb;
use raftkv_proto::v3electionpb::election_client::ElectionClient;
use tonic::transport::Channel;

use crate::client::{Call, Client};
use crate::error::{ClientError, Result};
use crate::retry::Mutability;

/// etcd's status text for a proclaim by a campaigner that no longer leads.
const NOT_LEADER: &str = "etcdserver: election: not leader";
/// etcd's status text for an election without a leader.
const NO_LEADER: &str = "etcdserver: election: no leader";

fn election(channel: Channel) -> ElectionClient<Channel> {
    ElectionClient::new(channel)
}

/// Leadership of an election (etcd's `LeaderKey`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderKey {
    /// The election's name.
    pub name: Vec<u8>,
    /// The leadership key; leadership ends when it is deleted.
    pub key: Vec<u8>,
    /// The key's create revision.
    pub rev: Revision,
    /// The lease leadership is held under.
    pub lease: i64,
}

impl LeaderKey {
    /// The compare that holds only while this leadership does.
    pub fn fence(&self) -> Compare {
        Compare::key(
            self.key.clone(),
            CompareResult::Equal,
            CompareTarget::Create(self.rev),
        )
    }

    fn to_pb(&self) -> pb::LeaderKey {
        pb::LeaderKey {
            name: self.name.clone(),
            key: self.key.clone(),
            rev: self.rev,
            lease: self.lease,
        }
    }
}

/// The leaders of an election as they change (see [`Client::observe`]).
#[derive(Debug)]
pub struct Observer {
    stream: tonic::Streaming<pb::LeaderResponse>,
}

impl Observer {
    /// The next leader (or leader's value): `None` once the stream ended.
    pub async fn next(&mut self) -> Result<Option<KeyValue>> {
        match self.stream.message().await {
            Ok(Some(resp)) => Ok(resp.kv.map(Into::into)),
            Ok(None) => Ok(None),
            Err(status) => Err(ClientError::Server(raftkv_proto::status::from_status(&status))),
        }
    }
}

impl Client {
    /// Campaign in election `name` under `lease` with `value`: waits until leading.
    #[tracing::instrument(level = "debug", skip(self, name, value))]
    pub async fn campaign(
        &self,
        name: impl Into<Vec<u8>>,
        lease: i64,
        value: impl Into<Vec<u8>>,
    ) -> Result<LeaderKey> {
        let req = pb::CampaignRequest {
            name: name.into(),
            lease,
            value: value.into(),
        };
        let resp = self
            .call(Mutability::Write, req, |ch, r| async move {
                election(ch).campaign(r).await
            })
            .await?;
        let leader = resp
            .leader
            .ok_or_else(|| ClientError::InvalidResponse("campaign answered no leader key".into()))?;
        Ok(LeaderKey {
            name: leader.name,
            key: leader.key,
            rev: leader.rev,
            lease: leader.lease,
        })
    }

    /// Set the leader's value: `false` if `leader` no longer leads.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn proclaim(&self, leader: &LeaderKey, value: impl Into<Vec<u8>>) -> Result<bool> {
        let req = pb::ProclaimRequest {
            leader: Some(leader.to_pb()),
            value: value.into(),
        };
        self.call(Mutability::Write, req, |ch, r| async move {
            match election(ch).proclaim(r).await {
                Ok(_) => Ok(tonic::Response::new(true)),
                Err(s) if s.message() == NOT_LEADER => Ok(tonic::Response::new(false)),
                Err(s) => Err(s),
            }
        })
        .await
    }

    /// The election's leader (its key and value), `None` if it has none.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn leader(&self, name: impl Into<Vec<u8>>) -> Result<Option<KeyValue>> {
        let req = pb::LeaderRequest { name: name.into() };
        self.call(Mutability::Read, req, |ch, r| async move {
            match election(ch).leader(r).await {
                Ok(resp) => Ok(tonic::Response::new(resp.into_inner().kv.map(KeyValue::from))),
                Err(s) if s.message() == NO_LEADER => Ok(tonic::Response::new(None)),
                Err(s) => Err(s),
            }
        })
        .await
    }

    /// Observe election `name`: the current leader, if any, then each new leader or value.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn observe(&self, name: impl Into<Vec<u8>>) -> Result<Observer> {
        let req = pb::LeaderRequest { name: name.into() };
        let stream = self
            .call(
                Call::new(Mutability::Read).opening_a_stream(),
                req,
                |ch, r| async move { election(ch).observe(r).await },
            )
            .await?;
        Ok(Observer { stream })
    }

    /// Give up leadership (nothing happens if `leader` no longer leads).
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn resign(&self, leader: &LeaderKey) -> Result<ResponseHeader> {
        let req = pb::ResignRequest {
            leader: Some(leader.to_pb()),
        };
        let resp = self
            .call(Mutability::Write, req, |ch, r| async move {
                election(ch).resign(r).await
            })
            .await?;
        Ok(resp.header.map(Into::into).unwrap_or_default())
    }
}
