//! Quorum math and ensemble rules, derived from the inventory and never typed by hand.

/// Mesos master quorum for `masters` masters: a strict majority, `floor(n/2) + 1`.
///
/// Returns `None` for an empty master set, which has no quorum.
pub fn mesos_quorum(masters: usize) -> Option<usize> {
    (masters > 0).then_some(masters / 2 + 1)
}

/// How many members of a ZooKeeper ensemble of `size` may be down while the ensemble
/// still holds quorum. An ensemble of 3 tolerates 1, of 5 tolerates 2.
pub fn zookeeper_fault_tolerance(size: usize) -> usize {
    size.saturating_sub(1) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_is_strict_majority() {
        assert_eq!(mesos_quorum(0), None);
        assert_eq!(mesos_quorum(1), Some(1));
        assert_eq!(mesos_quorum(2), Some(2));
        assert_eq!(mesos_quorum(3), Some(2));
        assert_eq!(mesos_quorum(4), Some(3));
        assert_eq!(mesos_quorum(5), Some(3));
    }

    #[test]
    fn zookeeper_tolerates_minority_loss() {
        assert_eq!(zookeeper_fault_tolerance(1), 0);
        assert_eq!(zookeeper_fault_tolerance(3), 1);
        assert_eq!(zookeeper_fault_tolerance(4), 1);
        assert_eq!(zookeeper_fault_tolerance(5), 2);
    }
}
