//! What administrators and users ask of nodes beyond scheduling: draining
//! a node, and why a waiting job finds no room.

use crate::event::Rejected;
use crate::index::slots;
use crate::types::{JobId, NodeId};
use crate::view::{ClauseCount, NodeStatus, WaitAnalysis};

use super::Scheduler;
use super::state::{NodeAttrs, St};

fn status_name(s: NodeStatus) -> &'static str {
    match s {
        NodeStatus::Up => "up",
        NodeStatus::Draining => "leaving",
        NodeStatus::Down => "down",
        NodeStatus::Drained => "drained",
        NodeStatus::Lending => "being lent",
        NodeStatus::Reclaiming => "being reclaimed",
    }
}

impl Scheduler {
    /// Drains (`drain`) or resumes a node. A drained node leaves its pool,
    /// so no pass places anything there, while its jobs keep their
    /// capacity on it until they end (`release` handles nodes out of their
    /// pool). Draining twice, or resuming a node that is up, changes
    /// nothing.
    pub(super) fn node_drain(&mut self, node: NodeId, drain: bool) -> Result<(), Rejected> {
        let &ix = self.node_ix.get(&node).ok_or(Rejected::UnknownNode(node))?;
        let n = &self.nodes[ix as usize];
        let event = if drain { "NodeDrain" } else { "NodeResume" };
        match (n.status, drain) {
            (NodeStatus::Up, true) if n.loan.is_some() => {
                Err(Rejected::WrongLoanState { node, event })
            }
            (NodeStatus::Up, true) => {
                self.leave_pool(ix);
                self.nodes[ix as usize].status = NodeStatus::Drained;
                Ok(())
            }
            (NodeStatus::Drained, false) => {
                self.nodes[ix as usize].status = NodeStatus::Up;
                self.join_pool(ix);
                Ok(())
            }
            (NodeStatus::Drained, true) | (NodeStatus::Up, false) => Ok(()),
            (state, _) => Err(Rejected::WrongNodeState {
                node,
                event,
                state: status_name(state),
            }),
        }
    }

    /// Why a waiting job finds no room, counted over the nodes that take
    /// work in its domain (see [`WaitAnalysis`]); `None` unless it waits
    /// in a queue. Costs one evaluation of its requirements' clauses per
    /// node: for a request about one job, not for a pass.
    pub fn wait_analysis(&self, job: JobId) -> Option<WaitAnalysis> {
        let j = self.jobs.get(&job)?;
        if j.st != St::Queued {
            return None;
        }
        let d = usize::from(j.spec.domain.0);
        let domain_name = &self.cfg.domains.get(d)?.name;
        let (c, m) = (j.spec.cores_per_vm, j.spec.memory_mb_per_vm);
        let clauses = j
            .spec
            .requirements
            .as_ref()
            .map(|r| r.clauses())
            .unwrap_or_default();
        let mut a = WaitAnalysis {
            nodes: 0,
            drained: 0,
            clauses: clauses
                .iter()
                .map(|e| ClauseCount {
                    clause: e.source().to_string(),
                    failing: 0,
                })
                .collect(),
            matching: 0,
            too_few_cores: 0,
            too_little_memory: 0,
            busy_cores: 0,
            busy_memory: 0,
            vms: j.spec.vms,
            vms_free_now: 0,
            vms_when_empty: 0,
        };
        for (n, u) in self.nodes.iter().zip(&self.usage) {
            if usize::from(n.serving.0) != d {
                continue;
            }
            if n.status == NodeStatus::Drained {
                a.drained += 1;
                continue;
            }
            if !n.in_pool {
                continue;
            }
            a.nodes += 1;
            // What placement would see now: capacity held by best-effort
            // jobs is free for normal and reservation jobs.
            let (free_c, free_m) = if j.is_best_effort() {
                u.free_physical()
            } else {
                u.free_normal()
            };
            let attrs = NodeAttrs {
                node: n,
                domain_name,
                free_cores: free_c,
                free_mem: free_m,
            };
            let mut meets = true;
            for (clause, count) in clauses.iter().zip(&mut a.clauses) {
                if !clause.matches(&attrs) {
                    count.failing += 1;
                    meets = false;
                }
            }
            a.too_few_cores += u32::from(n.spec.cores < c);
            a.too_little_memory += u32::from(n.spec.memory_mb < m);
            a.busy_cores += u32::from(n.spec.cores >= c && free_c < c);
            a.busy_memory += u32::from(n.spec.memory_mb >= m && free_m < m);
            if meets {
                a.matching += 1;
                a.vms_free_now += slots(free_c, free_m, c, m);
                a.vms_when_empty += slots(n.spec.cores, n.spec.memory_mb, c, m);
            }
        }
        Some(a)
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        Action, AttrValue, Config, DomainId, Event, Expr, JobId, JobPhase, JobRequest, NodeId,
        NodeSpec, NodeStatus, Rejected, Scheduler, Time, WaitReason,
    };

    fn node(id: u32, cores: u32, mem: u64, ssd: bool) -> Event {
        let mut spec = NodeSpec::new(NodeId(id), DomainId(0), cores, mem);
        spec.attrs.insert("ssd".into(), AttrValue::Bool(ssd));
        Event::NodeUp(spec)
    }

    fn job(id: u64, vms: u32, cores: u32, mem: u64, req: Option<&str>) -> Event {
        let mut j = JobRequest::simple(JobId(id), vms, 60_000);
        j.cores_per_vm = cores;
        j.memory_mb_per_vm = mem;
        j.requirements = req.map(|r| Expr::parse(r).expect("parses"));
        Event::Submit(j)
    }

    fn starts(s: &mut Scheduler) -> Vec<(u64, Vec<(NodeId, u32)>)> {
        let mut out = Vec::new();
        while let Some(a) = s.poll_action() {
            if let Action::Start { job, placement, .. } = a {
                out.push((job.0, placement));
            }
        }
        out
    }

    fn pending(s: &Scheduler, id: u64) -> Option<WaitReason> {
        match s.job_phase(JobId(id)) {
            Some(JobPhase::Pending { reason }) => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn a_drained_node_takes_no_new_job_and_keeps_its_running_one() {
        let mut s = Scheduler::new(Config::default());
        let t = Time(0);
        s.handle(t, node(1, 4, 4096, false)).unwrap();
        s.handle(t, job(1, 1, 2, 1024, None)).unwrap();
        s.schedule(t);
        assert_eq!(starts(&mut s), vec![(1, vec![(NodeId(1), 1)])]);
        s.handle(t, Event::JobRunning { job: JobId(1) }).unwrap();

        s.handle(Time(1), Event::NodeDrain { node: NodeId(1) })
            .unwrap();
        assert_eq!(s.node(NodeId(1)).unwrap().status, NodeStatus::Drained);
        // Two cores are free, yet the new job waits; the running one is
        // neither stopped nor requeued.
        s.handle(Time(1), job(2, 1, 2, 1024, None)).unwrap();
        s.schedule(Time(1));
        let mut actions = Vec::new();
        while let Some(a) = s.poll_action() {
            actions.push(a);
        }
        assert!(actions.is_empty(), "{actions:?}");
        assert_eq!(s.job_phase(JobId(1)), Some(JobPhase::Running));
        assert_eq!(pending(&s, 2), Some(WaitReason::Requirements));
        let a = s.wait_analysis(JobId(2)).unwrap();
        assert_eq!((a.nodes, a.drained, a.matching), (0, 1, 0));

        // The running job ends on the drained node: it stays drained.
        s.handle(
            Time(2),
            Event::JobFinished {
                job: JobId(1),
                exit_status: 0,
            },
        )
        .unwrap();
        s.schedule(Time(2));
        assert!(starts(&mut s).is_empty());
        assert_eq!(s.node(NodeId(1)).unwrap().status, NodeStatus::Drained);
        assert_eq!(s.node(NodeId(1)).unwrap().used_cores, 0);

        s.handle(Time(3), Event::NodeResume { node: NodeId(1) })
            .unwrap();
        s.schedule(Time(3));
        assert_eq!(starts(&mut s), vec![(2, vec![(NodeId(1), 1)])]);
    }

    #[test]
    fn draining_applies_to_nodes_that_are_up() {
        let mut s = Scheduler::new(Config::default());
        s.handle(Time(0), node(1, 4, 4096, false)).unwrap();
        // Twice is once; resuming an up node changes nothing.
        s.handle(Time(0), Event::NodeResume { node: NodeId(1) })
            .unwrap();
        s.handle(Time(0), Event::NodeDrain { node: NodeId(1) })
            .unwrap();
        s.handle(Time(0), Event::NodeDrain { node: NodeId(1) })
            .unwrap();
        // A drained node that is lost is down; it comes back up undrained.
        s.handle(Time(1), Event::NodeLost { node: NodeId(1) })
            .unwrap();
        assert_eq!(s.node(NodeId(1)).unwrap().status, NodeStatus::Down);
        assert!(matches!(
            s.handle(Time(1), Event::NodeDrain { node: NodeId(1) }),
            Err(Rejected::WrongNodeState { .. })
        ));
        assert_eq!(
            s.handle(Time(1), Event::NodeDrain { node: NodeId(9) }),
            Err(Rejected::UnknownNode(NodeId(9)))
        );
        s.handle(Time(2), node(1, 4, 4096, false)).unwrap();
        assert_eq!(s.node(NodeId(1)).unwrap().status, NodeStatus::Up);
    }

    #[test]
    fn the_analysis_counts_the_nodes_each_clause_and_resource_keeps_out() {
        let mut s = Scheduler::new(Config::default());
        let t = Time(0);
        // Node 1: 2 cores, no ssd. Node 2: 8 cores, ssd. Node 3: 8 cores,
        // ssd, 1 GiB. Node 4: drained.
        s.handle(t, node(1, 2, 8192, false)).unwrap();
        s.handle(t, node(2, 8, 8192, true)).unwrap();
        s.handle(t, node(3, 8, 1024, true)).unwrap();
        s.handle(t, node(4, 8, 8192, true)).unwrap();
        s.handle(t, Event::NodeDrain { node: NodeId(4) }).unwrap();
        // A job fills 6 of node 2's cores.
        s.handle(
            t,
            job(1, 1, 6, 1024, Some("cores >= 8 && memory_mb > 4000")),
        )
        .unwrap();
        s.schedule(t);
        assert_eq!(starts(&mut s), vec![(1, vec![(NodeId(2), 1)])]);

        s.handle(
            t,
            job(2, 2, 4, 2048, Some("ssd && (cores >= 4) && gpus >= 1")),
        )
        .unwrap();
        s.schedule(t);
        assert_eq!(pending(&s, 2), Some(WaitReason::Requirements));
        let a = s.wait_analysis(JobId(2)).unwrap();
        assert_eq!((a.nodes, a.drained), (3, 1));
        let counts: Vec<(&str, u32)> = a
            .clauses
            .iter()
            .map(|c| (c.clause.as_str(), c.failing))
            .collect();
        // `gpus` is undefined everywhere: every node fails it.
        assert_eq!(
            counts,
            vec![("ssd", 1), ("cores >= 4", 1), ("gpus >= 1", 3)]
        );
        assert_eq!(a.matching, 0);
        assert_eq!((a.too_few_cores, a.too_little_memory), (1, 1));
        // Node 2 has 2 of 8 cores free; node 3's memory is too small in
        // all, so it does not count as busy.
        assert_eq!((a.busy_cores, a.busy_memory), (1, 0));
        assert_eq!((a.vms, a.vms_free_now, a.vms_when_empty), (2, 0, 0));

        // Without the impossible clause, node 2 matches: 2 VMs when empty,
        // none now.
        s.handle(t, job(3, 2, 4, 2048, Some("ssd && cores >= 4")))
            .unwrap();
        s.schedule(t);
        let a = s.wait_analysis(JobId(3)).unwrap();
        assert_eq!(a.matching, 2);
        assert_eq!((a.vms_free_now, a.vms_when_empty), (0, 2));
        // A running job has no analysis.
        assert_eq!(s.wait_analysis(JobId(1)), None);
    }
}
