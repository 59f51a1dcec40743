//! etcd's Snapshot: stream a member's state into the caller's writer.
//!
//! ## The stream
//! A server answers with a stream of messages: the data in chunks, each saying how many
//! bytes are still to come (`remaining_bytes`, 0 on the last chunk), then one last
//! message whose blob is the SHA-256 of all the data (etcd's framing; raftkv's too). Only
//! the end of the stream tells which message was the last, so `Framing` holds each
//! message back until the next one arrives: everything before the last message goes to
//! the writer, the last one is the checksum. raftkv's data is its own snapshot format,
//! zero-padded to whole 512-byte pages (as etcdctl expects of etcd's bbolt files); etcd's
//! is a bbolt file.
//!
//! ## What is checked
//! The stream must end cleanly (the server closes it with status OK), its last message
//! must be exactly 32 bytes, and the chunk before it must announce no bytes still to
//! come. The client computes the SHA-256 of the data it passes to the writer and refuses
//! a stream whose checksum does not match ([`ClientError::InvalidResponse`]); the digest
//! is returned in [`Snapshot::sha256`].
//!
//! ## Retries and time
//! Snapshot is a read. It is retried like one until its first message arrives (building
//! the snapshot happens before that, inside the call's `request_timeout`); after that,
//! bytes may be in the caller's writer, so a failure ends the call with
//! [`ClientError::StreamInterrupted`]. The transfer itself has no total deadline, and
//! none is sent to the server: each next message must arrive within `request_timeout`.

use raftkv_core::kv::ResponseHeader;
use raftkv_proto::etcdserverpb as pb;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::client::{Call, Client, maintenance};
use crate::error::{ClientError, Result};
use crate::retry::{self, Failure, Mutability};

/// Length of the checksum message: a SHA-256 digest.
const SHA256_LEN: usize = 32;

/// What [`Client::snapshot`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Header of the member that sent the snapshot (default when it sent none).
    pub header: ResponseHeader,
    /// Bytes written to the writer (the checksum not included).
    pub size: u64,
    /// The SHA-256 of those bytes, sent by the server and verified by the client.
    pub sha256: [u8; SHA256_LEN],
}

/// The framing of a snapshot stream, checked as it arrives (see the module docs).
#[derive(Default)]
pub(crate) struct Framing {
    /// SHA-256 of the bytes released as data.
    hasher: sha2::Sha256,
    /// From the first message that carries one.
    header: Option<ResponseHeader>,
    /// The newest message: data if another follows, else the checksum.
    held: Option<pb::SnapshotResponse>,
    /// `remaining_bytes` of the newest message known to be data.
    last_data_remaining: Option<u64>,
    /// Bytes released as data.
    size: u64,
    /// Blob bytes received in all.
    received: u64,
}

impl Framing {
    /// Take in the next message; returns the previous one's bytes, now known to be data.
    pub(crate) fn push(&mut self, message: pb::SnapshotResponse) -> Option<Vec<u8>> {
        self.received = self.received.saturating_add(message.blob.len() as u64);
        if self.header.is_none() {
            self.header = message.header.map(Into::into);
        }
        let data = self.held.replace(message)?;
        self.last_data_remaining = Some(data.remaining_bytes);
        self.size = self.size.saturating_add(data.blob.len() as u64);
        sha2::Digest::update(&mut self.hasher, &data.blob);
        Some(data.blob)
    }

    /// Blob bytes received so far.
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// The stream ended cleanly: check its end and say what was written.
    pub(crate) fn finish(self) -> Result<Snapshot> {
        let invalid = |what: String| ClientError::InvalidResponse(format!("snapshot stream: {what}"));
        let Some(last) = self.held else {
            return Err(invalid("ended without any message".into()));
        };
        let sha256: [u8; SHA256_LEN] = last.blob.as_slice().try_into().map_err(|_| {
            invalid(format!(
                "ended without its SHA-256 checksum: the last message has {} bytes, not {SHA256_LEN}",
                last.blob.len()
            ))
        })?;
        if let Some(remaining) = self.last_data_remaining
            && remaining != 0
        {
            return Err(invalid(format!(
                "ended with {remaining} bytes of data announced but not sent"
            )));
        }
        let computed: [u8; SHA256_LEN] = sha2::Digest::finalize(self.hasher).into();
        if computed != sha256 {
            return Err(invalid(
                "SHA-256 mismatch: the data is not what the server hashed".into(),
            ));
        }
        Ok(Snapshot {
            header: self.header.unwrap_or_default(),
            size: self.size,
            sha256,
        })
    }
}

impl Client {
    /// Stream a snapshot of the answering member's state into `writer` (a file, a
    /// `Vec<u8>`, ...), flush it, and return its size and the SHA-256 the server sent
    /// for it. The client checks that the stream is complete, ends with a 32-byte
    /// checksum, and that the checksum matches the data.
    ///
    /// Retried only until the first message arrives; a failure after that ends with
    /// [`ClientError::StreamInterrupted`] and leaves a partial snapshot in `writer`.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn snapshot(&self, mut writer: impl AsyncWrite + Unpin) -> Result<Snapshot> {
        let call = Call::new(Mutability::Read).opening_a_stream();
        let (first, mut stream) = self
            .call(call, pb::SnapshotRequest {}, |ch, r| async move {
                let mut stream = maintenance(ch).snapshot(r).await?.into_inner();
                let first = stream.message().await?;
                Ok(tonic::Response::new((first, stream)))
            })
            .await?;
        let idle = self.options().request_timeout;
        let mut framing = Framing::default();
        let mut next = first;
        while let Some(message) = next {
            if let Some(data) = framing.push(message) {
                writer.write_all(&data).await.map_err(write_failed)?;
            }
            next = match tokio::time::timeout(idle, stream.message()).await {
                Ok(Ok(message)) => message,
                Ok(Err(status)) => {
                    let reason = match retry::classify_status(&status) {
                        Failure::Answered { error, .. } => error.to_string(),
                        Failure::NotSent(reason) | Failure::Lost(reason) => reason,
                    };
                    return Err(interrupted(&framing, reason));
                }
                Err(_) => return Err(interrupted(&framing, format!("no message for {idle:?}"))),
            };
        }
        writer.flush().await.map_err(write_failed)?;
        let snapshot = framing.finish()?;
        tracing::debug!(size = snapshot.size, "snapshot received");
        Ok(snapshot)
    }
}

fn interrupted(framing: &Framing, reason: String) -> ClientError {
    ClientError::StreamInterrupted {
        received: framing.received(),
        reason,
    }
}

fn write_failed(e: std::io::Error) -> ClientError {
    ClientError::WriteFailed {
        kind: e.kind(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(blob: &[u8], remaining_bytes: u64) -> pb::SnapshotResponse {
        pb::SnapshotResponse {
            header: None,
            remaining_bytes,
            blob: blob.to_vec(),
        }
    }

    /// Feed `messages` and collect what would be written.
    fn run(messages: Vec<pb::SnapshotResponse>) -> (Vec<u8>, Result<Snapshot>) {
        let mut framing = Framing::default();
        let mut written = Vec::new();
        for m in messages {
            if let Some(data) = framing.push(m) {
                written.extend(data);
            }
        }
        (written, framing.finish())
    }

    #[test]
    fn data_goes_out_and_the_last_message_is_the_checksum() {
        let mut first = message(&[1; 600], 424);
        first.header = Some(pb::ResponseHeader {
            member_id: 2,
            ..Default::default()
        });
        let mut data = vec![1u8; 600];
        data.extend([2u8; 32]);
        data.extend([0u8; 392]);
        let digest: [u8; 32] =
            sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&data)).into();
        // The checksum is a message of its own even when a data chunk is also 32 bytes.
        let (written, snapshot) = run(vec![
            first,
            message(&[2; 32], 392),
            message(&[0; 392], 0),
            message(&digest, 0),
        ]);
        let snapshot = snapshot.unwrap();
        assert_eq!(written.len(), 1024);
        assert_eq!(snapshot.size, 1024);
        assert_eq!(snapshot.sha256, digest);
        assert_eq!(snapshot.header.member_id, 2);
        assert!(written[..600].iter().all(|b| *b == 1));
    }

    #[test]
    fn an_empty_snapshot_is_only_a_checksum() {
        let empty: [u8; 32] = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new()).into();
        let (written, snapshot) = run(vec![message(&empty, 0)]);
        assert!(written.is_empty());
        assert_eq!(snapshot.unwrap().size, 0);
        // A checksum that does not match the data is refused.
        let (_, wrong) = run(vec![message(&[1; 512], 0), message(&[9; 32], 0)]);
        assert!(matches!(wrong, Err(ClientError::InvalidResponse(t)) if t.contains("mismatch")));
    }

    #[test]
    fn a_missing_or_malformed_end_is_an_invalid_response() {
        let cases = [
            // Nothing at all.
            vec![],
            // No checksum: the stream stopped after a data chunk.
            vec![message(&[1; 512], 0)],
            // A checksum of the wrong length.
            vec![message(&[1; 512], 0), message(&[7; 20], 0)],
            // The data announced more to come, then a "checksum" arrived.
            vec![message(&[1; 512], 512), message(&[7; 32], 0)],
        ];
        for messages in cases {
            let (_, result) = run(messages.clone());
            assert!(
                matches!(result, Err(ClientError::InvalidResponse(_))),
                "{messages:?}: {result:?}"
            );
        }
    }

    #[test]
    fn received_counts_every_blob_byte() {
        let mut framing = Framing::default();
        assert_eq!(framing.push(message(&[1; 100], 50)), None);
        assert_eq!(framing.push(message(&[1; 50], 0)).map(|d| d.len()), Some(100));
        assert_eq!(framing.received(), 150);
    }
}
