//! etcd's Lease service: [`Client::lease_grant`], [`Client::lease_revoke`],
//! [`Client::lease_keep_alive_once`], [`Client::lease_time_to_live`],
//! [`Client::lease_list`], and the keep-alive helper [`Client::keep_alive`].
//!
//! Grant and Revoke are writes (retried only on proof they were not applied: a grant
//! retried after an ambiguous failure could create a second lease); TimeToLive, Leases
//! and keep-alives are retried on any transient failure (renewing twice is harmless).
//!
//! **The keep-alive helper.** [`Client::keep_alive`] starts a task that renews the lease
//! every third of its TTL, each renewal one short `LeaseKeepAlive` stream through the
//! client's retry loop, so renewals follow leader hints and move to another endpoint
//! when a server fails, like any call. A failed renewal is retried after a short pause
//! until the lease's own deadline would pass. The [`LeaseKeeper`] reports each renewal
//! and ends (with [`KeepAliveState::Expired`]) when the server says the lease is gone.
//! Dropping the keeper stops the renewals; the lease then expires on its own.

use std::time::Duration;

use raftkv_core::kv::ResponseHeader;
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
use tokio::sync::watch;
use tonic::Status;
use tonic::transport::Channel;

use crate::client::Client;
use crate::endpoints::MAX_RESPONSE_BYTES;
use crate::error::Result;
use crate::retry::Mutability;

/// Pause after a failed renewal before the next attempt.
const RENEW_RETRY: Duration = Duration::from_millis(300);

fn lease(channel: Channel) -> LeaseClient<Channel> {
    LeaseClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

/// A granted or renewed lease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseGrant {
    /// Header of the answering member.
    pub header: ResponseHeader,
    /// The lease id.
    pub id: i64,
    /// Its TTL, seconds (0 from a keep-alive: the lease does not exist).
    pub ttl: i64,
}

/// What [`Client::lease_time_to_live`] answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseTimeToLive {
    /// Header of the answering member.
    pub header: ResponseHeader,
    /// The lease id.
    pub id: i64,
    /// Seconds left (-1: the lease does not exist).
    pub ttl: i64,
    /// The TTL it was granted.
    pub granted_ttl: i64,
    /// Its keys, if asked for.
    pub keys: Vec<Vec<u8>>,
}

/// The state a [`LeaseKeeper`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepAliveState {
    /// Not renewed yet.
    Starting,
    /// Last renewed for this many seconds.
    Renewed {
        /// The TTL the server renewed it for.
        ttl: i64,
        /// How many renewals so far.
        renewals: u64,
    },
    /// The last renewal failed (it is being retried).
    Failing(String),
    /// The server says the lease does not exist (expired or revoked): renewals stopped.
    Expired,
}

/// Renews a lease in the background until dropped (see the module doc).
#[derive(Debug)]
pub struct LeaseKeeper {
    id: i64,
    state: watch::Receiver<KeepAliveState>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseKeeper {
    /// The lease kept alive.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The latest state.
    pub fn state(&self) -> KeepAliveState {
        self.state.borrow().clone()
    }

    /// A receiver of every state change.
    pub fn subscribe(&self) -> watch::Receiver<KeepAliveState> {
        self.state.clone()
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// Grant a lease of `ttl` seconds (the server raises it to its minimum TTL) with id
    /// `id`, or an id the server picks if `id` is 0.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn lease_grant(&self, id: i64, ttl: i64) -> Result<LeaseGrant> {
        let req = pb::LeaseGrantRequest { ttl, id };
        let resp = self
            .call(Mutability::Write, req, |ch, r| async move {
                lease(ch).lease_grant(r).await
            })
            .await?;
        Ok(LeaseGrant {
            header: resp.header.map(Into::into).unwrap_or_default(),
            id: resp.id,
            ttl: resp.ttl,
        })
    }

    /// Revoke a lease; its keys are deleted in one revision.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn lease_revoke(&self, id: i64) -> Result<ResponseHeader> {
        let req = pb::LeaseRevokeRequest { id };
        let resp = self
            .call(Mutability::Write, req, |ch, r| async move {
                lease(ch).lease_revoke(r).await
            })
            .await?;
        Ok(resp.header.map(Into::into).unwrap_or_default())
    }

    /// Renew a lease once (TTL 0 in the answer: no such lease).
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn lease_keep_alive_once(&self, id: i64) -> Result<LeaseGrant> {
        let req = pb::LeaseKeepAliveRequest { id };
        let resp = self
            .call(Mutability::Read, req, |ch, r| async move {
                let requests = tonic::codegen::tokio_stream::iter([r.into_inner()]);
                let mut answers = lease(ch).lease_keep_alive(requests).await?.into_inner();
                match answers.message().await? {
                    Some(answer) => Ok(tonic::Response::new(answer)),
                    None => Err(Status::unavailable("keep-alive stream ended without an answer")),
                }
            })
            .await?;
        Ok(LeaseGrant {
            header: resp.header.map(Into::into).unwrap_or_default(),
            id: resp.id,
            ttl: resp.ttl,
        })
    }

    /// How long a lease has left, and its keys if `keys`.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<LeaseTimeToLive> {
        let req = pb::LeaseTimeToLiveRequest { id, keys };
        let resp = self
            .call(Mutability::Read, req, |ch, r| async move {
                lease(ch).lease_time_to_live(r).await
            })
            .await?;
        Ok(LeaseTimeToLive {
            header: resp.header.map(Into::into).unwrap_or_default(),
            id: resp.id,
            ttl: resp.ttl,
            granted_ttl: resp.granted_ttl,
            keys: resp.keys,
        })
    }

    /// Every lease's id.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn lease_list(&self) -> Result<Vec<i64>> {
        let resp = self
            .call(Mutability::Read, pb::LeaseLeasesRequest {}, |ch, r| async move {
                lease(ch).lease_leases(r).await
            })
            .await?;
        Ok(resp.leases.into_iter().map(|l| l.id).collect())
    }

    /// Keep lease `id` alive in the background until the returned keeper is dropped.
    pub fn keep_alive(&self, id: i64) -> LeaseKeeper {
        let (tx, state) = watch::channel(KeepAliveState::Starting);
        let client = self.clone();
        let task = tokio::spawn(async move {
            let mut renewals: u64 = 0;
            loop {
                let wait = match client.lease_keep_alive_once(id).await {
                    Ok(renewed) if renewed.ttl <= 0 => {
                        let _ = tx.send(KeepAliveState::Expired);
                        return;
                    }
                    Ok(renewed) => {
                        renewals += 1;
                        let _ = tx.send(KeepAliveState::Renewed {
                            ttl: renewed.ttl,
                            renewals,
                        });
                        Duration::from_millis((renewed.ttl.max(1) as u64).saturating_mul(1000) / 3)
                    }
                    Err(e) => {
                        tracing::debug!(lease = id, error = %e, "lease renewal failed; retrying");
                        let _ = tx.send(KeepAliveState::Failing(e.to_string()));
                        RENEW_RETRY
                    }
                };
                tokio::time::sleep(wait).await;
            }
        });
        LeaseKeeper { id, state, task }
    }
}
