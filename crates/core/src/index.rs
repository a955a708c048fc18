//! Free-capacity index of a pool of nodes.
//!
//! Nodes are grouped by their free capacity ("shape"), so that placing a
//! job without requirements costs O(distinct shapes + VMs placed) instead
//! of a scan over all nodes. On a cluster of identical one-core nodes there
//! are one or two distinct shapes, whatever the number of nodes. Within a
//! shape, nodes sit in an unordered bag with a position table, so moving a
//! node between shapes is O(1); the order inside a bag depends only on the
//! history of events, so decisions stay deterministic.

use std::collections::BTreeMap;

/// `(has best-effort jobs, free cores, free memory MiB)`. Nodes without
/// best-effort jobs sort first, so normal jobs preempt as little as
/// possible; then smallest free capacity first (best fit).
pub(crate) type Key = (bool, u32, u64);

const ABSENT: (u32, u32) = (u32::MAX, u32::MAX);

#[derive(Debug, Default, Clone)]
pub(crate) struct FreeIndex {
    /// Shape -> bag number, in shape order.
    keys: Keys,
    bags: Vec<Vec<u32>>,
    /// The shape of each bag.
    bag_keys: Vec<Key>,
    spare: Vec<u32>,
    /// Registered bags that are empty.
    empty: u32,
    /// Node index -> (bag, position in bag), or `ABSENT`.
    pos: Vec<(u32, u32)>,
    /// The last shape looked up and its bag: nodes of a homogeneous
    /// cluster all go back to the same shape.
    last: Option<(Key, u32)>,
}

/// The registered shapes. While there are few, a sorted `Vec` that drops a
/// bag as soon as it empties: a pool of one counted node changes shape at
/// every start and end of a job, and B-tree inserts, removes and sweeps
/// then cost more than the rest of the move. Above `FEW` shapes, a B-tree
/// where a bag that empties stays registered (a full homogeneous cluster
/// empties and refills its one bag all the time) until there are many
/// empty ones to sweep.
#[derive(Debug, Clone)]
enum Keys {
    Few(Vec<(Key, u32)>),
    Many(BTreeMap<Key, u32>),
}

impl Default for Keys {
    fn default() -> Keys {
        Keys::Few(Vec::new())
    }
}

/// The most shapes kept in a sorted `Vec`; a B-tree goes back to a `Vec`
/// when a sweep leaves at most half as many.
const FEW: usize = 32;

/// Shapes in order with their bags, whichever form they are in.
enum KeyIter<'a> {
    Few(std::slice::Iter<'a, (Key, u32)>),
    Many(std::collections::btree_map::Iter<'a, Key, u32>),
}

impl<'a> Iterator for KeyIter<'a> {
    type Item = (&'a Key, u32);

    #[inline]
    fn next(&mut self) -> Option<(&'a Key, u32)> {
        match self {
            KeyIter::Few(it) => it.next().map(|(k, b)| (k, *b)),
            KeyIter::Many(it) => it.next().map(|(k, b)| (k, *b)),
        }
    }
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

/// Sweep empty bags once more than this many are registered.
const MAX_EMPTY: u32 = 16;

impl FreeIndex {
    /// Put a node under `key` (moving it if it is in the index already).
    #[inline]
    pub(crate) fn insert(&mut self, key: Key, node: u32) {
        let n = node as usize;
        if n >= self.pos.len() || self.pos[n] != ABSENT {
            if self.rekey_alone(key, node) {
                return;
            }
            self.make_absent(node);
        }
        let bag = match self.last {
            Some((k, b)) if k == key => b,
            _ => self.bag_for(key),
        };
        let nodes = &mut self.bags[bag as usize];
        if nodes.is_empty() {
            self.empty -= 1;
        }
        self.pos[n] = (bag, nodes.len() as u32);
        nodes.push(node);
    }

    /// Put the nodes of `placement` (`(node, _)` pairs), in order, under
    /// `key`: the same as inserting them one by one, with one bag lookup
    /// and one reservation for all when none is in the index yet (a job's
    /// nodes going back to the same shape when it ends).
    pub(crate) fn insert_all(&mut self, key: Key, placement: &[(u32, u32)]) {
        if placement.is_empty() {
            return;
        }
        let absent = placement
            .iter()
            .all(|&(node, _)| self.pos.get(node as usize) == Some(&ABSENT));
        if !absent {
            for &(node, _) in placement {
                self.insert(key, node);
            }
            return;
        }
        let bag = match self.last {
            Some((k, b)) if k == key => b,
            _ => self.bag_for(key),
        };
        let nodes = &mut self.bags[bag as usize];
        if nodes.is_empty() {
            self.empty -= 1;
        }
        let first = nodes.len() as u32;
        nodes.extend(placement.iter().map(|&(node, _)| node));
        for (at, &(node, _)) in (first..).zip(placement) {
            self.pos[node as usize] = (bag, at);
        }
    }

    /// Move a node that is alone in its bag to a shape not registered yet
    /// by giving the bag that shape (a pool of one counted node changes
    /// shape at every start and end): the same as taking it out and
    /// putting it back, without unregistering and registering a bag.
    /// Returns false, having changed nothing, when that does not apply.
    #[inline]
    fn rekey_alone(&mut self, key: Key, node: u32) -> bool {
        let Keys::Few(v) = &mut self.keys else {
            return false;
        };
        let Some(&(bag, _)) = self.pos.get(node as usize) else {
            return false;
        };
        if bag == u32::MAX || self.bags[bag as usize].len() != 1 {
            return false;
        }
        let old = self.bag_keys[bag as usize];
        let Ok(from) = v.binary_search_by(|(k, _)| k.cmp(&old)) else {
            return false;
        };
        // Most often the new shape sorts between the same neighbours (with
        // one node, there are none): the entry is rewritten in place.
        let after_prev = from == 0 || v[from - 1].0 < key;
        let before_next = v.get(from + 1).is_none_or(|&(k, _)| key < k);
        if after_prev && before_next {
            v[from] = (key, bag);
        } else {
            let Err(to) = v.binary_search_by(|(k, _)| k.cmp(&key)) else {
                return false;
            };
            // Slide the entry from `from` to where `key` sorts.
            if to > from {
                v[from..to].rotate_left(1);
                v[to - 1] = (key, bag);
            } else {
                v[to..=from].rotate_right(1);
                v[to] = (key, bag);
            }
        }
        self.bag_keys[bag as usize] = key;
        self.last = Some((key, bag));
        true
    }

    /// Make room for `node` in the position table and take it out of the
    /// index if it is there.
    fn make_absent(&mut self, node: u32) {
        let n = node as usize;
        if self.pos.len() <= n {
            self.pos.resize(n + 1, ABSENT);
        }
        self.remove(node);
    }

    /// The bag of `key`, registered if new; remembered as the last one.
    fn bag_for(&mut self, key: Key) -> u32 {
        let found = match &self.keys {
            Keys::Few(v) => v.binary_search_by(|(k, _)| k.cmp(&key)).map(|i| v[i].1),
            Keys::Many(m) => m.get(&key).copied().ok_or(0),
        };
        let b = match found {
            Ok(b) => b,
            Err(at) => {
                let b = match self.spare.pop() {
                    Some(b) => b,
                    None => {
                        self.bags.push(Vec::new());
                        self.bag_keys.push(key);
                        (self.bags.len() - 1) as u32
                    }
                };
                self.bag_keys[b as usize] = key;
                self.register(at, key, b);
                self.empty += 1;
                b
            }
        };
        self.last = Some((key, b));
        b
    }

    /// Register bag `b` under `key`, at position `at` of a `Vec` of keys.
    fn register(&mut self, at: usize, key: Key, b: u32) {
        match &mut self.keys {
            Keys::Few(v) if v.len() < FEW => v.insert(at, (key, b)),
            Keys::Few(v) => {
                let mut m: BTreeMap<Key, u32> = v.drain(..).collect();
                m.insert(key, b);
                self.keys = Keys::Many(m);
            }
            Keys::Many(m) => {
                m.insert(key, b);
            }
        }
    }

    /// A registered bag just emptied.
    #[inline]
    fn emptied(&mut self, bag: u32) {
        match &mut self.keys {
            Keys::Few(v) => {
                // Unregistered at once: cheap in a short `Vec`.
                let key = self.bag_keys[bag as usize];
                if let Ok(i) = v.binary_search_by(|(k, _)| k.cmp(&key)) {
                    v.remove(i);
                }
                self.spare.push(bag);
                if self.last.is_some_and(|(_, b)| b == bag) {
                    self.last = None;
                }
            }
            Keys::Many(_) => {
                self.empty += 1;
                if self.empty > MAX_EMPTY {
                    self.sweep();
                }
            }
        }
    }

    /// Take a node out of the index, wherever it is.
    #[inline(always)]
    pub(crate) fn remove(&mut self, node: u32) {
        let Some(&(bag, at)) = self.pos.get(node as usize) else {
            return;
        };
        if bag == u32::MAX {
            return;
        }
        self.pos[node as usize] = ABSENT;
        let nodes = &mut self.bags[bag as usize];
        // Nodes are taken from the back of a bag: usually `node` is last.
        let Some(tail) = nodes.pop() else {
            return;
        };
        if tail != node {
            nodes[at as usize] = tail;
            self.pos[tail as usize] = (bag, at);
        }
        if nodes.is_empty() {
            self.emptied(bag);
        }
    }

    /// Unregister every empty bag (of a B-tree of keys; back to a `Vec`
    /// if few are left).
    #[cold]
    fn sweep(&mut self) {
        let Keys::Many(m) = &mut self.keys else {
            return;
        };
        let bags = &self.bags;
        let spare = &mut self.spare;
        m.retain(|_, &mut b| {
            let keep = !bags[b as usize].is_empty();
            if !keep {
                spare.push(b);
            }
            keep
        });
        if m.len() <= FEW / 2 {
            self.keys = Keys::Few(std::mem::take(m).into_iter().collect());
        }
        self.empty = 0;
        self.last = None;
    }

    /// Shapes in order, each with its nodes.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Key, &[u32])> {
        let keys = match &self.keys {
            Keys::Few(v) => KeyIter::Few(v.iter()),
            Keys::Many(m) => KeyIter::Many(m.iter()),
        };
        keys.map(|(k, b)| (k, self.bags[b as usize].as_slice()))
            .filter(|(_, nodes)| !nodes.is_empty())
    }

    /// Total VM slots of shape `(cores, mem)`, stopping once `enough` is
    /// reached.
    pub(crate) fn count_slots(&self, cores: u32, mem: u64, enough: u64) -> u64 {
        let mut total = 0u64;
        for (&(_, fc, fm), nodes) in self.iter() {
            let s = slots(fc, fm, cores, mem);
            if s > 0 {
                total = total.saturating_add(s.saturating_mul(nodes.len() as u64));
                if total >= enough {
                    return total;
                }
            }
        }
        total
    }

    /// Free cores over all the nodes in the index.
    pub(crate) fn count_cores(&self) -> i64 {
        self.iter()
            .map(|(&(_, fc, _), nodes)| i64::from(fc) * nodes.len() as i64)
            .sum()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    pub(crate) fn clear(&mut self) {
        self.keys = Keys::default();
        self.bags.clear();
        self.bag_keys.clear();
        self.spare.clear();
        self.empty = 0;
        self.pos.clear();
        self.last = None;
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
        ix.remove(10);
        assert_eq!(ix.count_slots(2, 0, u64::MAX), 0);
        assert_eq!(ix.iter().count(), 1);
    }

    #[test]
    fn insert_all_is_the_same_as_inserting_one_by_one() {
        let key = (false, 1, 0);
        let mut a = FreeIndex::default();
        let mut b = FreeIndex::default();
        for ix in [&mut a, &mut b] {
            for n in 0..4 {
                ix.insert(key, n);
            }
            ix.insert((false, 2, 0), 9);
        }
        // All absent (one beyond the position table), then one present.
        for nodes in [&[(5, 1), (12, 1), (6, 1)][..], &[(7, 1), (9, 1), (8, 1)]] {
            a.insert_all(key, nodes);
            for &(n, _) in nodes {
                b.insert(key, n);
            }
            let shapes =
                |ix: &FreeIndex| ix.iter().map(|(k, n)| (*k, n.to_vec())).collect::<Vec<_>>();
            assert_eq!(shapes(&a), shapes(&b));
        }
        assert_eq!(a.count_slots(1, 0, u64::MAX), 10);
    }

    /// Bags in key order, each in swap-remove order: what the index must
    /// list, whichever form its keys are in.
    #[test]
    fn many_shapes_and_few_list_like_a_plain_map() {
        let mut ix = FreeIndex::default();
        let mut model: BTreeMap<Key, Vec<u32>> = BTreeMap::new();
        let mut at: Vec<Option<Key>> = vec![None; 200];
        let mut x = 7u64;
        for step in 0..30_000u32 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Phases of 80 shapes (the B-tree), 4, and 40 over 5 nodes
            // (nodes alone in their shape).
            let phase = (step / 2000) % 3;
            let (spread, nodes) = [(80, 200), (4, 200), (40, 5)][phase as usize];
            let node = ((x >> 33) % nodes) as u32;
            let shape = ((x >> 45) % spread) as u32;
            if let Some(k) = at[node as usize].take() {
                let bag = model.get_mut(&k).unwrap();
                let p = bag.iter().position(|&n| n == node).unwrap();
                bag.swap_remove(p);
                if bag.is_empty() {
                    model.remove(&k);
                }
            }
            if (x >> 20) % 4 == 0 {
                ix.remove(node);
            } else {
                let key = (shape % 2 == 0, shape, u64::from(shape) * 10);
                ix.insert(key, node);
                model.entry(key).or_default().push(node);
                at[node as usize] = Some(key);
            }
            let got: Vec<(Key, Vec<u32>)> = ix.iter().map(|(k, n)| (*k, n.to_vec())).collect();
            let want: Vec<(Key, Vec<u32>)> = model.iter().map(|(k, n)| (*k, n.clone())).collect();
            assert_eq!(got, want, "step {step}");
            if step % 2000 == 1999 {
                // Both forms were used.
                let many = matches!(ix.keys, Keys::Many(_));
                assert_eq!(many, phase == 0, "step {step}");
            }
        }
    }

    #[test]
    fn removal_keeps_positions_consistent() {
        let mut ix = FreeIndex::default();
        for n in 0..5 {
            ix.insert((false, 2, 0), n);
        }
        ix.remove(1);
        ix.remove(4);
        ix.insert((false, 1, 0), 4);
        let mut left: Vec<u32> = ix
            .iter()
            .next()
            .map(|(_, n)| n.to_vec())
            .unwrap_or_default();
        left.sort_unstable();
        assert_eq!(left, vec![4]);
        let mut two: Vec<u32> = ix
            .iter()
            .nth(1)
            .map(|(_, n)| n.to_vec())
            .unwrap_or_default();
        two.sort_unstable();
        assert_eq!(two, vec![0, 2, 3]);
        for n in [0, 2, 3, 4] {
            ix.remove(n);
        }
        assert!(ix.is_empty());
    }
}
