//! Replay is exact: a core rebuilt from the scheduler log equals the live
//! one, also after the inputs the controller sends on its own (lost VMs,
//! moves, user checkpoints). The actor is driven round by round here,
//! without its thread or the HTTP API.

use vgrid_api::types::{AgentAction, AgentEvent, AgentReport, Principal, RegisterNode, Role};
use vgrid_core::{DomainId, JobId};
use vgrid_server::{Command, CommandError, Reply};

use super::{Actor, wall_clock_ms};
use crate::Config;

const JOB: &str =
    "image = \"tiny\"\ncommand = [\"/bin/echo\", \"hi\"]\ncpus = 2\nmemory_mb = 512\n";

pub(super) struct Driver {
    pub(super) actor: Actor,
    admin: Principal,
}

impl Driver {
    pub(super) fn open(cfg: Config) -> Driver {
        let (_handle, actor) = Actor::open(cfg).expect("controller opens");
        Driver {
            actor,
            // The first user, made by `ensure_admin`.
            admin: Principal {
                user_id: 1,
                name: "admin".into(),
                role: Role::Admin,
            },
        }
    }

    /// One command in one round (no coalescing of passes), answered, as
    /// the actor's loop does it.
    pub(super) fn call(&mut self, command: Command) -> Result<Reply, CommandError> {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        self.actor.now = self.actor.now.max(wall_clock_ms());
        self.actor.probe();
        self.actor.command(self.admin.clone(), command, tx);
        self.actor.last_pass_ms = 0;
        if let Err(e) = self.actor.flush() {
            self.actor.recover(e);
        }
        rx.try_recv().expect("answered at the end of the round")
    }

    pub(super) fn submit(&mut self) -> u64 {
        let spec = vgrid_jobfile::parse("j.toml", JOB).expect("valid job");
        match self.call(Command::Submit {
            spec: Box::new(spec),
            hold: false,
            idempotency_key: None,
        }) {
            Ok(Reply::Submitted { id, .. }) => id,
            other => panic!("submit: {other:?}"),
        }
    }

    fn register(&mut self, node: &str) {
        self.call(Command::RegisterNode(RegisterNode {
            name: node.into(),
            cpus: 2,
            memory_mb: 4096,
            labels: Default::default(),
            running: Vec::new(),
            images: Vec::new(),
        }))
        .expect("registered");
    }

    fn report(&mut self, node: &str, event: AgentEvent) {
        self.call(Command::Report(AgentReport {
            node: node.into(),
            events: vec![event],
        }))
        .expect("report taken");
    }

    /// The actions queued for a node since the last look.
    fn actions(&mut self, node: &str) -> Vec<AgentAction> {
        self.actor.mail.take(node)
    }

    fn checkpointed(&mut self, node: &str, job: u64, attempt: u32, seq: u64, stopped: bool) {
        self.report(
            node,
            AgentEvent::Checkpointed {
                manifest: None,
                job,
                attempt,
                seq,
                location: format!("/ckpt/{job}/{seq}"),
                work_ms: 100,
                log_offset: 0,
                stopped,
                paused_ms: 3,
                took_ms: None,
                sent_bytes: None,
            },
        );
    }
}

/// Everything the core shows about its jobs and nodes.
fn core_state(actor: &Actor, jobs: &[u64]) -> String {
    let s = actor.book.scheduler();
    let views: Vec<_> = jobs.iter().map(|j| s.job(JobId(*j))).collect();
    format!(
        "{views:?}\n{:?}\n{:?}\n{:?}",
        s.queue(DomainId(0)),
        s.nodes(),
        s.next_wakeup()
    )
}

/// A core rebuilt from the log now is the live one.
fn assert_replays(d: &Driver, cfg: &Config, jobs: &[u64]) {
    let (_handle, replayed) = Actor::open(cfg.clone()).expect("reopens");
    assert_eq!(core_state(&replayed, jobs), core_state(&d.actor, jobs));
}

#[test]
fn a_core_replayed_after_lost_vms_moves_and_user_checkpoints_equals_the_live_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Config::new(dir.path().to_path_buf());
    let mut d = Driver::open(cfg.clone());
    d.register("n1");
    let first = d.submit();
    let second = d.submit();
    let third = d.submit();
    assert!(matches!(
        d.actions("n1").as_slice(),
        [AgentAction::Start { job, attempt: 1, .. }] if *job == first
    ));
    let running = |job, attempt| AgentEvent::Running {
        job,
        attempt,
        vm: None,
        restore_ms: None,
    };
    d.report("n1", running(first, 1));

    // A user checkpoint (CheckpointTaken), then the VM dies (JobLost).
    d.call(Command::Checkpoint { id: first })
        .expect("checkpoint");
    let [
        AgentAction::Checkpoint {
            seq, stop: false, ..
        },
    ] = d.actions("n1")[..]
    else {
        panic!("expected a checkpoint");
    };
    d.checkpointed("n1", first, 1, seq, false);
    // (Saved progress is the work before the pause: about 0 ms here.)
    let saved = d.actor.book.scheduler().job(JobId(first)).expect("known");
    assert!(saved.has_checkpoint, "{saved:?}");
    assert_replays(&d, &cfg, &[first, second, third]);
    d.report(
        "n1",
        AgentEvent::Failed {
            job: first,
            attempt: 1,
            reason: "the VM crashed".into(),
        },
    );
    // (The agent already stopped what was left of the VMs: no kill.)
    let actions = d.actions("n1");
    let [
        AgentAction::Start {
            job,
            attempt: 2,
            restore: Some(_),
            ..
        },
    ] = &actions[..]
    else {
        panic!("expected the lost job to restart from its checkpoint: {actions:?}");
    };
    assert_eq!(*job, first, "the lost job kept its place");
    d.report("n1", running(first, 2));
    assert_replays(&d, &cfg, &[first, second, third]);

    // A second node takes the second job; the third waits and is moved to
    // n1 (a restriction only); the first is moved to n2 (Move, answered
    // with a checkpoint that stops it).
    d.register("n2");
    d.actions("n2");
    d.report("n2", running(second, 1));
    d.call(Command::Migrate {
        id: third,
        to: Some("n1".into()),
    })
    .expect("a waiting job moves");
    d.call(Command::Migrate {
        id: first,
        to: Some("n2".into()),
    })
    .expect("a running job moves");
    let [
        AgentAction::Checkpoint {
            seq, stop: true, ..
        },
    ] = d.actions("n1")[..]
    else {
        panic!("expected the move's checkpoint");
    };
    d.checkpointed("n1", first, 2, seq, true);
    assert!(
        matches!(d.actions("n1").as_slice(), [AgentAction::Start { job, .. }] if *job == third),
        "the moved waiting job starts on its target"
    );

    let live = d.actor.book.scheduler().job(JobId(first)).expect("known");
    assert_eq!(live.preemptions, 2, "{live:?}");
    assert_replays(&d, &cfg, &[first, second, third]);
}
