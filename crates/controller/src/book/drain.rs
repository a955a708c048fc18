//! An administrator's verbs on nodes: drain (nothing new is placed there,
//! its jobs run on, like Slurm's DRAIN), resume, and forget.

use vgrid_api::types::{NodeView, Principal, Role};
use vgrid_core::{NodeId, NodeStatus};
use vgrid_server::{CommandError, Reply};
use vgrid_store::{Change, NodeState};

use super::{Delivery, JobBook};
use crate::schedlog::SchedInput;

fn admin_only(p: &Principal, what: &str) -> Result<(), CommandError> {
    if p.role == Role::Admin {
        Ok(())
    } else {
        Err(CommandError::Forbidden(format!("only an admin {what}")))
    }
}

fn no_node(name: &str) -> CommandError {
    CommandError::NotFound(format!("node `{name}` does not exist"))
}

impl JobBook {
    /// Drains a node. The drain is recorded with the node (its reason
    /// outlives the node being lost) and given to the core; a node that is
    /// down in the core gets it again when it comes back (`register`).
    pub(crate) fn drain_node(
        &mut self,
        now: u64,
        p: &Principal,
        name: &str,
        reason: Option<String>,
    ) -> Result<Reply, CommandError> {
        admin_only(p, "drains nodes")?;
        let now_reason = reason
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| format!("drained by {}", p.name));
        let node = self.nodes.get_mut(name).ok_or_else(|| no_node(name))?;
        node.rec.drain_reason = Some(now_reason.clone());
        let id = node.rec.id;
        self.fx.changes.push(Change::SetDrain {
            name: name.to_string(),
            reason: Some(now_reason),
        });
        if node.rec.state == NodeState::Up {
            self.set_node_state(name, NodeState::Drained);
        }
        self.sync_drain(now, id, true);
        self.one_node(name)
    }

    /// Puts a drained node back in service.
    pub(crate) fn resume_node(
        &mut self,
        now: u64,
        p: &Principal,
        name: &str,
    ) -> Result<Reply, CommandError> {
        admin_only(p, "resumes nodes")?;
        let node = self.nodes.get_mut(name).ok_or_else(|| no_node(name))?;
        if node.rec.drain_reason.is_none() {
            return Err(CommandError::Conflict(format!(
                "node `{name}` is not drained"
            )));
        }
        node.rec.drain_reason = None;
        let id = node.rec.id;
        self.fx.changes.push(Change::SetDrain {
            name: name.to_string(),
            reason: None,
        });
        if self.nodes.get(name).map(|n| n.rec.state) == Some(NodeState::Drained) {
            self.set_node_state(name, NodeState::Up);
        }
        self.sync_drain(now, id, false);
        self.one_node(name)
    }

    /// Forgets a node that is drained or lost and runs nothing. Its id is
    /// never given again. An agent that still runs with the node's token
    /// registers it anew: revoke that token to keep it out.
    pub(crate) fn remove_node(
        &mut self,
        now: u64,
        p: &Principal,
        name: &str,
    ) -> Result<Reply, CommandError> {
        admin_only(p, "removes nodes")?;
        let node = self.nodes.get(name).ok_or_else(|| no_node(name))?;
        if node.rec.state == NodeState::Up {
            return Err(CommandError::Conflict(format!(
                "node `{name}` is up and takes work: drain it first (`vgrid nodes drain {name}`)"
            )));
        }
        let id = node.rec.id;
        let mut jobs: Vec<u64> = self
            .jobs
            .values()
            .filter(|j| !j.rec.state.is_terminal())
            .filter(|j| j.dispatch.placement.iter().any(|(n, _)| n == name))
            .map(|j| j.rec.id)
            .collect();
        if let Some(v) = self.sched.node(NodeId(id)) {
            jobs.extend(v.jobs.iter().map(|(j, _)| j.0));
        }
        jobs.sort_unstable();
        jobs.dedup();
        if !jobs.is_empty() {
            let list: Vec<String> = jobs.iter().map(u64::to_string).collect();
            return Err(CommandError::Conflict(format!(
                "node `{name}` still has jobs ({}): wait for them to end or cancel them",
                list.join(", ")
            )));
        }
        // The core has no event that forgets a node: one that runs
        // nothing and is lost loses nothing, and stays down there.
        if self
            .sched
            .node(NodeId(id))
            .is_some_and(|v| v.status != NodeStatus::Down)
        {
            self.feed(now, SchedInput::NodeLost { node: id });
        }
        self.nodes.remove(name);
        self.node_names.remove(&id);
        self.fx.deliveries.push(Delivery::Reset(name.to_string()));
        self.fx.changes.push(Change::RemoveNode {
            name: name.to_string(),
        });
        Ok(Reply::Done)
    }

    /// Gives the core a node's drain or resume when the core has it up.
    pub(super) fn sync_drain(&mut self, now: u64, id: u32, drain: bool) {
        let status = self.sched.node(NodeId(id)).map(|v| v.status);
        match (status, drain) {
            (Some(NodeStatus::Up), true) => {
                self.feed(now, SchedInput::NodeDrain { node: id });
            }
            (Some(NodeStatus::Drained), false) => {
                self.feed(now, SchedInput::NodeResume { node: id });
            }
            _ => {}
        }
    }

    fn set_node_state(&mut self, name: &str, state: NodeState) {
        let Some(node) = self.nodes.get_mut(name) else {
            return;
        };
        node.rec.state = state;
        self.fx.changes.push(Change::NodeSeen {
            name: name.to_string(),
            state,
            unix_ms: node.rec.last_seen_unix_ms,
        });
    }

    fn one_node(&self, name: &str) -> Result<Reply, CommandError> {
        let view: Vec<NodeView> = self
            .node_views()
            .into_iter()
            .filter(|v| v.name == name)
            .collect();
        if view.is_empty() {
            return Err(no_node(name));
        }
        Ok(Reply::Nodes(view))
    }
}
