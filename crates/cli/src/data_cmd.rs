//! A job's data on the user's side: `vgrid submit` uploads the job's
//! inputs from this machine ([`upload_inputs`]), `vgrid output` fetches
//! its outputs to it.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use vgrid_client::data::{LocalFile, Progress, fetch_outputs, upload_files};
use vgrid_model::JobSpec;

use crate::connect::{block_on, client};

/// Fetch a job's outputs (the job's owner, or an admin).
#[derive(clap::Args)]
pub struct OutputArgs {
    /// The job id.
    id: u64,
    /// Where to write them (created when missing; default: the current
    /// directory). Each output is written below it under its name.
    #[arg(long, value_name = "DIR")]
    to: Option<PathBuf>,
    /// Print what was written as JSON.
    #[arg(long)]
    json: bool,
}

/// Transfers smaller than this show no progress.
const QUIET_BELOW: u64 = 8 << 20;

/// A progress line on stderr, when stderr is a terminal and the transfer
/// is large; at most a few times a second.
struct ProgressLine {
    what: &'static str,
    shown: std::sync::Mutex<Option<Instant>>,
    on: bool,
}

impl ProgressLine {
    fn new(what: &'static str) -> ProgressLine {
        ProgressLine {
            what,
            shown: std::sync::Mutex::new(None),
            on: std::io::stderr().is_terminal(),
        }
    }

    fn show(&self, p: Progress) {
        if !self.on || p.total < QUIET_BELOW {
            return;
        }
        let Ok(mut shown) = self.shown.lock() else {
            return;
        };
        let done = p.done >= p.total;
        if !done && shown.is_some_and(|t| t.elapsed() < Duration::from_millis(200)) {
            return;
        }
        *shown = Some(Instant::now());
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{}: {:.1} of {:.1} MiB{}",
            self.what,
            mib(p.done),
            mib(p.total),
            if done { "\n" } else { "" }
        );
        let _ = err.flush();
    }
}

/// Where input `from` of a job file in `job_dir` is on this machine.
fn local_path(job_dir: &Path, from: &Path) -> PathBuf {
    if from.is_absolute() {
        from.to_path_buf()
    } else {
        job_dir.join(from)
    }
}

/// The job's inputs as files of this machine, checked: each must be a
/// regular file that can be opened (a directory, a device or a missing
/// file is refused, naming the field).
pub fn local_inputs(file: &str, job_dir: &Path, spec: &JobSpec) -> anyhow::Result<Vec<LocalFile>> {
    let names = spec.input_names();
    let mut out = Vec::with_capacity(spec.inputs.len());
    for (i, (t, name)) in spec.inputs.iter().zip(names).enumerate() {
        let path = local_path(job_dir, &t.from);
        let refuse = |why: String| {
            anyhow::anyhow!(
                "{file}: field `inputs[{i}].from`: `{}`: {why}",
                t.from.display()
            )
        };
        let meta = std::fs::metadata(&path)
            .map_err(|e| refuse(format!("cannot read {}: {e}", path.display())))?;
        if meta.is_dir() {
            return Err(refuse(format!(
                "{} is a directory; an input is a file (pack a directory into one, with tar say)",
                path.display()
            )));
        }
        if !meta.is_file() {
            return Err(refuse(format!("{} is not a regular file", path.display())));
        }
        std::fs::File::open(&path)
            .map_err(|e| refuse(format!("cannot read {}: {e}", path.display())))?;
        out.push(LocalFile { path, name });
    }
    Ok(out)
}

/// Uploads the job's inputs (read relative to `job_dir`) to the
/// controller's store; returns their data manifest's id, for the
/// submission. `None` for a job without inputs.
pub async fn upload_inputs(
    c: &vgrid_client::Client,
    files: &[LocalFile],
) -> anyhow::Result<Option<String>> {
    if files.is_empty() {
        return Ok(None);
    }
    let line = ProgressLine::new("uploading inputs");
    let (id, _, _) = upload_files(c, files, &|p| line.show(p))
        .await
        .context("cannot upload the job's inputs")?;
    Ok(Some(id.hex()))
}

pub fn output(args: OutputArgs) -> anyhow::Result<ExitCode> {
    let dir = args.to.unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    let c = client()?;
    let line = ProgressLine::new("fetching outputs");
    let (manifest, written) =
        block_on(async { fetch_outputs(&c, args.id, &dir, &|p| line.show(p)).await })??;
    if args.json {
        let doc = serde_json::json!({
            "job": args.id,
            "manifest": manifest.hex(),
            "files": written,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    for w in &written {
        writeln!(
            out,
            "{}  {} bytes",
            vgrid_model::names::display_safe(&w.path.display().to_string()),
            w.size
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_read_beside_the_job_file_and_must_be_files() {
        let tmp = tempfile::tempdir().expect("tmp");
        std::fs::write(tmp.path().join("a.txt"), "a").expect("a");
        std::fs::create_dir(tmp.path().join("d")).expect("d");
        let spec = |from: &str| {
            vgrid_jobfile::parse(
                "j.toml",
                &format!(
                    "image = \"tiny\"\ncommand = [\"/bin/true\"]\n[[inputs]]\nfrom = \"{from}\"\nto = \"/work/in.txt\"\n"
                ),
            )
            .expect("valid")
        };
        let files = local_inputs("j.toml", tmp.path(), &spec("a.txt")).expect("a file");
        assert_eq!(files[0].path, tmp.path().join("a.txt"));
        assert_eq!(files[0].name, "in.txt");
        for (from, why) in [("missing.txt", "cannot read"), ("d", "is a directory")] {
            let e = local_inputs("j.toml", tmp.path(), &spec(from)).expect_err(from);
            let e = e.to_string();
            assert!(
                e.starts_with("j.toml: field `inputs[0].from`") && e.contains(why),
                "{e}"
            );
        }
    }
}
