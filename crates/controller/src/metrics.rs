//! The controller's metrics: what is counted as it happens (commands,
//! scheduling passes, commits, checkpoints, restores, queue waits) and
//! what is read from the job book at each scrape (CPUs, nodes and jobs by
//! state, per user). Names follow prometheus-slurm-exporter's with a
//! `vgrid_` prefix, so that boards made for Slurm work; the text is
//! written by `prometheus-client` (OpenMetrics).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use vgrid_model::JobState;

use crate::book::JobBook;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UserLabel {
    user: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every series the controller exports. Instruments are shared handles:
/// the registry holds clones of them. (Help texts have no final stop: the
/// encoder adds one.)
pub(crate) struct Metrics {
    registry: Registry,
    // ---- Counted as it happens ----
    pub commands: Counter,
    pub committed_changes: Counter,
    /// Seconds of each scheduling pass (the scheduler's cycle).
    pub pass_seconds: Histogram,
    /// Seconds of each commit (one transaction, fsync included).
    pub commit_seconds: Histogram,
    /// Seconds from a checkpoint's request to its report, as the agent
    /// measured it (pause, save and upload).
    pub checkpoint_seconds: Histogram,
    /// Bytes a checkpoint sent to the store (what it did not hold yet).
    pub checkpoint_bytes: Histogram,
    /// Seconds an agent took to restore a job's VMs from a checkpoint.
    pub restore_seconds: Histogram,
    /// Seconds a job waited from becoming eligible (submission, release
    /// or requeue) to its start.
    pub queue_wait_seconds: Histogram,
    last_cycle: FloatGauge,
    cycles: Counter,
    /// Passes and their total seconds, for the mean.
    passes: u64,
    pass_sum: f64,
    // ---- Read from the book at each scrape ----
    mean_cycle: FloatGauge,
    queue_size: Gauge,
    illegal: Counter,
    /// The book's count at the last scrape (the book restarts from 0 when
    /// it is rebuilt from the database).
    illegal_seen: AtomicU64,
    cpus: [Gauge; 4],
    nodes: [Gauge; 6],
    queue: Vec<(JobState, Gauge)>,
    user_pending: Family<UserLabel, Gauge>,
    user_running: Family<UserLabel, Gauge>,
    user_cpus: Family<UserLabel, Gauge>,
}

/// CPU series, in the order of [`Metrics::cpus`].
const CPU_SERIES: [(&str, &str); 4] = [
    ("cpus_alloc", "CPUs of up nodes that jobs use"),
    ("cpus_idle", "CPUs of up nodes that no job uses"),
    ("cpus_other", "CPUs of nodes that are lost or drained"),
    ("cpus_total", "CPUs of all known nodes"),
];

/// Node series, in the order of [`Metrics::nodes`].
const NODE_SERIES: [(&str, &str); 6] = [
    ("nodes_alloc", "Up nodes whose CPUs are all in use"),
    ("nodes_idle", "Up nodes that run nothing"),
    ("nodes_mix", "Up nodes whose CPUs are partly in use"),
    ("nodes_down", "Nodes lost (their agent fell silent)"),
    ("nodes_drain", "Nodes drained (taking no new jobs)"),
    ("nodes_total", "All known nodes"),
];

/// The `vgrid_queue_*` name of a state: Slurm's words where Slurm has the
/// state (`completed` for done, `completing` for staging-out).
fn queue_name(state: JobState) -> String {
    match state {
        JobState::Done => "completed".into(),
        JobState::StagingOut => "completing".into(),
        other => other.as_str().replace('-', "_"),
    }
}

/// Waiting for a start, as a user counts it (held jobs included).
fn counts_as_pending(state: JobState) -> bool {
    matches!(
        state,
        JobState::Pending | JobState::Held | JobState::Preempted
    )
}

/// On nodes and not paused.
fn counts_as_running(state: JobState) -> bool {
    matches!(
        state,
        JobState::Staging
            | JobState::Booting
            | JobState::Running
            | JobState::Checkpointing
            | JobState::Migrating
            | JobState::StagingOut
    )
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("vgrid");
        let commands = Counter::default();
        registry.register("commands", "Commands received", commands.clone());
        let committed_changes = Counter::default();
        registry.register(
            "committed_changes",
            "Changes written, all transactions",
            committed_changes.clone(),
        );
        let illegal = Counter::default();
        registry.register(
            "illegal_transitions",
            "Job state changes the lifecycle refused (a bug when above 0)",
            illegal.clone(),
        );

        // 100 µs to about 6.5 s.
        let fast = || Histogram::new(exponential_buckets(0.0001, 2.0, 17));
        let pass_seconds = fast();
        registry.register_with_unit(
            "scheduling_pass",
            "Duration of each scheduling pass",
            Unit::Seconds,
            pass_seconds.clone(),
        );
        let commit_seconds = fast();
        registry.register_with_unit(
            "commit",
            "Duration of each database transaction, fsync included",
            Unit::Seconds,
            commit_seconds.clone(),
        );
        // 0.25 s to about 68 min.
        let slow = || Histogram::new(exponential_buckets(0.25, 2.0, 15));
        let checkpoint_seconds = slow();
        registry.register_with_unit(
            "checkpoint",
            "Duration of each checkpoint as its node measured it (pause, save, upload)",
            Unit::Seconds,
            checkpoint_seconds.clone(),
        );
        // 64 KiB to 1 TiB.
        let checkpoint_bytes = Histogram::new(exponential_buckets(65536.0, 4.0, 13));
        registry.register_with_unit(
            "checkpoint",
            "Bytes each checkpoint sent to the store (chunks it lacked)",
            Unit::Bytes,
            checkpoint_bytes.clone(),
        );
        let restore_seconds = slow();
        registry.register_with_unit(
            "restore",
            "Duration of each restore of a job's VMs from a checkpoint",
            Unit::Seconds,
            restore_seconds.clone(),
        );
        // 1 s to about 12 days.
        let queue_wait_seconds = Histogram::new(exponential_buckets(1.0, 4.0, 11));
        registry.register_with_unit(
            "queue_wait",
            "Time from a job's eligibility (submission, release, requeue) to its start",
            Unit::Seconds,
            queue_wait_seconds.clone(),
        );

        let last_cycle = FloatGauge::default();
        registry.register_with_unit(
            "scheduler_last_cycle",
            "Duration of the last scheduling pass",
            Unit::Seconds,
            last_cycle.clone(),
        );
        let mean_cycle = FloatGauge::default();
        registry.register_with_unit(
            "scheduler_mean_cycle",
            "Mean duration of the scheduling passes since the controller started",
            Unit::Seconds,
            mean_cycle.clone(),
        );
        let cycles = Counter::default();
        registry.register(
            "scheduler_cycles",
            "Scheduling passes since the controller started",
            cycles.clone(),
        );
        let queue_size = Gauge::default();
        registry.register(
            "scheduler_queue_size",
            "Jobs waiting for a start (pending, preempted, migrating)",
            queue_size.clone(),
        );

        let cpus: [Gauge; 4] = Default::default();
        for ((name, help), g) in CPU_SERIES.iter().zip(&cpus) {
            registry.register(*name, *help, g.clone());
        }
        let nodes: [Gauge; 6] = Default::default();
        for ((name, help), g) in NODE_SERIES.iter().zip(&nodes) {
            registry.register(*name, *help, g.clone());
        }
        let queue: Vec<(JobState, Gauge)> = JobState::ALL
            .iter()
            .map(|s| (*s, Gauge::default()))
            .collect();
        for (state, g) in &queue {
            registry.register(
                format!("queue_{}", queue_name(*state)),
                format!("Jobs in state {state}"),
                g.clone(),
            );
        }
        let user_pending = Family::<UserLabel, Gauge>::default();
        registry.register(
            "user_jobs_pending",
            "Each user's jobs waiting for a start (held ones included)",
            user_pending.clone(),
        );
        let user_running = Family::<UserLabel, Gauge>::default();
        registry.register(
            "user_jobs_running",
            "Each user's jobs on nodes (suspended ones excluded)",
            user_running.clone(),
        );
        let user_cpus = Family::<UserLabel, Gauge>::default();
        registry.register(
            "user_cpus_running",
            "CPUs of each user's jobs on nodes (suspended ones excluded)",
            user_cpus.clone(),
        );
        Metrics {
            registry,
            commands,
            committed_changes,
            pass_seconds,
            commit_seconds,
            checkpoint_seconds,
            checkpoint_bytes,
            restore_seconds,
            queue_wait_seconds,
            last_cycle,
            mean_cycle,
            queue_size,
            illegal,
            illegal_seen: AtomicU64::new(0),
            cpus,
            nodes,
            queue,
            user_pending,
            user_running,
            user_cpus,
            cycles,
            passes: 0,
            pass_sum: 0.0,
        }
    }

    /// Records a scheduling pass.
    pub(crate) fn observe_pass(&mut self, seconds: f64) {
        self.passes += 1;
        self.pass_sum += seconds;
        self.pass_seconds.observe(seconds);
        self.last_cycle.set(seconds);
        self.cycles.inc();
    }

    /// Reads the book into the scrape-time series and writes every series.
    pub(crate) fn render(&self, book: &JobBook) -> String {
        self.read_book(book);
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn read_book(&self, book: &JobBook) {
        self.mean_cycle.set(if self.passes == 0 {
            0.0
        } else {
            self.pass_sum / self.passes as f64
        });
        let illegal = book.illegal_transitions();
        let seen = self.illegal_seen.swap(illegal, Ordering::Relaxed);
        // A rebuilt book counts from 0 again.
        self.illegal.inc_by(if illegal >= seen {
            illegal - seen
        } else {
            illegal
        });

        let (mut alloc, mut idle, mut other, mut total) = (0i64, 0i64, 0i64, 0i64);
        let mut nodes = [0i64; 6];
        for n in book.node_views() {
            let cpus = i64::from(n.cpus);
            let free = i64::from(n.free_cpus);
            total += cpus;
            nodes[5] += 1;
            match n.state.as_str() {
                "up" => {
                    alloc += cpus - free;
                    idle += free;
                    let slot = if free == 0 && cpus > 0 {
                        0
                    } else if free == cpus {
                        1
                    } else {
                        2
                    };
                    nodes[slot] += 1;
                }
                "drained" => {
                    other += cpus;
                    nodes[4] += 1;
                }
                _ => {
                    other += cpus;
                    nodes[3] += 1;
                }
            }
        }
        for (g, v) in self.cpus.iter().zip([alloc, idle, other, total]) {
            g.set(v);
        }
        for (g, v) in self.nodes.iter().zip(nodes) {
            g.set(v);
        }

        let mut by_state: HashMap<JobState, i64> = HashMap::new();
        // (pending, running, running CPUs) per owner id.
        let mut per_user: HashMap<u64, (i64, i64, i64)> = HashMap::new();
        let mut waiting = 0i64;
        for j in book.jobs() {
            let state = j.rec.state;
            *by_state.entry(state).or_default() += 1;
            if crate::book::lifecycle::is_waiting(state) {
                waiting += 1;
            }
            if counts_as_pending(state) {
                per_user.entry(j.rec.owner).or_default().0 += 1;
            } else if counts_as_running(state) {
                let u = per_user.entry(j.rec.owner).or_default();
                u.1 += 1;
                u.2 += i64::from(j.rec.spec.cpus) * i64::from(j.rec.spec.vms);
            }
        }
        for (state, g) in &self.queue {
            g.set(by_state.get(state).copied().unwrap_or(0));
        }
        self.queue_size.set(waiting);

        // Every user and admin gets a series, 0 when they have no jobs:
        // a board sees a user's first job as a change, not an appearance.
        self.user_pending.clear();
        self.user_running.clear();
        self.user_cpus.clear();
        for u in book.users.by_id.values() {
            if u.role == vgrid_model::Role::Agent {
                continue;
            }
            let (pending, running, cpus) = per_user.get(&u.id).copied().unwrap_or_default();
            let label = UserLabel {
                user: u.name.clone(),
            };
            self.user_pending.get_or_create(&label).set(pending);
            self.user_running.get_or_create(&label).set(running);
            self.user_cpus.get_or_create(&label).set(cpus);
        }
    }
}
