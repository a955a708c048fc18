//! Job commands: `submit` (with [`crate::data_cmd`] for the inputs),
//! `ps`, `show`, `logs`, `wait`, `cancel`, `hold`,
//! `release`, `suspend`, `resume`, `checkpoint`, `migrate`. Each is a client
//! of the controller's API.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use vgrid_api::types::{JobDetail, JobView, SubmitRequest};
use vgrid_model::JobState;

use crate::connect::{block_on, client, format_time};
use crate::exit::Exit;

/// Submit a job file; prints the new job's id. The job's `inputs` are
/// uploaded from this machine first (a relative `from` is read beside the
/// job file).
#[derive(clap::Args)]
pub struct SubmitArgs {
    /// The job file (TOML; see docs/jobs.md).
    file: PathBuf,
    /// Keep the job held until `vgrid release`.
    #[arg(long)]
    hold: bool,
    /// Makes the submission safe to repeat: the controller keeps one job per
    /// key and user (default: a random key, used for this command's own
    /// retries after a broken connection).
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Print `{"id": N}` instead of the bare id.
    #[arg(long)]
    json: bool,
}

/// List jobs: yours, or with `--all` or `--user` (admin) other users'.
#[derive(clap::Args)]
pub struct PsArgs {
    /// Every user's jobs (admin).
    #[arg(long)]
    all: bool,
    /// Only jobs in these states (comma-separated: pending, held, staging,
    /// booting, running, checkpointing, suspended, preempted, migrating,
    /// staging-out, done, failed, cancelled).
    #[arg(long, value_name = "STATE[,STATE]", value_delimiter = ',', value_parser = parse_state)]
    state: Vec<JobState>,
    /// Only this user's jobs (another user's: admin).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// Print only these columns, tab-separated, without a header (for
    /// scripts), e.g. `id,state,name`. Columns: id, name, owner, state,
    /// node, class, image, cpus, memory_mb, vms, exit_code, submitted,
    /// updated, reason.
    #[arg(long, value_name = "COLUMN[,COLUMN]", value_delimiter = ',', value_parser = parse_column, conflicts_with = "json")]
    format: Vec<Column>,
    /// Print JSON (an array of jobs).
    #[arg(long)]
    json: bool,
}

/// Show a job with its state history.
#[derive(clap::Args)]
pub struct ShowArgs {
    /// The job id.
    id: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Print a job's output (stdout and stderr of its command).
#[derive(clap::Args)]
pub struct LogsArgs {
    /// The job id.
    id: u64,
    /// Keep printing as output arrives, until the job ends.
    #[arg(short, long)]
    follow: bool,
}

/// Wait for a job to end.
#[derive(clap::Args)]
pub struct WaitArgs {
    /// The job id.
    id: u64,
    /// Print the ended job as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// A command on one or more jobs: each is tried, each is reported.
#[derive(clap::Args)]
pub struct IdsArgs {
    /// The job ids.
    #[arg(required = true, num_args = 1..)]
    ids: Vec<u64>,
    /// Print JSON: per id, `{"id", "job"}` or `{"id", "error"}`.
    #[arg(long)]
    json: bool,
}

/// Move a job to another node: a running job is checkpointed and resumes
/// there; a waiting one starts there next.
#[derive(clap::Args)]
pub struct MigrateArgs {
    /// The job id.
    id: u64,
    /// The node to move to (the scheduler picks one when absent).
    #[arg(long)]
    to: Option<String>,
    /// Print the job as JSON.
    #[arg(long)]
    json: bool,
}

pub fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let source = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read job file {}", args.file.display()))?;
    let name = args.file.display().to_string();
    // Refuse a bad file here already: the same check runs on the server,
    // but this one works without a server and costs nothing.
    let spec = vgrid_jobfile::parse(&name, &source)?;
    // Inputs are this machine's files, named relative to the job file.
    let job_dir = args
        .file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let inputs = crate::data_cmd::local_inputs(&name, job_dir, &spec)?;
    let key = match args.idempotency_key {
        Some(k) => k,
        None => random_key()?,
    };
    vgrid_api::types::check_idempotency_key(&key)
        .map_err(|why| anyhow::anyhow!("--idempotency-key: {why}"))?;
    let c = client()?;
    let id = block_on(async {
        let input_data = crate::data_cmd::upload_inputs(&c, &inputs).await?;
        let req = SubmitRequest {
            file_name: name.clone(),
            source,
            hold: args.hold,
            input_data,
        };
        Ok::<u64, anyhow::Error>(submit_retrying(&c, &req, &key).await?)
    })??;
    if args.json {
        println!("{}", serde_json::json!({ "id": id }));
    } else {
        println!("{id}");
    }
    Ok(ExitCode::SUCCESS)
}

/// How long `submit` keeps trying when the controller cannot be reached.
const SUBMIT_PATIENCE: Duration = Duration::from_secs(20);

/// Submits, and after a broken connection submits again with the same key:
/// a job that was stored before the connection broke is found, not made
/// twice. A refusal (a 503 from a controller that cannot write its
/// database, too) is shown at once.
async fn submit_retrying(
    c: &vgrid_client::Client,
    req: &SubmitRequest,
    key: &str,
) -> Result<u64, vgrid_client::ClientError> {
    let deadline = tokio::time::Instant::now() + SUBMIT_PATIENCE;
    let mut pause = Duration::from_millis(250);
    loop {
        match c.submit_request(req, Some(key)).await {
            Err(e) if matches!(e, vgrid_client::ClientError::Connect { .. }) => {
                if tokio::time::Instant::now() + pause > deadline {
                    return Err(e);
                }
                eprintln!("vgrid: {e}; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(4));
            }
            other => return other,
        }
    }
}

/// 128 random bits as hex, from the kernel.
fn random_key() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub fn ps(args: PsArgs) -> anyhow::Result<ExitCode> {
    let c = client()?;
    let mut jobs = block_on(c.jobs_of(args.all, args.user.as_deref()))??;
    if !args.state.is_empty() {
        jobs.retain(|j| args.state.contains(&j.state));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&jobs)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    if args.format.is_empty() {
        write_ps(&mut out, &jobs)?;
    } else {
        write_columns(&mut out, &jobs, &args.format)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_state(s: &str) -> Result<JobState, String> {
    JobState::parse(s.trim()).ok_or_else(|| {
        let names: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
        format!("no state `{s}`; states: {}", names.join(", "))
    })
}

/// A column of `ps --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Id,
    Name,
    Owner,
    State,
    Node,
    Class,
    Image,
    Cpus,
    MemoryMb,
    Vms,
    ExitCode,
    Submitted,
    Updated,
    Reason,
}

impl Column {
    const ALL: [(&'static str, Column); 14] = [
        ("id", Column::Id),
        ("name", Column::Name),
        ("owner", Column::Owner),
        ("state", Column::State),
        ("node", Column::Node),
        ("class", Column::Class),
        ("image", Column::Image),
        ("cpus", Column::Cpus),
        ("memory_mb", Column::MemoryMb),
        ("vms", Column::Vms),
        ("exit_code", Column::ExitCode),
        ("submitted", Column::Submitted),
        ("updated", Column::Updated),
        ("reason", Column::Reason),
    ];

    /// The column's value for `j`, escaped like every server text: `-`
    /// when absent. `cpus` and `memory_mb` are per VM, as in the job file.
    fn value(self, j: &JobView) -> String {
        match self {
            Column::Id => j.id.to_string(),
            Column::Name => safe(&j.name).into_owned(),
            Column::Owner => safe(&j.owner).into_owned(),
            Column::State => j.state.as_str().to_string(),
            Column::Node => safe(j.node.as_deref().unwrap_or("-")).into_owned(),
            Column::Class => safe(&j.class).into_owned(),
            Column::Image => safe(&j.image).into_owned(),
            Column::Cpus => j.cpus.to_string(),
            Column::MemoryMb => j.memory_mb.to_string(),
            Column::Vms => j.vms.to_string(),
            Column::ExitCode => j.exit_code.map_or("-".into(), |c| c.to_string()),
            Column::Submitted => format_time(j.submitted_unix_ms),
            Column::Updated => format_time(j.updated_unix_ms),
            Column::Reason => safe(&j.reason).into_owned(),
        }
    }
}

fn parse_column(s: &str) -> Result<Column, String> {
    let s = s.trim().to_ascii_lowercase();
    Column::ALL
        .iter()
        .find(|(name, _)| *name == s)
        .map(|(_, c)| *c)
        .ok_or_else(|| {
            let names: Vec<&str> = Column::ALL.iter().map(|(n, _)| *n).collect();
            format!("no column `{s}`; columns: {}", names.join(", "))
        })
}

/// `ps --format`: the chosen columns, tab-separated, one job a line. A
/// tab inside a value is escaped by [`safe`], so columns cannot shift.
fn write_columns(
    out: &mut impl Write,
    jobs: &[JobView],
    columns: &[Column],
) -> std::io::Result<()> {
    for j in jobs {
        let row: Vec<String> = columns.iter().map(|c| c.value(j)).collect();
        writeln!(out, "{}", row.join("\t"))?;
    }
    Ok(())
}

/// The `ps` table. Every text from the server goes through [`safe`]:
/// names and reasons from an older database may hold control characters.
fn write_ps(out: &mut impl Write, jobs: &[JobView]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>6}  {:<16} {:<10} {:<13} {:<10} {:<11} {:>4} {:>7}  {:<13} REASON",
        "ID", "NAME", "OWNER", "STATE", "NODE", "CLASS", "CPUS", "MEM_MB", "START"
    )?;
    for j in jobs {
        writeln!(
            out,
            "{:>6}  {:<16} {:<10} {:<13} {:<10} {:<11} {:>4} {:>7}  {:<13} {}",
            j.id,
            clip(&j.name, 16),
            clip(&j.owner, 10),
            j.state.as_str(),
            clip(j.node.as_deref().unwrap_or("-"), 10),
            safe(&j.class),
            u64::from(j.cpus) * u64::from(j.vms),
            j.memory_mb.saturating_mul(u64::from(j.vms)),
            clip(&crate::waits::start_cell(j), 13),
            safe(&j.reason)
        )?;
    }
    Ok(())
}

/// Server text made printable on one line: control characters escaped.
fn safe(s: &str) -> std::borrow::Cow<'_, str> {
    vgrid_model::names::display_safe(s)
}

/// At most `n` characters of `s`, escaped first so that the cut counts
/// what is printed.
fn clip(s: &str, n: usize) -> String {
    let s = safe(s);
    if s.chars().count() <= n {
        s.into_owned()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('~');
        t
    }
}

pub fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let c = client()?;
    let detail = block_on(c.job(args.id))??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&detail)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_detail(&detail)?;
    Ok(ExitCode::SUCCESS)
}

fn print_detail(d: &JobDetail) -> anyhow::Result<()> {
    write_detail(&mut std::io::stdout().lock(), d)?;
    Ok(())
}

/// `show`'s text. Every text from the server goes through [`safe`].
fn write_detail(out: &mut impl Write, d: &JobDetail) -> std::io::Result<()> {
    let j = &d.job;
    writeln!(out, "job {}  {}", j.id, safe(&j.name))?;
    writeln!(out, "  owner:     {}", safe(&j.owner))?;
    writeln!(out, "  state:     {} ({})", j.state, safe(&j.reason))?;
    writeln!(
        out,
        "  node:      {}",
        safe(j.node.as_deref().unwrap_or("-"))
    )?;
    writeln!(
        out,
        "  request:   {} VM(s) x {} CPU, {} MiB, image {}, class {}, mode {}",
        j.vms,
        j.cpus,
        j.memory_mb,
        safe(&j.image),
        safe(&j.class),
        d.spec.mode.name()
    )?;
    writeln!(out, "  command:   {}", safe(&d.spec.command.join(" ")))?;
    crate::waits::write_why(out, j)?;
    if let Some(code) = j.exit_code {
        writeln!(out, "  exit code: {code}")?;
    }
    if let Some(m) = &d.outputs {
        writeln!(
            out,
            "  outputs:   {} file(s), manifest {}  (vgrid output {})",
            d.spec.outputs.len(),
            safe(m),
            j.id
        )?;
    }
    writeln!(out, "  history:")?;
    for h in &d.history {
        writeln!(
            out,
            "    {}  {:<13} {:<10} {}",
            format_time(h.unix_ms),
            h.state.as_str(),
            safe(h.node.as_deref().unwrap_or("-")),
            safe(&h.reason)
        )?;
    }
    if !d.checkpoints.is_empty() {
        writeln!(out, "  checkpoints:")?;
        for c in &d.checkpoints {
            // Where it is: in the store (by manifest), or a directory.
            let kept = match &c.manifest {
                Some(m) => format!("store {}", m.get(..12).unwrap_or(m)),
                None => safe(&c.location).into_owned(),
            };
            writeln!(
                out,
                "    #{:<3} {}  on {:<10} after {:.1} s of work  {}{}",
                c.seq,
                format_time(c.unix_ms),
                safe(&c.node),
                c.work_ms as f64 / 1000.0,
                kept,
                if c.restorable {
                    ""
                } else {
                    "  (given up: failed to restore)"
                }
            )?;
        }
    }
    Ok(())
}

pub fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let c = client()?;
    block_on(async move {
        let mut offset = 0;
        let mut out = std::io::stdout();
        loop {
            let slice = c.output(args.id, offset).await?;
            if slice.next_offset < offset {
                // The job resumed from a checkpoint taken before output we
                // already printed: that part will come again.
                eprintln!(
                    "vgrid: job {} resumed from a checkpoint; output continues from byte {}",
                    args.id, slice.next_offset
                );
            }
            out.write_all(&slice.data)?;
            out.flush()?;
            let got = !slice.data.is_empty();
            offset = slice.next_offset;
            if !args.follow || slice.complete {
                return Ok::<_, anyhow::Error>(ExitCode::SUCCESS);
            }
            if !got {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    })?
}

pub fn wait(args: WaitArgs) -> anyhow::Result<ExitCode> {
    let c = client()?;
    let job = block_on(async move {
        loop {
            let w = c.wait(args.id, 30_000).await?;
            if w.ended {
                return Ok::<JobView, anyhow::Error>(w.job);
            }
        }
    })??;
    eprintln!("job {}: {} ({})", job.id, job.state, safe(&job.reason));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&job)?);
    }
    Ok(exit_code_of(&job))
}

/// The job's exit status as ours; 1 when it ended without one (failed to
/// run, cancelled).
fn exit_code_of(job: &JobView) -> ExitCode {
    match job.exit_code {
        Some(code) => ExitCode::from((code & 0xff) as u8),
        None if job.state == vgrid_model::JobState::Done => ExitCode::SUCCESS,
        None => ExitCode::FAILURE,
    }
}

/// What became of one id of `cancel 3 4 5`.
type Outcome = Result<JobView, Refusal>;

/// A failed call on one id, kept to report after the others.
#[derive(Debug)]
struct Refusal {
    exit: Exit,
    status: Option<u16>,
    /// The machine-readable code (`not-found`, ...), or the kind of
    /// failure when there was no answer.
    error: String,
    message: String,
}

impl Refusal {
    fn of(e: &vgrid_client::ClientError) -> Refusal {
        let error = match e {
            vgrid_client::ClientError::Api { body, .. } => body.error.clone(),
            other => format!("{:?}", other.kind()).to_ascii_lowercase(),
        };
        Refusal {
            exit: Exit::of_client(e),
            status: e.status(),
            error,
            message: with_causes(e),
        }
    }
}

/// An error's text followed by its causes, as `{:#}` prints an anyhow
/// error (`reqwest` keeps why a connection failed in its sources).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// `cancel`, `hold`, `release`, `suspend`, `resume`, `checkpoint` on each
/// id in turn (like `scancel 3 4 5`): one failure does not stop the rest,
/// except an unreachable controller, which would fail them all the same.
pub fn control(verb: &str, args: IdsArgs) -> anyhow::Result<ExitCode> {
    let c = client()?;
    let outcomes: Vec<(u64, Outcome)> = block_on(async {
        let mut outcomes = Vec::with_capacity(args.ids.len());
        let mut unreachable: Option<Refusal> = None;
        for &id in &args.ids {
            if let Some(r) = &unreachable {
                outcomes.push((
                    id,
                    Err(Refusal {
                        exit: r.exit,
                        status: None,
                        error: r.error.clone(),
                        message: format!("not tried: {}", r.message),
                    }),
                ));
                continue;
            }
            let outcome = c.control(id, verb).await.map_err(|e| {
                let r = Refusal::of(&e);
                if r.exit == Exit::Unreachable {
                    unreachable = Some(Refusal::of(&e));
                }
                r
            });
            outcomes.push((id, outcome));
        }
        outcomes
    })?;
    if args.json {
        let doc: Vec<serde_json::Value> = outcomes
            .iter()
            .map(|(id, outcome)| match outcome {
                Ok(job) => serde_json::json!({ "id": id, "job": job }),
                Err(r) => serde_json::json!({
                    "id": id,
                    "error": {
                        "exit_code": r.exit as u8,
                        "status": r.status,
                        "error": r.error,
                        "message": r.message,
                    }
                }),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for (id, outcome) in &outcomes {
            match outcome {
                Ok(job) => println!("job {}: {} ({})", job.id, job.state, safe(&job.reason)),
                Err(r) => eprintln!("vgrid: error: {verb} {id}: {}", safe(&r.message)),
            }
        }
    }
    let failed = outcomes
        .iter()
        .filter_map(|(_, o)| o.as_ref().err().map(|r| r.exit));
    Ok(Exit::common(failed).into())
}

pub fn migrate(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let c = client()?;
    let job = block_on(c.migrate(args.id, args.to))??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&job)?);
    } else {
        println!("job {}: {} ({})", job.id, job.state, safe(&job.reason));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use vgrid_api::types::{CheckpointView, HistoryView};
    use vgrid_model::JobState;

    use super::*;

    fn view(id: u64, name: &str, reason: &str) -> JobView {
        JobView {
            id,
            name: name.into(),
            owner: "alice".into(),
            state: JobState::Pending,
            reason: reason.into(),
            node: None,
            class: "normal".into(),
            image: "tiny".into(),
            cpus: 1,
            memory_mb: 256,
            vms: 1,
            exit_code: None,
            submitted_unix_ms: 0,
            updated_unix_ms: 0,
            wait: None,
        }
    }

    /// Item 7 of issue 8: a name (or reason) holding a newline and escape
    /// sequences printed a forged row; stored names from an older database
    /// may still hold them, so `ps` escapes whatever it prints.
    #[test]
    fn ps_rows_cannot_be_forged_by_names_or_reasons() {
        let forged = "x\n     7  payroll          root       running       n1         normal         1     256  ok";
        let jobs = [
            view(1, forged, "submitted"),
            view(2, "fine", "waits\n     8  fake  root\u{1b}[2K\r"),
            view(3, "\u{1b}]0;title\u{7}\u{202e}", "ok"),
        ];
        let mut out = Vec::new();
        write_ps(&mut out, &jobs).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        // A header and one line per job, nothing else.
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(
            !text
                .chars()
                .any(|c| c != '\n' && vgrid_model::names::is_unsafe_char(c)),
            "{text:?}"
        );
        let rows: Vec<&str> = text.lines().skip(1).collect();
        assert!(rows[0].trim_start().starts_with("1  x\\n"), "{}", rows[0]);
        assert!(
            rows[1].ends_with("waits\\n     8  fake  root\\u{1b}[2K\\r"),
            "{}",
            rows[1]
        );
        assert!(rows[2].contains("\\u{1b}]0;title"), "{}", rows[2]);
    }

    #[test]
    fn show_escapes_every_text_from_the_server() {
        let spec = vgrid_jobfile::parse(
            "j.toml",
            "image = \"tiny\"\ncommand = [\"/bin/echo\", \"a\\nb\"]\n",
        )
        .expect("valid");
        let mut job = view(4, "n\nm", "r\u{1b}[31m");
        job.node = Some("node\r".into());
        let d = JobDetail {
            job,
            spec,
            history: vec![HistoryView {
                unix_ms: 0,
                state: JobState::Pending,
                reason: "h\ni".into(),
                node: Some("\u{1b}n".into()),
            }],
            checkpoints: vec![CheckpointView {
                seq: 1,
                node: "c\nn".into(),
                location: "/l\u{7}".into(),
                work_ms: 1000,
                unix_ms: 0,
                log_offset: 0,
                manifest: None,
                restorable: true,
            }],
            outputs: None,
        };
        let mut out = Vec::new();
        write_detail(&mut out, &d).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(text.lines().count(), 10, "{text}");
        assert!(
            !text
                .chars()
                .any(|c| c != '\n' && vgrid_model::names::is_unsafe_char(c)),
            "{text:?}"
        );
    }

    #[test]
    fn clip_counts_escaped_characters() {
        assert_eq!(clip("short", 16), "short");
        assert_eq!(clip("a\nb", 16), "a\\nb");
        assert_eq!(clip(&"x".repeat(20), 16), format!("{}~", "x".repeat(15)));
    }
}
