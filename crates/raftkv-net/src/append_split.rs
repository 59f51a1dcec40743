//! Splitting an append request by bytes, and folding the answers of its parts back into
//! the one answer openraft expects.
//!
//! openraft bounds an append request by entry count (`max_payload_entries`), not by bytes,
//! and 0.10 has no "payload too large" answer to shrink it. An entry is a batch of client
//! requests of up to a few MiB, so 64 of them could exceed what a peer accepts. Here a
//! request over [`PART_BYTES`] becomes consecutive parts: the same vote, each part's
//! `prev_log_id` the last log id of the part before, and `leader_commit` clamped to the
//! part's last entry (everything up to a committed index is committed, so telling a
//! follower less is always true). A single entry larger than the budget travels alone.

use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, StreamAppendResult};
use raftkv_core::codec::{self, CodecError};
use raftkv_core::types::{LogId, TypeConfig};

/// The byte budget of one part: well under the peer message limit, small enough that
/// parts pipeline.
pub(crate) const PART_BYTES: usize = 8 * 1024 * 1024;

/// What a request's vote, log ids and framing cost beyond its entries (a generous bound).
const HEADER_BYTES: usize = 1024;

/// One request as parts of at most `budget` bytes each (but one entry per part at least).
pub(crate) fn split_by_bytes(
    request: AppendEntriesRequest<TypeConfig>,
    budget: usize,
) -> Result<Vec<AppendEntriesRequest<TypeConfig>>, CodecError> {
    let mut sizes = Vec::with_capacity(request.entries.len());
    for entry in &request.entries {
        sizes.push(codec::encoded_len(entry)?);
    }
    if sizes.iter().sum::<usize>() + HEADER_BYTES <= budget {
        return Ok(vec![request]);
    }
    let AppendEntriesRequest {
        vote,
        prev_log_id,
        entries,
        leader_commit,
    } = request;
    let mut parts = Vec::new();
    let mut prev = prev_log_id;
    let mut current = Vec::new();
    let mut bytes = HEADER_BYTES;
    for (entry, size) in entries.into_iter().zip(sizes) {
        if !current.is_empty() && bytes + size > budget {
            let part = std::mem::take(&mut current);
            prev = push_part(&mut parts, vote, prev, part, leader_commit);
            bytes = HEADER_BYTES;
        }
        bytes += size;
        current.push(entry);
    }
    push_part(&mut parts, vote, prev, current, leader_commit);
    Ok(parts)
}

/// Append one part; returns its last log id (the next part's `prev_log_id`).
fn push_part(
    parts: &mut Vec<AppendEntriesRequest<TypeConfig>>,
    vote: raftkv_core::types::Vote,
    prev_log_id: Option<LogId>,
    entries: Vec<raftkv_core::types::Entry>,
    leader_commit: Option<LogId>,
) -> Option<LogId> {
    let last = entries.last().map(|e| e.log_id).or(prev_log_id);
    let leader_commit = match (leader_commit, last) {
        (Some(commit), Some(last)) if commit.index > last.index => Some(last),
        (commit, _) => commit,
    };
    parts.push(AppendEntriesRequest {
        vote,
        prev_log_id,
        entries,
        leader_commit,
    });
    last
}

/// The last log id a part would make the follower match.
pub(crate) fn last_log_id(part: &AppendEntriesRequest<TypeConfig>) -> Option<LogId> {
    part.entries.last().map(|e| e.log_id).or(part.prev_log_id)
}

/// Folds the unary answers of a request's parts, in order, into one answer.
pub(crate) struct UnaryFold {
    previous_last: Option<LogId>,
    first: bool,
}

impl UnaryFold {
    pub(crate) fn new() -> Self {
        Self {
            previous_last: None,
            first: true,
        }
    }

    /// Take the answer to the next part (whose last log id is `last`): `Some(answer)`
    /// when the fold is decided (send no more parts), `None` to go on.
    pub(crate) fn next(
        &mut self,
        answer: AppendEntriesResponse<TypeConfig>,
        last: Option<LogId>,
    ) -> Option<AppendEntriesResponse<TypeConfig>> {
        let first = std::mem::replace(&mut self.first, false);
        let decided = match answer {
            AppendEntriesResponse::Success => {
                self.previous_last = last;
                return None;
            }
            // A later part conflicting means the earlier ones matched: report how far.
            AppendEntriesResponse::Conflict if !first => {
                AppendEntriesResponse::PartialSuccess(self.previous_last)
            }
            other => other,
        };
        Some(decided)
    }
}

/// The same fold for the streamed answers ([`StreamAppendResult`]): `Ok(matched)` per
/// part. Returns the answer to give openraft once decided, and whether the stream must
/// stop after it (anything short of full success stops the pipeline).
pub(crate) fn fold_stream_part(
    previous_last: Option<LogId>,
    first: bool,
    answer: StreamAppendResult<TypeConfig>,
    last: Option<LogId>,
    final_part: bool,
) -> Option<(StreamAppendResult<TypeConfig>, bool)> {
    match answer {
        Ok(matched) if matched == last => final_part.then_some((Ok(matched), false)),
        Ok(partial) => Some((Ok(partial), true)),
        Err(openraft::raft::StreamAppendError::Conflict(_)) if !first => Some((Ok(previous_last), true)),
        Err(e) => Some((Err(e), true)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use openraft::EntryPayload;
    use raftkv_core::Command;
    use raftkv_core::kv::PutRequest;
    use raftkv_core::types::{Entry, Vote, leader_id};

    fn entry(index: u64, value_bytes: usize) -> Entry {
        Entry {
            log_id: LogId::new(leader_id(2, 1), index),
            payload: EntryPayload::Normal(Command::Put(PutRequest {
                key: b"k".to_vec(),
                value: vec![7; value_bytes],
                ..PutRequest::default()
            })),
        }
    }

    fn request(entries: Vec<Entry>, commit: u64) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(LogId::new(leader_id(1, 1), 9)),
            entries,
            leader_commit: Some(LogId::new(leader_id(2, 1), commit)),
        }
    }

    #[test]
    fn a_small_request_stays_whole() {
        let parts = split_by_bytes(request((10..20).map(|i| entry(i, 100)).collect(), 15), 1 << 20).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].entries.len(), 10);
    }

    #[test]
    fn parts_chain_and_stay_within_the_budget() {
        let budget = 64 * 1024;
        let parts =
            split_by_bytes(request((10..30).map(|i| entry(i, 10_000)).collect(), 25), budget).unwrap();
        assert!(parts.len() > 1, "{} parts", parts.len());
        let mut prev = Some(LogId::new(leader_id(1, 1), 9));
        let mut next_index = 10;
        for part in &parts {
            assert_eq!(part.prev_log_id, prev);
            assert!(codec::encoded_len(part).unwrap() <= budget);
            for e in &part.entries {
                assert_eq!(e.log_id.index, next_index);
                next_index += 1;
            }
            let last = last_log_id(part).unwrap();
            // The commit index is clamped to what the part carries, never raised.
            assert_eq!(part.leader_commit.unwrap().index, last.index.min(25));
            prev = Some(last);
        }
        assert_eq!(next_index, 30);
    }

    #[test]
    fn an_entry_over_the_budget_goes_alone() {
        let entries = vec![entry(10, 10), entry(11, 200_000), entry(12, 10)];
        let parts = split_by_bytes(request(entries, 12), 64 * 1024).unwrap();
        let sizes: Vec<usize> = parts.iter().map(|p| p.entries.len()).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
    }

    #[test]
    fn answers_fold_to_one() {
        let a = Some(LogId::new(leader_id(2, 1), 12));
        let b = Some(LogId::new(leader_id(2, 1), 15));
        let mut fold = UnaryFold::new();
        assert_eq!(fold.next(AppendEntriesResponse::Success, a), None);
        assert_eq!(
            fold.next(AppendEntriesResponse::Conflict, b),
            Some(AppendEntriesResponse::PartialSuccess(a))
        );
        let mut fold = UnaryFold::new();
        assert_eq!(
            fold.next(AppendEntriesResponse::Conflict, a),
            Some(AppendEntriesResponse::Conflict)
        );
        assert_eq!(fold_stream_part(None, true, Ok(a), a, false), None);
        assert_eq!(fold_stream_part(a, false, Ok(b), b, true), Some((Ok(b), false)));
        assert_eq!(
            fold_stream_part(None, true, Ok(None), a, true),
            Some((Ok(None), true))
        );
    }
}
