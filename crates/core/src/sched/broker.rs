//! Machine brokers (VioCluster, seed 003 sections 2.2 and 3.2).
//!
//! Every `interval` each domain's broker computes its demand d (VMs of its
//! waiting normal and reservation jobs: in VioCluster every job process is
//! a machine) and its need `n = d - [(|P| - |L|) + |V|]`. With `n > 0` it
//! first takes back nodes it lent (by its reclamation policy), then borrows
//! from domains whose own need is negative, each lending at most `|n|`
//! nodes and keeping its total on loan within `lend_fraction` of its idle
//! nodes (idle ones at home plus those already lent). With `n < 0` it
//! returns idle borrowed nodes. A loan costs a VM boot on the node before
//! use (`Lend` .. `LoanReady`) and a halt after (`Reclaim` .. `LoanReturned`).

use crate::action::{Action, LoanEnd};
use crate::config::ReclaimPolicy;
use crate::event::Rejected;
use crate::types::{DomainId, NodeId, Time};
use crate::view::NodeStatus;

use super::Scheduler;
use super::state::{Loan, LoanPhase, PoolKind, Timer};

impl Scheduler {
    /// Demand d: VMs of the domain's waiting normal and reservation jobs
    /// (held jobs excluded).
    pub(super) fn demand(&self, domain: DomainId) -> u64 {
        self.domains
            .get(usize::from(domain.0))
            .map_or(0, |d| d.demand_vms)
    }

    /// Need n = d - [(|P| - |L|) + |V|]; positive means short of nodes.
    pub(super) fn need(&self, d: usize) -> i64 {
        let dom = &self.domains[d];
        let have = i64::from(dom.own_up) - i64::from(dom.lent) + i64::from(dom.borrowed);
        i64::try_from(dom.demand_vms).unwrap_or(i64::MAX) - have
    }

    fn broker_of(&self, d: usize) -> Option<&crate::config::BrokerConfig> {
        self.cfg.domains.get(d).and_then(|c| c.broker.as_ref())
    }

    pub(super) fn broker_tick(&mut self, now: Time, domain: DomainId) {
        let d = usize::from(domain.0);
        let Some(b) = self.broker_of(d).cloned() else {
            return;
        };
        self.timers
            .insert((now.plus(b.interval_ms.max(1)), Timer::Broker(domain)));
        let need = self.need(d);
        if need > 0 {
            let mut left = need;
            match b.reclaim {
                ReclaimPolicy::Immediate => left -= self.reclaim_nodes(now, d, left),
                ReclaimPolicy::Gradual { every_ms } => {
                    if self.domains[d].broker.gradual_next.is_none() {
                        left -= self.reclaim_nodes(now, d, 1);
                        let next = now.plus(every_ms.max(1));
                        self.domains[d].broker.gradual_next = Some(next);
                        self.timers.insert((next, Timer::Gradual(domain)));
                    }
                }
                ReclaimPolicy::Lease { .. } => {}
            }
            if b.borrow && left > 0 {
                self.borrow(now, d, left);
            }
        } else if need < 0 {
            self.return_idle(now, d, need.unsigned_abs());
        }
    }

    /// Gradual reclamation: one more node per period while the need lasts.
    pub(super) fn gradual_tick(&mut self, now: Time, domain: DomainId) {
        let d = usize::from(domain.0);
        self.domains[d].broker.gradual_next = None;
        let Some(ReclaimPolicy::Gradual { every_ms }) = self.broker_of(d).map(|b| b.reclaim) else {
            return;
        };
        if self.need(d) > 0 && self.reclaim_nodes(now, d, 1) > 0 {
            let next = now.plus(every_ms.max(1));
            self.domains[d].broker.gradual_next = Some(next);
            self.timers.insert((next, Timer::Gradual(domain)));
        }
    }

    /// A loan's lease is over: the node goes home whatever runs there.
    pub(super) fn lease_end(&mut self, now: Time, at: Time, node: NodeId) {
        if let Some(&ix) = self.node_ix.get(&node) {
            let n = &self.nodes[ix as usize];
            if n.loan
                .is_some_and(|l| l.phase == LoanPhase::Active && l.lease_end == Some(at))
            {
                self.end_loan(now, ix, LoanEnd::LeaseExpired);
            }
        }
    }

    /// Take back up to `want` of this domain's lent nodes, preferring nodes
    /// the borrower leaves idle. Returns how many were called back.
    fn reclaim_nodes(&mut self, now: Time, d: usize, want: i64) -> i64 {
        let mut picks: Vec<(bool, u32)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                usize::from(n.spec.domain.0) == d
                    && n.loan.is_some_and(|l| l.phase == LoanPhase::Active)
            })
            .map(|(ix, _)| (!self.usage[ix].is_empty(), ix as u32))
            .collect();
        picks.sort_unstable();
        let mut done = 0;
        for (_, ix) in picks {
            if done >= want {
                break;
            }
            self.end_loan(now, ix, LoanEnd::Reclaimed);
            done += 1;
        }
        done
    }

    /// Borrow up to `want` idle nodes from domains that can spare them.
    fn borrow(&mut self, now: Time, d: usize, want: i64) {
        let mut left = want;
        for lender in 0..self.domains.len() {
            if lender == d || left <= 0 {
                continue;
            }
            let Some(lb) = self.broker_of(lender).cloned() else {
                continue;
            };
            if !lb.lend {
                continue;
            }
            let spare = -self.need(lender);
            if spare <= 0 {
                continue;
            }
            let idle: Vec<u32> = self
                .nodes
                .iter()
                .enumerate()
                .rev()
                .filter(|&(ix, n)| {
                    usize::from(n.serving.0) == lender
                        && n.pool == PoolKind::Own
                        && n.in_pool
                        && n.status == NodeStatus::Up
                        && n.loan.is_none()
                        && self.usage[ix].is_empty()
                })
                .map(|(ix, _)| ix as u32)
                .collect();
            // The fraction caps what is out on loan in total: at most half
            // (by default) of the idle nodes, counting those already lent,
            // so half of the idle capacity always stays home.
            let lent = i64::from(self.domains[lender].lent);
            let pool = (idle.len() as i64 + lent) as f64;
            let cap = (pool * lb.lend_fraction.clamp(0.0, 1.0)).floor() as i64;
            let count = (cap - lent).min(spare).min(left).max(0);
            for &ix in idle.iter().take(count as usize) {
                self.lend(now, ix, lender, d, lb.reclaim);
            }
            left -= count;
        }
    }

    fn lend(&mut self, now: Time, ix: u32, lender: usize, borrower: usize, reclaim: ReclaimPolicy) {
        self.leave_pool(ix);
        let n = &mut self.nodes[ix as usize];
        let to = DomainId(u16::try_from(borrower).unwrap_or(u16::MAX));
        n.status = NodeStatus::Lending;
        let lease_end = match reclaim {
            ReclaimPolicy::Lease { period_ms } => Some(now.plus(period_ms.max(1))),
            _ => None,
        };
        n.loan = Some(Loan {
            borrower: to,
            phase: LoanPhase::Booting,
            lease_end,
        });
        let node = n.spec.id;
        let from = n.spec.domain;
        self.domains[lender].lent += 1;
        self.domains[lender].loans_made += 1;
        if let Some(end) = lease_end {
            self.timers.insert((end, Timer::LeaseEnd(node)));
        }
        self.actions.push_back(Action::Lend { node, from, to });
    }

    /// Give back up to `count` borrowed nodes that run nothing.
    fn return_idle(&mut self, now: Time, d: usize, count: u64) {
        let idle: Vec<u32> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|&(ix, n)| {
                usize::from(n.serving.0) == d
                    && n.pool == PoolKind::Borrowed
                    && n.loan.is_some_and(|l| l.phase == LoanPhase::Active)
                    && self.usage[ix].is_empty()
            })
            .map(|(ix, _)| ix as u32)
            .take(usize::try_from(count).unwrap_or(usize::MAX))
            .collect();
        for ix in idle {
            self.end_loan(now, ix, LoanEnd::Returned);
        }
    }

    /// Start ending an active loan: the node stops serving the borrower and
    /// its jobs are moved off; the halt follows once it is empty.
    fn end_loan(&mut self, now: Time, ix: u32, why: LoanEnd) {
        self.leave_pool(ix);
        let n = &mut self.nodes[ix as usize];
        let Some(loan) = n.loan.as_mut() else {
            return;
        };
        loan.phase = LoanPhase::Draining(why);
        n.status = NodeStatus::Reclaiming;
        let jobs: Vec<_> = self.jobs_on(ix).into_iter().map(|(j, _)| j).collect();
        for id in jobs {
            let mode = self.stop_mode(id);
            self.stop_job(now, id, mode);
        }
        if self.usage[ix as usize].is_empty() {
            self.finish_loan_drain(ix, why);
        }
    }

    /// The node is empty: ask the driver to halt the borrower's VM.
    pub(super) fn finish_loan_drain(&mut self, ix: u32, why: LoanEnd) {
        let n = &mut self.nodes[ix as usize];
        let Some(loan) = n.loan.as_mut() else {
            return;
        };
        if !matches!(loan.phase, LoanPhase::Draining(_)) {
            return;
        }
        loan.phase = LoanPhase::Halting;
        let borrower = loan.borrower;
        let (node, owner) = (n.spec.id, n.spec.domain);
        let b = &mut self.domains[usize::from(borrower.0)];
        b.borrowed = b.borrowed.saturating_sub(1);
        self.actions.push_back(Action::Reclaim {
            node,
            owner,
            borrower,
            why,
        });
    }

    pub(super) fn loan_ready(&mut self, _now: Time, node: NodeId) -> Result<(), Rejected> {
        let &ix = self.node_ix.get(&node).ok_or(Rejected::UnknownNode(node))?;
        let n = &mut self.nodes[ix as usize];
        let Some(loan) = n.loan.as_mut().filter(|l| l.phase == LoanPhase::Booting) else {
            return Err(Rejected::WrongLoanState {
                node,
                event: "loan-ready",
            });
        };
        loan.phase = LoanPhase::Active;
        let borrower = loan.borrower;
        n.status = NodeStatus::Up;
        n.serving = borrower;
        n.pool = PoolKind::Borrowed;
        self.sync_hot(ix);
        self.domains[usize::from(borrower.0)].borrowed += 1;
        self.join_pool(ix);
        Ok(())
    }

    pub(super) fn loan_returned(&mut self, _now: Time, node: NodeId) -> Result<(), Rejected> {
        let &ix = self.node_ix.get(&node).ok_or(Rejected::UnknownNode(node))?;
        let n = &mut self.nodes[ix as usize];
        if !n.loan.is_some_and(|l| l.phase == LoanPhase::Halting) {
            return Err(Rejected::WrongLoanState {
                node,
                event: "loan-returned",
            });
        }
        n.loan = None;
        n.status = NodeStatus::Up;
        n.serving = n.spec.domain;
        n.pool = PoolKind::Own;
        let owner = usize::from(n.spec.domain.0);
        self.sync_hot(ix);
        self.domains[owner].lent = self.domains[owner].lent.saturating_sub(1);
        self.join_pool(ix);
        Ok(())
    }
}
