//! The node's kept VMs: the `persistent` and `save-restore` VM modes
//! (GridWay's persistent VMs and save/restore).
//!
//! A kept VM serves one job at a time and, between jobs, waits for the next
//! job of the same owner, image and VM shape ([`KeepKey`]): running
//! (`persistent`) or saved in a checkpoint (`save-restore`). This module is
//! the bookkeeping only (no IO except its state file); the QEMU driver does
//! the work. An entry goes
//!
//! ```text
//! (none) --claim--> Claimed --VM ready--> Busy --run ended--> Releasing
//!   Releasing --persistent--> Idle    --claim--> Claimed ...
//!   Releasing --saved-------> Saved   --claim--> Claimed ... (restored)
//!   Idle / Saved --idle timeout, or capacity needed--> (removed)
//! ```
//!
//! The state is written to a file (`kept.json`, versioned: see
//! [`crate::state`]) at every change so that a restarted agent finds its
//! kept VMs (and the units running in them) again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vgrid_model::{JobSpec, Mount, VmMode};

use crate::driver::Unit;
use crate::state::{self, StateError};

/// What a kept VM can serve: the jobs with this key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepKey {
    pub owner: String,
    pub mode: VmMode,
    pub image: String,
    pub cpus: u32,
    pub memory_mb: u64,
    /// Data repositories stay mounted in a kept VM, so they are part of
    /// what it is.
    pub mounts: Vec<Mount>,
    pub network: bool,
}

impl KeepKey {
    /// The key of a job, when its mode keeps VMs.
    pub fn of(owner: &str, spec: &JobSpec) -> Option<KeepKey> {
        if spec.mode == VmMode::StopStart || spec.vms != 1 {
            return None;
        }
        Some(KeepKey {
            owner: owner.to_string(),
            mode: spec.mode,
            image: spec.image.clone(),
            cpus: spec.cpus,
            memory_mb: spec.memory_mb,
            mounts: spec.mounts.clone(),
            network: true,
        })
    }
}

/// Where a kept VM stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum KeptState {
    /// Taken for `unit`; its VM is being booted, restored or given the run.
    Claimed { unit: Unit },
    /// Runs `unit`'s task as run `run`, whose frames begin at `out_offset`
    /// of the VM's `agent.out`.
    Busy {
        vm: String,
        unit: Unit,
        run: u64,
        out_offset: u64,
    },
    /// `unit`'s run ended; the VM goes back to the pool (or is being saved).
    Releasing { vm: String, unit: Unit },
    /// Running, waiting for a job.
    Idle { vm: String, since_ms: u64 },
    /// Saved in `checkpoint`; no QEMU runs.
    Saved { checkpoint: PathBuf, since_ms: u64 },
}

/// One kept VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: u64,
    pub key: KeepKey,
    pub state: KeptState,
    /// Checkpoints in its save chain (`save-restore`).
    pub saves: u32,
    /// VMs it has had (each restore is a new VM): names stay unique.
    pub generation: u32,
}

impl Entry {
    /// The name of the entry's current (or next) VM.
    pub fn vm_name(&self) -> String {
        format!("k{}-{}", self.id, self.generation)
    }

    /// The running VM, if any.
    pub fn vm(&self) -> Option<&str> {
        match &self.state {
            KeptState::Busy { vm, .. }
            | KeptState::Releasing { vm, .. }
            | KeptState::Idle { vm, .. } => Some(vm),
            KeptState::Claimed { .. } | KeptState::Saved { .. } => None,
        }
    }

    /// The unit it serves, if any.
    pub fn unit(&self) -> Option<Unit> {
        match &self.state {
            KeptState::Claimed { unit }
            | KeptState::Busy { unit, .. }
            | KeptState::Releasing { unit, .. } => Some(*unit),
            KeptState::Idle { .. } | KeptState::Saved { .. } => None,
        }
    }
}

/// What [`Pool::claim`] found for a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// A running VM, now the job's.
    Running { id: u64, vm: String },
    /// A saved VM, now the job's, to restore.
    Saved { id: u64, checkpoint: PathBuf },
    /// A VM of the key is still finishing another job: ask again shortly.
    Wait,
    /// Nothing to reuse: a new entry `id`, to boot.
    Fresh { id: u64 },
}

/// The kept VMs of the node.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Pool {
    next_id: u64,
    entries: Vec<Entry>,
}

impl Pool {
    /// The pool saved in `path`; empty when there is none yet.
    /// A pool of a newer version is refused (see [`crate::state`]).
    pub fn load(path: &Path) -> Result<Pool, StateError> {
        Ok(state::load(path)?.unwrap_or_default())
    }

    /// Writes the pool (temporary file, fsync, rename; see
    /// [`crate::state`]).
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        state::save(path, self)
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn get(&self, id: u64) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.id == id)
    }

    pub fn remove(&mut self, id: u64) -> Option<Entry> {
        let i = self.entries.iter().position(|e| e.id == id)?;
        Some(self.entries.remove(i))
    }

    /// The entry serving `unit`.
    pub fn of_unit(&self, unit: Unit) -> Option<&Entry> {
        self.entries.iter().find(|e| e.unit() == Some(unit))
    }

    /// Takes a kept VM of `key` for `unit`: a running one first, else the
    /// most recently saved one; waits for one that is finishing a job
    /// rather than booting a second; else starts a new entry.
    pub fn claim(&mut self, key: &KeepKey, unit: Unit) -> Claim {
        let mut best: Option<(usize, u64)> = None;
        let mut finishing = false;
        for (i, e) in self.entries.iter().enumerate() {
            if &e.key != key {
                continue;
            }
            // Running VMs first (rank 2), then saved, newest first.
            let rank = match &e.state {
                KeptState::Idle { since_ms, .. } => (1 << 62) + since_ms,
                KeptState::Saved { since_ms, .. } => *since_ms,
                KeptState::Releasing { .. } => {
                    finishing = true;
                    continue;
                }
                _ => continue,
            };
            if best.is_none_or(|(_, r)| rank > r) {
                best = Some((i, rank));
            }
        }
        if let Some((i, _)) = best {
            let e = &mut self.entries[i];
            let claim = match &e.state {
                KeptState::Idle { vm, .. } => Claim::Running {
                    id: e.id,
                    vm: vm.clone(),
                },
                KeptState::Saved { checkpoint, .. } => Claim::Saved {
                    id: e.id,
                    checkpoint: checkpoint.clone(),
                },
                // Only idle and saved entries are ranked.
                _ => return Claim::Wait,
            };
            e.state = KeptState::Claimed { unit };
            return claim;
        }
        if finishing {
            return Claim::Wait;
        }
        self.new_entry(key.clone(), KeptState::Claimed { unit })
    }

    /// A new entry in `state`.
    pub fn new_entry(&mut self, key: KeepKey, state: KeptState) -> Claim {
        self.next_id += 1;
        let id = self.next_id;
        self.entries.push(Entry {
            id,
            key,
            state,
            saves: 0,
            generation: 0,
        });
        Claim::Fresh { id }
    }

    /// Idle running VMs to stop so that `need` (cpus, MiB) fits next to
    /// `busy` on a node of `capacity`, oldest first; never `keep` (the VM
    /// the new job takes).
    pub fn to_evict(
        &self,
        need: (u64, u64),
        busy: (u64, u64),
        capacity: (u64, u64),
        keep: Option<u64>,
    ) -> Vec<u64> {
        let mut idle: Vec<(u64, u64, u64, u64)> = self
            .entries
            .iter()
            .filter(|e| Some(e.id) != keep)
            .filter_map(|e| match e.state {
                KeptState::Idle { since_ms, .. } => {
                    Some((since_ms, e.id, u64::from(e.key.cpus), e.key.memory_mb))
                }
                _ => None,
            })
            .collect();
        idle.sort();
        let (mut cpus, mut mem) = idle
            .iter()
            .fold((need.0 + busy.0, need.1 + busy.1), |(c, m), i| {
                (c + i.2, m + i.3)
            });
        let mut out = Vec::new();
        for (_, id, c, m) in idle {
            if cpus <= capacity.0 && mem <= capacity.1 {
                break;
            }
            out.push(id);
            cpus -= c;
            mem -= m;
        }
        out
    }

    /// Idle and saved entries untouched for at least `idle_ms`.
    pub fn expired(&self, now_ms: u64, idle_ms: u64) -> Vec<u64> {
        self.entries
            .iter()
            .filter(|e| match e.state {
                KeptState::Idle { since_ms, .. } | KeptState::Saved { since_ms, .. } => {
                    now_ms.saturating_sub(since_ms) >= idle_ms
                }
                _ => false,
            })
            .map(|e| e.id)
            .collect()
    }

    /// Resources of the running VMs that serve no job (cpus, MiB).
    pub fn idle_resources(&self) -> (u64, u64) {
        self.entries
            .iter()
            .filter(|e| matches!(e.state, KeptState::Idle { .. }))
            .fold((0, 0), |(c, m), e| {
                (c + u64::from(e.key.cpus), m + e.key.memory_mb)
            })
    }
}

/// The run id of a unit's task in a kept VM: unique per job attempt (the
/// attempt in the low 16 bits).
pub fn run_id(unit: Unit) -> u64 {
    (unit.job << 16) | u64::from(unit.attempt & 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(owner: &str, mode: VmMode) -> KeepKey {
        KeepKey {
            owner: owner.into(),
            mode,
            image: "tiny".into(),
            cpus: 1,
            memory_mb: 256,
            mounts: Vec::new(),
            network: true,
        }
    }

    fn unit(job: u64) -> Unit {
        Unit { job, attempt: 1 }
    }

    #[test]
    fn only_kept_modes_with_one_vm_have_a_key() {
        let spec = |extra: &str| {
            vgrid_jobfile::parse(
                "j.toml",
                &format!("image = \"tiny\"\ncommand = [\"true\"]\n{extra}"),
            )
            .expect("valid")
        };
        assert_eq!(KeepKey::of("alice", &spec("")), None);
        let k = KeepKey::of("alice", &spec("mode = \"persistent\"\n")).expect("kept");
        assert_eq!((k.owner.as_str(), k.mode), ("alice", VmMode::Persistent));
        assert_ne!(
            Some(k.clone()),
            KeepKey::of("bob", &spec("mode = \"persistent\"\n")),
            "owners never share a VM"
        );
        assert_ne!(
            Some(k),
            KeepKey::of("alice", &spec("mode = \"persistent\"\nmemory_mb = 512\n")),
            "nor do shapes"
        );
    }

    #[test]
    fn a_claim_takes_a_running_vm_of_the_key_first_then_the_newest_saved() {
        let mut pool = Pool::default();
        let alice = key("alice", VmMode::Persistent);
        let Claim::Fresh { id } = pool.claim(&alice, unit(1)) else {
            panic!("an empty pool has nothing to reuse");
        };
        pool.get_mut(id).unwrap().state = KeptState::Releasing {
            vm: "k1-0".into(),
            unit: unit(1),
        };
        assert_eq!(pool.claim(&alice, unit(2)), Claim::Wait);
        pool.get_mut(id).unwrap().state = KeptState::Idle {
            vm: "k1-0".into(),
            since_ms: 5,
        };
        // Another owner's job never gets it.
        assert!(matches!(
            pool.claim(&key("bob", VmMode::Persistent), unit(3)),
            Claim::Fresh { .. }
        ));
        assert_eq!(
            pool.claim(&alice, unit(2)),
            Claim::Running {
                id,
                vm: "k1-0".into()
            }
        );
        assert_eq!(pool.of_unit(unit(2)).map(|e| e.id), Some(id));

        let saved = key("carol", VmMode::SaveRestore);
        for (since, dir) in [(10, "/old"), (20, "/new")] {
            pool.new_entry(
                saved.clone(),
                KeptState::Saved {
                    checkpoint: dir.into(),
                    since_ms: since,
                },
            );
        }
        assert!(matches!(
            pool.claim(&saved, unit(4)),
            Claim::Saved { checkpoint, .. } if checkpoint == Path::new("/new")
        ));
    }

    #[test]
    fn eviction_stops_the_oldest_idle_vms_until_the_job_fits() {
        let mut pool = Pool::default();
        for since in [30, 10, 20] {
            pool.new_entry(
                key("a", VmMode::Persistent),
                KeptState::Idle {
                    vm: format!("v{since}"),
                    since_ms: since,
                },
            );
        }
        // 3 idle VMs of 1 CPU and 256 MiB; node of 4 CPUs and 1024 MiB.
        assert_eq!(pool.idle_resources(), (3, 768));
        assert!(pool.to_evict((1, 256), (0, 0), (4, 1024), None).is_empty());
        // One busy CPU more: the oldest idle VM (id 2, since 10) goes.
        assert_eq!(pool.to_evict((1, 256), (1, 0), (4, 1024), None), vec![2]);
        // The VM the job reuses is never stopped for it.
        assert_eq!(pool.to_evict((2, 256), (1, 0), (4, 1024), Some(2)), vec![3]);
        assert_eq!(
            pool.to_evict((3, 256), (1, 0), (4, 1024), Some(2)),
            vec![3, 1]
        );
    }

    #[test]
    fn idle_and_saved_entries_expire_busy_ones_never() {
        let mut pool = Pool::default();
        pool.new_entry(
            key("a", VmMode::Persistent),
            KeptState::Idle {
                vm: "v".into(),
                since_ms: 1_000,
            },
        );
        pool.new_entry(
            key("a", VmMode::SaveRestore),
            KeptState::Saved {
                checkpoint: "/c".into(),
                since_ms: 5_000,
            },
        );
        pool.new_entry(
            key("a", VmMode::Persistent),
            KeptState::Busy {
                vm: "w".into(),
                unit: unit(1),
                run: 65537,
                out_offset: 0,
            },
        );
        assert_eq!(pool.expired(10_000, 6_000), vec![1]);
        assert_eq!(pool.expired(11_000, 6_000), vec![1, 2]);
    }

    #[test]
    fn the_pool_survives_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kept.json");
        assert!(Pool::load(&path).unwrap().entries().is_empty());
        let mut pool = Pool::default();
        pool.claim(&key("a", VmMode::SaveRestore), unit(7));
        pool.save(&path).unwrap();
        let mut back = Pool::load(&path).unwrap();
        assert_eq!(back.entries(), pool.entries());
        assert_eq!(
            back.claim(&key("z", VmMode::Persistent), unit(9)),
            Claim::Fresh { id: 2 },
            "ids go on after a reload"
        );
        std::fs::write(&path, b"{not json").unwrap();
        let err = Pool::load(&path).unwrap_err();
        assert!(err.to_string().contains("kept.json"), "{err}");
    }

    #[test]
    fn run_ids_are_unique_per_attempt() {
        assert_eq!(run_id(Unit { job: 1, attempt: 1 }), 65537);
        assert_ne!(
            run_id(Unit { job: 1, attempt: 2 }),
            run_id(Unit { job: 2, attempt: 1 })
        );
    }
}
