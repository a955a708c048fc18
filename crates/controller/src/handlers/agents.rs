//! Node agents' requests: polls, reports and output.

use vgrid_api::types::{AgentReport, Principal};
use vgrid_server::{CommandError, Reply};

use super::{Ctx, Handled};
use crate::book::ReportFacts;
use crate::handle::ReplyTx;

/// Actions after `after`, or the poll waits for some.
pub(super) fn poll(
    ctx: &mut Ctx,
    p: &Principal,
    node: &str,
    after: u64,
    reply: ReplyTx,
) -> Handled {
    if let Err(e) = ctx.book.agent_contact(ctx.now, p, node) {
        return Handled::Answer(reply, Err(e));
    }
    match ctx.mail.poll(node, after) {
        Some(actions) => Handled::Answer(reply, Ok(Reply::Actions(actions))),
        None => {
            ctx.mail.park(node, reply);
            Handled::Parked
        }
    }
}

pub(super) fn report(
    ctx: &mut Ctx,
    p: &Principal,
    report: AgentReport,
) -> Result<Reply, CommandError> {
    let facts = Facts {
        output: ctx.output,
        cas: ctx.cas,
    };
    ctx.book.report(ctx.now, p, report, &facts)
}

/// What reports are checked against: the job outputs and the store.
struct Facts<'a> {
    output: &'a crate::output::OutputFiles,
    cas: &'a vgrid_cas::Store,
}

impl ReportFacts for Facts<'_> {
    fn output_len(&self, job: u64) -> Result<u64, String> {
        self.output
            .len(job)
            .map_err(|e| format!("cannot read the length of job {job}'s output: {e}"))
    }

    fn has_manifest(&self, id: &str) -> bool {
        vgrid_cas::ManifestId::parse(id).is_some_and(|id| self.cas.has_manifest(&id))
    }
}

/// Writes output at `offset`: only for the attempt running on the node,
/// never past the output's end (no holes), never past the job's limit.
pub(super) fn write_output(
    ctx: &mut Ctx,
    p: &Principal,
    id: u64,
    node: &str,
    attempt: u32,
    offset: u64,
    data: &[u8],
) -> Result<Reply, CommandError> {
    ctx.book.agent_contact(ctx.now, p, node)?;
    if !ctx.book.is_current(id, attempt, node) {
        return Err(CommandError::Conflict(format!(
            "job {id} attempt {attempt} does not run on {node}"
        )));
    }
    let len = ctx.output.len(id).map_err(|e| {
        CommandError::Unavailable(format!("cannot read the output of job {id}: {e}"))
    })?;
    if offset > len {
        return Err(CommandError::BadRequest(format!(
            "offset {offset} is past the end of job {id}'s output ({len} bytes)"
        )));
    }
    let end = offset.saturating_add(data.len() as u64);
    if end > ctx.max_output_bytes {
        return Err(CommandError::BadRequest(format!(
            "job {id}'s output would reach {end} bytes, more than the limit of {} bytes",
            ctx.max_output_bytes
        )));
    }
    ctx.output.write_at(id, offset, data).map_err(|e| {
        CommandError::Unavailable(format!("cannot write the output of job {id}: {e}"))
    })?;
    Ok(Reply::Done)
}
