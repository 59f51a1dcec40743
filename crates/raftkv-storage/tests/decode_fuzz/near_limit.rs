//! Valid values near the byte limit.

use super::*;

/// Valid values that `codec::decode` must decode, sized within its smallest size classes,
/// whose encodings are mostly one-byte varints (lengths, small integers, enum tags).
#[test]
fn valid_values_near_the_byte_limit_decode() {
    let mut refused = Vec::new();
    let mut expect = |what: String, command: Command| {
        let bytes = codec::encode(&command).unwrap();
        match codec::decode::<Command>(&bytes) {
            Ok(back) => assert_eq!(back, command, "{what}"),
            Err(e) => refused.push(format!("{what} ({} bytes): {e}", bytes.len())),
        }
    };
    // The worst ratio: pairs of one-byte varints, each pair counted as 16 bytes.
    for pairs in [5_000, 30_000, 500_000] {
        let remaining = vec![(1, 1); pairs];
        expect(
            format!("LeaseCheckpoint of {pairs} pairs"),
            Command::LeaseCheckpoint { remaining },
        );
    }
    // What the proposer makes: a group commit of as many puts as it packs into one entry.
    let requests = raftkv_core::ProposerConfig::default().max_batch_requests;
    let puts = (0..requests)
        .map(|i| Command::Put(PutRequest::new(format!("key-{i:016}"), format!("value-{i:016}"))))
        .collect();
    expect(format!("a batch of {requests} puts"), Command::Batch(puts));

    // A leader's snapshot of 1,000 keys, installed by a follower.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    runtime.block_on(async {
        let mut leader = Store::open(leader_dir.path(), StoreOptions::default()).unwrap();
        let entries = (1..=1000).map(|i| put_entry(i, &format!("key-{i}"), &format!("value-{i}")));
        leader.state_machine.apply_committed(entries).await.unwrap();
        let snapshot = support::build_snapshot(&mut leader).await;
        let mut bytes = Vec::new();
        let mut file = snapshot.snapshot;
        file.read_to_end(&mut bytes).await.unwrap();
        let mut follower = Store::open(follower_dir.path(), StoreOptions::default()).unwrap();
        match install(&mut follower, &snapshot.meta, &bytes).await {
            Ok(()) => assert_eq!(served(&mut follower).await, served(&mut leader).await),
            Err(e) => {
                let sizes: Vec<usize> = frames(&bytes).iter().map(|f| f.len()).collect();
                refused.push(format!(
                    "a snapshot of 1,000 keys (frames of {sizes:?} bytes): {e}"
                ));
            }
        }
    });
    assert!(
        refused.is_empty(),
        "valid values refused:\n{}",
        refused.join("\n")
    );
}
