//! What the driver tells the core about nodes and jobs.

use std::collections::{BTreeMap, BTreeSet};

use vgrid_expr::{AttrValue, Expr};

use crate::types::{DomainId, JobId, NodeId, Time};

/// A node (a machine that can run VMs), as announced by [`crate::Event::NodeUp`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeSpec {
    /// Chosen by the driver; unique.
    pub id: NodeId,
    /// A human name; expressions see it as `name`.
    pub name: String,
    /// The domain that owns the node.
    pub domain: DomainId,
    /// Cores available to VMs.
    pub cores: u32,
    /// Memory available to VMs, in MiB.
    pub memory_mb: u64,
    /// Labels and other attributes for requirement and rank expressions.
    /// The built-in names (`cores`, `memory_mb`, `free_cores`,
    /// `free_memory_mb`, `name`, `domain`, `borrowed`) take precedence.
    #[serde(default)]
    pub attrs: BTreeMap<String, AttrValue>,
    /// The images the node holds: jobs that boot one of them prefer it.
    #[serde(default)]
    pub images: BTreeSet<String>,
}

impl NodeSpec {
    /// A node with no labels.
    pub fn new(id: NodeId, domain: DomainId, cores: u32, memory_mb: u64) -> NodeSpec {
        NodeSpec {
            id,
            name: format!("n{}", id.0),
            domain,
            cores,
            memory_mb,
            attrs: BTreeMap::new(),
            images: BTreeSet::new(),
        }
    }
}

/// A job's class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Class {
    /// An ordinary batch job: queued by priority, scheduled by the policy.
    Normal,
    /// Runs only on capacity no normal job can use now; preempted
    /// (checkpointed, or killed) when a normal or reservation job needs it.
    BestEffort,
    /// An advance reservation of the fixed window `[start, end)`: started at
    /// `start` (capacity is kept for it), ended with a kill at `end`.
    Reservation {
        /// When the job starts.
        start: Time,
        /// When the job is ended if it is still running.
        end: Time,
    },
}

/// A job: one or more identical VMs that run together.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobRequest {
    /// Chosen by the driver; unique for the core's lifetime.
    pub id: JobId,
    /// Who submitted it (shown, not interpreted).
    pub user: String,
    /// The domain whose queue it joins.
    pub domain: DomainId,
    /// Normal, best-effort or reservation.
    pub class: Class,
    /// Higher runs first within a class.
    pub priority: i32,
    /// Number of VMs (at least 1). In the simulator, the SWF processor count.
    pub vms: u32,
    /// Cores per VM (at least 1).
    pub cores_per_vm: u32,
    /// Memory per VM in MiB (may be 0 in simulations that ignore memory).
    pub memory_mb_per_vm: u64,
    /// The user's run-time estimate in ms; used for backfilling. The job is
    /// not killed when it runs longer (except a reservation at its `end`).
    pub walltime_ms: u64,
    /// Nodes must make this `true` to host one of the job's VMs.
    pub requirements: Option<Expr>,
    /// Among matching nodes, higher rank is preferred.
    pub rank: Option<Expr>,
    /// Whether the job's VMs can be checkpointed and resumed.
    pub checkpointable: bool,
    /// Periodic checkpoint interval (work time, ms), if any.
    pub checkpoint_interval_ms: Option<u64>,
    /// The image the job's VMs boot: among nodes of equal rank, those that
    /// hold it come first (a node without it must fetch it first).
    #[serde(default)]
    pub image: Option<String>,
}

impl JobRequest {
    /// A normal job of `vms` one-core VMs without memory, requirements or
    /// checkpoints: the shape of an SWF job in the simulator.
    pub fn simple(id: JobId, vms: u32, walltime_ms: u64) -> JobRequest {
        JobRequest {
            id,
            user: String::new(),
            domain: DomainId(0),
            class: Class::Normal,
            priority: 0,
            vms,
            cores_per_vm: 1,
            memory_mb_per_vm: 0,
            walltime_ms,
            requirements: None,
            rank: None,
            checkpointable: false,
            checkpoint_interval_ms: None,
            image: None,
        }
    }

    /// Total cores over all VMs.
    pub fn total_cores(&self) -> u64 {
        u64::from(self.vms) * u64::from(self.cores_per_vm)
    }

    /// Total memory over all VMs, in MiB.
    pub fn total_memory_mb(&self) -> u64 {
        u64::from(self.vms).saturating_mul(self.memory_mb_per_vm)
    }
}
