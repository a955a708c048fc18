//! A deterministic driver of the job book, in the style of the core's
//! harness: a virtual clock, a real SQLite store that takes every round's
//! changes, and fake node agents that keep what the book told them and
//! answer with events.
//!
//! [`Harness::restart`] rebuilds the book from the store, as a restarted
//! controller does, and checks that it equals the live one.

use std::collections::{BTreeMap, BTreeSet};

use vgrid_api::types::{
    AgentAction, AgentEvent, AgentReport, Principal, RegisterNode, Role, RunningJob,
};
use vgrid_core::{DomainId, JobId};
use vgrid_server::{CommandError, Reply};
use vgrid_store::{Store, hash_token};

use super::{BookConfig, Delivery, JobBook, Records};

/// The harness's controller: output is always empty (reports say 0),
/// manifests are those the test put in [`Harness::manifests`].
struct Facts {
    manifests: BTreeSet<String>,
}

impl super::agents::ReportFacts for Facts {
    fn output_len(&self, _job: u64) -> Result<u64, String> {
        Ok(0)
    }

    fn has_manifest(&self, id: &str) -> bool {
        self.manifests.contains(id)
    }
}

/// What a fake agent knows about one unit (a job attempt on its node).
#[derive(Debug, Clone, Default)]
pub(crate) struct Unit {
    /// Checkpoints asked for and not yet answered: (seq, stop).
    pub checkpoints: Vec<(u64, bool)>,
}

/// A fake node agent: the units it runs, from the actions it got.
#[derive(Debug, Clone, Default)]
pub(crate) struct FakeNode {
    pub connected: bool,
    pub units: BTreeMap<(u64, u32), Unit>,
}

pub(crate) struct Harness {
    pub book: JobBook,
    pub store: Store,
    pub now: u64,
    pub admin: Principal,
    pub users: Vec<Principal>,
    pub nodes: BTreeMap<String, FakeNode>,
    /// Manifests the fake store holds.
    pub manifests: BTreeSet<String>,
    cfg: BookConfig,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub(crate) fn new() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = BookConfig {
            policy: vgrid_core::Policy::Easy,
            preemption: vgrid_core::PreemptionMode::Checkpoint,
            checkpoint_cost: Default::default(),
            restore_cost: Default::default(),
            lost_after_ms: 10_000,
            legacy_checkpoint_root: dir.path().join("checkpoints"),
            staging_roots: vec![dir.path().join("repos")],
        };
        let store = Store::open(&dir.path().join("vgrid.db"), 0).expect("store");
        let now = 1_700_000_000_000;
        let (book, _) =
            JobBook::from_records(cfg.clone(), Records::read(&store).expect("read"), now)
                .expect("empty book");
        let admin = Principal {
            user_id: 0,
            name: "admin".into(),
            role: Role::Admin,
        };
        let mut h = Harness {
            book,
            store,
            now,
            admin: admin.clone(),
            users: Vec::new(),
            nodes: BTreeMap::new(),
            manifests: BTreeSet::new(),
            cfg,
            _dir: dir,
        };
        let root = Principal {
            user_id: 0,
            ..admin
        };
        for (name, role) in [
            ("admin", Role::Admin),
            ("alice", Role::User),
            ("bob", Role::User),
        ] {
            let id = h
                .book
                .add_user(h.now, &root, name.into(), role, hash_token(name))
                .expect("user");
            let p = Principal {
                user_id: id,
                name: name.into(),
                role,
            };
            if role == Role::Admin {
                h.admin = p;
            } else {
                h.users.push(p);
            }
        }
        h.step();
        h
    }

    /// Ends a round: a pass when the book wants one, the changes into the
    /// store (which must take them: the book and the disk agree), the
    /// deliveries to the fake agents.
    pub(crate) fn step(&mut self) {
        if self.book.take_sched_dirty() || self.book.next_wakeup().is_some_and(|t| t <= self.now) {
            self.book.schedule(self.now);
        }
        let fx = self.book.take_effects();
        self.store
            .apply(&fx.changes)
            .unwrap_or_else(|e| panic!("the store refused the book's changes: {}", e.chain()));
        for d in fx.deliveries {
            match d {
                Delivery::Reset(node) => {
                    if let Some(n) = self.nodes.get_mut(&node) {
                        n.connected = self.book.nodes.get(&node).is_some_and(|b| b.connected);
                    }
                }
                Delivery::Action(node, action) => {
                    let n = self.nodes.entry(node).or_default();
                    match action {
                        AgentAction::Start { job, attempt, .. } => {
                            n.units.entry((job, attempt)).or_default();
                        }
                        AgentAction::Checkpoint {
                            job,
                            attempt,
                            seq,
                            stop,
                        } => {
                            if let Some(u) = n.units.get_mut(&(job, attempt)) {
                                u.checkpoints.push((seq, stop));
                            }
                        }
                        AgentAction::Kill { job, attempt } => {
                            n.units.remove(&(job, attempt));
                        }
                        AgentAction::Suspend { .. } | AgentAction::Resume { .. } => {}
                    }
                }
            }
        }
    }

    /// Runs a command of `p` in its own round.
    pub(crate) fn call<R>(&mut self, f: impl FnOnce(&mut JobBook, u64) -> R) -> R {
        let r = f(&mut self.book, self.now);
        self.step();
        r
    }

    pub(crate) fn submit(&mut self, user: usize, text: &str) -> Result<Reply, CommandError> {
        let spec = vgrid_jobfile::parse("j.toml", text).expect("valid job file");
        let p = self.users[user % self.users.len()].clone();
        self.call(|b, now| b.submit(now, &p, spec, false, None))
    }

    /// Node `name` registers (or registers again) with the units it runs.
    pub(crate) fn register(&mut self, name: &str, cpus: u32) {
        let running: Vec<RunningJob> = self
            .nodes
            .get(name)
            .map(|n| {
                n.units
                    .keys()
                    .map(|&(job, attempt)| RunningJob { job, attempt })
                    .collect()
            })
            .unwrap_or_default();
        let admin = self.admin.clone();
        let req = RegisterNode {
            name: name.into(),
            cpus,
            memory_mb: 8192,
            labels: Default::default(),
            running,
            images: Vec::new(),
        };
        self.nodes.entry(name.into()).or_default().connected = true;
        self.call(|b, now| b.register(now, &admin, req, 1000))
            .expect("registered");
    }

    /// The node's agent reports one event.
    pub(crate) fn report(&mut self, node: &str, event: AgentEvent) -> Result<Reply, CommandError> {
        if let AgentEvent::Exited { job, attempt, .. }
        | AgentEvent::Failed { job, attempt, .. }
        | AgentEvent::RestoreFailed { job, attempt, .. } = event
            && let Some(n) = self.nodes.get_mut(node)
        {
            n.units.remove(&(job, attempt));
        }
        let admin = self.admin.clone();
        let report = AgentReport {
            node: node.into(),
            events: vec![event],
        };
        let facts = Facts {
            manifests: self.manifests.clone(),
        };
        self.call(|b, now| b.report(now, &admin, report, &facts))
    }

    /// Time passes: the lost-node check and the pass that is due.
    pub(crate) fn advance(&mut self, ms: u64) {
        self.now += ms;
        for (name, n) in &self.nodes {
            // Agents that are connected poll: their heartbeat.
            if n.connected {
                let _ = self.book.agent_contact(self.now, &self.admin, name);
            }
        }
        self.book.tick(self.now);
        self.step();
    }

    /// A controller restart: the book is rebuilt from the store and must
    /// equal the live one; agents must register again.
    pub(crate) fn restart(&mut self) {
        let (rebuilt, _) = JobBook::from_records(
            self.cfg.clone(),
            Records::read(&self.store).expect("read"),
            self.now,
        )
        .expect("rebuilt");
        assert_eq!(
            snapshot(&rebuilt),
            snapshot(&self.book),
            "a rebuilt book differs"
        );
        self.book = rebuilt;
        for n in self.nodes.values_mut() {
            n.connected = false;
        }
    }
}

/// Everything in a book that the database must give back.
pub(crate) fn snapshot(b: &JobBook) -> String {
    let mut out = String::new();
    let mut users: Vec<_> = b.users.by_id.values().collect();
    users.sort_by_key(|u| u.id);
    let tokens: BTreeSet<String> = b
        .users
        .tokens
        .iter()
        .map(|(h, p)| format!("{h:?}={p:?}"))
        .collect();
    out.push_str(&format!(
        "users {users:?} next {}\ntokens {tokens:?}\n",
        b.users.next_id
    ));
    for j in b.jobs.values() {
        // The runtime column is the dispatch, compared as such.
        let rec = vgrid_store::JobRecord {
            runtime: None,
            ..j.rec.clone()
        };
        out.push_str(&format!(
            "job {rec:?}\n  owner {} dispatch {:?}\n  checkpoints {:?}\n",
            j.owner_name, j.dispatch, j.checkpoints
        ));
    }
    let keys: BTreeSet<_> = b.keys.iter().collect();
    out.push_str(&format!("keys {keys:?} next job {}\n", b.next_job_id));
    for n in b.nodes.values() {
        out.push_str(&format!("node {:?}\n", n.rec));
    }
    out.push_str(&format!("next node {}\n", b.next_node_id));
    let s = &b.sched;
    let ids: Vec<_> = b.jobs.keys().map(|id| s.job(JobId(*id))).collect();
    out.push_str(&format!(
        "core {ids:?}\n{:?}\n{:?}\n{:?}\n",
        s.queue(DomainId(0)),
        s.nodes(),
        s.next_wakeup()
    ));
    out
}
