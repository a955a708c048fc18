//! `/metrics` through the real server: Slurm exporter names, histograms
//! with their buckets, per-user series, all following what happens.

use std::collections::HashMap;

use super::*;

/// The samples of an exposition text, by name with labels as written
/// (`vgrid_user_jobs_pending{user="alice"}`), and the declared types.
struct Scrape {
    samples: HashMap<String, f64>,
    types: HashMap<String, String>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut samples = HashMap::new();
        let mut types = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("a TYPE line names a type");
                types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            // Label values here hold no spaces: the value is after the last.
            let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("`{value}` is no number in `{line}`"));
            assert!(
                samples.insert(series.to_string(), value).is_none(),
                "`{series}` twice"
            );
        }
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
        Scrape { samples, types }
    }

    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no series `{series}` in {:?}", self.names()))
    }

    fn names(&self) -> Vec<&String> {
        let mut names: Vec<_> = self.samples.keys().collect();
        names.sort();
        names
    }

    /// A histogram's buckets, `(le, cumulative count)`, in order.
    fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let prefix = format!("{name}_bucket{{le=\"");
        let mut b: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter_map(|(k, v)| {
                let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().expect("a bucket bound")
                };
                Some((le, *v))
            })
            .collect();
        b.sort_by(|a, c| a.0.total_cmp(&c.0));
        b
    }

    /// The count in the first bucket whose bound is at least `le`.
    fn le(&self, name: &str, le: f64) -> f64 {
        self.buckets(name)
            .into_iter()
            .find(|(b, _)| *b >= le)
            .map(|(_, n)| n)
            .expect("a bucket")
    }
}

async fn scrape(cluster: &Cluster) -> Scrape {
    let token = std::fs::read_to_string(cluster.dir.path().join(ADMIN_TOKEN_FILE)).expect("token");
    let response = vgrid_client::plain_http()
        .get(format!("{}/metrics", cluster.h.url))
        .bearer_auth(token.trim())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    Scrape::parse(&response.text().await.expect("text"))
}

const HISTOGRAMS: [&str; 6] = [
    "vgrid_scheduling_pass_seconds",
    "vgrid_commit_seconds",
    "vgrid_checkpoint_seconds",
    "vgrid_checkpoint_bytes",
    "vgrid_restore_seconds",
    "vgrid_queue_wait_seconds",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_jobs_per_user_with_slurm_names_and_histograms() {
    let (cluster, alice, mut n1) = one_node(10_000, 4).await;
    let before = scrape(&cluster).await;
    for name in HISTOGRAMS {
        assert_eq!(
            before.types.get(name).map(String::as_str),
            Some("histogram"),
            "{name}"
        );
        let buckets = before.buckets(name);
        assert!(buckets.len() >= 10, "{name}: {buckets:?}");
        assert_eq!(buckets.last().map(|b| b.0), Some(f64::INFINITY), "{name}");
        assert_eq!(
            before.get(&format!("{name}_count")),
            buckets.last().expect("+Inf").1
        );
    }
    assert_eq!(before.get("vgrid_cpus_total"), 4.0);
    assert_eq!(before.get("vgrid_cpus_idle"), 4.0);
    assert_eq!(before.get("vgrid_cpus_alloc"), 0.0);
    assert_eq!(before.get("vgrid_nodes_idle"), 1.0);
    assert_eq!(before.get("vgrid_nodes_down"), 0.0);
    assert_eq!(before.get("vgrid_queue_pending"), 0.0);
    assert_eq!(before.get("vgrid_user_jobs_pending{user=\"alice\"}"), 0.0);
    assert_eq!(before.get("vgrid_user_jobs_running{user=\"alice\"}"), 0.0);
    assert_eq!(
        before
            .types
            .get("vgrid_scheduler_cycles")
            .map(String::as_str),
        Some("counter")
    );
    // Nodes are no users.
    assert!(
        !before
            .samples
            .contains_key("vgrid_user_jobs_pending{user=\"n1\"}")
    );

    // A held job waits: alice has one pending.
    let id = alice.submit("a.toml", JOB, true).await.expect("submitted");
    let held = scrape(&cluster).await;
    assert_eq!(held.get("vgrid_queue_held"), 1.0);
    assert_eq!(held.get("vgrid_user_jobs_pending{user=\"alice\"}"), 1.0);
    assert!(held.get("vgrid_commit_seconds_count") > before.get("vgrid_commit_seconds_count"));

    // Released, it starts and runs: 2 of 4 CPUs in use, one queue wait.
    alice.control(id, "release").await.expect("released");
    let attempt = run_next(&mut n1, &alice, id).await;
    let running = scrape(&cluster).await;
    assert_eq!(running.get("vgrid_queue_running"), 1.0);
    assert_eq!(running.get("vgrid_queue_held"), 0.0);
    assert_eq!(running.get("vgrid_user_jobs_pending{user=\"alice\"}"), 0.0);
    assert_eq!(running.get("vgrid_user_jobs_running{user=\"alice\"}"), 1.0);
    assert_eq!(running.get("vgrid_user_cpus_running{user=\"alice\"}"), 2.0);
    assert_eq!(running.get("vgrid_cpus_alloc"), 2.0);
    assert_eq!(running.get("vgrid_cpus_idle"), 2.0);
    assert_eq!(running.get("vgrid_nodes_mix"), 1.0);
    assert_eq!(running.get("vgrid_nodes_idle"), 0.0);
    assert_eq!(running.get("vgrid_queue_wait_seconds_count"), 1.0);
    // It waited well under a second after its release.
    assert_eq!(running.le("vgrid_queue_wait_seconds", 1.0), 1.0);
    let cycles = running.get("vgrid_scheduler_cycles_total");
    assert!(cycles >= 1.0, "{cycles}");
    assert_eq!(cycles, running.get("vgrid_scheduling_pass_seconds_count"));
    assert!(running.get("vgrid_scheduler_last_cycle_seconds") > 0.0);
    assert!(running.get("vgrid_scheduler_mean_cycle_seconds") > 0.0);

    // It moves to n2 through a checkpoint of 1.5 s and 3 MiB, restored
    // there in 0.8 s.
    let mut n2 = cluster.node("n2", 4).await;
    alice.migrate(id, Some("n2".into())).await.expect("migrate");
    let AgentAction::Checkpoint {
        seq, stop: true, ..
    } = n1.next_action().await
    else {
        panic!("expected a checkpoint that stops the VM on n1");
    };
    let mut checkpointed = saved(id, attempt, seq, true);
    if let AgentEvent::Checkpointed {
        took_ms,
        sent_bytes,
        ..
    } = &mut checkpointed
    {
        *took_ms = Some(1_500);
        *sent_bytes = Some(3 << 20);
    }
    n1.report(checkpointed).await;
    let AgentAction::Start {
        attempt: a2,
        restore,
        ..
    } = n2.next_action().await
    else {
        panic!("expected the job to resume on n2");
    };
    assert!(restore.is_some(), "resumes from its checkpoint");
    n2.report(AgentEvent::Running {
        job: id,
        attempt: a2,
        vm: Some(vgrid_api::types::VmStart::RestoredCheckpoint),
        restore_ms: Some(800),
    })
    .await;
    wait_state(&alice, id, JobState::Running).await;
    let moved = scrape(&cluster).await;
    assert_eq!(moved.get("vgrid_checkpoint_seconds_count"), 1.0);
    assert_eq!(moved.get("vgrid_checkpoint_seconds_sum"), 1.5);
    assert_eq!(moved.le("vgrid_checkpoint_seconds", 1.0), 0.0);
    assert_eq!(moved.le("vgrid_checkpoint_seconds", 1.5), 1.0);
    assert_eq!(
        moved.get("vgrid_checkpoint_bytes_sum"),
        f64::from(3u32 << 20)
    );
    assert_eq!(moved.le("vgrid_checkpoint_bytes", 1_048_576.0), 0.0);
    assert_eq!(moved.le("vgrid_checkpoint_bytes", 3_145_728.0), 1.0);
    assert_eq!(moved.get("vgrid_restore_seconds_count"), 1.0);
    assert_eq!(moved.get("vgrid_restore_seconds_sum"), 0.8);
    assert_eq!(moved.get("vgrid_queue_wait_seconds_count"), 2.0);
    assert_eq!(moved.get("vgrid_nodes_idle"), 1.0);
    assert_eq!(moved.get("vgrid_cpus_total"), 8.0);

    // It ends; cancelled and completed jobs are counted by Slurm's names.
    run_to_end(&n2, id, a2).await;
    wait_state(&alice, id, JobState::Done).await;
    let other = alice.submit("b.toml", JOB, true).await.expect("submitted");
    alice.control(other, "cancel").await.expect("cancelled");
    let ended = scrape(&cluster).await;
    assert_eq!(ended.get("vgrid_queue_completed"), 1.0);
    assert_eq!(ended.get("vgrid_queue_cancelled"), 1.0);
    assert_eq!(ended.get("vgrid_user_jobs_running{user=\"alice\"}"), 0.0);
    assert_eq!(ended.get("vgrid_illegal_transitions_total"), 0.0);
}
