//! The job context: everything the guest agent needs to run one job.
//!
//! The host writes it as JSON to `DIR/context.json` and passes it to QEMU
//! with `-fw_cfg name=opt/org.vgrid/context,file=DIR/context.json`; the
//! agent reads [`crate::FW_CFG_CONTEXT_PATH`]. Example (version 1):
//!
//! ```json
//! {
//!   "version": 1,
//!   "argv": ["sh", "-c", "echo hello > out.txt"],
//!   "env": {"LANG": "C.UTF-8"},
//!   "user": {"name": "alice", "uid": 1000},
//!   "workdir": "/work/alice",
//!   "hostname": "job-42",
//!   "mounts": [{"tag": "data0", "guest_path": "/data", "readonly": true}],
//!   "staging": {"tag": "stage", "inputs": ["in.txt"], "outputs": ["out.txt"]},
//!   "network": true,
//!   "keep": true,
//!   "run": 7
//! }
//! ```
//!
//! Semantics the agent implements:
//! - `user` absent: the command runs as root. Present: the agent creates the
//!   passwd and group entries (uid defaults to 1000, gid to the uid), a home
//!   directory `/work/home/NAME`, and runs the command with that uid and gid.
//! - `workdir` absent: the user's home `/work/home/NAME`, or
//!   [`crate::SCRATCH_DIR`] for root. The agent creates it if missing and,
//!   when it created it, gives it to the user.
//! - `mounts`: virtio-9p shares (`mount_tag` = `tag`) mounted for the whole
//!   run; QEMU 7.2 cannot migrate (so cannot checkpoint) a VM while one is
//!   mounted.
//! - `staging`: a virtio-9p share mounted only to copy `inputs` (paths
//!   relative to the share) into the working directory before the command,
//!   and again to copy `outputs` (paths relative to the working directory)
//!   back to the same relative paths in the share after the command exits
//!   (GridWay's prolog and epilog). It is unmounted while the command runs,
//!   so the VM stays checkpointable.
//! - `network`: bring up the first virtio-net interface with DHCP (passt
//!   answers DHCP and DNS).
//! - `keep` (default false): keep the VM up after the command instead of
//!   powering off; the agent then runs the [`RunRequest`]s the host sends
//!   on the control port, one after the other, until the host sends `Stop`.
//!   The command of the context is itself run `run` (default 0): it is
//!   reported with `RunStarted` and `RunExited` like the later runs, not
//!   with `Started` and `Exited`. `run` is refused without `keep`.
//!
//! A [`RunRequest`] carries the per-task fields of a context (`argv`,
//! `env`, `user`, `workdir`, `staging`) with the same rules; the host name,
//! the network and the data repositories are the VM's.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

/// The context format version this crate writes and accepts.
pub const CONTEXT_VERSION: u32 = 1;

/// Why a context was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContextError {
    /// The document is not valid JSON for this schema.
    #[error("job context, line {line}, column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    /// The document has a version this agent does not understand.
    #[error(
        "job context, field `version`: version {found} is not supported (this agent reads version {supported})"
    )]
    UnsupportedVersion { found: u32, supported: u32 },
    /// A field has a value the agent refuses.
    #[error("job context, field `{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

/// The job context (see the module documentation for its semantics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobContext {
    /// Format version; [`CONTEXT_VERSION`].
    pub version: u32,
    /// The command and its arguments; `argv[0]` is looked up in `PATH`.
    pub argv: Vec<String>,
    /// Extra environment variables for the command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The user the command runs as; root when absent.
    #[serde(default)]
    pub user: Option<User>,
    /// The command's working directory; see [`JobContext::effective_workdir`].
    #[serde(default)]
    pub workdir: Option<String>,
    /// The guest's host name.
    pub hostname: String,
    /// Data repositories mounted for the whole run.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Files copied in before and out after the command.
    #[serde(default)]
    pub staging: Option<Staging>,
    /// Whether to configure the network with DHCP.
    #[serde(default = "default_true")]
    pub network: bool,
    /// Keep the VM running after the command and serve runs.
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep: bool,
    /// The run id of the command, with `keep`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<u64>,
}

fn default_true() -> bool {
    true
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One task for a VM kept running (a context with `keep`): sent by the
/// host in the control message `Run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    /// Chosen by the host; reported back in `RunStarted` and `RunExited`.
    pub id: u64,
    /// The command and its arguments; `argv[0]` is looked up in `PATH`.
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The user the command runs as; root when absent.
    #[serde(default)]
    pub user: Option<User>,
    /// The working directory; see [`effective_workdir`].
    #[serde(default)]
    pub workdir: Option<String>,
    /// Files copied in before and out after the command, through the
    /// VM's staging share (which must exist: the VM was started with one).
    #[serde(default)]
    pub staging: Option<Staging>,
}

impl RunRequest {
    /// A run of `argv` as root in [`crate::SCRATCH_DIR`].
    pub fn new(id: u64, argv: Vec<String>) -> Self {
        RunRequest {
            id,
            argv,
            env: BTreeMap::new(),
            user: None,
            workdir: None,
            staging: None,
        }
    }

    /// The working directory the agent will use.
    pub fn effective_workdir(&self) -> String {
        effective_workdir(self.workdir.as_deref(), self.user.as_ref())
    }

    /// Checks every field with the rules of a context; the first problem
    /// found is returned.
    pub fn validate(&self) -> Result<(), ContextError> {
        check_task(
            &self.argv,
            &self.env,
            self.user.as_ref(),
            self.workdir.as_deref(),
        )?;
        if let Some(staging) = &self.staging {
            check_staging(staging, &[])?;
        }
        Ok(())
    }
}

/// The working directory of a task: `workdir`, else the user's home, else
/// [`crate::SCRATCH_DIR`] for root.
pub fn effective_workdir(workdir: Option<&str>, user: Option<&User>) -> String {
    match (workdir, user) {
        (Some(dir), _) => dir.to_string(),
        (None, Some(user)) if user.name != "root" => user.home(),
        (None, _) => crate::SCRATCH_DIR.to_string(),
    }
}

/// The user the command runs as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Login name, `[a-z_][a-z0-9_-]*`, at most 32 characters.
    pub name: String,
    /// User id; 1000 when absent (0 when the name is `root`).
    #[serde(default)]
    pub uid: Option<u32>,
    /// Group id; the uid when absent.
    #[serde(default)]
    pub gid: Option<u32>,
}

impl User {
    /// The uid the agent will use.
    pub fn effective_uid(&self) -> u32 {
        self.uid
            .unwrap_or(if self.name == "root" { 0 } else { 1000 })
    }

    /// The home directory the agent creates, on the scratch disk.
    pub fn home(&self) -> String {
        if self.name == "root" {
            "/root".to_string()
        } else {
            format!("{}/home/{}", crate::SCRATCH_DIR, self.name)
        }
    }

    /// The gid the agent will use.
    pub fn effective_gid(&self) -> u32 {
        self.gid.unwrap_or_else(|| self.effective_uid())
    }
}

/// A virtio-9p data repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// The share's `mount_tag` on the QEMU command line.
    pub tag: String,
    /// Absolute path in the guest.
    pub guest_path: String,
    /// Mount read-only.
    #[serde(default)]
    pub readonly: bool,
}

/// Prolog/epilog file staging through a virtio-9p share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staging {
    /// The share's `mount_tag`.
    pub tag: String,
    /// Paths relative to the share, copied into the working directory.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Paths relative to the working directory, copied into the share.
    #[serde(default)]
    pub outputs: Vec<String>,
}

impl JobContext {
    /// A context running `argv` as root in [`crate::SCRATCH_DIR`], with the
    /// network on and nothing mounted.
    pub fn new(argv: Vec<String>, hostname: impl Into<String>) -> Self {
        JobContext {
            version: CONTEXT_VERSION,
            argv,
            env: BTreeMap::new(),
            user: None,
            workdir: None,
            hostname: hostname.into(),
            mounts: Vec::new(),
            staging: None,
            network: true,
            keep: false,
            run: None,
        }
    }

    /// Parses and validates a context.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ContextError> {
        // Read the version first so that a newer document is reported as
        // such rather than as a schema mismatch.
        #[derive(Deserialize)]
        struct VersionOnly {
            version: Option<u32>,
        }
        let json_err = |e: serde_json::Error| ContextError::Json {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        };
        let probe: VersionOnly = serde_json::from_slice(bytes).map_err(json_err)?;
        match probe.version {
            Some(CONTEXT_VERSION) => {}
            Some(found) => {
                return Err(ContextError::UnsupportedVersion {
                    found,
                    supported: CONTEXT_VERSION,
                });
            }
            None => {
                return Err(ContextError::Invalid {
                    field: "version".into(),
                    reason: "missing".into(),
                });
            }
        }
        let ctx: JobContext = serde_json::from_slice(bytes).map_err(json_err)?;
        ctx.validate()?;
        Ok(ctx)
    }

    /// The context as pretty JSON (validated first).
    pub fn to_json(&self) -> Result<String, ContextError> {
        self.validate()?;
        serde_json::to_string_pretty(self).map_err(|e| ContextError::Invalid {
            field: "(document)".into(),
            reason: e.to_string(),
        })
    }

    /// The working directory the agent will use.
    pub fn effective_workdir(&self) -> String {
        effective_workdir(self.workdir.as_deref(), self.user.as_ref())
    }

    /// The context's own command as a run (for a context with `keep`).
    pub fn first_run(&self) -> RunRequest {
        RunRequest {
            id: self.run.unwrap_or(0),
            argv: self.argv.clone(),
            env: self.env.clone(),
            user: self.user.clone(),
            workdir: self.workdir.clone(),
            staging: self.staging.clone(),
        }
    }

    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ContextError> {
        if self.version != CONTEXT_VERSION {
            return Err(ContextError::UnsupportedVersion {
                found: self.version,
                supported: CONTEXT_VERSION,
            });
        }
        check_task(
            &self.argv,
            &self.env,
            self.user.as_ref(),
            self.workdir.as_deref(),
        )?;
        if !is_hostname(&self.hostname) {
            return invalid(
                "hostname".into(),
                "a host name is 1 to 63 letters, digits or '-', not starting with '-'",
            );
        }
        let mut tags: Vec<&str> = Vec::new();
        for (i, mount) in self.mounts.iter().enumerate() {
            if !is_tag(&mount.tag) {
                return invalid(
                    format!("mounts[{i}].tag"),
                    "a tag is 1 to 31 letters, digits, '.', '_' or '-'",
                );
            }
            if tags.contains(&mount.tag.as_str()) {
                return invalid(format!("mounts[{i}].tag"), "the tag is used twice");
            }
            tags.push(&mount.tag);
            if let Err(reason) = check_guest_path(&mount.guest_path) {
                return invalid(format!("mounts[{i}].guest_path"), reason);
            }
            if mount.guest_path == "/" {
                return invalid(format!("mounts[{i}].guest_path"), "cannot mount over /");
            }
        }
        if let Some(staging) = &self.staging {
            check_staging(staging, &tags)?;
        }
        if self.run.is_some() && !self.keep {
            return invalid("run".into(), "a run id needs `keep`");
        }
        Ok(())
    }
}

fn invalid(field: String, reason: &str) -> Result<(), ContextError> {
    Err(ContextError::Invalid {
        field,
        reason: reason.to_string(),
    })
}

/// The rules shared by a context and a run: command, environment, user,
/// working directory.
fn check_task(
    argv: &[String],
    env: &BTreeMap<String, String>,
    user: Option<&User>,
    workdir: Option<&str>,
) -> Result<(), ContextError> {
    if argv.is_empty() || argv[0].is_empty() {
        return invalid("argv".into(), "the command is empty");
    }
    for (i, arg) in argv.iter().enumerate() {
        if arg.contains('\0') {
            return invalid(format!("argv[{i}]"), "contains a NUL byte");
        }
    }
    for (key, value) in env {
        if !is_env_name(key) {
            return invalid(
                format!("env.{key}"),
                "a variable name must match [A-Za-z_][A-Za-z0-9_]*",
            );
        }
        if value.contains('\0') {
            return invalid(format!("env.{key}"), "the value contains a NUL byte");
        }
    }
    if let Some(user) = user {
        if !is_user_name(&user.name) {
            return invalid(
                "user.name".into(),
                "a user name must match [a-z_][a-z0-9_-]* and be at most 32 characters",
            );
        }
        if user.name != "root" && user.effective_uid() == 0 {
            return invalid("user.uid".into(), "uid 0 is reserved for the user `root`");
        }
        if user.effective_uid() > 0x7fff_ffff || user.effective_gid() > 0x7fff_ffff {
            return invalid("user".into(), "uid and gid must be below 2^31");
        }
    }
    if let Some(workdir) = workdir
        && let Err(reason) = check_guest_path(workdir)
    {
        return invalid("workdir".into(), reason);
    }
    Ok(())
}

/// The staging share's tag (not one of the data repositories' `tags`) and
/// its relative paths.
fn check_staging(staging: &Staging, tags: &[&str]) -> Result<(), ContextError> {
    if !is_tag(&staging.tag) {
        return invalid(
            "staging.tag".into(),
            "a tag is 1 to 31 letters, digits, '.', '_' or '-'",
        );
    }
    if tags.contains(&staging.tag.as_str()) {
        return invalid("staging.tag".into(), "the tag is also a data repository's");
    }
    for (name, list) in [("inputs", &staging.inputs), ("outputs", &staging.outputs)] {
        for (i, path) in list.iter().enumerate() {
            if let Err(reason) = check_relative_path(path) {
                return invalid(format!("staging.{name}[{i}]"), reason);
            }
        }
    }
    Ok(())
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_user_name(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 32
        && matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// A virtio-9p mount tag as vgrid accepts it.
pub fn is_tag(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 31
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
}

/// An absolute guest path without `..`, `.` or empty components.
fn check_guest_path(path: &str) -> Result<(), &'static str> {
    if path.contains('\0') {
        return Err("contains a NUL byte");
    }
    if !path.starts_with('/') {
        return Err("must be an absolute path");
    }
    if path.len() > 1 && path.ends_with('/') || path.contains("//") {
        return Err("must not contain empty components or a trailing '/'");
    }
    for comp in Path::new(path).components() {
        match comp {
            Component::RootDir | Component::Normal(_) => {}
            _ => return Err("must not contain '.' or '..'"),
        }
    }
    if path.split('/').any(|c| c == ".") {
        return Err("must not contain '.' or '..'");
    }
    Ok(())
}

/// A relative path that stays inside its root.
fn check_relative_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("is empty");
    }
    if path.contains('\0') {
        return Err("contains a NUL byte");
    }
    if path.starts_with('/') {
        return Err("must be relative");
    }
    if path
        .split('/')
        .any(|c| c == ".." || c == "." || c.is_empty())
    {
        return Err("must not contain '.', '..' or empty components");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> JobContext {
        let mut ctx = JobContext::new(vec!["sh".into(), "-c".into(), "true".into()], "job-1");
        ctx.env.insert("LANG".into(), "C.UTF-8".into());
        ctx.user = Some(User {
            name: "alice".into(),
            uid: Some(1234),
            gid: None,
        });
        ctx.workdir = Some("/work/alice".into());
        ctx.mounts.push(Mount {
            tag: "data0".into(),
            guest_path: "/data".into(),
            readonly: true,
        });
        ctx.staging = Some(Staging {
            tag: "stage".into(),
            inputs: vec!["in/a.txt".into()],
            outputs: vec!["out.txt".into()],
        });
        ctx
    }

    #[test]
    fn round_trips_through_json() {
        let ctx = full();
        let json = ctx.to_json().expect("valid");
        assert_eq!(JobContext::from_json(json.as_bytes()), Ok(ctx));
    }

    #[test]
    fn defaults_apply_to_a_minimal_document() {
        let ctx = JobContext::from_json(br#"{"version":1,"argv":["true"],"hostname":"h"}"#)
            .expect("minimal context");
        assert!(ctx.network);
        assert!(ctx.mounts.is_empty());
        assert_eq!(ctx.effective_workdir(), "/work");
        assert_eq!(ctx.user, None);
        let mut with_user = ctx.clone();
        with_user.user = Some(User {
            name: "carol".into(),
            uid: None,
            gid: None,
        });
        assert_eq!(with_user.effective_workdir(), "/work/home/carol");
    }

    #[test]
    fn user_ids_default_sensibly() {
        let u = User {
            name: "bob".into(),
            uid: None,
            gid: None,
        };
        assert_eq!((u.effective_uid(), u.effective_gid()), (1000, 1000));
        let root = User {
            name: "root".into(),
            uid: None,
            gid: None,
        };
        assert_eq!(root.effective_uid(), 0);
    }

    #[test]
    fn a_newer_version_is_named() {
        let err =
            JobContext::from_json(br#"{"version":7,"argv":["true"],"hostname":"h"}"#).unwrap_err();
        assert_eq!(
            err,
            ContextError::UnsupportedVersion {
                found: 7,
                supported: 1
            }
        );
    }

    #[test]
    fn bad_json_names_line_and_column() {
        let err = JobContext::from_json(b"{\n  \"version\": 1,\n  \"argv\": [1]\n}").unwrap_err();
        match err {
            ContextError::Json { line, .. } => assert_eq!(line, 3),
            other => panic!("expected a JSON error, got {other:?}"),
        }
        assert!(matches!(
            JobContext::from_json(b"\xff\xfe garbage"),
            Err(ContextError::Json { .. })
        ));
    }

    fn field_of(ctx: &JobContext) -> String {
        match ctx.validate() {
            Err(ContextError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn invalid_fields_are_named() {
        let mut c = full();
        c.argv.clear();
        assert_eq!(field_of(&c), "argv");

        let mut c = full();
        c.env.insert("A=B".into(), "x".into());
        assert_eq!(field_of(&c), "env.A=B");

        let mut c = full();
        c.user.as_mut().unwrap().name = "../etc".into();
        assert_eq!(field_of(&c), "user.name");

        let mut c = full();
        c.user.as_mut().unwrap().uid = Some(0);
        assert_eq!(field_of(&c), "user.uid");

        let mut c = full();
        c.workdir = Some("/work/../etc".into());
        assert_eq!(field_of(&c), "workdir");

        let mut c = full();
        c.workdir = Some("relative".into());
        assert_eq!(field_of(&c), "workdir");

        let mut c = full();
        c.hostname = "bad host".into();
        assert_eq!(field_of(&c), "hostname");

        let mut c = full();
        c.mounts[0].guest_path = "/".into();
        assert_eq!(field_of(&c), "mounts[0].guest_path");

        let mut c = full();
        c.mounts.push(c.mounts[0].clone());
        assert_eq!(field_of(&c), "mounts[1].tag");

        let mut c = full();
        c.staging
            .as_mut()
            .unwrap()
            .inputs
            .push("../../etc/shadow".into());
        assert_eq!(field_of(&c), "staging.inputs[1]");

        let mut c = full();
        c.staging.as_mut().unwrap().outputs[0] = "/abs".into();
        assert_eq!(field_of(&c), "staging.outputs[0]");

        let mut c = full();
        c.staging.as_mut().unwrap().tag = "data0".into();
        assert_eq!(field_of(&c), "staging.tag");
    }

    #[test]
    fn keep_and_run_round_trip_and_stay_out_of_plain_contexts() {
        let plain = full().to_json().expect("valid");
        assert!(
            !plain.contains("keep") && !plain.contains("\"run\""),
            "{plain}"
        );
        let mut kept = full();
        kept.keep = true;
        kept.run = Some(42);
        let json = kept.to_json().expect("valid");
        let back = JobContext::from_json(json.as_bytes()).expect("valid");
        assert_eq!(back, kept);
        let first = back.first_run();
        assert_eq!(first.id, 42);
        assert_eq!(first.argv, kept.argv);
        assert_eq!(first.staging, kept.staging);
        assert_eq!(first.effective_workdir(), "/work/alice");

        let mut run_without_keep = full();
        run_without_keep.run = Some(1);
        assert_eq!(field_of(&run_without_keep), "run");
    }

    #[test]
    fn runs_are_checked_like_contexts() {
        let ok = RunRequest::new(1, vec!["true".into()]);
        ok.validate().expect("valid");
        assert_eq!(ok.effective_workdir(), "/work");
        let reason_field = |r: &RunRequest| match r.validate() {
            Err(ContextError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        };
        assert_eq!(reason_field(&RunRequest::new(1, vec![])), "argv");
        let mut r = ok.clone();
        r.env.insert("1X".into(), "v".into());
        assert_eq!(reason_field(&r), "env.1X");
        let mut r = ok.clone();
        r.user = Some(User {
            name: "Bad".into(),
            uid: None,
            gid: None,
        });
        assert_eq!(reason_field(&r), "user.name");
        let mut r = ok.clone();
        r.workdir = Some("/a/../b".into());
        assert_eq!(reason_field(&r), "workdir");
        let mut r = ok.clone();
        r.staging = Some(Staging {
            tag: "stage".into(),
            inputs: vec![],
            outputs: vec!["../x".into()],
        });
        assert_eq!(reason_field(&r), "staging.outputs[0]");
        let mut r = ok;
        r.user = Some(User {
            name: "bob".into(),
            uid: None,
            gid: None,
        });
        assert_eq!(r.effective_workdir(), "/work/home/bob");
    }

    #[test]
    fn tags_are_checked() {
        assert!(is_tag("data0"));
        assert!(is_tag("a.b_c-d"));
        assert!(!is_tag(""));
        assert!(!is_tag("a,b"));
        assert!(!is_tag(&"x".repeat(32)));
    }
}
