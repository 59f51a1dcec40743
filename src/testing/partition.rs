//! From "these groups of members can talk among themselves" to each member's network
//! fault plan: a member drops its requests to, and the responses from, every member
//! outside its group, so nothing crosses between groups in either direction.

use std::collections::BTreeMap;

use raftkv_core::NodeId;
use raftkv_net::NetFaultPlan;

use super::TestClusterError;

/// Each member's plan for a partition into `groups` of the members in `peers` (id ->
/// peer URL). A member named in no group is cut off from everyone. The plans of a
/// healed network are all empty (`groups` with one group of everyone, or
/// [`healed`]).
pub(super) fn plans(
    peers: &BTreeMap<NodeId, String>,
    groups: &[&[NodeId]],
) -> Result<BTreeMap<NodeId, NetFaultPlan>, TestClusterError> {
    let mut group_of: BTreeMap<NodeId, usize> = BTreeMap::new();
    for (index, group) in groups.iter().enumerate() {
        for id in group.iter() {
            if !peers.contains_key(id) {
                return Err(TestClusterError::NoSuchMember(*id));
            }
            if group_of.insert(*id, index).is_some() {
                return Err(TestClusterError::InvalidPartition(format!(
                    "member {id} is named in two groups"
                )));
            }
        }
    }
    // Members in no group each stand alone: give them groups of their own.
    let mut next = groups.len();
    for id in peers.keys() {
        group_of.entry(*id).or_insert_with(|| {
            next += 1;
            next
        });
    }
    Ok(peers
        .keys()
        .map(|id| {
            let others: Vec<String> = peers
                .iter()
                .filter(|(other, _)| group_of[*other] != group_of[id])
                .map(|(_, url)| url.clone())
                .collect();
            let plan = NetFaultPlan {
                drop_requests_to: others.clone(),
                drop_responses_from: others,
                ..NetFaultPlan::default()
            };
            (*id, plan)
        })
        .collect())
}

/// The plan of every member of a healed network.
pub(super) fn healed(peers: &BTreeMap<NodeId, String>) -> BTreeMap<NodeId, NetFaultPlan> {
    peers.keys().map(|id| (*id, NetFaultPlan::default())).collect()
}

/// Whether a plan cuts anything (a member restarted into a partition gets its plan back).
pub(super) fn cuts(plans: &BTreeMap<NodeId, NetFaultPlan>) -> bool {
    plans.values().any(|p| !p.drop_requests_to.is_empty())
}

/// The ids a plan leaves `id` able to reach (for error texts and tests).
#[cfg(test)]
fn reachable(peers: &BTreeMap<NodeId, String>, plan: &NetFaultPlan) -> std::collections::BTreeSet<NodeId> {
    peers
        .iter()
        .filter(|(_, url)| !plan.drop_requests_to.contains(url))
        .map(|(id, _)| *id)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn peers(n: u64) -> BTreeMap<NodeId, String> {
        (1..=n)
            .map(|id| (id, format!("http://127.0.0.1:{}", 9000 + id)))
            .collect()
    }

    #[test]
    fn a_minority_and_a_majority_reach_only_their_own_side() {
        let peers = peers(5);
        let plans = plans(&peers, &[&[1, 2], &[3, 4, 5]]).unwrap();
        assert_eq!(reachable(&peers, &plans[&1]), BTreeSet::from([1, 2]));
        assert_eq!(reachable(&peers, &plans[&4]), BTreeSet::from([3, 4, 5]));
        assert_eq!(plans[&1].drop_requests_to, plans[&1].drop_responses_from);
        assert!(cuts(&plans));
    }

    #[test]
    fn a_member_named_nowhere_is_isolated() {
        let peers = peers(3);
        let plans = plans(&peers, &[&[1, 2]]).unwrap();
        assert_eq!(reachable(&peers, &plans[&3]), BTreeSet::from([3]));
        assert_eq!(reachable(&peers, &plans[&1]), BTreeSet::from([1, 2]));
    }

    #[test]
    fn one_group_of_everyone_and_healed_cut_nothing() {
        let peers = peers(3);
        assert!(!cuts(&plans(&peers, &[&[1, 2, 3]]).unwrap()));
        assert!(!cuts(&healed(&peers)));
    }

    #[test]
    fn unknown_or_repeated_members_are_refused() {
        let peers = peers(3);
        assert!(matches!(
            plans(&peers, &[&[1], &[7]]),
            Err(TestClusterError::NoSuchMember(7))
        ));
        assert!(matches!(
            plans(&peers, &[&[1, 2], &[2, 3]]),
            Err(TestClusterError::InvalidPartition(_))
        ));
    }
}
