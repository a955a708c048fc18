//! Reading jobs: details from the database, waiting for an end, output.

use vgrid_api::types::{JobDetail, Principal, WaitResponse};
use vgrid_server::{CommandError, JobOutputs, Reply};

use super::{Ctx, Handled};
use crate::book::not_found;
use crate::handle::ReplyTx;
use crate::views::{checkpoint_view, history_view};

/// A job with its history and checkpoints (read from the database: the
/// history of the round in progress is not there yet, and the caller sees
/// it after the commit).
pub(super) fn show(ctx: &Ctx, p: &Principal, id: u64) -> Result<Reply, CommandError> {
    let visible = ctx.book.visible(p, id)?;
    let (spec, outputs) = (visible.rec.spec.clone(), visible.rec.outputs.clone());
    let job = ctx.book.view_detailed(id).ok_or_else(|| not_found(id))?;
    let read = ctx.store.read();
    let unavailable = |e: vgrid_store::StoreError| {
        let why = e.fault().map_or_else(
            || e.chain(),
            |f| format!("{} ({})", f.describe(), e.chain()),
        );
        CommandError::Unavailable(format!(
            "cannot read job {id}'s history and checkpoints from the database: {why}"
        ))
    };
    let history = read.history(id).map_err(unavailable)?;
    let checkpoints = read.checkpoints(id).map_err(unavailable)?;
    Ok(Reply::Job(Box::new(JobDetail {
        job,
        spec,
        history: history.into_iter().map(history_view).collect(),
        checkpoints: checkpoints
            .into_iter()
            .map(|(c, restorable)| checkpoint_view(c, restorable))
            .collect(),
        outputs,
    })))
}

/// Where the job's outputs stand: the server answers from it (the
/// manifest, or why there is none).
pub(super) fn outputs(ctx: &Ctx, p: &Principal, id: u64) -> Result<Reply, CommandError> {
    let job = ctx.book.visible(p, id)?;
    let wanted = job.rec.spec.outputs.len();
    let manifest = job.rec.outputs.clone();
    let view = ctx.book.view(id).ok_or_else(|| not_found(id))?;
    Ok(Reply::JobOutputs(Box::new(JobOutputs {
        job: view,
        wanted,
        manifest,
    })))
}

/// Answers at once for an ended job; parks the request otherwise (the
/// transport times it out).
pub(super) fn wait(ctx: &mut Ctx, p: &Principal, id: u64, reply: ReplyTx) -> Handled {
    let ended = match ctx.book.visible(p, id) {
        Err(e) => return Handled::Answer(reply, Err(e)),
        Ok(j) => j.rec.state.is_terminal(),
    };
    if !ended {
        ctx.waiters.entry(id).or_default().push(reply);
        return Handled::Parked;
    }
    let answer = ctx
        .book
        .view(id)
        .map(|job| Reply::Waited(Box::new(WaitResponse { ended: true, job })))
        .ok_or_else(|| not_found(id));
    Handled::Answer(reply, answer)
}

pub(super) fn read_output(
    ctx: &Ctx,
    p: &Principal,
    id: u64,
    offset: u64,
    max: u64,
) -> Result<Reply, CommandError> {
    let ended = ctx.book.visible(p, id)?.rec.state.is_terminal();
    let (data, len) = ctx.output.read_at(id, offset, max).map_err(|e| {
        CommandError::Unavailable(format!("cannot read the output of job {id}: {e}"))
    })?;
    let next_offset = offset.min(len) + data.len() as u64;
    Ok(Reply::Output {
        data,
        next_offset,
        complete: ended && next_offset >= len,
    })
}
