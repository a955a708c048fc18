//! The product's driver: job units as QEMU VMs through `vgrid-vm`.
//!
//! A unit's VMs are named `j<job>-a<attempt>-v<index>` so that a restarted
//! agent finds its units in the runtime's VM directory. Output is the
//! interleaved stdout and stderr frames of the unit's first VM.
//!
//! A checkpoint carries the guest agent's output up to the pause, so a VM
//! restored from it replays that output first. The job already has it (the
//! controller keeps the job's output), so the driver skips that prefix: the
//! unit's own output stream begins where the checkpoint left off, which is
//! the offset the agent writes it at.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use vgrid_guest_proto::GuestMessage;
use vgrid_image::ImageStore;
use vgrid_vm::checkpoint::{CheckpointOptions, RestoreOptions};
use vgrid_vm::output::OutputReader;
use vgrid_vm::{
    BootImage, ImageKind, ImageSource, MountSpec, Runtime, StagingSpec, VmError, VmSpec, VmState,
};

use crate::driver::{DriverError, SavedCheckpoint, StartRequest, Unit, UnitStatus, VmDriver};

/// Images from the node's image store (`vgrid image build` / `import`).
pub struct StoreImages {
    store: ImageStore,
}

impl StoreImages {
    pub fn open(data_dir: &Path) -> Result<StoreImages, DriverError> {
        let store =
            ImageStore::open(data_dir).map_err(|e| DriverError(format!("image store: {e}")))?;
        Ok(StoreImages { store })
    }
}

impl ImageSource for StoreImages {
    fn boot_image(&self, name: &str) -> vgrid_vm::error::Result<BootImage> {
        let image = self.store.get(name).map_err(|e| VmError::BadSpec {
            field: "image".into(),
            value: name.to_string(),
            reason: e.to_string(),
        })?;
        Ok(BootImage {
            name: image.name().to_string(),
            kind: match image.kind() {
                vgrid_image::ImageKind::Stock => ImageKind::Stock,
                vgrid_image::ImageKind::Imported => ImageKind::Imported,
            },
            kernel: image.kernel(),
            initrd: image.initrd(),
            append: image.kernel_cmdline().unwrap_or_default().to_string(),
            disk: image.disk(),
            disk_format: image.disk_format().to_string(),
            agent: image.has_agent(),
            checksum: image.manifest.inputs_hash.clone(),
        })
    }

    fn probe_kernel(&self) -> Option<PathBuf> {
        self.store
            .list()
            .ok()?
            .into_iter()
            .filter_map(|e| self.store.get(&e.name).ok())
            .find_map(|i| i.kernel())
    }
}

struct UnitOutput {
    reader: OutputReader,
    /// stdout and stderr bytes in arrival order, after the skipped prefix.
    bytes: Vec<u8>,
    /// Bytes of replayed output still to drop (restored units).
    skip: u64,
    started: Instant,
    /// Work done before this unit started (from the checkpoint).
    prior_work_ms: i64,
    vms: u32,
    /// Staged outputs to copy to the host when the command has exited:
    /// (path relative to the guest working directory, host path).
    outputs: Vec<(String, PathBuf)>,
    delivered: bool,
}

/// Runs units as QEMU VMs.
pub struct QemuDriver {
    rt: Arc<Runtime>,
    state_dir: PathBuf,
    units: Mutex<HashMap<Unit, UnitOutput>>,
}

fn vm_name(unit: Unit, index: u32) -> String {
    format!("j{}-a{}-v{index}", unit.job, unit.attempt)
}

fn parse_vm_name(name: &str) -> Option<(Unit, u32)> {
    let rest = name.strip_prefix('j')?;
    let (job, rest) = rest.split_once("-a")?;
    let (attempt, index) = rest.split_once("-v")?;
    Some((
        Unit {
            job: job.parse().ok()?,
            attempt: attempt.parse().ok()?,
        },
        index.parse().ok()?,
    ))
}

fn err(e: impl std::fmt::Display) -> DriverError {
    DriverError(e.to_string())
}

impl QemuDriver {
    /// A driver over `rt`; `state_dir` keeps what a restarted agent needs
    /// (how much replayed output each restored unit skips).
    pub fn new(rt: Arc<Runtime>, state_dir: PathBuf) -> Result<QemuDriver, DriverError> {
        std::fs::create_dir_all(state_dir.join("qemu-units")).map_err(err)?;
        Ok(QemuDriver {
            rt,
            state_dir,
            units: Mutex::new(HashMap::new()),
        })
    }

    fn meta_path(&self, unit: Unit) -> PathBuf {
        self.state_dir
            .join("qemu-units")
            .join(format!("{}.{}", unit.job, unit.attempt))
    }

    /// The unit's output state, loaded again after an agent restart.
    fn with_output<T>(
        &self,
        unit: Unit,
        f: impl FnOnce(&mut UnitOutput) -> T,
    ) -> Result<T, DriverError> {
        let mut units = self.units.lock().map_err(err)?;
        if let std::collections::hash_map::Entry::Vacant(slot) = units.entry(unit) {
            let meta = std::fs::read_to_string(self.meta_path(unit)).unwrap_or_default();
            let mut fields = meta
                .split_whitespace()
                .map(|v| v.parse::<i64>().unwrap_or(0));
            let skip = fields.next().unwrap_or(0).max(0) as u64;
            let prior_work_ms = fields.next().unwrap_or(0);
            let vms = fields.next().unwrap_or(1).max(1) as u32;
            let reader = self.rt.output(&vm_name(unit, 0)).map_err(err)?;
            slot.insert(UnitOutput {
                reader,
                bytes: Vec::new(),
                skip,
                started: Instant::now(),
                prior_work_ms,
                vms,
                // Lost with an agent restart: such a unit's outputs stay
                // in its stage directory.
                outputs: Vec::new(),
                delivered: false,
            });
        }
        let out = units
            .get_mut(&unit)
            .ok_or_else(|| DriverError(format!("unknown unit {unit:?}")))?;
        // Take in what the guest wrote since the last look.
        loop {
            let msgs = out.reader.poll().map_err(err)?;
            if msgs.is_empty() {
                break;
            }
            for m in msgs {
                if let GuestMessage::Stdout(b) | GuestMessage::Stderr(b) = m {
                    let drop = (out.skip as usize).min(b.len());
                    out.skip -= drop as u64;
                    out.bytes.extend_from_slice(&b[drop..]);
                }
            }
        }
        Ok(f(out))
    }

    fn vm_spec(req: &StartRequest, index: u32) -> Result<VmSpec, DriverError> {
        let spec = &req.spec;
        let mut vm = VmSpec::new(
            vm_name(req.unit, index),
            spec.image.clone(),
            spec.command.clone(),
        );
        vm.cpus = spec.cpus;
        vm.memory_mb = spec.memory_mb;
        vm.env = spec.env.clone();
        vm.user = spec.user.clone();
        vm.mounts = spec
            .mounts
            .iter()
            .map(|m| MountSpec {
                host: m.host.clone(),
                guest: m.guest.display().to_string(),
                readonly: m.readonly,
            })
            .collect();
        if !spec.inputs.is_empty() || !spec.outputs.is_empty() {
            // The runtime copies inputs into one working directory under
            // their file names and outputs back from paths relative to it.
            let workdir = staging_workdir(spec)?;
            let rel = |p: &Path| {
                p.strip_prefix(&workdir)
                    .map(|r| r.display().to_string())
                    .map_err(|_| {
                        DriverError(format!(
                            "{} is not under {}",
                            p.display(),
                            workdir.display()
                        ))
                    })
            };
            vm.workdir = Some(workdir.display().to_string());
            vm.staging = Some(StagingSpec {
                inputs: spec.inputs.iter().map(|t| t.from.clone()).collect(),
                outputs: spec
                    .outputs
                    .iter()
                    .map(|t| rel(&t.from))
                    .collect::<Result<_, _>>()?,
            });
        }
        Ok(vm)
    }

    /// Copies staged outputs of the unit's first VM to their host paths.
    /// A destination must lie in an existing directory inside the node's
    /// allowed host directories (the runtime's mount roots), symbolic links
    /// followed; an existing symbolic link is never written through.
    fn deliver_outputs(
        &self,
        unit: Unit,
        spec_outputs: &[(String, PathBuf)],
    ) -> Result<(), DriverError> {
        let stage = self.rt.stage_dir(&vm_name(unit, 0)).map_err(err)?;
        let roots = &self.rt.config().mount_roots;
        for (rel, to) in spec_outputs {
            let from = stage.join(rel);
            let (Some(parent), Some(file)) = (to.parent(), to.file_name()) else {
                return Err(DriverError(format!(
                    "output {} has no file name",
                    to.display()
                )));
            };
            let parent = vgrid_vm::fsutil::resolve_inside("outputs.to", parent, roots)
                .map_err(|e| DriverError(format!("output {}: {e}", to.display())))?;
            let dest = parent.join(file);
            if dest
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
            {
                return Err(DriverError(format!(
                    "output {} is a symbolic link; refusing to write through it",
                    dest.display()
                )));
            }
            std::fs::copy(&from, &dest).map_err(|e| {
                DriverError(format!(
                    "cannot copy output {} to {}: {e}",
                    from.display(),
                    dest.display()
                ))
            })?;
        }
        Ok(())
    }
}

/// The guest directory inputs go to: every input's `to` must be a file
/// named like its source, in one directory, and outputs must lie below it.
fn staging_workdir(spec: &vgrid_jobfile::JobSpec) -> Result<PathBuf, DriverError> {
    let mut dirs = spec
        .inputs
        .iter()
        .map(|t| t.to.parent().map(Path::to_path_buf))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| DriverError("an input goes to the guest's root".into()))?;
    dirs.sort();
    dirs.dedup();
    let workdir = match dirs.as_slice() {
        [] => spec
            .outputs
            .first()
            .and_then(|t| t.from.parent())
            .map_or_else(|| PathBuf::from("/work"), Path::to_path_buf),
        [one] => one.clone(),
        _ => {
            return Err(DriverError(
                "all inputs must go to one guest directory".into(),
            ));
        }
    };
    for t in &spec.inputs {
        if t.to.file_name() != t.from.file_name() {
            return Err(DriverError(format!(
                "input {} must keep its file name in the guest",
                t.from.display()
            )));
        }
    }
    Ok(workdir)
}

impl VmDriver for QemuDriver {
    async fn start(&self, req: StartRequest) -> Result<(), DriverError> {
        let skip = req.restore.as_ref().map_or(0, |c| c.log_offset);
        let prior = req.restore.as_ref().map_or(0, |c| c.work_ms);
        std::fs::write(
            self.meta_path(req.unit),
            format!("{skip} {prior} {}\n", req.vms),
        )
        .map_err(err)?;
        let outputs = if req.spec.outputs.is_empty() {
            Vec::new()
        } else {
            let workdir = staging_workdir(&req.spec)?;
            req.spec
                .outputs
                .iter()
                .filter_map(|t| {
                    t.from
                        .strip_prefix(&workdir)
                        .ok()
                        .map(|r| (r.display().to_string(), t.to.clone()))
                })
                .collect()
        };
        for i in 0..req.vms {
            match &req.restore {
                Some(c) => {
                    let dir = PathBuf::from(&c.location).join(format!("v{i}"));
                    self.rt
                        .restore(&dir, &vm_name(req.unit, i), RestoreOptions::default())
                        .await
                        .map_err(|e| {
                            DriverError(format!("restore from checkpoint {}: {e}", c.seq))
                        })?;
                }
                None => {
                    let spec = Self::vm_spec(&req, i)?;
                    self.rt.start(spec).await.map_err(err)?;
                }
            }
        }
        let mut units = self.units.lock().map_err(err)?;
        let reader = self.rt.output(&vm_name(req.unit, 0)).map_err(err)?;
        units.insert(
            req.unit,
            UnitOutput {
                reader,
                bytes: Vec::new(),
                skip,
                started: Instant::now(),
                prior_work_ms: prior,
                vms: req.vms,
                outputs,
                delivered: false,
            },
        );
        Ok(())
    }

    async fn units(&self) -> Result<Vec<Unit>, DriverError> {
        let mut out: Vec<Unit> = self
            .rt
            .names()
            .map_err(err)?
            .iter()
            .filter_map(|n| parse_vm_name(n).map(|(u, _)| u))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn status(&self, unit: Unit) -> Result<UnitStatus, DriverError> {
        let vms = self.with_output(unit, |o| o.vms)?;
        let mut first_exit = None;
        for i in 0..vms {
            let info = self.rt.inspect(&vm_name(unit, i)).await.map_err(err)?;
            match info.state {
                VmState::Exited { code, signal } => {
                    let status = code.unwrap_or_else(|| 128 + signal.unwrap_or(0));
                    if i == 0 {
                        first_exit = Some(status);
                    }
                }
                VmState::Failed { message } => return Ok(UnitStatus::Failed(message)),
                VmState::Crashed { console_tail } => {
                    return Ok(UnitStatus::Failed(format!(
                        "the VM crashed: {console_tail}"
                    )));
                }
                VmState::Stopped | VmState::Saved | VmState::PoweredOff => {
                    if i == 0 {
                        return Ok(UnitStatus::Failed(format!(
                            "the VM is {}",
                            info.state.word()
                        )));
                    }
                }
                _ => return Ok(UnitStatus::Running),
            }
        }
        let Some(code) = first_exit else {
            return Ok(UnitStatus::Running);
        };
        let pending = self.with_output(unit, |o| {
            if o.delivered {
                Vec::new()
            } else {
                o.delivered = true;
                o.outputs.clone()
            }
        })?;
        if let Err(e) = self.deliver_outputs(unit, &pending) {
            return Ok(UnitStatus::Failed(e.0));
        }
        Ok(UnitStatus::Exited(code))
    }

    async fn output(&self, unit: Unit, from: u64) -> Result<Vec<u8>, DriverError> {
        self.with_output(unit, |o| {
            o.bytes.get(from as usize..).unwrap_or_default().to_vec()
        })
    }

    async fn checkpoint(
        &self,
        unit: Unit,
        dir: PathBuf,
        stop: bool,
    ) -> Result<SavedCheckpoint, DriverError> {
        let (vms, work_ms) = self.with_output(unit, |o| {
            (
                o.vms,
                o.prior_work_ms + o.started.elapsed().as_millis() as i64,
            )
        })?;
        let group: Vec<(String, PathBuf)> = (0..vms)
            .map(|i| (vm_name(unit, i), dir.join(format!("v{i}"))))
            .collect();
        std::fs::create_dir_all(&dir).map_err(err)?;
        let result = self
            .rt
            .checkpoint_group(
                &group,
                CheckpointOptions {
                    stop,
                    ..CheckpointOptions::default()
                },
            )
            .await;
        // Everything the guest wrote before the pause is in the checkpoint.
        let output_bytes = self.with_output(unit, |o| o.bytes.len() as u64)?;
        result.map_err(err)?;
        Ok(SavedCheckpoint {
            location: dir.display().to_string(),
            work_ms,
            output_bytes,
        })
    }

    async fn pause(&self, unit: Unit) -> Result<(), DriverError> {
        let vms = self.with_output(unit, |o| o.vms)?;
        for i in 0..vms {
            self.rt.pause(&vm_name(unit, i)).await.map_err(err)?;
        }
        Ok(())
    }

    async fn resume(&self, unit: Unit) -> Result<(), DriverError> {
        let vms = self.with_output(unit, |o| o.vms)?;
        for i in 0..vms {
            self.rt.resume(&vm_name(unit, i)).await.map_err(err)?;
        }
        Ok(())
    }

    async fn kill(&self, unit: Unit) -> Result<(), DriverError> {
        for name in self.rt.names().map_err(err)? {
            if parse_vm_name(&name).is_some_and(|(u, _)| u == unit) {
                let _ = self.rt.kill(&name).await;
            }
        }
        Ok(())
    }

    async fn remove(&self, unit: Unit) -> Result<(), DriverError> {
        for name in self.rt.names().map_err(err)? {
            if parse_vm_name(&name).is_some_and(|(u, _)| u == unit) {
                let _ = self.rt.kill(&name).await;
                self.rt.remove(&name).await.map_err(err)?;
            }
        }
        if let Ok(mut units) = self.units.lock() {
            units.remove(&unit);
        }
        let _ = std::fs::remove_file(self.meta_path(unit));
        Ok(())
    }
}

#[cfg(test)]
mod qemu_tests {
    use super::*;

    #[test]
    fn vm_names_round_trip() {
        let u = Unit {
            job: 42,
            attempt: 3,
        };
        assert_eq!(vm_name(u, 1), "j42-a3-v1");
        assert_eq!(parse_vm_name("j42-a3-v1"), Some((u, 1)));
        assert_eq!(parse_vm_name("web"), None);
        assert_eq!(parse_vm_name("j1-ax-v0"), None);
    }

    #[test]
    fn staging_needs_one_guest_directory() {
        let spec = |extra: &str| {
            vgrid_jobfile::parse(
                "j.toml",
                &format!("image = \"tiny\"\ncommand = [\"/bin/true\"]\n{extra}"),
            )
            .expect("valid")
        };
        let ok = spec(
            "[[inputs]]\nfrom = \"/srv/a.txt\"\nto = \"/work/a.txt\"\n[[outputs]]\nfrom = \"/work/out/r.txt\"\nto = \"/srv/r.txt\"\n",
        );
        assert_eq!(staging_workdir(&ok), Ok(PathBuf::from("/work")));
        let two = spec(
            "[[inputs]]\nfrom = \"/srv/a\"\nto = \"/w1/a\"\n[[inputs]]\nfrom = \"/srv/b\"\nto = \"/w2/b\"\n",
        );
        assert!(staging_workdir(&two).is_err());
        let renamed = spec("[[inputs]]\nfrom = \"/srv/a\"\nto = \"/work/b\"\n");
        assert!(staging_workdir(&renamed).is_err());
    }
}
