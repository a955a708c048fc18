//! How a job's files travel: inputs from the submitter's machine into one
//! guest directory, outputs from below it back to the controller's store.
//!
//! - `inputs[i].from` is a file on the machine `vgrid submit` runs on;
//!   `vgrid submit` uploads it, and the job carries the id of the data
//!   manifest that holds it ([`JobSpec::input_data`]). In that manifest
//!   the file is named by its guest file name (the file name of
//!   `inputs[i].to`, see [`JobSpec::input_names`]).
//! - `inputs[i].to` is an absolute guest path; all inputs go to one guest
//!   directory, the job's working directory, under distinct names.
//! - `outputs[i].from` is a guest file below that directory (without
//!   inputs: the deepest directory, other than `/`, all outputs lie
//!   below);
//!   `outputs[i].to` is the relative name the file gets in the job's
//!   outputs (`vgrid output` writes it below the directory it is given).
//!
//! The rules here are checked when a job file is read (with the line and
//! column of the field) and again by the node agent.

use std::path::{Component, Path, PathBuf};

use crate::spec::JobSpec;

/// Most files a job may stage in, and most it may stage out.
pub const MAX_STAGED_FILES: usize = 1024;
/// Longest name of an output (bytes), and of one of its components.
pub const MAX_OUTPUT_NAME: usize = 1024;
pub const MAX_NAME_COMPONENT: usize = 255;

/// A job's staging that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct StagingError {
    /// The field, as `inputs[1].to` or `outputs[0].from`.
    pub field: String,
    pub reason: String,
}

/// Where a job's staged files go in the guest, and what they are called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagingLayout {
    /// The guest directory inputs are copied into and outputs are taken
    /// from; the command's working directory.
    pub workdir: PathBuf,
    /// Each input's file name in `workdir` (and in the input data).
    pub inputs: Vec<String>,
    /// Each output: (its path relative to `workdir`, its name in the
    /// job's outputs).
    pub outputs: Vec<(String, String)>,
}

fn refuse(field: String, reason: impl Into<String>) -> StagingError {
    StagingError {
        field,
        reason: reason.into(),
    }
}

/// Checks the name an output gets in the job's outputs: relative, plain
/// components (no `.`, `..` or empty ones), printable. Returns it with
/// `/` between components.
pub fn output_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("an output's name must not be empty".into());
    }
    if name.len() > MAX_OUTPUT_NAME {
        return Err(format!(
            "an output's name is at most {MAX_OUTPUT_NAME} bytes long"
        ));
    }
    if name.starts_with('/') {
        return Err(format!(
            "`{}` must be a relative name (the outputs are written below the directory `vgrid output` is given)",
            crate::names::display_safe(name)
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c == '\0' || c == '\\' || crate::names::is_unsafe_char(c))
    {
        return Err(format!(
            "`{}` contains {}; names are printable and use `/` between directories",
            crate::names::display_safe(name),
            crate::names::display_safe(&c.to_string())
        ));
    }
    let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).collect();
    for p in &parts {
        if *p == ".." {
            return Err(format!(
                "`{}` contains `..`; an output may not climb out of the directory it is written to",
                crate::names::display_safe(name)
            ));
        }
        if p.len() > MAX_NAME_COMPONENT {
            return Err(format!(
                "a part of an output's name is at most {MAX_NAME_COMPONENT} bytes long"
            ));
        }
    }
    let parts: Vec<&str> = parts.into_iter().filter(|p| *p != ".").collect();
    if parts.is_empty() {
        return Err(format!(
            "`{}` names no file",
            crate::names::display_safe(name)
        ));
    }
    Ok(parts.join("/"))
}

/// The file name of an absolute guest path, if it has one that a file can
/// have.
fn file_name(path: &Path) -> Option<String> {
    match path.components().next_back()? {
        Component::Normal(n) => n.to_str().map(str::to_string),
        _ => None,
    }
}

impl JobSpec {
    /// Whether the job stages files in or out.
    pub fn has_staging(&self) -> bool {
        !(self.inputs.is_empty() && self.outputs.is_empty())
    }

    /// Each input's name in the job's input data: the file name of its
    /// guest path.
    pub fn input_names(&self) -> Vec<String> {
        self.inputs
            .iter()
            .map(|t| file_name(&t.to).unwrap_or_default())
            .collect()
    }

    /// Where the job's files go in the guest; `None` for a job that
    /// stages nothing. Refuses, naming the field: an input to the guest's
    /// `/`, inputs in several directories or with the same file name, an
    /// output outside the working directory, a bad or repeated output
    /// name, more than [`MAX_STAGED_FILES`] of either.
    pub fn staging(&self) -> Result<Option<StagingLayout>, StagingError> {
        if !self.has_staging() {
            return Ok(None);
        }
        if self.inputs.len() > MAX_STAGED_FILES {
            return Err(refuse(
                "inputs".into(),
                format!("a job stages at most {MAX_STAGED_FILES} inputs"),
            ));
        }
        if self.outputs.len() > MAX_STAGED_FILES {
            return Err(refuse(
                "outputs".into(),
                format!("a job stages at most {MAX_STAGED_FILES} outputs"),
            ));
        }
        let mut workdir: Option<PathBuf> = None;
        let mut inputs: Vec<String> = Vec::with_capacity(self.inputs.len());
        for (i, t) in self.inputs.iter().enumerate() {
            let field = format!("inputs[{i}].to");
            let (Some(dir), Some(name)) = (t.to.parent(), file_name(&t.to)) else {
                return Err(refuse(
                    field,
                    "an input is a file in a guest directory, not the guest's `/`",
                ));
            };
            match &workdir {
                None => workdir = Some(dir.to_path_buf()),
                Some(w) if w != dir => {
                    return Err(refuse(
                        field,
                        format!(
                            "all inputs go to one guest directory (the job's working directory), here `{}`",
                            w.display()
                        ),
                    ));
                }
                Some(_) => {}
            }
            if inputs.contains(&name) {
                return Err(refuse(
                    field,
                    format!("another input is called `{name}` in the guest too"),
                ));
            }
            inputs.push(name);
        }
        let workdir = match workdir {
            Some(w) => w,
            // Without inputs: the deepest directory all outputs lie below.
            None => {
                let mut common: Option<PathBuf> = None;
                for t in &self.outputs {
                    let dir = t.from.parent().unwrap_or(Path::new("/"));
                    common = Some(match common {
                        None => dir.to_path_buf(),
                        Some(c) => c
                            .components()
                            .zip(dir.components())
                            .take_while(|(a, b)| a == b)
                            .map(|(a, _)| a)
                            .collect(),
                    });
                }
                match common {
                    Some(c) if c != Path::new("/") => c,
                    _ => {
                        return Err(refuse(
                            "outputs[0].from".into(),
                            "the outputs must lie below one guest directory other than `/` (the job's working directory)",
                        ));
                    }
                }
            }
        };
        let mut outputs: Vec<(String, String)> = Vec::with_capacity(self.outputs.len());
        for (i, t) in self.outputs.iter().enumerate() {
            let rel = match t.from.strip_prefix(&workdir) {
                Ok(r) if !r.as_os_str().is_empty() => r.to_str().map(str::to_string),
                _ => None,
            };
            let Some(rel) = rel else {
                return Err(refuse(
                    format!("outputs[{i}].from"),
                    format!(
                        "`{}` is not below the job's working directory `{}` (where the inputs go)",
                        t.from.display(),
                        workdir.display()
                    ),
                ));
            };
            let field = format!("outputs[{i}].to");
            let name =
                t.to.to_str()
                    .ok_or_else(|| refuse(field.clone(), "an output's name must be UTF-8"))?;
            let name = output_name(name).map_err(|why| refuse(field.clone(), why))?;
            if let Some((_, other)) = outputs.iter().find(|(_, n)| {
                *n == name
                    || n.starts_with(&format!("{name}/"))
                    || name.starts_with(&format!("{n}/"))
            }) {
                return Err(refuse(
                    field,
                    format!("`{name}` clashes with the name of another output, `{other}`"),
                ));
            }
            outputs.push((rel, name));
        }
        Ok(Some(StagingLayout {
            workdir,
            inputs,
            outputs,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Transfer;

    fn spec(inputs: &[&str], outputs: &[(&str, &str)]) -> JobSpec {
        let mut s = JobSpec::minimal("j", "tiny", vec!["/bin/true".into()]);
        s.inputs = inputs
            .iter()
            .map(|to| Transfer {
                from: PathBuf::from("local.txt"),
                to: PathBuf::from(to),
            })
            .collect();
        s.outputs = outputs
            .iter()
            .map(|(from, to)| Transfer {
                from: PathBuf::from(from),
                to: PathBuf::from(to),
            })
            .collect();
        s
    }

    #[test]
    fn inputs_go_to_one_directory_and_outputs_come_from_below_it() {
        let s = spec(
            &["/work/a.txt", "/work/b.bin"],
            &[("/work/out/r.txt", "r.txt"), ("/work/log", "logs/run.log")],
        );
        let l = s.staging().expect("valid").expect("stages");
        assert_eq!(l.workdir, PathBuf::from("/work"));
        assert_eq!(l.inputs, vec!["a.txt", "b.bin"]);
        assert_eq!(s.input_names(), l.inputs);
        assert_eq!(
            l.outputs,
            vec![
                ("out/r.txt".to_string(), "r.txt".to_string()),
                ("log".to_string(), "logs/run.log".to_string())
            ]
        );
        // Without inputs, the deepest directory of all outputs.
        let l = spec(&[], &[("/data/out/r.txt", "r.txt"), ("/data/log", "log")])
            .staging()
            .expect("valid")
            .expect("stages");
        assert_eq!(l.workdir, PathBuf::from("/data"));
        assert_eq!(l.outputs[0].0, "out/r.txt");
        let l = spec(&[], &[("/data/out/r.txt", "r.txt")])
            .staging()
            .expect("valid")
            .expect("stages");
        assert_eq!(l.workdir, PathBuf::from("/data/out"));
        assert_eq!(spec(&[], &[]).staging(), Ok(None));
    }

    #[test]
    fn impossible_staging_is_refused_by_field() {
        let cases = [
            (spec(&["/"], &[]), "inputs[0].to", "not the guest's `/`"),
            (
                spec(&["/work/a", "/other/b"], &[]),
                "inputs[1].to",
                "one guest directory",
            ),
            (
                spec(&["/work/a", "/work/a"], &[]),
                "inputs[1].to",
                "another input",
            ),
            (
                spec(&["/work/a"], &[("/elsewhere/r", "r")]),
                "outputs[0].from",
                "not below",
            ),
            (
                spec(&["/work/a"], &[("/work", "r")]),
                "outputs[0].from",
                "not below",
            ),
            (
                spec(&["/work/a"], &[("/work/r", "../r")]),
                "outputs[0].to",
                "`..`",
            ),
            (
                spec(&["/work/a"], &[("/work/r", "/etc/passwd")]),
                "outputs[0].to",
                "relative",
            ),
            (
                spec(&[], &[("/a/r", "r"), ("/b/s", "s")]),
                "outputs[0].from",
                "one guest directory other than `/`",
            ),
            (
                spec(&[], &[("/r", "r")]),
                "outputs[0].from",
                "one guest directory other than `/`",
            ),
            (
                spec(&[], &[("/work/r", "x"), ("/work/s", "x")]),
                "outputs[1].to",
                "clashes",
            ),
            (
                spec(&[], &[("/work/r", "x"), ("/work/s", "x/y")]),
                "outputs[1].to",
                "clashes",
            ),
        ];
        for (s, field, why) in cases {
            let e = s.staging().expect_err(field);
            assert_eq!(e.field, field, "{e}");
            assert!(e.reason.contains(why), "{e}");
        }
    }

    #[test]
    fn output_names_are_plain_relative_names() {
        assert_eq!(output_name("a//b/./c.txt").as_deref(), Ok("a/b/c.txt"));
        assert_eq!(output_name("r.txt").as_deref(), Ok("r.txt"));
        for bad in [
            "",
            "/abs",
            "..",
            "a/../b",
            ".",
            "./",
            "a\nb",
            "a\\b",
            "x\u{1b}[2J",
        ] {
            assert!(output_name(bad).is_err(), "{bad:?}");
        }
        assert!(output_name(&"a".repeat(256)).is_err());
    }
}
