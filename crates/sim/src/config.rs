//! What a simulation run is: the domains with their workloads, the policy,
//! and the models of costs, best-effort jobs, failures and trading.

use vgrid_core::{BrokerConfig, CostModel, Policy, PreemptionMode};
use vgrid_swf::Workload;

/// One domain: a name, its workload (jobs in arrival order) and its machine.
#[derive(Debug, Clone)]
pub struct DomainInput {
    /// Shown in output.
    pub name: String,
    /// The jobs and the machine size (`workload.machine_procs` one-core
    /// nodes).
    pub workload: Workload,
}

/// Which jobs get periodic checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckpointJobs {
    /// Only best-effort jobs (the ones that get preempted).
    #[default]
    BestEffort,
    /// Every job (protects normal jobs against node failures too).
    All,
}

/// Seeded node failures: each node fails without notice after an
/// exponentially distributed time with mean `mtbf_ms`, and comes back
/// `repair_ms` later.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Failures {
    /// Mean time between failures of one node.
    pub mtbf_ms: f64,
    /// Time from a failure to the node's return.
    pub repair_ms: u64,
}

/// Machine trading between the domains (VioCluster).
#[derive(Debug, Clone, PartialEq)]
pub struct Trade {
    /// Every domain's broker.
    pub broker: BrokerConfig,
    /// Time to boot the borrower's VM on a lent node.
    pub boot_ms: u64,
    /// Time to halt it when the node goes back.
    pub halt_ms: u64,
    /// Jobs on borrowed nodes run in VMs and are this much slower, per
    /// mille (VioCluster measured 15% for HPL: 150).
    pub borrowed_slowdown_permille: u64,
}

/// Everything about a run except the workloads.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Backfilling policy.
    pub policy: Policy,
    /// Conservative backfilling: reservations only for the first N waiting
    /// jobs per pass (`None`: all, exact but slow with long queues).
    pub conservative_depth: Option<u32>,
    /// What preemption does: kill (work lost) or checkpoint.
    pub preemption: PreemptionMode,
    /// Share of jobs (chosen with the seed) that run as best-effort.
    pub best_effort_share: f64,
    /// Periodic checkpoint interval (work time), if any.
    pub checkpoint_interval_ms: Option<u64>,
    /// Which jobs get periodic checkpoints.
    pub checkpoint_jobs: CheckpointJobs,
    /// Cost of a checkpoint of one VM.
    pub checkpoint_cost: CostModel,
    /// Cost of a restore of one VM.
    pub restore_cost: CostModel,
    /// Memory per VM (processor) when the trace gives none, MiB.
    pub default_mem_mb: u64,
    /// Node failures, if any.
    pub failures: Option<Failures>,
    /// Machine trading, if any (needs two or more domains).
    pub trade: Option<Trade>,
    /// Seed of every random choice.
    pub seed: u64,
    /// Time between two samples of the time series; `None` picks about
    /// 2000 samples over the trace, rounded to whole hours.
    pub sample_interval_ms: Option<u64>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            policy: Policy::Easy,
            conservative_depth: None,
            preemption: PreemptionMode::Checkpoint,
            best_effort_share: 0.0,
            checkpoint_interval_ms: None,
            checkpoint_jobs: CheckpointJobs::BestEffort,
            checkpoint_cost: CostModel {
                fixed_ms: 2_000,
                ms_per_gb: 8_000,
            },
            restore_cost: CostModel {
                fixed_ms: 2_000,
                ms_per_gb: 8_000,
            },
            default_mem_mb: 1024,
            failures: None,
            trade: None,
            seed: 1,
            sample_interval_ms: None,
        }
    }
}
