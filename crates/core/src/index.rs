//! Free-capacity index of a pool of nodes.
//!
//! Nodes are grouped by their free capacity, so that placing a job without
//! requirements costs O(distinct free shapes + VMs placed) instead of a scan
//! over all nodes. On a cluster of identical one-core nodes there are one or
//! two distinct shapes, whatever the number of nodes.

use std::collections::{BTreeMap, BTreeSet};

/// `(has best-effort jobs, free cores, free memory MiB)`. Nodes without
/// best-effort jobs sort first, so normal jobs preempt as little as
/// possible; then smallest free capacity first (best fit).
pub(crate) type Key = (bool, u32, u64);

#[derive(Debug, Default, Clone)]
pub(crate) struct FreeIndex {
    map: BTreeMap<Key, BTreeSet<u32>>,
}

/// How many VMs of `cores` cores and `mem` MiB fit in a node with this
/// much free capacity.
pub(crate) fn slots(free_cores: u32, free_mem: u64, cores: u32, mem: u64) -> u64 {
    if cores == 0 {
        return 0;
    }
    let by_cores = u64::from(free_cores / cores);
    match free_mem.checked_div(mem) {
        Some(by_mem) => by_cores.min(by_mem),
        None => by_cores, // the VM needs no memory
    }
}

impl FreeIndex {
    pub(crate) fn insert(&mut self, key: Key, node: u32) {
        self.map.entry(key).or_default().insert(node);
    }

    pub(crate) fn remove(&mut self, key: Key, node: u32) {
        if let Some(set) = self.map.get_mut(&key) {
            set.remove(&node);
            if set.is_empty() {
                self.map.remove(&key);
            }
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Key, &BTreeSet<u32>)> {
        self.map.iter()
    }

    /// Total VM slots of shape `(cores, mem)`, stopping once `enough` is
    /// reached.
    pub(crate) fn count_slots(&self, cores: u32, mem: u64, enough: u64) -> u64 {
        let mut total = 0u64;
        for (&(_, fc, fm), set) in &self.map {
            let s = slots(fc, fm, cores, mem);
            if s > 0 {
                total = total.saturating_add(s.saturating_mul(set.len() as u64));
                if total >= enough {
                    return total;
                }
            }
        }
        total
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_respect_both_dimensions() {
        assert_eq!(slots(8, 16384, 2, 4096), 4);
        assert_eq!(slots(8, 6000, 2, 4096), 1);
        assert_eq!(slots(1, 0, 2, 0), 0);
        assert_eq!(slots(4, 0, 1, 0), 4);
    }

    #[test]
    fn count_slots_groups_by_shape() {
        let mut ix = FreeIndex::default();
        for n in 0..10 {
            ix.insert((false, 1, 0), n);
        }
        ix.insert((true, 4, 0), 10);
        assert_eq!(ix.count_slots(1, 0, u64::MAX), 14);
        assert_eq!(ix.count_slots(2, 0, u64::MAX), 2);
        assert_eq!(ix.count_slots(1, 0, 3), 10); // stops early
        ix.remove((true, 4, 0), 10);
        assert_eq!(ix.count_slots(2, 0, u64::MAX), 0);
        assert_eq!(ix.iter().count(), 1);
    }
}
