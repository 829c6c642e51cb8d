//! Quorum arithmetic of elections and commits (spec/election.md §3), as pure
//! functions so that the executor, the primary's commit logic, the status
//! output and the model checker all use one definition.

/// `floor(n/2) + 1`: the smallest number of members any two of which sets
/// intersect.
pub fn majority(n_voters: usize) -> usize {
    n_voters / 2 + 1
}

/// Votes a candidate needs with `n_voters` voting members (itself included)
/// under the quorum setting `setting`, or `None` when there is no automatic
/// election: setting `0` (local-only commits: an acknowledged record may
/// exist on the old primary alone, so only an operator may promote), an
/// invalid setting (below -1), or no voters.
///
/// - `-1` (majority): `floor(N/2)+1`; two vote sets intersect, and a vote
///   set intersects every majority that holds a committed record.
/// - `k > 0`: a committed record is on `k+1` nodes, so a vote set must
///   intersect every set of `k+1` nodes (size `> N-(k+1)`, i.e. `>= N-k`)
///   and every other vote set (a majority): `max(floor(N/2)+1, N-k)`.
pub fn election_quorum(n_voters: usize, setting: i64) -> Option<usize> {
    if n_voters == 0 {
        return None;
    }
    match setting {
        -1 => Some(majority(n_voters)),
        k if k > 0 => {
            let k = usize::try_from(k).unwrap_or(usize::MAX);
            Some(majority(n_voters).max(n_voters.saturating_sub(k)))
        }
        _ => None,
    }
}

/// Members (itself included) a primary must have heard from within
/// `lease_ms` to keep leading: the election quorum, and a majority under
/// setting `0` (no automatic election, but still no primary acknowledging
/// alone for longer than it could be the only one).
pub fn lease_quorum(n_voters: usize, setting: i64) -> usize {
    election_quorum(n_voters, setting).unwrap_or_else(|| majority(n_voters))
}

/// Durable copies (the primary's own included) that make a record
/// committed under `setting`: `-1` → `floor(N/2)+1`, `0` → 1, `k > 0` →
/// `k+1`. `None` for an invalid setting or no voters.
pub fn commit_copies(n_voters: usize, setting: i64) -> Option<usize> {
    if n_voters == 0 {
        return None;
    }
    match setting {
        -1 => Some(majority(n_voters)),
        0 => Some(1),
        k if k > 0 => usize::try_from(k).ok().and_then(|k| k.checked_add(1)),
        _ => None,
    }
}

/// The commit rule of a new epoch ("figure 8"): the highest lsn on enough copies
/// commits only if it is at or above the epoch's first record. Defined once, in the
/// primary core that advances the watermark by it; re-exported here for the election
/// module and its model checker.
pub use walship_primary::core::committable_lsn;

#[cfg(test)]
mod tests {
    use super::*;

    /// (N, setting) → election quorum, written out by hand from the
    /// formulas in spec/election.md §3.
    #[test]
    fn election_quorum_table_for_3_5_7_voters_and_settings_minus1_0_1_2_3() {
        let table: &[(usize, i64, Option<usize>)] = &[
            (3, -1, Some(2)),
            (3, 0, None),
            (3, 1, Some(2)), // max(2, 3-1=2)
            (3, 2, Some(2)), // max(2, 1)
            (3, 3, Some(2)), // max(2, 0): k=3 cannot commit with 3 nodes; the primary refuses it
            (5, -1, Some(3)),
            (5, 0, None),
            (5, 1, Some(4)), // max(3, 4): a record on 2 nodes must meet every vote set
            (5, 2, Some(3)), // max(3, 3)
            (5, 3, Some(3)), // max(3, 2)
            (7, -1, Some(4)),
            (7, 0, None),
            (7, 1, Some(6)), // max(4, 6)
            (7, 2, Some(5)), // max(4, 5)
            (7, 3, Some(4)), // max(4, 4)
        ];
        for &(n, setting, want) in table {
            assert_eq!(election_quorum(n, setting), want, "N={n} setting={setting}");
        }
    }

    #[test]
    fn every_vote_set_meets_every_commit_set_and_every_other_vote_set() {
        for n in 1..=9usize {
            for setting in [-1i64, 1, 2, 3, 4, 5, 6, 7, 8] {
                let (Some(votes), Some(copies)) =
                    (election_quorum(n, setting), commit_copies(n, setting))
                else {
                    continue;
                };
                if copies > n {
                    continue; // unsatisfiable policy: nothing ever commits
                }
                assert!(
                    votes + copies > n,
                    "N={n} setting={setting}: votes {votes} miss a commit set of {copies}"
                );
                assert!(
                    2 * votes > n,
                    "N={n} setting={setting}: two vote sets of {votes} may be disjoint"
                );
                assert!(
                    votes <= n,
                    "N={n} setting={setting}: needs more votes than voters"
                );
            }
        }
    }

    #[test]
    fn invalid_settings_and_empty_clusters_have_no_quorum() {
        assert_eq!(election_quorum(3, -2), None);
        assert_eq!(election_quorum(0, -1), None);
        assert_eq!(commit_copies(3, -5), None);
        assert_eq!(commit_copies(0, 1), None);
        assert_eq!(lease_quorum(3, 0), 2);
        assert_eq!(lease_quorum(5, 1), 4);
        assert_eq!(lease_quorum(1, 0), 1);
    }

    #[test]
    fn commit_copies_follow_the_setting() {
        assert_eq!(commit_copies(3, -1), Some(2));
        assert_eq!(commit_copies(7, -1), Some(4));
        assert_eq!(commit_copies(7, 0), Some(1));
        assert_eq!(commit_copies(7, 2), Some(3));
    }

    #[test]
    fn figure_8_older_epoch_record_on_a_majority_does_not_commit() {
        // Primary of epoch 3 whose control record is at lsn 2; lsn 1 (epoch 1)
        // is on 2 of 3 nodes, lsn 2 only on the primary.
        assert_eq!(committable_lsn(2, &[2, 1, 0], 2), None);
        // Once the epoch-3 record is on a majority, lsn 1 commits with it.
        assert_eq!(committable_lsn(2, &[2, 2, 0], 2), Some(2));
        assert_eq!(committable_lsn(2, &[3, 2, 1], 2), Some(2));
        assert_eq!(committable_lsn(2, &[3, 3, 3], 3), Some(3));
    }

    #[test]
    fn commit_needs_enough_members_counted() {
        assert_eq!(committable_lsn(1, &[5], 2), None);
        assert_eq!(committable_lsn(1, &[5, 5], 0), None);
        assert_eq!(committable_lsn(1, &[0, 0, 0], 1), None);
        assert_eq!(committable_lsn(1, &[5, 0, 0], 1), Some(5));
    }
}
