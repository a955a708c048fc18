//! Property tests on random clusters, workloads and failures, driven by the
//! deterministic harness.

use std::collections::HashMap;

use proptest::prelude::*;

use crate::harness::Harness;
use crate::{
    Class, Config, CostModel, Event, Expr, JobId, JobPhase, JobRequest, NodeId, NodeSpec, Policy,
    PreemptionMode, Time, WaitReason,
};

#[derive(Debug, Clone)]
struct GenJob {
    submit: u64,
    vms: u32,
    cores: u32,
    mem: u64,
    walltime: u64,
    /// True run time as a fraction of the estimate, in percent.
    run_pct: u64,
    class: u8,
    priority: i32,
    checkpointable: bool,
    interval: Option<u64>,
    picky: bool,
}

#[derive(Debug, Clone)]
enum Disturbance {
    Lost(u32),
    Down(u32),
    Up(u32),
    Cancel(u64),
    Hold(u64),
    Release(u64),
    /// The job's VMs die while its nodes live on.
    JobLost(u64),
    /// A user moves the job (to a node, or away from its nodes).
    Move(u64, Option<u32>),
    /// A user's checkpoint of the job was saved (instantly).
    CheckpointTaken(u64),
}

impl Disturbance {
    fn event(&self, node_up: impl Fn(u32) -> NodeSpec) -> Event {
        match *self {
            Disturbance::Lost(n) => Event::NodeLost { node: NodeId(n) },
            Disturbance::Down(n) => Event::NodeDown { node: NodeId(n) },
            Disturbance::Up(n) => Event::NodeUp(node_up(n)),
            Disturbance::Cancel(j) => Event::Cancel { job: JobId(j) },
            Disturbance::Hold(j) => Event::Hold { job: JobId(j) },
            Disturbance::Release(j) => Event::Release { job: JobId(j) },
            Disturbance::JobLost(j) => Event::JobLost { job: JobId(j) },
            Disturbance::Move(j, to) => Event::Move {
                job: JobId(j),
                to: to.map(NodeId),
            },
            Disturbance::CheckpointTaken(j) => Event::CheckpointTaken {
                job: JobId(j),
                paused_ms: 0,
            },
        }
    }
}

#[derive(Debug, Clone)]
struct Scenario {
    policy: Policy,
    mode: PreemptionMode,
    nodes: Vec<(u32, u64, bool)>,
    jobs: Vec<GenJob>,
    events: Vec<(u64, Disturbance)>,
    boot_ms: u64,
    checkpoint_ms: u64,
    /// Conservative backfilling's depth limit, if any.
    depth: Option<u32>,
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        Just(Policy::Fcfs),
        Just(Policy::Easy),
        Just(Policy::Conservative)
    ]
}

fn gen_job(one_core: bool) -> impl Strategy<Value = GenJob> {
    (
        0u64..2_000,
        1u32..5,
        if one_core { 1u32..2 } else { 1u32..3 },
        prop_oneof![Just(0u64), 256u64..2048],
        1u64..1_000,
        10u64..150,
        0u8..10,
        0i32..3,
        any::<bool>(),
        prop_oneof![Just(None), (20u64..300).prop_map(Some)],
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(submit, vms, cores, mem, walltime, run_pct, class, priority, ck, interval, picky)| {
                GenJob {
                    submit,
                    vms,
                    cores,
                    mem,
                    walltime,
                    run_pct,
                    class,
                    priority,
                    checkpointable: ck,
                    interval,
                    picky,
                }
            },
        )
}

fn disturbance(jobs: u64, nodes: u32) -> impl Strategy<Value = (u64, Disturbance)> {
    (
        0u64..4_000,
        prop_oneof![
            (0..nodes).prop_map(Disturbance::Lost),
            (0..nodes).prop_map(Disturbance::Down),
            (0..nodes).prop_map(Disturbance::Up),
            (0..jobs).prop_map(Disturbance::Cancel),
            (0..jobs).prop_map(Disturbance::Hold),
            (0..jobs).prop_map(Disturbance::Release),
            (0..jobs).prop_map(Disturbance::JobLost),
            (0..jobs, prop_oneof![Just(None), (0..nodes).prop_map(Some)])
                .prop_map(|(j, to)| Disturbance::Move(j, to)),
            (0..jobs).prop_map(Disturbance::CheckpointTaken),
        ],
    )
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (1usize..6, 1usize..20).prop_flat_map(|(n_nodes, n_jobs)| {
        (
            policy(),
            prop_oneof![Just(PreemptionMode::Kill), Just(PreemptionMode::Checkpoint)],
            prop::collection::vec((1u32..5, 2048u64..8192, any::<bool>()), n_nodes),
            prop::collection::vec(gen_job(false), n_jobs),
            prop::collection::vec(disturbance(n_jobs as u64, n_nodes as u32), 0..6),
            0u64..20,
            1u64..30,
            prop_oneof![Just(None), (1u32..4).prop_map(Some)],
        )
            .prop_map(
                |(policy, mode, nodes, jobs, events, boot_ms, checkpoint_ms, depth)| Scenario {
                    policy,
                    mode,
                    nodes,
                    jobs,
                    events,
                    boot_ms,
                    checkpoint_ms,
                    depth,
                },
            )
    })
}

fn spec_of(i: usize, g: &GenJob) -> JobRequest {
    let mut j = JobRequest::simple(JobId(i as u64), g.vms, g.walltime);
    j.cores_per_vm = g.cores;
    j.memory_mb_per_vm = g.mem;
    j.priority = g.priority;
    j.checkpointable = g.checkpointable;
    j.checkpoint_interval_ms = g.interval;
    j.class = match g.class {
        0..=5 => Class::Normal,
        6..=8 => Class::BestEffort,
        _ => Class::Reservation {
            start: Time(g.submit + 50),
            end: Time(g.submit + 50 + g.walltime),
        },
    };
    if g.picky {
        j.requirements = Some(Expr::parse("gpu == true").unwrap_or_else(|e| panic!("{e}")));
    }
    j
}

fn build(sc: &Scenario) -> Harness {
    let mut cfg = Config::with_policy(sc.policy);
    cfg.preemption = sc.mode;
    cfg.checkpoint_cost = CostModel {
        fixed_ms: sc.checkpoint_ms,
        ms_per_gb: 0,
    };
    cfg.restore_cost = CostModel {
        fixed_ms: sc.boot_ms,
        ms_per_gb: 0,
    };
    let mut h = Harness::new(cfg);
    h.costs.boot_ms = sc.boot_ms;
    h.costs.restore_ms = sc.boot_ms;
    h.costs.checkpoint_ms = sc.checkpoint_ms;
    h.s.set_conservative_depth(sc.depth);
    for (i, &(cores, mem, gpu)) in sc.nodes.iter().enumerate() {
        let mut spec = NodeSpec::new(NodeId(i as u32), crate::DomainId(0), cores, mem);
        spec.attrs.insert("gpu".into(), gpu.into());
        h.at(0, Event::NodeUp(spec));
    }
    for (i, g) in sc.jobs.iter().enumerate() {
        let work = (g.walltime * g.run_pct / 100).max(1);
        h.submit(g.submit, spec_of(i, g), work);
    }
    for (t, d) in &sc.events {
        let ev = d.event(|n| {
            let (cores, mem, gpu) = sc.nodes[n as usize];
            let mut spec = NodeSpec::new(NodeId(n), crate::DomainId(0), cores, mem);
            spec.attrs.insert("gpu".into(), gpu.into());
            spec
        });
        h.at(*t, ev);
    }
    h
}

/// Checks that must hold after every step.
fn check_step(h: &Harness, sc: &Scenario, progress: &mut HashMap<JobId, u64>) {
    // No node runs more than it has (as the fake cluster sees it).
    let mut used: HashMap<NodeId, (u64, u64)> = HashMap::new();
    for vms in h.occupancy.values() {
        for &(node, k, cores, mem) in vms {
            let u = used.entry(node).or_default();
            u.0 += u64::from(k) * u64::from(cores);
            u.1 += u64::from(k) * mem;
        }
    }
    for (node, (c, m)) in used {
        let (cores, mem, _) = sc.nodes[node.0 as usize];
        assert!(
            c <= u64::from(cores) && m <= mem,
            "{node} over-committed at {}: {c} cores / {m} MiB of {cores} / {mem}",
            h.now
        );
    }
    for id in h.s.job_ids() {
        let Some(v) = h.s.job(id) else { continue };
        // Saved progress never goes down.
        let last = progress.entry(id).or_insert(0);
        assert!(
            v.saved_progress_ms >= *last,
            "{id} progress went down at {}",
            h.now
        );
        *last = v.saved_progress_ms;
        // Every waiting job has a reason that fits its class.
        if let JobPhase::Pending { reason } = v.state {
            let ok = match (v.class, reason) {
                (_, WaitReason::New) => false,
                (_, WaitReason::Held | WaitReason::Requirements | WaitReason::TooLarge) => true,
                (_, WaitReason::Vacating) => true,
                (Class::BestEffort, r) => r == WaitReason::BestEffortNoIdle,
                (Class::Normal, r) => matches!(r, WaitReason::Priority | WaitReason::Resources),
                (Class::Reservation { .. }, r) => {
                    matches!(r, WaitReason::Reservation | WaitReason::Resources)
                }
            };
            assert!(ok, "{id} ({:?}) waits with reason {reason:?}", v.class);
        }
    }
}

fn run_checked(sc: &Scenario) -> Harness {
    let mut h = build(sc);
    let mut progress = HashMap::new();
    for _ in 0..20_000 {
        if !h.step() {
            break;
        }
        check_step(&h, sc, &mut progress);
    }
    h
}

proptest! {

    /// No over-commit, monotone progress, a fitting reason for every
    /// waiting job; at the end nothing is stuck; work lost per failure is
    /// within the checkpoint interval.
    #[test]
    fn invariants_hold_on_random_workloads(sc in scenario()) {
        let mut h = run_checked(&sc);
        prop_assert!(!h.step(), "harness should be idle");
        for id in h.s.job_ids() {
            let v = h.s.job(id).unwrap_or_else(|| panic!("{id}"));
            let stuck = match v.state {
                JobPhase::Done { .. } => false,
                JobPhase::Pending { reason } => !matches!(
                    reason,
                    WaitReason::Held | WaitReason::TooLarge | WaitReason::Requirements
                ),
                _ => true,
            };
            prop_assert!(!stuck, "{id} stuck in {:?}", v.state);
        }
        if sc.mode == PreemptionMode::Checkpoint {
            for (id, losses) in &h.lost {
                let g = &sc.jobs[id.0 as usize];
                if let (true, Some(interval)) = (g.checkpointable, g.interval) {
                    for &l in losses {
                        prop_assert!(l <= interval, "{id} lost {l} > interval {interval}");
                    }
                }
            }
        }
    }

    /// Same inputs, same outputs.
    #[test]
    fn deterministic(sc in scenario()) {
        let a = build(&sc);
        let b = build(&sc);
        let (mut a, mut b) = (a, b);
        a.run(20_000);
        b.run(20_000);
        prop_assert_eq!(&a.log, &b.log);
    }

    /// The fast EASY and FCFS paths decide exactly like the general
    /// profile-based path.
    #[test]
    fn fast_paths_match_the_profile_path(mut sc in scenario()) {
        if sc.policy == Policy::Conservative {
            sc.policy = Policy::Easy;
        }
        for j in &mut sc.jobs {
            if j.class == 9 {
                j.class = 0; // no reservations: they force the general path
            }
        }
        let mut fast = build(&sc);
        let mut general = build(&sc);
        general.s.force_profile = true;
        fast.run(20_000);
        general.run(20_000);
        prop_assert_eq!(&fast.log, &general.log);
    }
}

#[derive(Debug, Clone)]
struct FifoScenario {
    policy: Policy,
    nodes: Vec<u32>,
    jobs: Vec<GenJob>,
}

fn fifo_scenario() -> impl Strategy<Value = FifoScenario> {
    (
        prop_oneof![Just(Policy::Easy), Just(Policy::Conservative)],
        prop::collection::vec(1u32..5, 1..6),
        prop::collection::vec(gen_job(true), 1..30),
    )
        .prop_map(|(policy, nodes, jobs)| FifoScenario {
            policy,
            nodes,
            jobs,
        })
}

proptest! {

    /// With exact-or-pessimistic estimates, one priority and no failures,
    /// a job never starts later than the start backfilling reserved for it
    /// (EASY: the first waiting job; conservative: every job), and
    /// reservations only move earlier.
    #[test]
    fn backfilling_never_delays_a_reserved_job(sc in fifo_scenario()) {
        let mut h = Harness::new(Config::with_policy(sc.policy));
        for (i, &cores) in sc.nodes.iter().enumerate() {
            h.at(0, Event::NodeUp(NodeSpec::new(NodeId(i as u32), crate::DomainId(0), cores, 0)));
        }
        for (i, g) in sc.jobs.iter().enumerate() {
            let spec = JobRequest::simple(JobId(i as u64), g.vms, g.walltime);
            let work = (g.walltime * g.run_pct.min(100) / 100).max(1);
            h.submit(g.submit, spec, work);
        }
        let mut planned: HashMap<JobId, Time> = HashMap::new();
        while h.step() {
            for id in h.s.job_ids() {
                let Some(p) = h.s.job(id).and_then(|v| v.planned_start) else { continue };
                if let Some(&before) = planned.get(&id) {
                    prop_assert!(p <= before, "{id}: reservation moved from {before} to {p}");
                }
                planned.insert(id, p);
            }
        }
        for (id, p) in planned {
            let start = h.started.get(&id).copied();
            prop_assert!(start.is_some_and(|s| s <= p), "{id} reserved at {p}, started {start:?}");
        }
    }
}

#[derive(Debug, Clone)]
struct TradeScenario {
    reclaim: crate::ReclaimPolicy,
    interval: u64,
    mode: PreemptionMode,
    policy: Policy,
    /// `(domain, cores)` per node.
    nodes: Vec<(u16, u32)>,
    /// `(domain, job)`.
    jobs: Vec<(u16, GenJob)>,
    events: Vec<(u64, Disturbance)>,
}

fn trade_scenario() -> impl Strategy<Value = TradeScenario> {
    (2usize..8, 1usize..25).prop_flat_map(|(n_nodes, n_jobs)| {
        (
            prop_oneof![
                Just(crate::ReclaimPolicy::Immediate),
                // Leases longer than any job: a shorter lease can starve a
                // long job that cannot be checkpointed (documented).
                (2_000u64..5_000).prop_map(|p| crate::ReclaimPolicy::Lease { period_ms: p }),
                (10u64..200).prop_map(|e| crate::ReclaimPolicy::Gradual { every_ms: e }),
            ],
            20u64..300,
            prop_oneof![Just(PreemptionMode::Kill), Just(PreemptionMode::Checkpoint)],
            policy(),
            prop::collection::vec((0u16..2, 1u32..3), n_nodes),
            prop::collection::vec((0u16..2, gen_job(false)), n_jobs),
            prop::collection::vec(disturbance(n_jobs as u64, n_nodes as u32), 0..4),
        )
            .prop_map(|(reclaim, interval, mode, policy, nodes, jobs, events)| {
                TradeScenario {
                    reclaim,
                    interval,
                    mode,
                    policy,
                    nodes,
                    jobs,
                    events,
                }
            })
    })
}

fn build_trade(sc: &TradeScenario) -> Harness {
    let broker = crate::BrokerConfig {
        interval_ms: sc.interval,
        lend_fraction: 0.5,
        lend: true,
        borrow: true,
        reclaim: sc.reclaim,
    };
    let mut cfg = Config::with_policy(sc.policy);
    cfg.preemption = sc.mode;
    cfg.checkpoint_cost = CostModel {
        fixed_ms: 3,
        ms_per_gb: 0,
    };
    cfg.domains = (0..2)
        .map(|i| crate::DomainConfig {
            name: format!("d{i}"),
            broker: Some(broker.clone()),
        })
        .collect();
    let mut h = Harness::new(cfg);
    h.costs.loan_boot_ms = 7;
    h.costs.loan_halt_ms = 3;
    h.costs.checkpoint_ms = 3;
    h.costs.boot_ms = 2;
    h.costs.restore_ms = 2;
    let spec = |i: usize| {
        let (d, cores) = sc.nodes[i];
        NodeSpec::new(NodeId(i as u32), crate::DomainId(d), cores, 4096)
    };
    for i in 0..sc.nodes.len() {
        h.at(0, Event::NodeUp(spec(i)));
    }
    for (i, (d, g)) in sc.jobs.iter().enumerate() {
        let mut j = spec_of(i, g);
        j.domain = crate::DomainId(*d);
        j.requirements = None;
        // Small jobs, so that most scenarios can finish everything.
        j.vms = j.vms.min(2);
        j.cores_per_vm = 1;
        let work = (g.walltime * g.run_pct / 100).max(1);
        h.submit(g.submit, j, work);
    }
    for (t, d) in &sc.events {
        h.at(*t, d.event(|n| spec(n as usize)));
    }
    h
}

proptest! {
    /// Two trading domains under every reclamation policy, with failures:
    /// no over-commit, nothing stuck, and once all work is done every loan
    /// ends and every node that is up is back home.
    #[test]
    fn trading_domains_keep_their_invariants(sc in trade_scenario()) {
        let mut h = build_trade(&sc);
        let nodes: Vec<(u32, u64, bool)> = sc.nodes.iter().map(|&(_, c)| (c, 4096, false)).collect();
        let check = Scenario {
            policy: sc.policy,
            mode: sc.mode,
            nodes,
            jobs: Vec::new(),
            events: Vec::new(),
            boot_ms: 0,
            checkpoint_ms: 0,
            depth: None,
        };
        let mut progress = HashMap::new();
        while h.now.0 < 50_000 {
            if !h.step() {
                break;
            }
            check_step(&h, &check, &mut progress);
        }
        for id in h.s.job_ids() {
            let v = h.s.job(id).unwrap_or_else(|| panic!("{id}"));
            let stuck = match v.state {
                JobPhase::Done { .. } => false,
                JobPhase::Pending { reason } => !matches!(
                    reason,
                    WaitReason::Held | WaitReason::TooLarge | WaitReason::Requirements
                ),
                _ => true,
            };
            prop_assert!(!stuck, "{id} stuck in {:?} at {}", v.state, h.now);
        }
        // Anything still waiting blocks loans from settling; otherwise all
        // nodes are home after the brokers' next rounds.
        let waiting = h.s.job_ids().iter().any(|&id| {
            matches!(
                h.s.job_phase(id),
                Some(JobPhase::Pending { reason }) if reason != WaitReason::Held
            )
        });
        if !waiting {
            for n in h.s.nodes() {
                if n.status != crate::NodeStatus::Down {
                    prop_assert_eq!(n.serving, n.owner, "{} not home: {:?}", n.id, n.status);
                    prop_assert_eq!(n.status, crate::NodeStatus::Up);
                }
            }
            for d in 0..2 {
                let v = h.s.domain(crate::DomainId(d)).unwrap_or_default();
                prop_assert_eq!((v.lent, v.borrowed), (0, 0), "domain {}", d);
            }
        }
    }
}

/// A simulator-shaped workload: jobs of one-core VMs on a machine of
/// `procs` processors, with holds and cancels (nothing that names a node).
#[derive(Debug, Clone)]
struct CountedScenario {
    policy: Policy,
    procs: u32,
    /// Memory of one processor; every VM asks at most this much.
    mem: u64,
    /// `(submit, VMs, MiB per VM, estimate, run time in % of it, priority)`.
    jobs: Vec<(u64, u32, u64, u64, u64, i32)>,
    events: Vec<(u64, Disturbance)>,
}

fn counted_scenario() -> impl Strategy<Value = CountedScenario> {
    (
        prop_oneof![
            Just(Policy::Fcfs),
            Just(Policy::Easy),
            Just(Policy::Conservative)
        ],
        1u32..24,
        prop_oneof![Just(0u64), 1u64..2048],
        prop::collection::vec(
            (
                0u64..3_000,
                1u32..30,
                0u64..4,
                1u64..1_000,
                10u64..150,
                0i32..3,
            ),
            1..50,
        ),
    )
        .prop_flat_map(|(policy, procs, mem, jobs)| {
            let n = jobs.len() as u64;
            let events = prop::collection::vec(
                (
                    0u64..4_000,
                    prop_oneof![
                        (0..n).prop_map(Disturbance::Cancel),
                        (0..n).prop_map(Disturbance::Hold),
                        (0..n).prop_map(Disturbance::Release),
                    ],
                ),
                0..6,
            );
            (Just((policy, procs, mem, jobs)), events)
        })
        .prop_map(|((policy, procs, mem, jobs), events)| CountedScenario {
            policy,
            procs,
            mem,
            jobs,
            events,
        })
}

/// The scenario on `procs` one-core nodes, or (`counted`) on one node of
/// `procs` cores. Returns every action with its time, placements left out
/// (they name different nodes by construction).
fn run_counted(sc: &CountedScenario, counted: bool) -> Vec<(Time, String, Option<JobId>)> {
    let mut h = Harness::new(Config::with_policy(sc.policy));
    if counted {
        h.nodes(0, 1, sc.procs, sc.mem * u64::from(sc.procs));
    } else {
        h.nodes(0, sc.procs, 1, sc.mem);
    }
    for (i, &(submit, vms, mem_quarters, walltime, run_pct, priority)) in sc.jobs.iter().enumerate()
    {
        let mut spec = JobRequest::simple(JobId(i as u64), vms, walltime);
        spec.memory_mb_per_vm = sc.mem * mem_quarters / 4;
        spec.priority = priority;
        h.submit(submit, spec, (walltime * run_pct / 100).max(1));
    }
    for (t, d) in &sc.events {
        h.at(*t, d.event(|_| unreachable!("no node events here")));
    }
    h.run(20_000);
    h.log
        .iter()
        .map(|(t, a)| {
            let kind = format!("{a:?}");
            let kind = kind
                .split([' ', '{'])
                .next()
                .unwrap_or_default()
                .to_string();
            (*t, kind, crate::harness::action_job(a))
        })
        .collect()
}

proptest! {
    /// A pool of interchangeable one-core machines announced as one node
    /// of that many cores (free capacity counted, not listed: how the
    /// simulator runs a trace) decides exactly like one node per core:
    /// the same actions for the same jobs at the same times, under every
    /// policy.
    #[test]
    fn counted_pool_decides_like_one_core_nodes(sc in counted_scenario()) {
        let listed = run_counted(&sc, false);
        let counted = run_counted(&sc, true);
        prop_assert_eq!(listed, counted);
    }
}
