//! The agent with a real controller over HTTP and a scripted driver whose
//! "VM" counts to `COUNT_TO`, one line per tick. Checkpoints save the
//! counter; a restore continues from it. (The same flows on real QEMU run in
//! the `vgrid` binary's tests.)

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vgrid_api::types::{Role, VmStart};
use vgrid_client::Client;
use vgrid_model::JobState;

use super::*;

const TICK: Duration = Duration::from_millis(15);

#[derive(Default)]
struct Vm {
    count: u64,
    to: u64,
    output: Vec<u8>,
    paused: bool,
    stopped: bool,
    exited: bool,
    /// The job's outputs (name, bytes): its inputs, one after the other.
    outputs: Vec<(String, Vec<u8>)>,
}

#[derive(Default)]
struct CountingDriver {
    vms: Mutex<HashMap<Unit, Arc<Mutex<Vm>>>>,
    /// How many of the next looks at a unit fail, as a QMP hiccup would.
    failing_looks: std::sync::atomic::AtomicU32,
}

impl CountingDriver {
    fn vm(&self, unit: Unit) -> Result<Arc<Mutex<Vm>>, DriverError> {
        self.vms
            .lock()
            .ok()
            .and_then(|m| m.get(&unit).cloned())
            .ok_or_else(|| DriverError::other(format!("no unit {unit:?}")))
    }
}

fn lock(vm: &Mutex<Vm>) -> std::sync::MutexGuard<'_, Vm> {
    vm.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl VmDriver for CountingDriver {
    async fn start(&self, req: StartRequest) -> Result<VmStart, DriverError> {
        let to = req
            .spec
            .env
            .get("COUNT_TO")
            .and_then(|v| v.parse().ok())
            .unwrap_or(5);
        let count = match &req.restore {
            Some(c) => std::fs::read_to_string(PathBuf::from(&c.location).join("counter"))
                .map_err(|e| DriverError::other(format!("restore: {e}")))?
                .trim()
                .parse()
                .map_err(|_| DriverError::other("bad counter"))?,
            None => 0,
        };
        // The "guest" reads its inputs where the agent exported them.
        let mut inputs = Vec::new();
        for name in req.spec.input_names() {
            let dir = req
                .input_dir
                .as_ref()
                .ok_or_else(|| DriverError::other("inputs not fetched"))?;
            let bytes = std::fs::read(dir.join(&name))
                .map_err(|e| DriverError::other(format!("input {name}: {e}")))?;
            inputs.extend_from_slice(&bytes);
        }
        let outputs = req
            .spec
            .outputs
            .iter()
            .map(|t| (t.to.display().to_string(), inputs.clone()))
            .collect();
        let vm = Arc::new(Mutex::new(Vm {
            count,
            to,
            outputs,
            ..Vm::default()
        }));
        if let Ok(mut m) = self.vms.lock() {
            m.insert(req.unit, vm.clone());
        }
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TICK).await;
                let mut v = lock(&vm);
                if v.stopped || v.exited {
                    return;
                }
                if v.paused {
                    continue;
                }
                if v.count >= v.to {
                    v.exited = true;
                    return;
                }
                v.count += 1;
                let line = format!("{}\n", v.count);
                v.output.extend_from_slice(line.as_bytes());
            }
        });
        Ok(if req.restore.is_some() {
            VmStart::RestoredCheckpoint
        } else {
            VmStart::Booted
        })
    }

    async fn units(&self) -> Result<Vec<Unit>, DriverError> {
        Ok(self
            .vms
            .lock()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default())
    }

    async fn status(&self, unit: Unit) -> Result<UnitStatus, DriverError> {
        use std::sync::atomic::Ordering;
        let failing = self
            .failing_looks
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(DriverError::other("QMP did not answer"));
        }
        let vm = self.vm(unit)?;
        let v = lock(&vm);
        Ok(if v.exited {
            UnitStatus::Exited(0)
        } else if v.stopped {
            UnitStatus::Failed("stopped".into())
        } else {
            UnitStatus::Running
        })
    }

    async fn output(&self, unit: Unit, from: u64) -> Result<Vec<u8>, DriverError> {
        let vm = self.vm(unit)?;
        let v = lock(&vm);
        Ok(v.output.get(from as usize..).unwrap_or_default().to_vec())
    }

    async fn checkpoint(
        &self,
        unit: Unit,
        dir: PathBuf,
        stop: bool,
    ) -> Result<SavedCheckpoint, DriverError> {
        let vm = self.vm(unit)?;
        let mut v = lock(&vm);
        std::fs::create_dir_all(&dir).map_err(|e| DriverError::other(e.to_string()))?;
        std::fs::write(dir.join("counter"), v.count.to_string())
            .map_err(|e| DriverError::other(e.to_string()))?;
        if stop {
            v.stopped = true;
        }
        Ok(SavedCheckpoint {
            location: dir.display().to_string(),
            work_ms: (v.count as u128 * TICK.as_millis()) as i64,
            output_bytes: v.output.len() as u64,
            paused_ms: 0,
        })
    }

    async fn pause(&self, unit: Unit) -> Result<(), DriverError> {
        let vm = self.vm(unit)?;
        lock(&vm).paused = true;
        Ok(())
    }

    async fn resume(&self, unit: Unit) -> Result<(), DriverError> {
        let vm = self.vm(unit)?;
        lock(&vm).paused = false;
        Ok(())
    }

    async fn kill(&self, unit: Unit) -> Result<(), DriverError> {
        let vm = self.vm(unit)?;
        lock(&vm).stopped = true;
        Ok(())
    }

    async fn remove(&self, unit: Unit) -> Result<(), DriverError> {
        if let Ok(mut m) = self.vms.lock() {
            m.remove(&unit);
        }
        Ok(())
    }

    async fn collect_outputs(
        &self,
        unit: Unit,
        cache: Option<&vgrid_cas::Store>,
    ) -> Result<Option<Vec<vgrid_cas::FileEntry>>, DriverError> {
        let vm = self.vm(unit)?;
        let outputs = lock(&vm).outputs.clone();
        if outputs.is_empty() {
            return Ok(None);
        }
        let cache = cache.ok_or(JobError::NoCache)?;
        outputs
            .iter()
            .map(|(name, bytes)| {
                cache
                    .import_reader(&bytes[..], std::path::Path::new(name), name, 0o600)
                    .map_err(|e| DriverError::other(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

struct Cluster {
    _controller: vgrid_controller::Controller,
    url: String,
    admin: Client,
}

async fn cluster(dir: &std::path::Path) -> Cluster {
    let mut cfg = vgrid_controller::Config::new(dir.join("controller"));
    cfg.heartbeat_ms = 100;
    cfg.lost_after_ms = 2_000;
    let controller = vgrid_controller::Controller::start(cfg).expect("controller");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(vgrid_server::serve(
        listener,
        Arc::new(controller.handle()),
        std::future::pending(),
    ));
    let token = std::fs::read_to_string(
        dir.join("controller")
            .join(vgrid_controller::ADMIN_TOKEN_FILE),
    )
    .expect("admin token");
    let admin = Client::new(&url, token.trim()).expect("client");
    Cluster {
        _controller: controller,
        url,
        admin,
    }
}

fn start_agent(
    c: &Cluster,
    dir: &std::path::Path,
    token: &str,
    name: &str,
    driver: Arc<CountingDriver>,
) {
    start_agent_with_cache(c, dir, token, name, driver, false);
}

fn start_agent_with_cache(
    c: &Cluster,
    dir: &std::path::Path,
    token: &str,
    name: &str,
    driver: Arc<CountingDriver>,
    cache: bool,
) {
    let cfg = AgentConfig {
        controller: c.url.clone(),
        token: token.to_string(),
        tls: None,
        name: name.to_string(),
        cpus: 2,
        memory_mb: 4096,
        labels: BTreeMap::new(),
        state_dir: dir.join(name),
        watch_interval: Duration::from_millis(20),
        cache_dir: cache.then(|| dir.join(name).join("store")),
    };
    tokio::spawn(async move { run(cfg, driver, std::future::pending()).await });
}

async fn wait_ended(client: &Client, id: u64) -> vgrid_api::types::JobView {
    loop {
        let w = client.wait(id, 10_000).await.expect("wait");
        if w.ended {
            return w.job;
        }
    }
}

async fn output(client: &Client, id: u64) -> String {
    String::from_utf8(client.output(id, 0).await.expect("output").data).expect("utf-8")
}

fn counting(to: u64) -> String {
    (1..=to).map(|i| format!("{i}\n")).collect()
}

/// Runs a counting job on one agent whose driver fails `failing_looks`
/// looks at the VM first; returns the ended job and its output.
async fn count_with_failing_looks(failing_looks: u32) -> (vgrid_api::types::JobView, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cluster(dir.path()).await;
    let agent = c
        .admin
        .add_user("n1", Role::Agent)
        .await
        .expect("agent user");
    let driver = CountingDriver {
        failing_looks: failing_looks.into(),
        ..CountingDriver::default()
    };
    start_agent(&c, dir.path(), &agent.token, "n1", Arc::new(driver));
    let id = c
        .admin
        .submit(
            "count.toml",
            "image = \"tiny\"\ncommand = [\"/bin/count\"]\nenv = { COUNT_TO = \"12\" }\n",
            false,
        )
        .await
        .expect("submitted");
    let job = wait_ended(&c.admin, id).await;
    (job, output(&c.admin, id).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_through_the_agent_and_its_output_comes_back() {
    let (job, out) = count_with_failing_looks(0).await;
    assert_eq!((job.state, job.exit_code), (JobState::Done, Some(0)));
    assert_eq!(out, counting(12));
}

/// The user's files go up at submit, down to the node before the start,
/// into the "guest"; its outputs go back up before the exit is reported,
/// and the user fetches them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_inputs_reach_the_vm_and_its_outputs_the_user_through_the_store() {
    use vgrid_client::data::{LocalFile, fetch_outputs, upload_files};
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cluster(dir.path()).await;
    let agent = c.admin.add_user("n1", Role::Agent).await.expect("agent");
    let driver = Arc::new(CountingDriver::default());
    start_agent_with_cache(&c, dir.path(), &agent.token, "n1", driver, true);
    let alice = c.admin.add_user("alice", Role::User).await.expect("alice");
    let alice = Client::new(&c.url, &alice.token).expect("client");
    let local = tempfile::tempdir().expect("local");
    let files: Vec<LocalFile> = [("a.txt", "alpha\n"), ("b.txt", "beta\n")]
        .iter()
        .map(|(name, text)| {
            let path = local.path().join(name);
            std::fs::write(&path, text).expect("input");
            LocalFile {
                path,
                name: name.to_string(),
            }
        })
        .collect();
    let (data, _, _) = upload_files(&alice, &files, &|_| {}).await.expect("upload");
    let id = alice
        .submit_request(
            &vgrid_api::types::SubmitRequest {
                file_name: "d.toml".into(),
                source:
                    "image = \"tiny\"\ncommand = [\"/bin/count\"]\nenv = { COUNT_TO = \"3\" }\n\
                    [[inputs]]\nfrom = \"a.txt\"\nto = \"/work/a.txt\"\n\
                    [[inputs]]\nfrom = \"b.txt\"\nto = \"/work/b.txt\"\n\
                    [[outputs]]\nfrom = \"/work/both.txt\"\nto = \"out/both.txt\"\n"
                        .into(),
                hold: false,
                input_data: Some(data.hex()),
            },
            None,
        )
        .await
        .expect("submitted");
    let job = wait_ended(&alice, id).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    let detail = alice.job(id).await.expect("show");
    let steps: Vec<&str> = detail.history.iter().map(|h| h.reason.as_str()).collect();
    assert!(
        steps
            .iter()
            .any(|r| r.starts_with("input data fetched: 2 file(s)")),
        "{steps:?}"
    );
    assert!(
        detail
            .history
            .iter()
            .any(|h| h.state == JobState::StagingOut),
        "{steps:?}"
    );
    // The unit's exported inputs are gone from the node.
    assert!(
        !dir.path()
            .join("n1/inputs")
            .join(format!("{id}.1"))
            .exists()
    );
    let into = tempfile::tempdir().expect("into");
    let (_, written) = fetch_outputs(&alice, id, into.path(), &|_| {})
        .await
        .expect("outputs");
    assert_eq!(written.len(), 1);
    assert_eq!(
        std::fs::read_to_string(into.path().join("out/both.txt")).expect("output"),
        "alpha\nbeta\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_look_at_the_vm_that_fails_once_in_a_while_does_not_end_the_job() {
    let (job, out) = count_with_failing_looks(STATUS_ERRORS_TO_FAIL - 1).await;
    assert_eq!((job.state, job.exit_code), (JobState::Done, Some(0)));
    assert_eq!(out, counting(12));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looks_at_the_vm_that_keep_failing_end_the_job_as_failed_saying_why() {
    let (job, _) = count_with_failing_looks(1000).await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    assert!(job.reason.contains("QMP did not answer"), "{}", job.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preempted_best_effort_job_resumes_with_output_identical_to_an_uninterrupted_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cluster(dir.path()).await;
    let agent = c
        .admin
        .add_user("n1", Role::Agent)
        .await
        .expect("agent user");
    start_agent(
        &c,
        dir.path(),
        &agent.token,
        "n1",
        Arc::new(CountingDriver::default()),
    );
    let be = c
        .admin
        .submit(
            "be.toml",
            "image = \"tiny\"\ncommand = [\"/bin/count\"]\ncpus = 2\nclass = \"best-effort\"\nenv = { COUNT_TO = \"60\" }\n",
            false,
        )
        .await
        .expect("submitted");
    // Let it print for a while, then a normal job takes the node.
    loop {
        let printed = output(&c.admin, be).await;
        if printed.lines().count() >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let normal = c
        .admin
        .submit(
            "n.toml",
            "image = \"tiny\"\ncommand = [\"/bin/count\"]\ncpus = 2\nenv = { COUNT_TO = \"3\" }\n",
            false,
        )
        .await
        .expect("submitted");
    let n = wait_ended(&c.admin, normal).await;
    assert_eq!(n.state, JobState::Done);
    let b = wait_ended(&c.admin, be).await;
    assert_eq!(b.state, JobState::Done);
    assert_eq!(output(&c.admin, be).await, counting(60));
    let detail = c.admin.job(be).await.expect("show");
    assert!(!detail.checkpoints.is_empty(), "it was checkpointed");
    let states: Vec<JobState> = detail.history.iter().map(|h| h.state).collect();
    assert!(states.contains(&JobState::Preempted), "{states:?}");
    let runs = states.iter().filter(|s| **s == JobState::Running).count();
    assert!(runs >= 2, "it ran, was preempted and ran again: {states:?}");
    // The agent measured the checkpoint and the restore for /metrics.
    assert!(metric_count(&c, dir.path(), "vgrid_checkpoint_seconds").await >= 1.0);
    assert!(metric_count(&c, dir.path(), "vgrid_restore_seconds").await >= 1.0);
}

/// The `_count` of histogram `name` in the controller's `/metrics`.
async fn metric_count(c: &Cluster, dir: &std::path::Path, name: &str) -> f64 {
    let token = std::fs::read_to_string(
        dir.join("controller")
            .join(vgrid_controller::ADMIN_TOKEN_FILE),
    )
    .expect("admin token");
    let text = vgrid_client::plain_http()
        .get(format!("{}/metrics", c.url))
        .bearer_auth(token.trim())
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}_count ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name}_count in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_agent_s_job_resumes_on_another_agent_from_its_last_periodic_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cluster(dir.path()).await;
    let agent = c
        .admin
        .add_user("n1", Role::Agent)
        .await
        .expect("agent user");
    // n1 runs the job; it is stopped (its task aborted) mid-run.
    let driver1 = Arc::new(CountingDriver::default());
    let cfg = AgentConfig {
        controller: c.url.clone(),
        token: agent.token.clone(),
        tls: None,
        name: "n1".into(),
        cpus: 2,
        memory_mb: 4096,
        labels: BTreeMap::new(),
        state_dir: dir.path().join("n1"),
        watch_interval: Duration::from_millis(20),
        cache_dir: None,
    };
    let n1 = tokio::spawn(run(cfg, driver1.clone(), std::future::pending()));
    let id = c
        .admin
        .submit(
            "be.toml",
            "image = \"tiny\"\ncommand = [\"/bin/count\"]\ncpus = 2\nclass = \"best-effort\"\ncheckpoint_interval_s = 1\nenv = { COUNT_TO = \"150\" }\n",
            false,
        )
        .await
        .expect("submitted");
    loop {
        if !c.admin.job(id).await.expect("show").checkpoints.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The node dies without notice: its agent stops and its VM with it.
    n1.abort();
    for unit in driver1.units().await.expect("units") {
        let _ = driver1.kill(unit).await;
    }
    // An agent token acts for the node of its name only.
    let agent2 = c
        .admin
        .add_user("n2", Role::Agent)
        .await
        .expect("agent user");
    start_agent(
        &c,
        dir.path(),
        &agent2.token,
        "n2",
        Arc::new(CountingDriver::default()),
    );
    let job = wait_ended(&c.admin, id).await;
    assert_eq!(job.state, JobState::Done);
    assert_eq!(job.node.as_deref(), Some("n2"));
    // Resumed from the checkpoint: the output is still one clean count.
    assert_eq!(output(&c.admin, id).await, counting(150));
    let history = c.admin.job(id).await.expect("show").history;
    assert!(
        history.iter().any(|h| h.reason.contains("node was lost")),
        "{history:?}"
    );
    // The agent measured its checkpoints for /metrics; the restores here
    // failed (n1's files are gone with it) and are not counted.
    assert!(metric_count(&c, dir.path(), "vgrid_checkpoint_seconds").await >= 1.0);
    assert_eq!(
        metric_count(&c, dir.path(), "vgrid_restore_seconds").await,
        0.0
    );
}

#[test]
fn a_unit_s_state_file_is_versioned_and_the_form_before_versions_still_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("units")).expect("units");
    let unit = Unit { job: 4, attempt: 2 };
    let path = UnitState::path(dir.path(), unit);
    assert_eq!(UnitState::load(dir.path(), unit).expect("none"), None);
    let s = UnitState {
        base_offset: 42,
        checkpoint_dir: "/ck/4".into(),
    };
    s.save(dir.path(), unit).expect("save");
    assert!(
        std::fs::read_to_string(&path)
            .expect("read")
            .contains("\"v\": 1")
    );
    assert_eq!(UnitState::load(dir.path(), unit).expect("load"), Some(s));
    // The two lines an agent wrote before versions.
    std::fs::write(&path, "17\n/ck/old\n").expect("write");
    let old = UnitState::load(dir.path(), unit)
        .expect("old")
        .expect("some");
    assert_eq!(
        (old.base_offset, old.checkpoint_dir),
        (17, PathBuf::from("/ck/old"))
    );
    std::fs::write(
        &path,
        r#"{"v": 9, "base_offset": 1, "checkpoint_dir": "/x"}"#,
    )
    .expect("write");
    let err = UnitState::load(dir.path(), unit).expect_err("newer");
    assert!(
        vgrid_vm::error::report(&err).contains("run the newer vgrid"),
        "{err}"
    );
}
