//! The inputs of the scheduling core, as written to the scheduler log.
//!
//! The core is deterministic: the same inputs at the same times give the
//! same state. The controller writes every input to the log in the same
//! transaction as the changes it caused, and after a restart replays the log
//! into a fresh core to get back exactly the state it had.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vgrid_core::{AttrValue, Class, DomainId, JobId, NodeId, NodeSpec, Time};
use vgrid_model::{JobClass, JobSpec};

/// One input of the core. Job specs are not repeated here: a job's request
/// never changes and is in the jobs table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "in", rename_all = "kebab-case")]
pub(crate) enum SchedInput {
    Submit {
        job: u64,
    },
    Cancel {
        job: u64,
    },
    Hold {
        job: u64,
    },
    Release {
        job: u64,
    },
    NodeUp {
        node: LoggedNode,
    },
    NodeLost {
        node: u32,
    },
    /// An admin drained the node: nothing new goes there.
    NodeDrain {
        node: u32,
    },
    /// An admin put a drained node back in service.
    NodeResume {
        node: u32,
    },
    Running {
        job: u64,
    },
    Finished {
        job: u64,
        exit_status: i32,
    },
    Checkpointed {
        job: u64,
        ok: bool,
    },
    /// The job's VMs died while its node lives on: the core requeues it in
    /// its old place, to resume from its last checkpoint.
    JobLost {
        job: u64,
    },
    /// A user moves the job: to node `to`, or with `None` anywhere but the
    /// nodes it leaves. The core answers a running job with a preemption.
    Move {
        job: u64,
        to: Option<u32>,
    },
    /// A checkpoint the core did not ask for (a user's) was saved; the VMs
    /// were paused `paused_ms` for it.
    CheckpointTaken {
        job: u64,
        paused_ms: u64,
    },
    /// The images a node holds changed.
    NodeImages {
        node: u32,
        images: std::collections::BTreeSet<String>,
    },
    /// A scheduling pass (which also does the time-driven work due).
    Schedule,
}

/// The version of the log's entries this build writes. Persisted: a change
/// of an input's meaning or fields needs a new version, and [`decode`]
/// must then read the old one or refuse it saying what to do.
pub(crate) const LOG_VERSION: u32 = 1;

/// An entry of the log: an input with the version of its form.
#[derive(Serialize, Deserialize)]
struct Entry<T> {
    /// Absent from entries written before versions (the same form as 1).
    #[serde(default)]
    v: u32,
    #[serde(flatten)]
    input: T,
}

/// The text an input is logged as.
pub(crate) fn encode(input: &SchedInput) -> serde_json::Result<String> {
    serde_json::to_string(&Entry {
        v: LOG_VERSION,
        input,
    })
}

/// An input read back from the log.
pub(crate) fn decode(text: &str) -> Result<SchedInput, String> {
    let entry: Entry<SchedInput> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if entry.v > LOG_VERSION {
        return Err(format!(
            "the entry has version {}, but this vgrid reads only up to {LOG_VERSION}: run a newer vgrid",
            entry.v
        ));
    }
    Ok(entry.input)
}

/// A node as announced to the core.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct LoggedNode {
    pub id: u32,
    pub name: String,
    pub cpus: u32,
    pub memory_mb: u64,
    pub labels: BTreeMap<String, String>,
    /// Absent from entries written before images moved: none.
    #[serde(default)]
    pub images: std::collections::BTreeSet<String>,
}

impl LoggedNode {
    pub(crate) fn to_core(&self) -> NodeSpec {
        let mut spec = NodeSpec::new(NodeId(self.id), DomainId(0), self.cpus, self.memory_mb);
        spec.name = self.name.clone();
        for (k, v) in &self.labels {
            spec.attrs.insert(k.clone(), label_value(v));
        }
        spec.images = self.images.clone();
        spec
    }
}

/// Labels are strings on the wire; numbers and booleans become typed
/// attributes so that `gpus >= 1` or `ssd` work in expressions.
fn label_value(v: &str) -> AttrValue {
    if let Ok(i) = v.parse::<i64>() {
        AttrValue::Int(i)
    } else if let Ok(f) = v.parse::<f64>() {
        AttrValue::Float(f)
    } else if v == "true" || v == "false" {
        AttrValue::Bool(v == "true")
    } else {
        AttrValue::Str(v.to_string())
    }
}

/// The estimate the core uses for backfilling when a job gives no walltime.
pub(crate) const DEFAULT_WALLTIME_MS: u64 = 3_600_000;

/// The core's view of a job request.
pub(crate) fn core_job(id: u64, owner: &str, spec: &JobSpec) -> vgrid_core::JobRequest {
    let class = match spec.class {
        JobClass::Normal => Class::Normal,
        JobClass::BestEffort => Class::BestEffort,
        JobClass::Reservation {
            start_unix_s,
            end_unix_s,
        } => Class::Reservation {
            start: Time::from_secs(start_unix_s.max(0) as u64),
            end: Time::from_secs(end_unix_s.max(0) as u64),
        },
    };
    vgrid_core::JobRequest {
        id: JobId(id),
        user: owner.to_string(),
        domain: DomainId(0),
        class,
        priority: spec.priority,
        vms: spec.vms,
        cores_per_vm: spec.cpus,
        memory_mb_per_vm: spec.memory_mb,
        walltime_ms: spec
            .walltime_s
            .map_or(DEFAULT_WALLTIME_MS, |s| s.saturating_mul(1000)),
        // Parsed once, when the job file was read (or the spec read back).
        requirements: spec.requirements.as_ref().map(|e| e.expr().clone()),
        rank: spec.rank.as_ref().map(|e| e.expr().clone()),
        // QEMU cannot save a VM with a 9p mount: such jobs restart instead.
        checkpointable: spec.mounts.is_empty(),
        checkpoint_interval_ms: spec.checkpoint_interval_s.map(|s| s.saturating_mul(1000)),
        image: Some(spec.image.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_round_trip_through_json() {
        let inputs = vec![
            SchedInput::Submit { job: 1 },
            SchedInput::NodeUp {
                node: LoggedNode {
                    id: 3,
                    name: "n3".into(),
                    cpus: 4,
                    memory_mb: 8192,
                    labels: BTreeMap::from([("gpus".into(), "2".into())]),
                    images: ["tiny".to_string()].into(),
                },
            },
            SchedInput::Finished {
                job: 1,
                exit_status: 3,
            },
            SchedInput::JobLost { job: 1 },
            SchedInput::Move {
                job: 1,
                to: Some(3),
            },
            SchedInput::Move { job: 1, to: None },
            SchedInput::CheckpointTaken {
                job: 1,
                paused_ms: 40,
            },
            SchedInput::NodeDrain { node: 3 },
            SchedInput::NodeResume { node: 3 },
            SchedInput::Schedule,
        ];
        for input in inputs {
            let text = serde_json::to_string(&input).expect("serializes");
            let back: SchedInput = serde_json::from_str(&text).expect("parses");
            assert_eq!(back, input);
        }
    }

    #[test]
    fn entries_carry_their_version_and_a_newer_one_is_refused() {
        let text = encode(&SchedInput::Submit { job: 3 }).expect("encodes");
        assert_eq!(text, r#"{"v":1,"in":"submit","job":3}"#);
        assert_eq!(decode(&text), Ok(SchedInput::Submit { job: 3 }));
        // Written before versions: read as version 1.
        assert_eq!(
            decode(r#"{"in":"submit","job":3}"#),
            Ok(SchedInput::Submit { job: 3 })
        );
        let newer = decode(r#"{"v":2,"in":"submit","job":3}"#).expect_err("refused");
        assert!(newer.contains("newer vgrid"), "{newer}");
    }

    #[test]
    fn the_new_inputs_have_stable_names_in_the_log() {
        let text = |i: &SchedInput| serde_json::to_string(i).expect("serializes");
        assert_eq!(
            text(&SchedInput::JobLost { job: 4 }),
            r#"{"in":"job-lost","job":4}"#
        );
        assert_eq!(
            text(&SchedInput::Move {
                job: 4,
                to: Some(2)
            }),
            r#"{"in":"move","job":4,"to":2}"#
        );
        assert_eq!(
            text(&SchedInput::CheckpointTaken {
                job: 4,
                paused_ms: 30
            }),
            r#"{"in":"checkpoint-taken","job":4,"paused_ms":30}"#
        );
        assert_eq!(
            text(&SchedInput::NodeDrain { node: 2 }),
            r#"{"in":"node-drain","node":2}"#
        );
        assert_eq!(
            text(&SchedInput::NodeResume { node: 2 }),
            r#"{"in":"node-resume","node":2}"#
        );
    }

    #[test]
    fn labels_become_typed_attributes() {
        assert_eq!(label_value("2"), AttrValue::Int(2));
        assert_eq!(label_value("1.5"), AttrValue::Float(1.5));
        assert_eq!(label_value("true"), AttrValue::Bool(true));
        assert_eq!(label_value("x86_64"), AttrValue::Str("x86_64".into()));
    }

    #[test]
    fn job_requests_map_to_the_core() {
        let spec = vgrid_jobfile::parse(
            "j.toml",
            "image = \"tiny\"\ncommand = [\"/bin/true\"]\ncpus = 2\nmemory_mb = 512\nvms = 3\nclass = \"best-effort\"\ncheckpoint_interval_s = 30\nrequirements = \"cores >= 2\"\n",
        )
        .expect("valid");
        let core = core_job(7, "alice", &spec);
        assert_eq!(core.id, JobId(7));
        assert_eq!(
            (core.vms, core.cores_per_vm, core.memory_mb_per_vm),
            (3, 2, 512)
        );
        assert_eq!(core.class, Class::BestEffort);
        assert_eq!(core.checkpoint_interval_ms, Some(30_000));
        assert_eq!(core.walltime_ms, DEFAULT_WALLTIME_MS);
        assert!(core.requirements.is_some() && core.checkpointable);
    }
}
