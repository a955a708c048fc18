//! `vgrid vm`: node-local VM commands. The logic is in `vgrid-vm`; this
//! module parses arguments and prints results.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use vgrid_vm::checkpoint::{CheckpointOptions, RestoreOptions};
use vgrid_vm::error::SpecError;
use vgrid_vm::guest_proto::GuestMessage;
use vgrid_vm::{
    CheckpointError, MountSpec, PortMap, Runtime, RuntimeConfig, StartError, StoreImages, VmInfo,
    VmSpec, VmState,
};

#[derive(clap::Subcommand)]
pub enum VmCmd {
    /// Start a VM running a command, detached; returns once the command runs.
    Start(Box<StartArgs>),
    /// List VMs on this node.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the command's standard output and error.
    Logs {
        name: String,
        /// Keep printing new output until the VM ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// Print the VM's serial console.
    Console {
        name: String,
        /// Keep printing until the VM ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// Wait for the VM to end; print the command's exit status and exit with it.
    Wait { name: String },
    /// Pause a VM's virtual CPUs.
    Pause { name: String },
    /// Resume a paused VM.
    Resume { name: String },
    /// Save a consistent checkpoint (several VMs: coherently, into DIR/NAME).
    Checkpoint {
        #[arg(required = true)]
        names: Vec<String>,
        /// Directory to create for the checkpoint.
        #[arg(long)]
        out: PathBuf,
        /// End the VM(s) after saving instead of resuming.
        #[arg(long)]
        stop: bool,
        /// Store memory chunks without zstd compression.
        #[arg(long)]
        no_compress: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start a new VM from a checkpoint.
    Restore {
        dir: PathBuf,
        /// Name of the new VM.
        #[arg(long)]
        name: String,
        /// Leave it paused.
        #[arg(long)]
        paused: bool,
    },
    /// Move a running VM into a new QEMU process (live, over loopback TCP).
    Migrate {
        name: String,
        /// Name of the VM afterwards.
        #[arg(long)]
        to: String,
    },
    /// Stop gracefully (the command gets SIGTERM), forced after the timeout.
    Stop {
        name: String,
        /// Seconds before the command is killed and QEMU ended.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// End QEMU at once.
    Kill { name: String },
    /// Remove a VM that is not running, with its directory.
    Rm { name: String },
}

#[derive(clap::Args)]
pub struct StartArgs {
    /// VM name.
    name: String,
    /// Image to boot.
    #[arg(long)]
    image: String,
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    #[arg(long, default_value_t = 256)]
    memory_mb: u64,
    /// Disk size in GiB (default: the image's).
    #[arg(long)]
    disk_gb: Option<u64>,
    /// HOSTDIR:GUESTDIR[:ro], a data repository (HOSTDIR inside an allowed
    /// root, relative paths from `$VGRID_DATA_DIR/repos`).
    #[arg(long)]
    mount: Vec<String>,
    /// K=V, an environment variable for the command.
    #[arg(long)]
    env: Vec<String>,
    /// Run the command as this user (created in the guest).
    #[arg(long)]
    user: Option<String>,
    /// HOSTPORT:GUESTPORT, a published TCP port.
    #[arg(long)]
    publish: Vec<String>,
    /// Working directory in the guest.
    #[arg(long)]
    workdir: Option<String>,
    /// No network interface.
    #[arg(long)]
    no_network: bool,
    /// Copy this host file into the working directory before the command.
    #[arg(long)]
    stage_in: Vec<PathBuf>,
    /// Copy this file (relative to the working directory) out after the command.
    #[arg(long)]
    stage_out: Vec<String>,
    /// The command and its arguments (after `--`).
    #[arg(last = true)]
    command: Vec<String>,
}

pub fn run(cmd: VmCmd) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run_async(cmd))
}

fn open_runtime() -> anyhow::Result<Runtime> {
    let data = crate::data_dir::data_dir()?;
    let cfg = RuntimeConfig::from_env(&data)?;
    let images = StoreImages::open(&data)?;
    Ok(Runtime::open(cfg, Arc::new(images))?)
}

async fn run_async(cmd: VmCmd) -> anyhow::Result<ExitCode> {
    let rt = open_runtime()?;
    match cmd {
        VmCmd::Start(args) => {
            let spec = start_spec(*args)?;
            let info = rt.start(spec).await.map_err(|e| match e {
                StartError::Spec(e) => with_flag(e),
                e => e.into(),
            })?;
            println!(
                "VM {} started ({}, {}, pid {})",
                info.name,
                info.state.word(),
                info.accel.name(),
                info.pid.map(|p| p.to_string()).unwrap_or("-".into())
            );
        }
        VmCmd::Ls { json } => {
            let vms = rt.list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&vms)?);
            } else {
                print_table(&vms);
            }
        }
        VmCmd::Logs { name, follow } => logs(&rt, &name, follow).await?,
        VmCmd::Console { name, follow } => console(&rt, &name, follow).await?,
        VmCmd::Wait { name } => {
            let info = rt.wait(&name).await?;
            return Ok(report_end(&info));
        }
        VmCmd::Pause { name } => println!("{}", rt.pause(&name).await?.state.word()),
        VmCmd::Resume { name } => println!("{}", rt.resume(&name).await?.state.word()),
        VmCmd::Checkpoint {
            names,
            out,
            stop,
            no_compress,
            json,
        } => {
            let opts = CheckpointOptions {
                stop,
                compress: !no_compress,
            };
            let reports = if names.len() == 1 {
                rt.checkpoint(&names[0], &out, opts).await.map(|r| vec![r])
            } else {
                let vms: Vec<(String, PathBuf)> =
                    names.iter().map(|n| (n.clone(), out.join(n))).collect();
                rt.checkpoint_group(&vms, opts).await
            }
            .map_err(|e| match e {
                CheckpointError::Spec(e) => with_flag(e),
                e => e.into(),
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                for r in reports {
                    println!(
                        "{}: checkpoint {} ({} stored: memory stream {}, {} new of {} chunks, disk {}; paused {} ms){}",
                        r.name,
                        r.dir.display(),
                        human(r.stored_bytes),
                        human(r.stream_bytes),
                        r.new_chunks,
                        r.chunks,
                        human(r.disk_bytes),
                        r.paused_ms,
                        r.parent
                            .map(|p| format!(", parent {}", p.display()))
                            .unwrap_or_default()
                    );
                }
            }
        }
        VmCmd::Restore { dir, name, paused } => {
            let r = rt.restore(&dir, &name, RestoreOptions { paused }).await?;
            println!(
                "VM {} restored from {} ({}; checksums verified in {} ms, loaded in {} ms)",
                r.vm.name,
                dir.display(),
                r.vm.state.word(),
                r.verify_ms,
                r.load_ms
            );
        }
        VmCmd::Migrate { name, to } => {
            let r = rt.migrate(&name, &to).await?;
            println!(
                "VM {name} is now {} ({}; {} sent, downtime {} ms)",
                r.vm.name,
                r.vm.state.word(),
                human(r.transferred_bytes),
                r.downtime_ms
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "?".into())
            );
        }
        VmCmd::Stop { name, timeout } => {
            let info = rt.stop(&name, Duration::from_secs(timeout)).await?;
            println!("{}", info.state.word());
        }
        VmCmd::Kill { name } => println!("{}", rt.kill(&name).await?.state.word()),
        VmCmd::Rm { name } => rt.remove(&name).await?,
    }
    Ok(ExitCode::SUCCESS)
}

fn start_spec(a: StartArgs) -> anyhow::Result<VmSpec> {
    let mut spec = VmSpec::new(a.name, a.image, a.command);
    spec.cpus = a.cpus;
    spec.memory_mb = a.memory_mb;
    spec.disk_gb = a.disk_gb;
    spec.task.user = a.user;
    spec.task.workdir = a.workdir;
    spec.network = !a.no_network;
    for m in &a.mount {
        spec.mounts.push(MountSpec::parse(m).map_err(with_flag)?);
    }
    for e in &a.env {
        let Some((k, v)) = e.split_once('=') else {
            anyhow::bail!("--env `{e}`: expected K=V");
        };
        spec.task.env.insert(k.to_string(), v.to_string());
    }
    for p in &a.publish {
        spec.publish.push(PortMap::parse(p).map_err(with_flag)?);
    }
    if !a.stage_in.is_empty() || !a.stage_out.is_empty() {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        spec.task.staging = Some(vgrid_vm::StagingSpec {
            inputs: a
                .stage_in
                .iter()
                .map(|p| {
                    if p.is_absolute() {
                        p.clone()
                    } else {
                        cwd.join(p)
                    }
                })
                .collect(),
            outputs: a.stage_out,
            input_dir: None,
        });
    }
    Ok(spec)
}

/// The flag a field of a VM request comes from (the runtime names the
/// request's fields, `cpus` or `mounts[0].host`, not this command's flags).
fn flag_of(field: &str) -> Option<&'static str> {
    let base = field.split(['[', '.']).next().unwrap_or(field);
    Some(match base {
        "cpus" => "--cpus",
        "memory_mb" => "--memory-mb",
        "disk_gb" => "--disk-gb",
        "mounts" => "--mount",
        "publish" => "--publish",
        "staging" if field.starts_with("staging.inputs") => "--stage-in",
        "out" => "--out",
        _ => return None,
    })
}

/// A refused field of the request, named by the flag it came from.
fn with_flag(e: SpecError) -> anyhow::Error {
    match flag_of(&e.field) {
        Some(flag) => anyhow::anyhow!("{flag} `{}`: {}", e.value, e.reason),
        None => e.into(),
    }
}

fn print_table(vms: &[VmInfo]) {
    println!(
        "{:<20} {:<14} {:<10} {:>4} {:>8} {:<5} {:>8}  LAST CHECKPOINT",
        "NAME", "STATE", "IMAGE", "CPUS", "MEMORY", "ACCEL", "PID"
    );
    for v in vms {
        println!(
            "{:<20} {:<14} {:<10} {:>4} {:>6}Mi {:<5} {:>8}  {}",
            v.name,
            v.state.word(),
            v.image,
            v.cpus,
            v.memory_mb,
            v.accel.name(),
            v.pid.map(|p| p.to_string()).unwrap_or("-".into()),
            v.last_checkpoint
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or("-".into())
        );
    }
}

/// Prints how the VM ended and returns the exit code to end with.
fn report_end(info: &VmInfo) -> ExitCode {
    match &info.state {
        VmState::Exited { .. } => {
            let code = info
                .state
                .exit_status()
                .map(|s| s.shell_code())
                .unwrap_or(255);
            println!("{code}");
            ExitCode::from(code.clamp(0, 255) as u8)
        }
        VmState::PoweredOff => {
            println!("0");
            ExitCode::SUCCESS
        }
        VmState::Crashed { console_tail } => {
            eprintln!(
                "vgrid: VM {} crashed; last console lines:\n{console_tail}",
                info.name
            );
            ExitCode::FAILURE
        }
        VmState::Failed { message } => {
            eprintln!("vgrid: VM {}: the guest agent failed: {message}", info.name);
            ExitCode::FAILURE
        }
        other => {
            eprintln!("vgrid: VM {} is {}", info.name, other.word());
            ExitCode::FAILURE
        }
    }
}

async fn logs(rt: &Runtime, name: &str, follow: bool) -> anyhow::Result<()> {
    let mut reader = rt.output(name)?;
    loop {
        let msgs = reader.drain()?;
        let got = !msgs.is_empty();
        {
            let mut out = std::io::stdout().lock();
            let mut err = std::io::stderr().lock();
            for m in msgs {
                // A closed pipe (`| head`) ends the command quietly.
                let written = match m {
                    GuestMessage::Stdout(b) => out.write_all(&b).and_then(|_| out.flush()),
                    GuestMessage::Stderr(b) => err.write_all(&b),
                    _ => Ok(()),
                };
                if written.is_err() {
                    return Ok(());
                }
            }
        }
        if !follow {
            return Ok(());
        }
        if !got && !rt.inspect(name).await?.state.is_live() {
            // One last read: frames written just before the end.
            let rest = reader.drain()?;
            let mut out = std::io::stdout().lock();
            for m in rest {
                match m {
                    GuestMessage::Stdout(b) => {
                        let _ = out.write_all(&b);
                    }
                    GuestMessage::Stderr(b) => {
                        let _ = std::io::stderr().write_all(&b);
                    }
                    _ => {}
                }
            }
            return Ok(());
        }
        if !got {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn console(rt: &Runtime, name: &str, follow: bool) -> anyhow::Result<()> {
    let path = rt.console_path(name)?;
    let mut offset = 0u64;
    loop {
        let chunk = read_from(&path, offset)?;
        offset += chunk.len() as u64;
        if std::io::stdout().write_all(&chunk).is_err() {
            return Ok(());
        }
        let _ = std::io::stdout().flush();
        if !follow || (chunk.is_empty() && !rt.inspect(name).await?.state.is_live()) {
            return Ok(());
        }
        if chunk.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn read_from(path: &Path, offset: u64) -> anyhow::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    f.seek(SeekFrom::Start(offset))
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut buf = Vec::new();
    f.take(4 << 20)
        .read_to_end(&mut buf)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(buf)
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_fields_are_named_by_their_flag() {
        let e = with_flag(SpecError::new("memory_mb", "1", "use 64 to 1048576"));
        assert_eq!(e.to_string(), "--memory-mb `1`: use 64 to 1048576");
        let e = with_flag(PortMap::parse("80").unwrap_err());
        assert!(e.to_string().starts_with("--publish `80`: "), "{e}");
        let e = with_flag(SpecError::new("staging.inputs[1]", "a", "has no file name"));
        assert!(e.to_string().starts_with("--stage-in `a`"), "{e}");
        let e = with_flag(SpecError::new("owner", "A", "not a user name"));
        assert!(e.to_string().starts_with("owner `A`"), "{e}");
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 20), "3.0 MiB");
    }
}
