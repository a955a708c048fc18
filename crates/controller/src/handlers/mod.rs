//! Requests, one file per resource: each reads its request, checks what
//! only it knows how to check, hands the decision to the job book, and
//! says how to answer.

mod agents;
mod jobs;
mod metrics;
mod users;

use std::collections::HashMap;

use vgrid_api::types::Principal;
use vgrid_server::{Command, CommandError, Reply};
use vgrid_store::Store;

use crate::book::JobBook;
use crate::handle::ReplyTx;
use crate::mailbox::Mailboxes;
use crate::metrics::Metrics;
use crate::output::OutputFiles;

/// What a handler may use during a round.
pub(crate) struct Ctx<'a> {
    pub now: u64,
    pub heartbeat_ms: u64,
    pub max_output_bytes: u64,
    pub book: &'a mut JobBook,
    pub store: &'a Store,
    pub output: &'a OutputFiles,
    /// The content-addressed store: images, checkpoints, jobs' data.
    pub cas: &'a vgrid_cas::Store,
    pub mail: &'a mut Mailboxes,
    pub waiters: &'a mut HashMap<u64, Vec<ReplyTx>>,
    pub metrics: &'a Metrics,
}

/// How a request ends this round.
pub(crate) enum Handled {
    /// Answer it once the round is durable.
    Answer(ReplyTx, Result<Reply, CommandError>),
    /// It waits (a job's end, an agent's next action); someone answers it
    /// later.
    Parked,
}

pub(crate) fn handle(ctx: &mut Ctx, p: Principal, command: Command, reply: ReplyTx) -> Handled {
    let answer = match command {
        Command::WaitJob { id, .. } => return jobs::wait(ctx, &p, id, reply),
        Command::PollActions { node, after, .. } => {
            return agents::poll(ctx, &p, &node, after, reply);
        }
        Command::Submit {
            spec,
            hold,
            idempotency_key,
        } => ctx.book.submit(ctx.now, &p, *spec, hold, idempotency_key),
        Command::ListJobs { all, user } => ctx.book.list_jobs(&p, all, user.as_deref()),
        Command::ShowJob { id } => jobs::show(ctx, &p, id),
        Command::Cancel { id } => ctx.book.cancel(ctx.now, &p, id),
        Command::Hold { id } => ctx.book.hold(ctx.now, &p, id),
        Command::Release { id } => ctx.book.release(ctx.now, &p, id),
        Command::Suspend { id } => ctx.book.suspend_resume(&p, id, true),
        Command::Resume { id } => ctx.book.suspend_resume(&p, id, false),
        Command::Checkpoint { id } => ctx.book.user_checkpoint(ctx.now, &p, id),
        Command::Migrate { id, to } => ctx.book.migrate(ctx.now, &p, id, to),
        Command::ReadOutput {
            id,
            offset,
            max_bytes,
        } => jobs::read_output(ctx, &p, id, offset, max_bytes),
        Command::JobOutputs { id } => jobs::outputs(ctx, &p, id),
        Command::ListNodes => Ok(Reply::Nodes(ctx.book.node_views())),
        Command::Metrics => metrics::metrics(ctx, &p),
        Command::AddUser { name, role } => users::add(ctx, &p, name, role),
        Command::ListUsers => ctx.book.list_users(&p),
        Command::RemoveUser { name } => ctx.book.remove_user(ctx.now, &p, &name),
        Command::RotateToken { name } => users::rotate(ctx, &p, name),
        Command::RevokeToken { name } => ctx.book.revoke_token(ctx.now, &p, &name),
        Command::DrainNode { name, reason } => ctx.book.drain_node(ctx.now, &p, &name, reason),
        Command::ResumeNode { name } => ctx.book.resume_node(ctx.now, &p, &name),
        Command::RemoveNode { name } => ctx.book.remove_node(ctx.now, &p, &name),
        // Only the handle sends it, after checking the join secret.
        Command::JoinNode { node } => users::join(ctx, node),
        Command::RegisterNode(req) => ctx.book.register(ctx.now, &p, req, ctx.heartbeat_ms),
        Command::NodeImages(req) => ctx.book.node_images(ctx.now, &p, &req.node, req.images),
        Command::Report(report) => agents::report(ctx, &p, report),
        Command::WriteOutput {
            id,
            node,
            attempt,
            offset,
            data,
        } => agents::write_output(ctx, &p, id, &node, attempt, offset, &data),
    };
    Handled::Answer(reply, answer)
}

/// Whether a command needs to write (refused while the database cannot be
/// written); the others only read.
pub(crate) fn writes(command: &Command) -> bool {
    !matches!(
        command,
        Command::ListJobs { .. }
            | Command::ShowJob { .. }
            | Command::WaitJob { .. }
            | Command::ListNodes
            | Command::ListUsers
            | Command::Metrics
            | Command::ReadOutput { .. }
            | Command::JobOutputs { .. }
            | Command::PollActions { .. }
    )
}
