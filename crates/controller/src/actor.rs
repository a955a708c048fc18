//! The actor: the one thread that owns the controller's state. It keeps the
//! loop, the clock, group commit and the answers; what to do is the job
//! book's ([`crate::book`]), how to read a request is its handler's
//! ([`crate::handlers`]). See the crate documentation for the loop.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vgrid_api::types::WaitResponse;
use vgrid_server::{CommandError, Reply};
use vgrid_store::Store;

use crate::book::{BookConfig, Delivery, JobBook, Records};
use crate::handle::{AuthMap, ControllerHandle, Msg, ReplyTx};
use crate::handlers::{self, Ctx, Handled};
use crate::mailbox::Mailboxes;
use crate::metrics::Metrics;
use crate::output::OutputFiles;
use crate::{Config, ControllerError};

#[cfg(test)]
mod recovery_tests;
#[cfg(test)]
mod replay_tests;

/// Most commands taken into one round (one transaction).
const MAX_BATCH: usize = 4096;

/// Least time between two scheduling passes while commands keep coming. A
/// pass looks at the whole queue, so under a stream of submissions passes
/// are coalesced; an idle controller schedules a new job at once. When
/// passes get slow (a long queue), the gap grows to twice the last pass's
/// duration, so that scheduling takes at most a third of the actor's time.
const MIN_PASS_INTERVAL_MS: u64 = 20;

/// How often a degraded controller tries to write its database again.
const PROBE_INTERVAL_MS: u64 = 1_000;

/// Why the controller refuses writes, and when it tries the database again.
pub(crate) struct Degraded {
    pub message: String,
    pub next_probe_ms: u64,
}

pub(crate) struct Actor {
    cfg: Config,
    rx: Receiver<Msg>,
    pub(crate) store: Store,
    pub(crate) book: JobBook,
    auth: AuthMap,
    output: OutputFiles,
    /// The content-addressed store (images, checkpoints, data).
    cas: Arc<vgrid_cas::Store>,
    /// The clock of this round (Unix ms), never going back.
    pub(crate) now: u64,
    pub(crate) mail: Mailboxes,
    waiters: HashMap<u64, Vec<ReplyTx>>,
    outbox: Vec<(ReplyTx, Result<Reply, CommandError>)>,
    sched_dirty: bool,
    pub(crate) last_pass_ms: u64,
    pass_gap_ms: u64,
    metrics: Metrics,
    /// Set while the database cannot be written (a full disk, a damaged
    /// page): writes are refused, reads are served, and a probe tries the
    /// database again now and then.
    pub(crate) degraded: Option<Degraded>,
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Actor {
    /// Opens the store, makes sure an admin exists, and builds the book
    /// from the database.
    pub(crate) fn open(cfg: Config) -> Result<(ControllerHandle, Actor), ControllerError> {
        let now = wall_clock_ms();
        let store = crate::setup::open(&cfg, now)?;
        let output_dir = crate::setup::output_dir(&cfg);
        let output =
            OutputFiles::new(output_dir.clone()).map_err(|source| ControllerError::DataDir {
                path: output_dir,
                source,
            })?;
        let records = Records::read(&store)?;
        crate::sched_settings::check(&cfg, records.log.is_empty())?;
        let (book, last_time) = JobBook::from_records(book_config(&cfg), records, now)?;
        let store_dir = cfg.data_dir.join("store");
        let cas = vgrid_cas::Store::open(&store_dir).map_err(|e| ControllerError::Cas {
            path: store_dir,
            source: e,
        })?;
        let cas = Arc::new(cas);
        let (tx, rx) = std::sync::mpsc::channel();
        let auth: AuthMap = Arc::new(RwLock::new(book.users.tokens.clone()));
        let handle = ControllerHandle {
            tx,
            auth: auth.clone(),
            join: cfg.join.clone().map(Arc::new),
            store: cas.clone(),
        };
        let actor = Actor {
            cfg,
            rx,
            store,
            book,
            auth,
            output,
            cas,
            now: now.max(last_time),
            mail: Mailboxes::default(),
            waiters: HashMap::new(),
            outbox: Vec::new(),
            sched_dirty: true,
            last_pass_ms: 0,
            pass_gap_ms: MIN_PASS_INTERVAL_MS,
            metrics: Metrics::new(),
            degraded: None,
        };
        Ok((handle, actor))
    }

    /// The loop; returns when stopped.
    pub(crate) fn run(mut self) -> Result<(), ControllerError> {
        tracing::info!(
            jobs = self.book.jobs().count(),
            nodes = self.book.nodes().count(),
            "controller running"
        );
        let mut batch = Vec::new();
        loop {
            let wait = self.time_to_next_wakeup();
            let mut stop = false;
            match self.rx.recv_timeout(wait) {
                Ok(msg) => batch.push(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = true,
            }
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(msg) => batch.push(msg),
                    Err(_) => break,
                }
            }
            self.now = self.now.max(wall_clock_ms());
            self.probe();
            for msg in batch.drain(..) {
                match msg {
                    Msg::Command {
                        principal,
                        command,
                        reply,
                    } => self.command(principal, command, reply),
                    Msg::Stop => stop = true,
                }
            }
            if self.degraded.is_none() {
                self.book.tick(self.now);
            }
            if let Err(e) = self.flush() {
                self.recover(e);
            }
            if stop {
                return Ok(());
            }
        }
    }

    fn time_to_next_wakeup(&self) -> Duration {
        let now = wall_clock_ms();
        // Check heartbeats a few times per lost-timeout.
        let mut next = now + (self.cfg.lost_after_ms / 4).max(50);
        if let Some(t) = self.book.next_wakeup() {
            next = next.min(t);
        }
        if self.sched_dirty {
            next = next.min(self.last_pass_ms + self.pass_gap_ms);
        }
        if let Some(d) = &self.degraded {
            next = next.min(d.next_probe_ms);
        }
        Duration::from_millis(next.saturating_sub(now))
    }

    /// Hands one command to its handler; its answer waits in the outbox
    /// for the end of the round.
    pub(crate) fn command(
        &mut self,
        p: vgrid_api::types::Principal,
        command: vgrid_server::Command,
        reply: ReplyTx,
    ) {
        self.metrics.commands.inc();
        if let Some(d) = &self.degraded
            && handlers::writes(&command)
        {
            let _ = reply.send(Err(CommandError::Unavailable(d.message.clone())));
            return;
        }
        let mut ctx = Ctx {
            now: self.now,
            heartbeat_ms: self.cfg.heartbeat_ms,
            max_output_bytes: self.cfg.max_output_bytes,
            book: &mut self.book,
            store: &self.store,
            output: &self.output,
            cas: &self.cas,
            mail: &mut self.mail,
            waiters: &mut self.waiters,
            metrics: &self.metrics,
        };
        match handlers::handle(&mut ctx, p, command, reply) {
            Handled::Answer(reply, answer) => self.outbox.push((reply, answer)),
            Handled::Parked => {}
        }
    }

    /// A scheduling pass when one is due, coalesced under load.
    fn schedule(&mut self) {
        if self.degraded.is_some() {
            return;
        }
        let due = self.book.next_wakeup().is_some_and(|t| t <= self.now);
        let coalesce = self.now < self.last_pass_ms + self.pass_gap_ms;
        if !due && (!self.sched_dirty || coalesce) {
            return;
        }
        self.sched_dirty = false;
        self.last_pass_ms = self.now;
        let started = std::time::Instant::now();
        self.book.schedule(self.now);
        let took = started.elapsed();
        self.metrics.observe_pass(took.as_secs_f64());
        self.pass_gap_ms = MIN_PASS_INTERVAL_MS.max(2 * took.as_millis() as u64);
    }

    /// Ends a round: schedules, writes, then carries out and answers.
    pub(crate) fn flush(&mut self) -> Result<(), ControllerError> {
        self.sched_dirty |= self.book.take_sched_dirty();
        self.schedule();
        let fx = self.book.take_effects();
        self.sched_dirty |= fx.sched_dirty;
        if !fx.changes.is_empty() {
            let started = std::time::Instant::now();
            // All or nothing: a refusal (a full disk, a damaged page, or
            // memory and disk disagreeing) leaves the database as it was,
            // and `recover` rebuilds the book from it.
            self.store.apply(&fx.changes)?;
            self.metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            self.metrics
                .committed_changes
                .inc_by(fx.changes.len() as u64);
        }
        crate::transitions::committed(&fx.transitions, &self.metrics);
        if !(fx.tokens.is_empty() && fx.revoked.is_empty())
            && let Ok(mut auth) = self.auth.write()
        {
            for hash in &fx.revoked {
                auth.remove(hash);
            }
            auth.extend(fx.tokens);
        }
        for (job, seq, manifest) in fx.stored_checkpoints {
            let name = format!("checkpoints/{job}/{seq}");
            let set =
                vgrid_cas::ManifestId::parse(&manifest).map(|id| self.cas.set_ref(&name, &id));
            if let Some(Err(e)) = set {
                tracing::warn!(%name, error = %e, "cannot name a checkpoint in the store");
            }
        }
        for job in fx.obsolete {
            // Its manifests lose their names (a collection of the store
            // may then take their chunks); a directory from the time
            // before the store goes.
            if let Err(e) = self.cas.remove_refs(&format!("checkpoints/{job}")) {
                tracing::warn!(job, error = %e, "cannot drop an ended job's checkpoints from the store");
            }
            let dir = self.book.config().legacy_checkpoint_dir(job);
            if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot delete an ended job's checkpoints");
            }
        }
        let mut touched = Vec::new();
        for d in fx.deliveries {
            match d {
                Delivery::Reset(node) => self.mail.reset(&node),
                Delivery::Action(node, action) => {
                    self.mail.push(&node, action);
                    touched.push(node);
                }
            }
        }
        for id in fx.ended {
            let Some(waiters) = self.waiters.remove(&id) else {
                continue;
            };
            if let Some(view) = self.book.view(id) {
                for w in waiters {
                    let _ = w.send(Ok(Reply::Waited(Box::new(WaitResponse {
                        ended: true,
                        job: view.clone(),
                    }))));
                }
            }
        }
        for (tx, answer) in self.outbox.drain(..) {
            let _ = tx.send(answer);
        }
        for node in touched {
            self.mail.deliver(&node);
        }
        Ok(())
    }

    /// After a failed commit: nothing of the round is acknowledged (its
    /// replies become errors, its agent actions are dropped), the book is
    /// rebuilt from the database (which holds exactly what was
    /// acknowledged), and writes are refused until a probe succeeds.
    pub(crate) fn recover(&mut self, e: ControllerError) {
        let why = match &e {
            ControllerError::Store(s) => s.fault().map_or_else(
                || s.chain(),
                |f| format!("{} ({})", f.describe(), s.chain()),
            ),
            other => other.to_string(),
        };
        let message = format!(
            "the controller cannot write its database in {}: {why}; reads still work, \
             writes are refused until it can write again",
            self.cfg.data_dir.display()
        );
        tracing::error!(error = %why, "database write failed; refusing writes until it works again");
        for (tx, _) in self.outbox.drain(..) {
            let _ = tx.send(Err(CommandError::Unavailable(message.clone())));
        }
        // Agents' queues are rebuilt when they register again.
        self.mail.clear();
        self.reload();
        self.degraded = Some(Degraded {
            message,
            next_probe_ms: self.now + PROBE_INTERVAL_MS,
        });
    }

    /// Rebuilds the book from the database; waiters of jobs that are not
    /// there (never acknowledged) are told so.
    fn reload(&mut self) -> bool {
        let built = Records::read(&self.store)
            .map_err(ControllerError::from)
            .and_then(|r| JobBook::from_records(book_config(&self.cfg), r, self.now));
        match built {
            Ok((book, _)) => {
                self.book = book;
                if let Ok(mut auth) = self.auth.write() {
                    *auth = self.book.users.tokens.clone();
                }
                let book = &self.book;
                self.waiters.retain(|id, ws| {
                    if book.job(*id).is_some() {
                        return true;
                    }
                    for w in ws.drain(..) {
                        let _ = w.send(Err(crate::book::not_found(*id)));
                    }
                    false
                });
                self.sched_dirty = true;
                true
            }
            Err(e) => {
                // The book may be ahead of the disk by the failed round
                // until the next probe reloads it.
                tracing::error!(error = %e, "cannot reload the state from the database");
                false
            }
        }
    }

    /// While degraded: tries a small write; when it works, the book is
    /// rebuilt once more and writes are taken again.
    pub(crate) fn probe(&mut self) {
        let Some(d) = &mut self.degraded else {
            return;
        };
        if self.now < d.next_probe_ms {
            return;
        }
        d.next_probe_ms = self.now + PROBE_INTERVAL_MS;
        if let Err(e) = self.store.probe(self.now as i64) {
            tracing::debug!(error = %e.chain(), "the database still cannot be written");
            return;
        }
        if !self.reload() {
            return;
        }
        // Agents could not register while writes were refused.
        self.book.grace(self.now);
        self.degraded = None;
        tracing::info!("the database can be written again; taking writes");
    }
}

fn book_config(cfg: &Config) -> BookConfig {
    BookConfig {
        policy: cfg.policy,
        preemption: cfg.preemption,
        checkpoint_cost: cfg.checkpoint_cost,
        restore_cost: cfg.restore_cost,
        lost_after_ms: cfg.lost_after_ms,
        legacy_checkpoint_root: cfg.legacy_checkpoint_root(),
        staging_roots: cfg.staging_roots.clone(),
    }
}
