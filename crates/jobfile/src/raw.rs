//! The job file as written, with source spans, and its validation into a
//! [`JobSpec`].

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use toml::value::Datetime;

use crate::error::{JobFileError, Locator};
use crate::time::unix_seconds;
use vgrid_model::limits::{MAX_CPUS, MAX_MEMORY_MB, MAX_VMS, MIN_MEMORY_MB, PRIORITY_LIMIT};
use vgrid_model::names::{name_problem, quoted_excerpt};
use vgrid_model::{Expression, JobClass, JobSpec, Mount, Transfer, VmMode};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Option<Spanned<String>>,
    image: Spanned<String>,
    cpus: Option<Spanned<i64>>,
    memory_mb: Option<Spanned<i64>>,
    vms: Option<Spanned<i64>>,
    command: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, Spanned<String>>,
    user: Option<Spanned<String>>,
    #[serde(default)]
    inputs: Vec<Spanned<RawInput>>,
    #[serde(default)]
    outputs: Vec<Spanned<RawOutput>>,
    #[serde(default)]
    mounts: Vec<Spanned<RawMount>>,
    class: Option<Spanned<String>>,
    start: Option<Spanned<Datetime>>,
    end: Option<Spanned<Datetime>>,
    priority: Option<Spanned<i64>>,
    requirements: Option<Spanned<String>>,
    rank: Option<Spanned<String>>,
    checkpoint_interval_s: Option<Spanned<i64>>,
    mode: Option<Spanned<String>>,
    walltime_s: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    from: Spanned<String>,
    to: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    from: Spanned<String>,
    to: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMount {
    host: Spanned<String>,
    guest: Spanned<String>,
    #[serde(default)]
    readonly: bool,
}

pub(crate) fn parse(file: &str, source: &str) -> Result<JobSpec, JobFileError> {
    let loc = Locator::new(file, source);
    let raw: RawJob = toml::from_str(source).map_err(|e| syntax_error(&loc, &e))?;
    Validator { loc: &loc }.job(raw, file)
}

/// Turns a TOML or serde error into a diagnostic: finds the field from the
/// span and rewrites Rust type names into words a user knows.
fn syntax_error(loc: &Locator<'_>, e: &toml::de::Error) -> JobFileError {
    let span = e.span().unwrap_or(0..0);
    let mut message = humanize(e.message());
    let field = field_at(loc.source(), span.clone(), &message);
    if message.starts_with("unknown field `")
        && let Some(unknown) = &field
        && let Some(known) =
            crate::suggest::closest(unknown, &crate::suggest::expected_fields(&message))
    {
        // The hint replaces serde's list of every field of the table.
        message = format!("unknown field `{unknown}`: did you mean `{known}`?");
    }
    loc.error(span, field, message)
}

fn humanize(message: &str) -> String {
    let mut out = message.trim().to_string();
    for (rust, words) in [
        (" as i128, expected i64", " is out of range"),
        ("expected i64", "expected an integer"),
        ("expected a string", "expected a string"),
        ("expected a sequence", "expected an array"),
        ("expected a boolean", "expected true or false"),
        (
            "expected struct RawInput",
            "expected a table with `from` and `to`",
        ),
        (
            "expected struct RawOutput",
            "expected a table with `from` and optionally `to`",
        ),
        (
            "expected struct RawMount",
            "expected a table with `host`, `guest` and optionally `readonly`",
        ),
        ("expected struct RawJob", "expected a table"),
        ("expected a map", "expected a table"),
        (
            "expected a TOML datetime",
            "expected a date-time such as 2030-01-31T08:00:00Z",
        ),
    ] {
        out = out.replace(rust, words);
    }
    out
}

/// The key that a span belongs to, read from the source: an unknown field
/// error spans the key itself; a type error spans the value after `key =`.
fn field_at(source: &str, span: Range<usize>, message: &str) -> Option<String> {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        return rest.split('`').next().map(str::to_string);
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        return rest.split('`').next().map(str::to_string);
    }
    let start = span.start.min(source.len());
    let end = span.end.clamp(start, source.len());
    if !source.is_char_boundary(start) || !source.is_char_boundary(end) {
        return None;
    }
    // A duplicate key spans the key itself.
    let spanned = source[start..end].trim();
    if message == "duplicate key" && !spanned.is_empty() {
        return Some(spanned.trim_matches('"').trim_matches('\'').to_string());
    }
    let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
    let before = &source[line_start..start];
    let (key, _) = before.rsplit_once('=')?;
    // Inside an inline table the key follows the last `{` or `,`.
    let key = key.rsplit(['{', ',']).next().unwrap_or(key).trim();
    let key = key.trim_matches('"').trim_matches('\'');
    if key.is_empty() || key.contains(char::is_whitespace) {
        return None;
    }
    Some(key.to_string())
}

struct Validator<'a> {
    loc: &'a Locator<'a>,
}

impl Validator<'_> {
    fn err<T>(
        &self,
        span: Range<usize>,
        field: &str,
        why: impl Into<String>,
    ) -> Result<T, JobFileError> {
        Err(self.loc.error(span, Some(field.to_string()), why))
    }

    fn job(&self, raw: RawJob, file: &str) -> Result<JobSpec, JobFileError> {
        let name = match raw.name {
            Some(n) => {
                self.check_name(&n)?;
                n.into_inner()
            }
            None => self.default_name(file)?,
        };
        self.check_image(&raw.image)?;
        let cpus = self.ranged(raw.cpus.as_ref(), "cpus", 1, 1, i64::from(MAX_CPUS))? as u32;
        let memory_mb = self.ranged(
            raw.memory_mb.as_ref(),
            "memory_mb",
            256,
            MIN_MEMORY_MB as i64,
            MAX_MEMORY_MB as i64,
        )? as u64;
        let vms = self.ranged(raw.vms.as_ref(), "vms", 1, 1, i64::from(MAX_VMS))? as u32;
        let command = self.command(raw.command)?;
        let env = self.env(raw.env)?;
        let user = match raw.user {
            Some(u) => {
                self.check_user(&u)?;
                Some(u.into_inner())
            }
            None => None,
        };
        let mut spans = Spans::default();
        let inputs = self.inputs(raw.inputs, &mut spans)?;
        let outputs = self.outputs(raw.outputs, &mut spans)?;
        let mounts = self.mounts(raw.mounts)?;
        let class = self.class(raw.class, raw.start, raw.end)?;
        let priority = self.ranged(
            raw.priority.as_ref(),
            "priority",
            0,
            -i64::from(PRIORITY_LIMIT),
            i64::from(PRIORITY_LIMIT),
        )? as i32;
        let requirements = self.expression(raw.requirements, "requirements")?;
        let rank = self.expression(raw.rank, "rank")?;
        let checkpoint_interval_s =
            self.optional_seconds(raw.checkpoint_interval_s.as_ref(), "checkpoint_interval_s")?;
        let mode_span = raw.mode.as_ref().map(|m| m.span());
        let mode = self.mode(raw.mode)?;
        if let Some(span) = mode_span {
            self.check_mode(span, mode, vms, mounts.is_empty())?;
        }
        let walltime_s = self.optional_seconds(raw.walltime_s.as_ref(), "walltime_s")?;
        if let (
            JobClass::Reservation {
                start_unix_s,
                end_unix_s,
            },
            Some(wall),
            Some(w),
        ) = (class, walltime_s, raw.walltime_s.as_ref())
        {
            let window = end_unix_s - start_unix_s;
            if wall as i64 > window {
                return self.err(
                    w.span(),
                    "walltime_s",
                    format!(
                        "{wall} s does not fit in the reservation window of {window} s (from `start` to `end`)"
                    ),
                );
            }
        }
        let spec = JobSpec {
            name,
            image: raw.image.into_inner(),
            cpus,
            memory_mb,
            vms,
            command,
            env,
            user,
            inputs,
            input_data: None,
            outputs,
            mounts,
            class,
            priority,
            requirements,
            rank,
            checkpoint_interval_s,
            mode,
            walltime_s,
        };
        if let Err(e) = spec.staging() {
            let span = spans.of(&e.field);
            return self.err(span, &e.field, e.reason);
        }
        Ok(spec)
    }

    fn check_name(&self, n: &Spanned<String>) -> Result<(), JobFileError> {
        match name_problem(n.get_ref()) {
            Some(why) => self.err(n.span(), "name", why),
            None => Ok(()),
        }
    }

    /// The job name when the file gives none: the file's stem, under the
    /// same check as a written name. A stem that cannot be a name is
    /// refused rather than rewritten (as Slurm refuses an over-long job
    /// name whether it was given or taken from the script's name): a
    /// silently changed name would not be the one the user looks for.
    fn default_name(&self, file: &str) -> Result<String, JobFileError> {
        let name = Path::new(file)
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| !s.is_empty())
            .unwrap_or("job");
        match name_problem(name) {
            None => Ok(name.to_string()),
            Some(why) => self.err(
                0..0,
                "name",
                format!(
                    "the file gives no `name`, and its file name `{}` cannot be one: a name {why}; add a line such as `name = \"my-job\"`",
                    quoted_excerpt(name, 40)
                ),
            ),
        }
    }

    fn check_image(&self, image: &Spanned<String>) -> Result<(), JobFileError> {
        let s = image.get_ref();
        let ok = !s.is_empty()
            && s.len() <= 128
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !ok {
            return self.err(
                image.span(),
                "image",
                format!(
                    "`{s}` is not an image name (letters, digits, `.`, `_`, `-`; not starting with `.`)"
                ),
            );
        }
        Ok(())
    }

    fn check_user(&self, user: &Spanned<String>) -> Result<(), JobFileError> {
        let s = user.get_ref();
        let mut chars = s.chars();
        let ok = s.len() <= 32
            && chars
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c));
        if !ok {
            return self.err(
                user.span(),
                "user",
                format!("`{s}` is not a user name (lower-case letters, digits, `_`, `-`)"),
            );
        }
        Ok(())
    }

    /// An optional integer within `min..=max`, or `default` when absent.
    fn ranged(
        &self,
        value: Option<&Spanned<i64>>,
        field: &str,
        default: i64,
        min: i64,
        max: i64,
    ) -> Result<i64, JobFileError> {
        let Some(v) = value else { return Ok(default) };
        let n = *v.get_ref();
        if n < min || n > max {
            return self.err(
                v.span(),
                field,
                vgrid_model::limits::out_of_range(field, n, min, max),
            );
        }
        Ok(n)
    }

    fn optional_seconds(
        &self,
        value: Option<&Spanned<i64>>,
        field: &str,
    ) -> Result<Option<u64>, JobFileError> {
        match value {
            None => Ok(None),
            Some(v) => {
                // Ten years: longer is surely a typo and would overflow timers.
                let n = self.ranged(Some(v), field, 0, 1, 10 * 365 * 86_400)?;
                Ok(Some(n as u64))
            }
        }
    }

    fn command(&self, command: Spanned<Vec<Spanned<String>>>) -> Result<Vec<String>, JobFileError> {
        let span = command.span();
        let args = command.into_inner();
        let Some(program) = args.first() else {
            return self.err(
                span,
                "command",
                "must name a program to run, e.g. [\"/bin/echo\", \"hi\"]",
            );
        };
        if program.get_ref().is_empty() {
            return self.err(
                program.span(),
                "command[0]",
                "the program must not be empty",
            );
        }
        for (i, arg) in args.iter().enumerate() {
            if arg.get_ref().contains('\0') {
                return self.err(
                    arg.span(),
                    &format!("command[{i}]"),
                    "must not contain a NUL byte",
                );
            }
        }
        Ok(args.into_iter().map(Spanned::into_inner).collect())
    }

    fn env(
        &self,
        env: BTreeMap<Spanned<String>, Spanned<String>>,
    ) -> Result<BTreeMap<String, String>, JobFileError> {
        let mut out = BTreeMap::new();
        for (k, v) in env {
            let key = k.get_ref();
            let mut chars = key.chars();
            let ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return self.err(
                    k.span(),
                    &format!("env.{key}"),
                    "is not a variable name (letters, digits and `_`, not starting with a digit)",
                );
            }
            if v.get_ref().contains('\0') {
                return self.err(
                    v.span(),
                    &format!("env.{key}"),
                    "must not contain a NUL byte",
                );
            }
            out.insert(k.into_inner(), v.into_inner());
        }
        Ok(out)
    }

    /// Inputs: `from` a file on the submitter's machine (relative to the
    /// job file's directory when relative; `vgrid submit` reads it), `to`
    /// an absolute guest path.
    fn inputs(
        &self,
        list: Vec<Spanned<RawInput>>,
        spans: &mut Spans,
    ) -> Result<Vec<Transfer>, JobFileError> {
        let mut out = Vec::with_capacity(list.len());
        for (i, t) in list.into_iter().enumerate() {
            let t = t.into_inner();
            let field = format!("inputs[{i}].from");
            let from = t.from.get_ref();
            if from.is_empty() {
                return self.err(t.from.span(), &field, "names no file");
            }
            if from.contains('\0') {
                return self.err(t.from.span(), &field, "must not contain a NUL byte");
            }
            spans.add(&field, t.from.span());
            let to_field = format!("inputs[{i}].to");
            let to = self.path(&t.to, &to_field, Side::Guest)?;
            spans.add(&to_field, t.to.span());
            out.push(Transfer {
                from: PathBuf::from(from),
                to,
            });
        }
        Ok(out)
    }

    /// Outputs: `from` an absolute guest path, `to` the relative name the
    /// file gets in the job's outputs (by default the file name of
    /// `from`).
    fn outputs(
        &self,
        list: Vec<Spanned<RawOutput>>,
        spans: &mut Spans,
    ) -> Result<Vec<Transfer>, JobFileError> {
        let mut out = Vec::with_capacity(list.len());
        for (i, t) in list.into_iter().enumerate() {
            let whole = t.span();
            let t = t.into_inner();
            let from_field = format!("outputs[{i}].from");
            let from = self.path(&t.from, &from_field, Side::Guest)?;
            spans.add(&from_field, t.from.span());
            let to_field = format!("outputs[{i}].to");
            let to = match &t.to {
                Some(to) => {
                    spans.add(&to_field, to.span());
                    vgrid_model::staging::output_name(to.get_ref())
                        .map_err(|why| self.loc.error(to.span(), Some(to_field.clone()), why))?
                }
                None => {
                    spans.add(&to_field, whole.clone());
                    match from.file_name().and_then(|n| n.to_str()) {
                        Some(name) => name.to_string(),
                        None => {
                            return self.err(
                                t.from.span(),
                                &from_field,
                                "names no file, so the output needs a `to` name",
                            );
                        }
                    }
                }
            };
            out.push(Transfer {
                from,
                to: PathBuf::from(to),
            });
        }
        Ok(out)
    }

    fn mounts(&self, list: Vec<Spanned<RawMount>>) -> Result<Vec<Mount>, JobFileError> {
        let mut out: Vec<Mount> = Vec::with_capacity(list.len());
        for (i, m) in list.into_iter().enumerate() {
            let m = m.into_inner();
            let host = self.path(&m.host, &format!("mounts[{i}].host"), Side::Host)?;
            let guest = self.path(&m.guest, &format!("mounts[{i}].guest"), Side::Guest)?;
            if guest == Path::new("/") {
                return self.err(
                    m.guest.span(),
                    &format!("mounts[{i}].guest"),
                    "cannot mount over the guest's root directory",
                );
            }
            if out.iter().any(|prev| prev.guest == guest) {
                return self.err(
                    m.guest.span(),
                    &format!("mounts[{i}].guest"),
                    format!(
                        "`{}` is already a mount point of an earlier mount",
                        guest.display()
                    ),
                );
            }
            out.push(Mount {
                host,
                guest,
                readonly: m.readonly,
            });
        }
        Ok(out)
    }

    /// An absolute path with no `..`: host paths are resolved against the
    /// host root, guest paths against the guest root, and neither may climb
    /// out. Symbolic links on the host are checked again when staging.
    fn path(&self, p: &Spanned<String>, field: &str, side: Side) -> Result<PathBuf, JobFileError> {
        let s = p.get_ref();
        let where_ = match side {
            Side::Host => "host",
            Side::Guest => "guest",
        };
        if s.contains('\0') {
            return self.err(p.span(), field, "must not contain a NUL byte");
        }
        if !s.starts_with('/') {
            return self.err(
                p.span(),
                field,
                format!("`{s}` must be an absolute {where_} path (starting with `/`)"),
            );
        }
        let path = Path::new(s);
        if path.components().any(|c| c == Component::ParentDir) {
            return self.err(
                p.span(),
                field,
                format!("`{s}` contains `..`; a path may not climb out of its directory"),
            );
        }
        // Normalise `a//b/./c` to `a/b/c` so that later comparisons hold.
        Ok(path.components().collect())
    }

    fn class(
        &self,
        class: Option<Spanned<String>>,
        start: Option<Spanned<Datetime>>,
        end: Option<Spanned<Datetime>>,
    ) -> Result<JobClass, JobFileError> {
        let name = class.as_ref().map_or("normal", |c| c.get_ref().as_str());
        let class_span = class.as_ref().map_or(0..0, Spanned::span);
        match name {
            "normal" | "best-effort" => {
                if let Some(s) = start.as_ref().or(end.as_ref()) {
                    let field = if start.is_some() { "start" } else { "end" };
                    return self.err(
                        s.span(),
                        field,
                        format!("only a `reservation` job has a window, but class is `{name}`"),
                    );
                }
                Ok(if name == "normal" {
                    JobClass::Normal
                } else {
                    JobClass::BestEffort
                })
            }
            "reservation" => {
                let Some(start) = start else {
                    return self.err(
                        class_span,
                        "start",
                        "a `reservation` job needs `start` and `end`",
                    );
                };
                let Some(end) = end else {
                    return self.err(
                        class_span,
                        "end",
                        "a `reservation` job needs `start` and `end`",
                    );
                };
                let start_unix_s = unix_seconds(start.get_ref())
                    .or_else(|why| self.err(start.span(), "start", why))?;
                let end_unix_s =
                    unix_seconds(end.get_ref()).or_else(|why| self.err(end.span(), "end", why))?;
                if end_unix_s <= start_unix_s {
                    return self.err(end.span(), "end", "must be later than `start`");
                }
                Ok(JobClass::Reservation {
                    start_unix_s,
                    end_unix_s,
                })
            }
            other => self.err(
                class_span,
                "class",
                format!(
                    "`{other}` is not a class; expected `normal`, `best-effort` or `reservation`"
                ),
            ),
        }
    }

    fn mode(&self, mode: Option<Spanned<String>>) -> Result<VmMode, JobFileError> {
        let Some(m) = mode else {
            return Ok(VmMode::default());
        };
        match m.get_ref().as_str() {
            "stop-start" => Ok(VmMode::StopStart),
            "save-restore" => Ok(VmMode::SaveRestore),
            "persistent" => Ok(VmMode::Persistent),
            other => self.err(
                m.span(),
                "mode",
                format!(
                    "`{other}` is not a VM mode; expected `stop-start`, `save-restore` or `persistent`"
                ),
            ),
        }
    }

    /// A kept VM (persistent, save-restore) serves one single-VM job at a
    /// time, and QEMU cannot save a VM with a 9p data repository mounted.
    fn check_mode(
        &self,
        span: std::ops::Range<usize>,
        mode: VmMode,
        vms: u32,
        no_mounts: bool,
    ) -> Result<(), JobFileError> {
        if mode != VmMode::StopStart && vms > 1 {
            return self.err(
                span,
                "mode",
                format!(
                    "`{}` keeps one VM between jobs, so it needs `vms = 1` (this job has {vms}); use `stop-start`",
                    mode.name()
                ),
            );
        }
        if mode == VmMode::SaveRestore && !no_mounts {
            return self.err(
                span,
                "mode",
                "`save-restore` saves the VM after each job, and QEMU cannot save a VM with a data repository (`mounts`) mounted; use `persistent` or `stop-start`",
            );
        }
        Ok(())
    }

    fn expression(
        &self,
        expr: Option<Spanned<String>>,
        field: &str,
    ) -> Result<Option<Expression>, JobFileError> {
        let Some(e) = expr else { return Ok(None) };
        if e.get_ref().trim().is_empty() {
            return self.err(
                e.span(),
                field,
                "must not be empty; leave the field out instead",
            );
        }
        match Expression::parse(e.get_ref()) {
            Ok(parsed) => Ok(Some(parsed)),
            Err(pe) => {
                let (span, message) = match expression_offset(self.loc.source(), &e, pe.column) {
                    Some(offset) => (offset..offset, pe.message),
                    None => (
                        e.span(),
                        format!("at column {} of the expression: {}", pe.column, pe.message),
                    ),
                };
                self.err(span, field, message)
            }
        }
    }
}

/// The byte offset in the file of character `column` (1-based) of a string
/// value, when the string is written without escapes so that its text in the
/// file is exactly its value. `None` otherwise.
fn expression_offset(source: &str, value: &Spanned<String>, column: usize) -> Option<usize> {
    let span = value.span();
    let raw = source.get(span.clone())?;
    let quote = if raw.starts_with("\"\"\"") || raw.starts_with("'''") {
        3
    } else {
        1
    };
    let inner = raw.get(quote..raw.len().checked_sub(quote)?)?;
    if inner != value.get_ref() {
        return None;
    }
    let within = match inner.char_indices().nth(column.checked_sub(1)?) {
        Some((i, _)) => i,
        // One past the last character: the expression ended too early.
        None => inner.len(),
    };
    Some(span.start + quote + within)
}

/// Where each staging field is in the file, for the checks that look at
/// several of them together ([`JobSpec::staging`]).
#[derive(Default)]
struct Spans(Vec<(String, Range<usize>)>);

impl Spans {
    fn add(&mut self, field: &str, span: Range<usize>) {
        self.0.push((field.to_string(), span));
    }

    /// The span of `field`, or of the first field of its list (`inputs`).
    fn of(&self, field: &str) -> Range<usize> {
        self.0
            .iter()
            .find(|(f, _)| f == field || f.starts_with(&format!("{field}[")))
            .map_or(0..0, |(_, s)| s.clone())
    }
}

#[derive(Clone, Copy)]
enum Side {
    Host,
    Guest,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Diagnostic;

    const BASE: &str = "image = \"tiny\"\ncommand = [\"/bin/echo\", \"hi\"]\n";

    fn refuse(src: &str) -> Diagnostic {
        match parse("job.toml", src) {
            Ok(spec) => panic!("expected a refusal, got {spec:?}"),
            Err(e) => e.diagnostic().cloned().expect("a diagnostic"),
        }
    }

    /// The diagnostic for BASE plus `extra`, which starts on line 3.
    fn refuse_extra(extra: &str) -> Diagnostic {
        refuse(&format!("{BASE}{extra}"))
    }

    fn check(d: &Diagnostic, line: usize, column: usize, field: &str, why: &str) {
        assert_eq!(
            (d.line, d.column, d.field.as_deref()),
            (line, column, Some(field)),
            "{d}"
        );
        assert!(d.message.contains(why), "`{}` lacks `{why}`", d.message);
        assert_eq!(d.file, "job.toml");
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let spec = parse("dir/hello.toml", BASE).expect("valid");
        assert_eq!(spec.name, "hello");
        assert_eq!(spec.image, "tiny");
        assert_eq!((spec.cpus, spec.memory_mb, spec.vms), (1, 256, 1));
        assert_eq!(spec.command, vec!["/bin/echo", "hi"]);
        assert_eq!(spec.class, JobClass::Normal);
        assert_eq!(spec.mode, VmMode::StopStart);
        assert_eq!(spec.priority, 0);
        assert!(spec.env.is_empty() && spec.inputs.is_empty() && spec.mounts.is_empty());
        assert_eq!(spec.walltime_s, None);
    }

    #[test]
    fn every_field_is_read() {
        let src = r#"
name = "full"
image = "debian-12.qcow2"
cpus = 2
memory_mb = 1024
vms = 3
command = ["/usr/bin/python3", "run.py"]
env = { OMP_NUM_THREADS = "2", _X = "y" }
user = "alice"
class = "reservation"
start = 2030-01-01T08:00:00Z
end = 2030-01-01T10:00:00+01:00
priority = -5
requirements = 'cores >= 2 && arch == "x86_64"'
rank = "free_memory_mb"
checkpoint_interval_s = 300
mode = "stop-start"
walltime_s = 3600

[[inputs]]
from = "/srv/in//data.csv"
to = "/work/./data.csv"

[[outputs]]
from = "/work/out.csv"
to = "results//out.csv"

[[outputs]]
from = "/work/log/run.log"

[[mounts]]
host = "/srv/repo"
guest = "/data"
readonly = true
"#;
        let spec = parse("full.toml", src).expect("valid");
        assert_eq!(spec.name, "full");
        assert_eq!((spec.cpus, spec.memory_mb, spec.vms), (2, 1024, 3));
        assert_eq!(
            spec.env.get("OMP_NUM_THREADS").map(String::as_str),
            Some("2")
        );
        assert_eq!(spec.user.as_deref(), Some("alice"));
        assert_eq!(
            spec.class,
            JobClass::Reservation {
                start_unix_s: 1_893_484_800,
                end_unix_s: 1_893_488_400
            }
        );
        assert_eq!(spec.priority, -5);
        assert_eq!(
            spec.requirements.as_ref().map(|e| e.source()),
            Some("cores >= 2 && arch == \"x86_64\"")
        );
        assert_eq!(
            spec.rank.as_ref().map(|e| e.source()),
            Some("free_memory_mb")
        );
        assert_eq!(spec.checkpoint_interval_s, Some(300));
        assert_eq!(spec.mode, VmMode::StopStart);
        assert_eq!(spec.walltime_s, Some(3600));
        assert_eq!(spec.inputs[0].from, PathBuf::from("/srv/in/data.csv"));
        assert_eq!(spec.inputs[0].to, PathBuf::from("/work/data.csv"));
        assert_eq!(spec.outputs[0].to, PathBuf::from("results/out.csv"));
        // Without `to`, an output is named by its file name.
        assert_eq!(spec.outputs[1].to, PathBuf::from("run.log"));
        assert_eq!(spec.input_data, None);
        assert_eq!(
            spec.mounts,
            vec![Mount {
                host: "/srv/repo".into(),
                guest: "/data".into(),
                readonly: true
            }]
        );
        // The spec survives a JSON round trip (store and API carry it so).
        let json = serde_json::to_string(&spec).expect("serializes");
        let back: JobSpec = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, spec);
    }

    #[test]
    fn unknown_field_is_refused_at_its_key() {
        let d = refuse_extra("memory = 512\n");
        check(
            &d,
            3,
            1,
            "memory",
            "unknown field `memory`: did you mean `memory_mb`?",
        );
        let d = refuse_extra("[[inputs]]\nfrom = \"/a\"\nto = \"/b\"\nmode = \"x\"\n");
        check(&d, 6, 1, "mode", "unknown field `mode`");
        let d = refuse_extra("mounts = [{ host = \"/a\", guest = \"/b\", rw = true }]\n");
        check(&d, 3, 40, "rw", "unknown field `rw`");
    }

    /// Item 5 of issue 11's contract: the closest field of the same table
    /// is suggested, and the place stays the unknown key's.
    #[test]
    fn unknown_fields_suggest_the_closest_field_of_their_table() {
        let d = refuse_extra("cores = 2\n");
        check(
            &d,
            3,
            1,
            "cores",
            "unknown field `cores`: did you mean `cpus`?",
        );
        let d = refuse_extra("memroy_mb = 512\n");
        check(&d, 3, 1, "memroy_mb", "did you mean `memory_mb`?");
        // Inside `[[inputs]]` the candidates are `from` and `to` only.
        let d = refuse_extra("[[inputs]]\nfrom = \"/a\"\ntoo = \"/b\"\n");
        check(&d, 5, 1, "too", "did you mean `to`?");
        let d = refuse_extra("[[inputs]]\nfrom = \"/a\"\nto = \"/b\"\ncpus = 2\n");
        check(&d, 6, 1, "cpus", "unknown field `cpus`, expected");
        assert!(!d.message.contains("did you mean"), "{d}");
        let d = refuse_extra("mounts = [{ host = \"/a\", guest = \"/b\", read_only = true }]\n");
        check(&d, 3, 40, "read_only", "did you mean `readonly`?");
        // Nothing close: the list of the table's fields stays.
        let d = refuse_extra("colour = \"red\"\n");
        check(&d, 3, 1, "colour", "expected one of `name`, `image`");
    }

    #[test]
    fn wrong_type_is_refused_at_its_value() {
        check(
            &refuse_extra("cpus = \"4\"\n"),
            3,
            8,
            "cpus",
            "expected an integer",
        );
        check(
            &refuse_extra("cpus = 1.5\n"),
            3,
            8,
            "cpus",
            "expected an integer",
        );
        check(
            &refuse_extra("memory_mb = 99999999999999999999\n"),
            3,
            13,
            "memory_mb",
            "out of range",
        );
        check(
            &refuse("image = \"tiny\"\ncommand = \"/bin/echo hi\"\n"),
            2,
            11,
            "command",
            "expected an array",
        );
        check(
            &refuse_extra("env = { N = 1 }\n"),
            3,
            13,
            "N",
            "expected a string",
        );
        check(
            &refuse_extra("start = \"tomorrow\"\n"),
            3,
            9,
            "start",
            "expected a date-time",
        );
    }

    #[test]
    fn missing_required_field_is_named() {
        let d = refuse("command = [\"/bin/true\"]\n");
        assert_eq!(d.field.as_deref(), Some("image"));
        assert!(d.message.contains("missing field `image`"), "{d}");
        let d = refuse("image = \"tiny\"\n");
        assert_eq!(d.field.as_deref(), Some("command"));
    }

    #[test]
    fn toml_syntax_errors_point_at_the_line() {
        let d = refuse_extra("cpus = 2\ncpus = 3\n");
        check(&d, 4, 1, "cpus", "duplicate key");
        let d = refuse_extra("cpus = \n");
        assert_eq!(d.line, 3, "{d}");
    }

    #[test]
    fn impossible_requests_are_refused() {
        // The bounds and their sentence are the model's, as everywhere.
        check(
            &refuse_extra("cpus = 0\n"),
            3,
            8,
            "cpus",
            "cpus is 0; use 1 to 255",
        );
        check(&refuse_extra("cpus = 5000\n"), 3, 8, "cpus", "use 1 to 255");
        check(
            &refuse_extra("memory_mb = 8\n"),
            3,
            13,
            "memory_mb",
            "use 64 to 1048576",
        );
        check(&refuse_extra("vms = 0\n"), 3, 7, "vms", "use 1 to 4096");
        check(
            &refuse_extra("checkpoint_interval_s = 0\n"),
            3,
            25,
            "checkpoint_interval_s",
            "checkpoint_interval_s is 0; use 1 to",
        );
        check(
            &refuse_extra("walltime_s = -1\n"),
            3,
            14,
            "walltime_s",
            "walltime_s is -1; use 1 to",
        );
        check(
            &refuse_extra("priority = 2000000\n"),
            3,
            12,
            "priority",
            "use -1000000 to 1000000",
        );
        check(
            &refuse("image = \"tiny\"\ncommand = []\n"),
            2,
            11,
            "command",
            "must name a program",
        );
        check(
            &refuse("image = \"tiny\"\ncommand = [\"\"]\n"),
            2,
            12,
            "command[0]",
            "must not be empty",
        );
    }

    #[test]
    fn bad_names_are_refused() {
        check(
            &refuse("image = \"../etc\"\ncommand = [\"/bin/true\"]\n"),
            1,
            9,
            "image",
            "not an image name",
        );
        check(
            &refuse_extra("name = \"  \"\n"),
            3,
            8,
            "name",
            "must not be empty",
        );
        check(
            &refuse_extra("user = \"Root; rm\"\n"),
            3,
            8,
            "user",
            "not a user name",
        );
        check(
            &refuse_extra("env = { \"A-B\" = \"x\" }\n"),
            3,
            9,
            "env.A-B",
            "not a variable name",
        );
    }

    /// Item 7 of issue 8: a name taken from the file name skipped the
    /// checks, so a file name with a newline forged a row of `vgrid ps` and
    /// one of 600,000 characters passed the 128-character limit.
    #[test]
    fn names_taken_from_the_file_name_get_the_same_check() {
        // The stem of a good file name is the name.
        let spec = parse("dir/nightly run.toml", BASE).map(|s| s.name).ok();
        assert_eq!(spec.as_deref(), Some("nightly run"));
        let forged = "x\n    99  fake-job         root       running       n1         normal";
        let long = "y".repeat(600_000);
        for (file, why) in [
            (format!("/tmp/{forged}.toml"), "control characters"),
            (format!("{long}.toml"), "at most 128 characters"),
            (
                "/tmp/\u{1b}]0;owned\u{7}.toml".to_string(),
                "control characters",
            ),
        ] {
            let err = parse(&file, BASE).expect_err("refused");
            let d = err.diagnostic().expect("a diagnostic");
            assert_eq!((d.line, d.field.as_deref()), (1, Some("name")), "{d}");
            assert!(d.message.contains(why), "{}", d.message);
            assert!(d.message.contains("name = "), "{}", d.message);
            // The message quotes the file name escaped and cut short.
            let shown = err.to_string();
            assert!(
                !shown.contains('\n') && !shown.contains('\u{1b}'),
                "{shown}"
            );
            assert!(d.message.len() < 300, "{}", d.message.len());
        }
        // A name written in the file overrides a bad file name.
        let named = parse(&format!("{long}.toml"), &format!("name = \"ok\"\n{BASE}"));
        assert_eq!(named.map(|s| s.name).ok().as_deref(), Some("ok"));
        // A written name gets the same check, with its place in the file.
        check(
            &refuse_extra("name = \"a\\u001b[2Jb\"\n"),
            3,
            8,
            "name",
            "control characters",
        );
        check(
            &refuse_extra(&format!("name = \"{}\"\n", "z".repeat(129))),
            3,
            8,
            "name",
            "at most 128 characters",
        );
    }

    #[test]
    fn class_and_window_are_checked() {
        check(
            &refuse_extra("class = \"urgent\"\n"),
            3,
            9,
            "class",
            "`urgent` is not a class",
        );
        check(
            &refuse_extra("class = \"reservation\"\nstart = 2030-01-01T00:00:00Z\n"),
            3,
            9,
            "end",
            "needs `start` and `end`",
        );
        check(
            &refuse_extra(
                "class = \"reservation\"\nstart = 2030-01-01T02:00:00Z\nend = 2030-01-01T01:00:00Z\n",
            ),
            5,
            7,
            "end",
            "later than `start`",
        );
        check(
            &refuse_extra(
                "class = \"reservation\"\nstart = 2030-01-01T02:00:00\nend = 2030-01-01T03:00:00Z\n",
            ),
            4,
            9,
            "start",
            "no time zone",
        );
        check(
            &refuse_extra("class = \"best-effort\"\nstart = 2030-01-01T02:00:00Z\n"),
            4,
            9,
            "start",
            "only a `reservation` job has a window",
        );
        check(
            &refuse_extra(
                "class = \"reservation\"\nstart = 2030-01-01T00:00:00Z\nend = 2030-01-01T01:00:00Z\nwalltime_s = 7200\n",
            ),
            6,
            14,
            "walltime_s",
            "does not fit",
        );
        check(
            &refuse_extra("mode = \"paused\"\n"),
            3,
            8,
            "mode",
            "not a VM mode",
        );
    }

    #[test]
    fn kept_vm_modes_need_one_vm_and_save_restore_no_mounts() {
        check(
            &refuse_extra("vms = 2\nmode = \"persistent\"\n"),
            4,
            8,
            "mode",
            "needs `vms = 1`",
        );
        check(
            &refuse_extra(
                "mode = \"save-restore\"\n[[mounts]]\nhost = \"/srv/data\"\nguest = \"/data\"\n",
            ),
            3,
            8,
            "mode",
            "cannot save a VM with a data repository",
        );
        let persistent_with_mounts = parse(
            "job.toml",
            &format!(
                "{BASE}mode = \"persistent\"\n[[mounts]]\nhost = \"/srv/data\"\nguest = \"/data\"\n"
            ),
        )
        .expect("a persistent VM keeps its data repository mounted");
        assert_eq!(persistent_with_mounts.mode, VmMode::Persistent);
        let many_stop_start = parse(
            "job.toml",
            &format!("{BASE}vms = 4\nmode = \"stop-start\"\n"),
        )
        .expect("valid");
        assert_eq!(many_stop_start.vms, 4);
    }

    #[test]
    fn paths_must_be_absolute_and_not_escape() {
        check(
            &refuse_extra("[[inputs]]\nfrom = \"data.csv\"\nto = \"work/data.csv\"\n"),
            5,
            6,
            "inputs[0].to",
            "absolute guest path",
        );
        check(
            &refuse_extra("[[outputs]]\nfrom = \"/work/../../etc/shadow\"\nto = \"/tmp/x\"\n"),
            4,
            8,
            "outputs[0].from",
            "contains `..`",
        );
        check(
            &refuse_extra("[[outputs]]\nfrom = \"/work/out\"\nto = \"../root/x\"\n"),
            5,
            6,
            "outputs[0].to",
            "contains `..`",
        );
        check(
            &refuse_extra("[[outputs]]\nfrom = \"/work/out\"\nto = \"/srv/x\"\n"),
            5,
            6,
            "outputs[0].to",
            "relative name",
        );
        check(
            &refuse_extra("[[mounts]]\nhost = \"/srv\"\nguest = \"/\"\n"),
            5,
            9,
            "mounts[0].guest",
            "root directory",
        );
        check(
            &refuse_extra(
                "[[mounts]]\nhost = \"/a\"\nguest = \"/d\"\n[[mounts]]\nhost = \"/b\"\nguest = \"/d/\"\n",
            ),
            8,
            9,
            "mounts[1].guest",
            "already a mount point",
        );
    }

    #[test]
    fn staging_is_checked_where_the_file_says() {
        // Inputs from the submitter's machine may be relative (to the job
        // file's directory).
        let spec = parse(
            "job.toml",
            &format!("{BASE}[[inputs]]\nfrom = \"../data/a.csv\"\nto = \"/work/a.csv\"\n"),
        )
        .expect("valid");
        assert_eq!(spec.inputs[0].from, PathBuf::from("../data/a.csv"));
        check(
            &refuse_extra(
                "[[inputs]]\nfrom = \"a\"\nto = \"/w1/a\"\n[[inputs]]\nfrom = \"b\"\nto = \"/w2/b\"\n",
            ),
            8,
            6,
            "inputs[1].to",
            "one guest directory",
        );
        check(
            &refuse_extra(
                "[[inputs]]\nfrom = \"a\"\nto = \"/w/a\"\n[[outputs]]\nfrom = \"/elsewhere/r\"\n",
            ),
            7,
            8,
            "outputs[0].from",
            "working directory",
        );
        check(
            &refuse_extra("[[outputs]]\nfrom = \"/w/r\"\n[[outputs]]\nfrom = \"/w/x/r\"\n"),
            5,
            1,
            "outputs[1].to",
            "clashes",
        );
        check(
            &refuse_extra("[[inputs]]\nfrom = \"\"\nto = \"/w/a\"\n"),
            4,
            8,
            "inputs[0].from",
            "names no file",
        );
    }

    #[test]
    fn expression_syntax_errors_point_into_the_file() {
        // `>=` followed by nothing: the expression parser reports the end.
        let d = refuse_extra("requirements = \"cores >= \"\n");
        assert_eq!(
            (d.line, d.field.as_deref()),
            (3, Some("requirements")),
            "{d}"
        );
        assert_eq!(d.column, 26, "{d}");
        let d = refuse_extra("rank = 'free_memory_mb $ 2'\n");
        assert_eq!(
            (d.line, d.column, d.field.as_deref()),
            (3, 24, Some("rank")),
            "{d}"
        );
        // With an escape in the string the file position is the string's
        // start and the message gives the column within the expression.
        let d = refuse_extra("requirements = \"arch == \\\"x\\\" &&\"\n");
        assert_eq!((d.line, d.column), (3, 16), "{d}");
        assert!(d.message.contains("column"), "{d}");
    }

    #[test]
    fn empty_expressions_are_refused() {
        check(
            &refuse_extra("requirements = \"  \"\n"),
            3,
            16,
            "requirements",
            "must not be empty",
        );
    }

    #[test]
    fn arbitrary_text_never_panics() {
        // Truncations of a full file at every byte: each is accepted or
        // refused with a position inside the text, never a panic.
        let src = "name = \"é\"\nimage = \"tiny\"\ncommand = [\"/bin/echo\", \"ü\"]\n[[mounts]]\nhost = \"/a\"\nguest = \"/b\"\n";
        for cut in 0..=src.len() {
            let Some(text) = src.get(..cut) else { continue };
            if let Err(e) = parse("t.toml", text) {
                let d = e.diagnostic().expect("a diagnostic");
                assert!(
                    d.line >= 1 && d.line <= text.lines().count().max(1) + 1,
                    "{d}"
                );
            }
        }
    }
}
