//! Machine brokers (VioCluster): demand, lending, borrowing, reclaiming.

use crate::action::LoanEnd;
use crate::event::Rejected;
use crate::types::{DomainId, NodeId, Time};

use super::Scheduler;

impl Scheduler {
    /// Demand d: nodes required by the domain's waiting normal and
    /// reservation jobs.
    pub(super) fn demand(&self, _domain: DomainId) -> u64 {
        0
    }

    pub(super) fn broker_tick(&mut self, _now: Time, _d: DomainId) {}

    pub(super) fn lease_end(&mut self, _now: Time, _node: NodeId) {}

    pub(super) fn gradual_tick(&mut self, _now: Time, _d: DomainId) {}

    pub(super) fn loan_ready(&mut self, _now: Time, node: NodeId) -> Result<(), Rejected> {
        Err(Rejected::WrongLoanState {
            node,
            event: "loan-ready",
        })
    }

    pub(super) fn loan_returned(&mut self, _now: Time, node: NodeId) -> Result<(), Rejected> {
        Err(Rejected::WrongLoanState {
            node,
            event: "loan-returned",
        })
    }

    pub(super) fn finish_loan_drain(&mut self, _ix: u32, _why: LoanEnd) {}
}
