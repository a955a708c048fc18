//! Node agents' requests: polls, reports and output.

use vgrid_api::types::{AgentEvent, AgentReport, Principal};
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
    mut report: AgentReport,
) -> Result<Reply, CommandError> {
    // Outputs a node names must be in the store, whole, and what the job
    // asked for; otherwise the job fails saying so (refusing the report
    // would leave it running forever).
    let mut collected = Vec::new();
    for event in &mut report.events {
        if let AgentEvent::Exited {
            job,
            attempt,
            outputs: Some(manifest),
            ..
        } = event
        {
            match check_outputs(ctx, *job, manifest) {
                Ok(id) => collected.push((*job, id)),
                Err(why) => {
                    tracing::warn!(job = *job, node = %report.node, %why, "outputs refused");
                    *event = AgentEvent::Failed {
                        job: *job,
                        attempt: *attempt,
                        reason: format!("the outputs the node sent were refused: {why}"),
                    };
                }
            }
        }
    }
    let facts = Facts {
        output: ctx.output,
        cas: ctx.cas,
    };
    let measured: Vec<Measured> = report.events.iter().filter_map(measured).collect();
    let answer = ctx.book.report(ctx.now, p, report, &facts)?;
    for m in measured {
        match m {
            Measured::Checkpoint {
                took_ms,
                sent_bytes,
            } => {
                ctx.metrics
                    .checkpoint_seconds
                    .observe(took_ms as f64 / 1000.0);
                if let Some(bytes) = sent_bytes {
                    ctx.metrics.checkpoint_bytes.observe(bytes as f64);
                }
            }
            Measured::Restore { ms } => ctx.metrics.restore_seconds.observe(ms as f64 / 1000.0),
        }
    }
    // Kept by a ref as long as the job is (the database says which).
    for (job, id) in collected {
        if ctx.book.outputs_of(job) == Some(id.hex())
            && let Err(e) = ctx.cas.set_ref(&vgrid_server::store::outputs_ref(job), &id)
        {
            tracing::warn!(job, error = %e, "cannot name a job's outputs in the store");
        }
    }
    Ok(answer)
}

/// What a node measured, for `/metrics`.
enum Measured {
    Checkpoint {
        took_ms: u64,
        sent_bytes: Option<u64>,
    },
    Restore {
        ms: u64,
    },
}

fn measured(event: &AgentEvent) -> Option<Measured> {
    match *event {
        AgentEvent::Checkpointed {
            took_ms: Some(took_ms),
            sent_bytes,
            ..
        } => Some(Measured::Checkpoint {
            took_ms,
            sent_bytes,
        }),
        AgentEvent::Running {
            restore_ms: Some(ms),
            ..
        } => Some(Measured::Restore { ms }),
        _ => None,
    }
}

/// Checks the outputs manifest a node sent for `job`: in the store (so
/// whole), of data, one file for each output the job file names, by its
/// name. A job the book does not know is left to the book.
fn check_outputs(ctx: &Ctx, job: u64, manifest: &str) -> Result<vgrid_cas::ManifestId, String> {
    let id = vgrid_cas::ManifestId::parse(manifest)
        .ok_or_else(|| format!("`{manifest}` is not a manifest id"))?;
    let Some(spec) = ctx.book.spec_of(job) else {
        return Ok(id);
    };
    let m = ctx
        .cas
        .get_manifest(&id)
        .map_err(|e| vgrid_model::sentence(&e))?;
    if m.kind != vgrid_cas::ManifestKind::Data {
        return Err(format!("manifest {id} is not of data"));
    }
    let mut wanted: Vec<String> = spec
        .outputs
        .iter()
        .map(|t| t.to.display().to_string())
        .collect();
    let mut got: Vec<String> = m.files.iter().map(|f| f.path.clone()).collect();
    wanted.sort();
    got.sort();
    if wanted != got {
        return Err(format!(
            "manifest {id} holds {} file(s), not the job's {} output(s) by name",
            got.len(),
            wanted.len()
        ));
    }
    Ok(id)
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
