//! A job's data on the node: its inputs come from the controller's store
//! before its VMs boot, its outputs go back there before its end is
//! reported.
//!
//! Inputs: the job's input data manifest is fetched into the node's cache
//! (only the chunks the cache lacks travel) and exported into the unit's
//! input directory, `<state>/inputs/<job>.<attempt>/`, one file per input
//! under its guest name; the VM runtime copies them into the VM's staging
//! share (and the guest agent into the guest), and the directory is
//! removed once the VMs have started. Shown as the job's staging step.
//!
//! Outputs: when the command has exited, the driver reads the staged
//! outputs from the VM's share into the cache (never through a link the
//! guest planted), the agent writes their data manifest there and uploads
//! what the controller lacks, and only then reports the exit, naming the
//! manifest. An upload that the controller keeps failing is tried again
//! for ten minutes (`UnitTask::patiently`, as for checkpoints); after that
//! the job fails saying why, never ends as done without its outputs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vgrid_api::types::AgentEvent;
use vgrid_cas::{Manifest, ManifestId, ManifestKind, Store};
use vgrid_client::transfer::TransferError;
use vgrid_vm::error::report as sentence;

use crate::{StartRequest, UnitTask, VmDriver};

/// How many times fetching a job's inputs is tried.
const FETCH_TRIES: u32 = 3;

/// Where the agent exports the inputs of units.
fn inputs_root(state_dir: &Path) -> PathBuf {
    state_dir.join("inputs")
}

/// Removes what an earlier agent left of units' inputs (they are copied
/// into VMs while the agent runs, so none is in use when it starts).
pub(crate) fn sweep_inputs(state_dir: &Path) {
    let root = inputs_root(state_dir);
    if let Err(e) = std::fs::remove_dir_all(&root)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %root.display(), error = %e, "cannot remove old job inputs");
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

impl<D: VmDriver> UnitTask<D> {
    /// The unit's input directory.
    fn input_dir(&self) -> PathBuf {
        inputs_root(&self.shared.cfg.state_dir)
            .join(format!("{}.{}", self.unit.job, self.unit.attempt))
    }

    /// Fetches the job's input data and exports it for the VM runtime;
    /// returns the directory, or why the job cannot start. A job without
    /// inputs, or one that resumes from a checkpoint (its inputs are in
    /// the VM already), needs nothing.
    pub(crate) async fn stage_inputs(&self, req: &StartRequest) -> Result<Option<PathBuf>, String> {
        let Some(text) = &req.spec.input_data else {
            return Ok(None);
        };
        if req.restore.is_some() {
            return Ok(None);
        }
        let cache = self.shared.cache.clone().ok_or(
            "this node keeps no cache of the controller's store, so it cannot fetch the job's input data",
        )?;
        let id = ManifestId::parse(text)
            .ok_or_else(|| format!("the job's input data `{text}` is not a manifest id"))?;
        let (job, attempt) = (self.unit.job, self.unit.attempt);
        self.report(AgentEvent::Staging {
            job,
            attempt,
            detail: format!(
                "fetching the job's input data ({} file(s))",
                req.spec.inputs.len()
            ),
        })
        .await;
        let started = Instant::now();
        let client = &self.shared.client;
        let mut last = String::new();
        for _ in 0..FETCH_TRIES {
            let (m, moved) = match vgrid_client::transfer::download(client, &cache, &id).await {
                Ok(got) => got,
                Err(e) => {
                    last = sentence(&e);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let names = req.spec.input_names();
            let held: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
            if m.kind != ManifestKind::Data || held.iter().ne(names.iter()) {
                return Err(format!(
                    "input data {id} does not hold the job's inputs by name"
                ));
            }
            let dir = self.input_dir();
            let export = {
                let (cache, dir, m) = (cache.clone(), dir.clone(), m.clone());
                tokio::task::spawn_blocking(move || export_into(&cache, &m, &dir)).await
            };
            match export {
                Ok(Ok(())) => {
                    self.report(AgentEvent::Staging {
                        job,
                        attempt,
                        detail: format!(
                            "input data fetched: {} file(s), {}; {} of its {} chunks ({} KiB) travelled in {:.1} s",
                            m.files.len(),
                            mib(m.size()),
                            moved.sent,
                            moved.chunks,
                            moved.bytes / 1024,
                            started.elapsed().as_secs_f64()
                        ),
                    })
                    .await;
                    return Ok(Some(dir));
                }
                // A chunk damaged in the cache is removed when found: the
                // next try fetches it again.
                Ok(Err(e)) => last = sentence(&e),
                Err(_) => last = "the export task failed".into(),
            }
        }
        Err(format!("cannot fetch the job's input data {id}: {last}"))
    }

    /// Removes the unit's exported inputs (the VMs have them now).
    pub(crate) fn forget_inputs(&self) {
        let dir = self.input_dir();
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a job's inputs");
        }
    }

    /// The report of a unit whose command exited with `exit_code`: its
    /// outputs collected and uploaded first, named in the report; a
    /// failure to collect or upload them fails the job saying why.
    pub(crate) async fn exited(&self, exit_code: i32) -> AgentEvent {
        let (job, attempt) = (self.unit.job, self.unit.attempt);
        let failed = |reason: String| AgentEvent::Failed {
            job,
            attempt,
            reason,
        };
        let cache = self.shared.cache.clone();
        let files = match self
            .shared
            .driver
            .collect_outputs(self.unit, cache.as_deref())
            .await
        {
            Ok(None) => {
                return AgentEvent::Exited {
                    job,
                    attempt,
                    exit_code,
                    outputs: None,
                };
            }
            Ok(Some(files)) => files,
            Err(e) => return failed(format!("cannot collect the outputs: {}", e.sentence())),
        };
        let Some(cache) = cache else {
            return failed("this node keeps no store to collect the outputs in".into());
        };
        self.report(AgentEvent::StagingOut { job, attempt }).await;
        let mut m = Manifest::new(ManifestKind::Data);
        m.files = files;
        m.meta.insert("job".into(), job.to_string());
        m.meta.insert("attempt".into(), attempt.to_string());
        let kept = {
            let (cache, m) = (cache.clone(), m.clone());
            tokio::task::spawn_blocking(move || cache.put_manifest(&m)).await
        };
        let id = match kept {
            Ok(Ok(id)) => id,
            Ok(Err(e)) => {
                return failed(format!(
                    "cannot keep the outputs in the node's store: {}",
                    sentence(&e)
                ));
            }
            Err(_) => return failed("the task keeping the outputs failed".into()),
        };
        match self.upload(&cache, &m).await {
            Ok(()) => AgentEvent::Exited {
                job,
                attempt,
                exit_code,
                outputs: Some(id.hex()),
            },
            Err(why) => failed(format!(
                "the command exited with status {exit_code}, but its outputs ({} file(s), {}) could not be sent to the controller: {why}",
                m.files.len(),
                mib(m.size())
            )),
        }
    }

    /// Uploads `m` from `cache`, trying again while the controller fails.
    async fn upload(&self, cache: &Arc<Store>, m: &Manifest) -> Result<(), String> {
        let client = &self.shared.client;
        self.patiently(
            "the outputs",
            |e: &TransferError| match e {
                TransferError::Client(e) => Some(e),
                _ => None,
            },
            || vgrid_client::transfer::upload(client, cache, m),
        )
        .await
        .map(|_| ())
    }
}

/// Writes the files of `m` into a fresh `dir` (private to vgrid).
fn export_into(cache: &Store, m: &Manifest, dir: &Path) -> Result<(), vgrid_cas::CasError> {
    let io = |action: &'static str| {
        let path = dir.to_path_buf();
        move |source| vgrid_cas::CasError::Io {
            action,
            path,
            source,
        }
    };
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove")(e)),
    }
    crate::private::create_dir_all(dir).map_err(io("create directory"))?;
    cache.export(m, dir)
}
