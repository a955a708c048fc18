//! What waits for node agents: per node, the actions not yet acknowledged
//! and the agent's parked long poll.

use std::collections::{HashMap, VecDeque};

use vgrid_api::types::{ActionEnvelope, AgentAction};
use vgrid_server::Reply;

use crate::handle::ReplyTx;

#[derive(Default)]
struct Mailbox {
    queue: VecDeque<ActionEnvelope>,
    next_seq: u64,
    parked: Option<ReplyTx>,
}

/// Every node's mailbox. Lost on a restart: agents register again and the
/// book's reconciliation decides what they run.
#[derive(Default)]
pub(crate) struct Mailboxes {
    boxes: HashMap<String, Mailbox>,
}

impl Mailboxes {
    /// Starts the node's queue anew (it registered, or was lost); a parked
    /// poll is answered empty.
    pub(crate) fn reset(&mut self, node: &str) {
        let b = self.boxes.entry(node.to_string()).or_default();
        b.queue.clear();
        b.next_seq = 1;
        if let Some(tx) = b.parked.take() {
            let _ = tx.send(Ok(Reply::Actions(Vec::new())));
        }
    }

    pub(crate) fn push(&mut self, node: &str, action: AgentAction) {
        let b = self.boxes.entry(node.to_string()).or_default();
        let seq = b.next_seq.max(1);
        b.next_seq = seq + 1;
        b.queue.push_back(ActionEnvelope { seq, action });
    }

    /// Drops what the agent acknowledged (sequence numbers up to `after`);
    /// the rest, or `None` when there is nothing (park the poll).
    pub(crate) fn poll(&mut self, node: &str, after: u64) -> Option<Vec<ActionEnvelope>> {
        let b = self.boxes.entry(node.to_string()).or_default();
        while b.queue.front().is_some_and(|a| a.seq <= after) {
            b.queue.pop_front();
        }
        (!b.queue.is_empty()).then(|| b.queue.iter().cloned().collect())
    }

    /// Keeps a poll until there is something; a newer poll replaces an
    /// older one, which is answered empty.
    pub(crate) fn park(&mut self, node: &str, reply: ReplyTx) {
        let b = self.boxes.entry(node.to_string()).or_default();
        if let Some(old) = b.parked.replace(reply) {
            let _ = old.send(Ok(Reply::Actions(Vec::new())));
        }
    }

    /// Answers a parked poll when actions wait.
    pub(crate) fn deliver(&mut self, node: &str) {
        let Some(b) = self.boxes.get_mut(node) else {
            return;
        };
        if b.queue.is_empty() {
            return;
        }
        if let Some(tx) = b.parked.take() {
            // A poll that timed out meanwhile is gone; the next one picks
            // the actions up.
            let _ = tx.send(Ok(Reply::Actions(b.queue.iter().cloned().collect())));
        }
    }

    /// Answers every parked poll empty and forgets every queue.
    pub(crate) fn clear(&mut self) {
        for (_, mut b) in self.boxes.drain() {
            if let Some(tx) = b.parked.take() {
                let _ = tx.send(Ok(Reply::Actions(Vec::new())));
            }
        }
    }

    /// The actions waiting for a node (tests look at them).
    #[cfg(test)]
    pub(crate) fn take(&mut self, node: &str) -> Vec<AgentAction> {
        self.boxes
            .get_mut(node)
            .map(|b| b.queue.drain(..).map(|e| e.action).collect())
            .unwrap_or_default()
    }
}
