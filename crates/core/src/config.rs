//! Scheduler configuration.

/// Which jobs may start when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Strict queue order: nothing starts before the first waiting job.
    Fcfs,
    /// EASY backfilling: the first waiting job gets a reservation at the
    /// earliest time it fits; later jobs may start now if they do not delay it.
    #[default]
    Easy,
    /// Conservative backfilling: every waiting job gets a reservation; a job
    /// may start early only if it delays no earlier reservation.
    Conservative,
}

/// What preemption does to a running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PreemptionMode {
    /// Jobs are killed and restart from zero; no checkpoints are taken at all
    /// (the behaviour of today's batch systems).
    Kill,
    /// Checkpointable jobs are checkpointed, requeued and later resume from
    /// the checkpoint; periodic checkpoints are taken. Jobs that are not
    /// checkpointable are killed.
    #[default]
    Checkpoint,
}

/// The time an operation on a VM's memory costs: `fixed_ms + ms_per_gb * GiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct CostModel {
    /// Fixed part, in ms.
    pub fixed_ms: u64,
    /// Per GiB of memory of one VM, in ms.
    pub ms_per_gb: u64,
}

impl CostModel {
    /// The cost for one VM of `memory_mb`. A job's VMs are checkpointed in
    /// parallel on their nodes, so this is also the cost for the whole job.
    pub fn cost_ms(&self, memory_mb: u64) -> u64 {
        self.fixed_ms
            .saturating_add(self.ms_per_gb.saturating_mul(memory_mb) / 1024)
    }
}

/// When a lending domain gets its nodes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum ReclaimPolicy {
    /// As soon as the lender needs them; the borrower's jobs there are
    /// preempted (the VioCluster prototype's policy).
    #[default]
    Immediate,
    /// A loan lasts `period_ms`; then the node goes back, whatever runs there.
    Lease {
        /// Length of every loan.
        period_ms: u64,
    },
    /// While the lender needs nodes, one node comes back per `every_ms`.
    Gradual {
        /// Time between two reclaimed nodes.
        every_ms: u64,
    },
}

/// A domain's machine broker (VioCluster).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BrokerConfig {
    /// How often the broker evaluates demand (the paper: hourly).
    pub interval_ms: u64,
    /// At most this fraction of the domain's idle nodes is out on loan at
    /// any time, counting the nodes already lent as idle (default 1/2).
    pub lend_fraction: f64,
    /// Whether this domain lends nodes to others.
    pub lend: bool,
    /// Whether this domain borrows nodes from others.
    pub borrow: bool,
    /// How this domain gets its lent nodes back.
    pub reclaim: ReclaimPolicy,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            interval_ms: 3_600_000,
            lend_fraction: 0.5,
            lend: true,
            borrow: true,
            reclaim: ReclaimPolicy::Immediate,
        }
    }
}

/// One domain: an autonomous cluster with its own nodes and queue.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DomainConfig {
    /// Shown, and visible to expressions as the node attribute `domain`.
    pub name: String,
    /// The domain's broker; `None` means it neither lends nor borrows.
    pub broker: Option<BrokerConfig>,
}

/// Everything the core needs to know before the first event.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    /// Backfilling policy, for every domain.
    pub policy: Policy,
    /// Kill or checkpoint on preemption.
    pub preemption: PreemptionMode,
    /// Cost of checkpointing one VM (the job is paused meanwhile).
    pub checkpoint_cost: CostModel,
    /// Cost of restoring one VM from a checkpoint.
    pub restore_cost: CostModel,
    /// The domains; `DomainId(i)` is `domains[i]`. At least one.
    pub domains: Vec<DomainConfig>,
    /// Keep finished jobs queryable until [`crate::Scheduler::forget`];
    /// the simulator turns this off to bound memory.
    pub keep_finished_jobs: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            policy: Policy::Easy,
            preemption: PreemptionMode::Checkpoint,
            checkpoint_cost: CostModel::default(),
            restore_cost: CostModel::default(),
            domains: vec![DomainConfig {
                name: "default".to_owned(),
                broker: None,
            }],
            keep_finished_jobs: true,
        }
    }
}

impl Config {
    /// The default configuration with another policy.
    pub fn with_policy(policy: Policy) -> Config {
        Config {
            policy,
            ..Config::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_model_adds_fixed_and_per_gb() {
        let c = CostModel {
            fixed_ms: 2_000,
            ms_per_gb: 1_000,
        };
        assert_eq!(c.cost_ms(0), 2_000);
        assert_eq!(c.cost_ms(2048), 4_000);
        assert_eq!(c.cost_ms(512), 2_500);
        assert_eq!(CostModel::default().cost_ms(u64::MAX), 0);
    }
}
