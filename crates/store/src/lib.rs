//! The controller's durable state in an embedded SQLite database.
//!
//! # Durability
//!
//! The database runs in WAL mode with `synchronous = FULL`: a transaction is
//! on disk (the WAL fsynced) when its commit returns, so a change acknowledged
//! after [`Store::apply`] survives a crash of the process or of the machine.
//! Throughput comes from group commit: the caller hands many changes to one
//! `apply`, which writes them in one transaction and pays one fsync.
//!
//! # Layout
//!
//! - [`Store`] owns the one writing connection (SQLite allows one writer).
//! - [`Reader`] is a read-only connection; WAL lets readers run while the
//!   writer commits. Open as many as needed.
//! - Times are Unix milliseconds passed in by the caller: the store reads no
//!   clock, so the same changes give the same database.

mod json;
mod model;
mod schema;
mod token;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use vgrid_model::{JobSpec, JobState};

pub use model::{
    Change, CheckpointRecord, HistoryEntry, JobRecord, NodeRecord, NodeState, Role,
    SchedulerLogEntry, UserRecord,
};
pub use schema::SCHEMA_VERSION;
pub use token::{TOKEN_PREFIX, TokenHash, generate_token, hash_token};

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot make the database file {path} private")]
    Private {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the database has schema version {found} but this vgrid knows only up to {known}; use a newer vgrid"
    )]
    NewerSchema { found: i64, known: i64 },
    #[error("the database holds a value this vgrid cannot read: {0}")]
    Corrupt(String),
    #[error("job {0} does not exist")]
    NoSuchJob(u64),
    #[error("node {0} does not exist")]
    NoSuchNode(String),
    #[error("user {0} does not exist")]
    NoSuchUser(u64),
    #[error("change {index} of the batch ({what}) was refused; nothing of the batch was written")]
    Change {
        index: usize,
        what: &'static str,
        #[source]
        source: Box<StoreError>,
    },
}

/// What kind of trouble the storage under the database is in: the faults
/// that come and go (or stay) without the program being wrong, which the
/// controller survives instead of stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The disk (or the database's size limit) is full.
    Full,
    /// A page of the database is damaged.
    Corrupt,
    /// The operating system failed a read or a write.
    Io,
    /// The database file cannot be written (permissions, a read-only mount).
    ReadOnly,
}

impl Fault {
    /// What the user is told.
    pub fn describe(self) -> &'static str {
        match self {
            Fault::Full => "database or disk is full",
            Fault::Corrupt => "a page of the database is damaged",
            Fault::Io => "the disk failed a read or a write",
            Fault::ReadOnly => "the database cannot be written (read-only file or file system)",
        }
    }
}

impl StoreError {
    /// The storage fault behind this error, if it is one.
    pub fn fault(&self) -> Option<Fault> {
        use rusqlite::ErrorCode as C;
        match self {
            StoreError::Open { source, .. } | StoreError::Sqlite(source) => match source {
                rusqlite::Error::SqliteFailure(e, _) => match e.code {
                    C::DiskFull => Some(Fault::Full),
                    C::DatabaseCorrupt | C::NotADatabase => Some(Fault::Corrupt),
                    C::SystemIoFailure => Some(Fault::Io),
                    C::ReadOnly => Some(Fault::ReadOnly),
                    _ => None,
                },
                _ => None,
            },
            StoreError::Corrupt(_) => Some(Fault::Corrupt),
            StoreError::Change { source, .. } => source.fault(),
            _ => None,
        }
    }

    /// The error and its causes in one line, for messages and logs.
    pub fn chain(&self) -> String {
        vgrid_model::sentence(self)
    }
}

/// Creates the database file 0600 before SQLite opens it (SQLite gives
/// `-wal` and `-shm` the database's mode): it holds token hashes and jobs'
/// environments. Files an older vgrid left readable by others are closed.
fn make_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    let mut names = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        names.push(PathBuf::from(name));
    }
    for p in names {
        match std::fs::metadata(&p) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The writing side of the database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it.
    /// `unix_ms` stamps migrations applied now.
    pub fn open(path: &Path, unix_ms: i64) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        make_private(path).map_err(|source| StoreError::Private {
            path: path.to_path_buf(),
            source,
        })?;
        let mut conn = Connection::open(path).map_err(open_err)?;
        // WAL: readers never block the writer; FULL: the WAL is fsynced at
        // every commit, so an acknowledged change is durable.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open_err)?;
        schema::migrate(&mut conn, unix_ms)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new read-only connection to the same database.
    pub fn reader(&self) -> Result<Reader, StoreError> {
        Reader::open(&self.path)
    }

    /// Writes `changes` in one transaction and returns once it is durable:
    /// all of them, or (on any error) none of them. The error of a refused
    /// change says which one it was.
    pub fn apply(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for (index, change) in changes.iter().enumerate() {
            apply_one(&tx, change).map_err(|e| StoreError::Change {
                index,
                what: change.kind(),
                source: Box::new(e),
            })?;
        }
        // Dropping an uncommitted transaction rolls it back.
        tx.commit()?;
        Ok(())
    }

    /// Writes one small row and commits it: whether the database can be
    /// written again after a fault (a freed disk).
    pub fn probe(&mut self, unix_ms: i64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO health (id, unix_ms) VALUES (1, ?1)")?
            .execute(params![unix_ms])?;
        Ok(())
    }

    /// Caps the database at `pages` pages (SQLite's `max_page_count`): a
    /// write past it fails as a full disk would. For operators who bound
    /// the database's size, and for tests of a full disk.
    pub fn limit_pages(&mut self, pages: u64) -> Result<(), StoreError> {
        let _: i64 = self
            .conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                r.get(0)
            })?;
        Ok(())
    }

    /// Reads through the writing connection (sees everything committed).
    pub fn read(&self) -> Queries<'_> {
        Queries { conn: &self.conn }
    }
}

fn checkpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CheckpointRecord> {
    Ok(CheckpointRecord {
        job_id: r.get::<_, i64>(0)? as u64,
        seq: r.get::<_, i64>(1)? as u64,
        node: r.get(2)?,
        location: r.get(3)?,
        work_ms: r.get(4)?,
        log_offset: r.get::<_, i64>(5)?.max(0) as u64,
        unix_ms: r.get(6)?,
        manifest: r.get(7)?,
    })
}

fn apply_one(conn: &Connection, change: &Change) -> Result<(), StoreError> {
    match change {
        Change::AddUser { user, token_hash } => {
            conn.prepare_cached(
                "INSERT INTO users (id, name, role, token_hash, created_unix_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                to_i64(user.id)?,
                user.name,
                user.role.as_str(),
                &token_hash[..],
                user.created_unix_ms
            ])?;
        }
        Change::SetToken {
            user_id,
            token_hash,
        } => {
            let updated = conn
                .prepare_cached(
                    "UPDATE users SET token_hash = ?2, token_revoked_unix_ms = NULL
                     WHERE id = ?1 AND removed_unix_ms IS NULL",
                )?
                .execute(params![to_i64(*user_id)?, &token_hash[..]])?;
            if updated == 0 {
                return Err(StoreError::NoSuchUser(*user_id));
            }
        }
        Change::RevokeToken { user_id, unix_ms } => {
            // The hash column is unique and never empty: a random one that
            // no token hashes to takes the old one's place.
            let updated = conn
                .prepare_cached(
                    "UPDATE users SET token_hash = randomblob(32), token_revoked_unix_ms = ?2
                     WHERE id = ?1",
                )?
                .execute(params![to_i64(*user_id)?, unix_ms])?;
            if updated == 0 {
                return Err(StoreError::NoSuchUser(*user_id));
            }
        }
        Change::RemoveUser { user_id, unix_ms } => {
            let updated = conn
                .prepare_cached(
                    "UPDATE users SET token_hash = randomblob(32), removed_unix_ms = ?2
                     WHERE id = ?1",
                )?
                .execute(params![to_i64(*user_id)?, unix_ms])?;
            if updated == 0 {
                return Err(StoreError::NoSuchUser(*user_id));
            }
        }
        Change::SetDrain { name, reason } => {
            let updated = conn
                .prepare_cached("UPDATE nodes SET drain_reason = ?2 WHERE name = ?1")?
                .execute(params![name, reason])?;
            if updated == 0 {
                return Err(StoreError::NoSuchNode(name.clone()));
            }
        }
        Change::RemoveNode { name } => {
            let deleted = conn
                .prepare_cached("DELETE FROM nodes WHERE name = ?1")?
                .execute(params![name])?;
            if deleted == 0 {
                return Err(StoreError::NoSuchNode(name.clone()));
            }
        }
        Change::AddJob(job) => {
            let spec = json::encode(&job.spec)
                .map_err(|e| StoreError::Corrupt(format!("job spec does not serialize: {e}")))?;
            conn.prepare_cached(
                "INSERT INTO jobs (id, owner, spec, state, node, reason, exit_code,
                                   submitted_unix_ms, updated_unix_ms, runtime, idempotency_key,
                                   outputs)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                to_i64(job.id)?,
                to_i64(job.owner)?,
                spec,
                job.state.as_str(),
                job.node,
                job.reason,
                job.exit_code,
                job.submitted_unix_ms,
                job.updated_unix_ms,
                job.runtime,
                job.idempotency_key,
                job.outputs,
            ])?;
            conn.prepare_cached(
                "INSERT INTO job_history (job_id, seq, unix_ms, state, reason, node)
                 VALUES (?1, 1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                to_i64(job.id)?,
                job.submitted_unix_ms,
                job.state.as_str(),
                job.reason,
                job.node
            ])?;
        }
        Change::Transition {
            job_id,
            unix_ms,
            state,
            reason,
            node,
            exit_code,
        } => {
            let id = to_i64(*job_id)?;
            let updated = conn
                .prepare_cached(
                    "UPDATE jobs SET state = ?2, reason = ?3, node = COALESCE(?4, node),
                                     exit_code = COALESCE(?5, exit_code), updated_unix_ms = ?6
                     WHERE id = ?1",
                )?
                .execute(params![
                    id,
                    state.as_str(),
                    reason,
                    node,
                    exit_code,
                    unix_ms
                ])?;
            if updated == 0 {
                return Err(StoreError::NoSuchJob(*job_id));
            }
            conn.prepare_cached(
                "INSERT INTO job_history (job_id, seq, unix_ms, state, reason, node)
                 VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM job_history WHERE job_id = ?1),
                         ?2, ?3, ?4, ?5)",
            )?
            .execute(params![id, unix_ms, state.as_str(), reason, node])?;
        }
        Change::SetRuntime { job_id, runtime } => {
            let updated = conn
                .prepare_cached("UPDATE jobs SET runtime = ?2 WHERE id = ?1")?
                .execute(params![to_i64(*job_id)?, runtime])?;
            if updated == 0 {
                return Err(StoreError::NoSuchJob(*job_id));
            }
        }
        Change::PutNode(node) => {
            let labels = json::encode(&node.labels)
                .map_err(|e| StoreError::Corrupt(format!("node labels do not serialize: {e}")))?;
            conn.prepare_cached(
                "INSERT OR REPLACE INTO nodes
                   (name, cpus, memory_mb, labels, state, registered_unix_ms, last_seen_unix_ms, id,
                    drain_reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                node.name,
                node.cpus,
                to_i64(node.memory_mb)?,
                labels,
                node.state.as_str(),
                node.registered_unix_ms,
                node.last_seen_unix_ms,
                node.id,
                node.drain_reason
            ])?;
        }
        Change::NodeSeen {
            name,
            state,
            unix_ms,
        } => {
            let updated = conn
                .prepare_cached(
                    "UPDATE nodes SET state = ?2, last_seen_unix_ms = ?3 WHERE name = ?1",
                )?
                .execute(params![name, state.as_str(), unix_ms])?;
            if updated == 0 {
                return Err(StoreError::NoSuchNode(name.clone()));
            }
        }
        Change::AddCheckpoint(c) => {
            conn.prepare_cached(
                "INSERT INTO checkpoints
                   (job_id, seq, node, location, work_ms, log_offset, unix_ms, manifest)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                to_i64(c.job_id)?,
                to_i64(c.seq)?,
                c.node,
                c.location,
                c.work_ms,
                to_i64(c.log_offset)?,
                c.unix_ms,
                c.manifest
            ])?;
        }
        Change::GiveUpCheckpoint { job_id, seq } => {
            conn.prepare_cached(
                "UPDATE checkpoints SET restorable = 0 WHERE job_id = ?1 AND seq = ?2",
            )?
            .execute(params![to_i64(*job_id)?, to_i64(*seq)?])?;
        }
        Change::SetOutputs { job_id, manifest } => {
            let updated = conn
                .prepare_cached("UPDATE jobs SET outputs = ?2 WHERE id = ?1")?
                .execute(params![to_i64(*job_id)?, manifest])?;
            if updated == 0 {
                return Err(StoreError::NoSuchJob(*job_id));
            }
        }
        Change::AppendSchedulerLog { unix_ms, input } => {
            conn.prepare_cached("INSERT INTO scheduler_log (unix_ms, input) VALUES (?1, ?2)")?
                .execute(params![unix_ms, input])?;
        }
    }
    Ok(())
}

fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{v} does not fit in the database")))
}

/// A read-only connection.
pub struct Reader {
    conn: Connection,
}

impl Reader {
    /// Opens the database at `path` for reading; it must exist and be
    /// migrated (open it with [`Store::open`] first).
    pub fn open(path: &Path) -> Result<Reader, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(Reader { conn })
    }

    pub fn read(&self) -> Queries<'_> {
        Queries { conn: &self.conn }
    }
}

/// Read queries, over either connection.
pub struct Queries<'a> {
    conn: &'a Connection,
}

impl Queries<'_> {
    /// The schema version of the database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))?)
    }

    /// The user whose token hashes to `hash`.
    pub fn user_by_token(&self, hash: &TokenHash) -> Result<Option<UserRecord>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT id, name, role, created_unix_ms, removed_unix_ms, token_revoked_unix_ms
                 FROM users WHERE token_hash = ?1",
            )?
            .query_row(params![&hash[..]], user_row)
            .optional()?
            .transpose()
    }

    /// Every user with their token hash (the controller keeps them in memory
    /// to authenticate without a query per request).
    pub fn users_with_token_hashes(&self) -> Result<Vec<(UserRecord, TokenHash)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, name, role, created_unix_ms, removed_unix_ms, token_revoked_unix_ms,
                    token_hash FROM users ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            let hash: Vec<u8> = r.get(6)?;
            Ok((user_row(r)?, hash))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (user, hash) = row?;
            let user = user?;
            let hash: TokenHash = hash.try_into().map_err(|_| {
                StoreError::Corrupt(format!("token hash of user {} is not 32 bytes", user.name))
            })?;
            out.push((user, hash));
        }
        Ok(out)
    }

    /// One job.
    pub fn job(&self, id: u64) -> Result<Option<JobRecord>, StoreError> {
        self.conn
            .prepare_cached(&format!("{JOB_COLUMNS} WHERE id = ?1"))?
            .query_row(params![to_i64(id)?], job_row)
            .optional()?
            .transpose()
    }

    /// Every job, by id.
    pub fn jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        collect(
            self.conn
                .prepare_cached(&format!("{JOB_COLUMNS} ORDER BY id"))?
                .query_map([], job_row)?,
        )
    }

    /// The jobs that have not ended (what the controller reloads on start).
    pub fn unfinished_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        collect(
            self.conn
                .prepare_cached(&format!(
                    "{JOB_COLUMNS} WHERE state NOT IN ('done', 'failed', 'cancelled') ORDER BY id"
                ))?
                .query_map([], job_row)?,
        )
    }

    /// The largest job id ever given, 0 when there is none.
    pub fn max_job_id(&self) -> Result<u64, StoreError> {
        let max: Option<i64> = self
            .conn
            .query_row("SELECT MAX(id) FROM jobs", [], |r| r.get(0))?;
        Ok(max.unwrap_or(0).max(0) as u64)
    }

    /// The largest user id ever given, 0 when there is none.
    pub fn max_user_id(&self) -> Result<u64, StoreError> {
        let max: Option<i64> = self
            .conn
            .query_row("SELECT MAX(id) FROM users", [], |r| r.get(0))?;
        Ok(max.unwrap_or(0).max(0) as u64)
    }

    /// The largest node id ever given, 0 when there is none.
    pub fn max_node_id(&self) -> Result<u32, StoreError> {
        let max: Option<i64> = self
            .conn
            .query_row("SELECT MAX(id) FROM nodes", [], |r| r.get(0))?;
        Ok(u32::try_from(max.unwrap_or(0).max(0)).unwrap_or(u32::MAX))
    }

    /// The state history of a job, oldest first.
    pub fn history(&self, job_id: u64) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT unix_ms, state, reason, node FROM job_history WHERE job_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![to_i64(job_id)?], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (unix_ms, state, reason, node) = row?;
            out.push(HistoryEntry {
                unix_ms,
                state: parse_state(&state)?,
                reason,
                node,
            });
        }
        Ok(out)
    }

    /// Every node, by name.
    pub fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        collect(
            self.conn
                .prepare_cached(
                    "SELECT name, cpus, memory_mb, labels, state, registered_unix_ms,
                            last_seen_unix_ms, id, drain_reason FROM nodes ORDER BY name",
                )?
                .query_map([], node_row)?,
        )
    }

    /// The checkpoints of a job, oldest first, with whether each may
    /// still be restored.
    pub fn checkpoints(&self, job_id: u64) -> Result<Vec<(CheckpointRecord, bool)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT job_id, seq, node, location, work_ms, log_offset, unix_ms, manifest, restorable
             FROM checkpoints WHERE job_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![to_i64(job_id)?], |r| {
            Ok((checkpoint_row(r)?, r.get::<_, i64>(8)? != 0))
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The checkpoints a job may resume from, of every job that has not
    /// ended, by job and oldest first (what the controller needs to resume
    /// jobs after a restart).
    pub fn live_checkpoints(&self) -> Result<Vec<CheckpointRecord>, StoreError> {
        let ended: Vec<String> = JobState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT c.job_id, c.seq, c.node, c.location, c.work_ms, c.log_offset, c.unix_ms,
                    c.manifest
             FROM checkpoints c JOIN jobs j ON j.id = c.job_id
             WHERE c.restorable = 1 AND j.state NOT IN ({})
             ORDER BY c.job_id, c.seq",
            ended.join(", ")
        ))?;
        let rows = stmt.query_map([], checkpoint_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The scheduler log, oldest first.
    pub fn scheduler_log(&self) -> Result<Vec<SchedulerLogEntry>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, unix_ms, input FROM scheduler_log ORDER BY seq")?;
        let rows = stmt.query_map([], |r| {
            Ok(SchedulerLogEntry {
                seq: r.get::<_, i64>(0)?.max(0) as u64,
                unix_ms: r.get(1)?,
                input: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Runs SQLite's own consistency check; `Ok(())` when it finds nothing.
    pub fn integrity_check(&self) -> Result<(), StoreError> {
        let result: String = self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if result == "ok" {
            Ok(())
        } else {
            Err(StoreError::Corrupt(format!("integrity check: {result}")))
        }
    }
}

const JOB_COLUMNS: &str = "SELECT id, owner, spec, state, node, reason, exit_code,
    submitted_unix_ms, updated_unix_ms, runtime, idempotency_key, outputs FROM jobs";

/// Rows are decoded in two steps: SQLite errors surface through rusqlite,
/// and values we cannot understand become [`StoreError::Corrupt`].
type Decoded<T> = rusqlite::Result<Result<T, StoreError>>;

fn collect<T>(rows: impl Iterator<Item = Decoded<T>>) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    for row in rows {
        out.push(row??);
    }
    Ok(out)
}

fn parse_state(s: &str) -> Result<JobState, StoreError> {
    JobState::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown job state `{s}`")))
}

fn user_row(r: &Row<'_>) -> Decoded<UserRecord> {
    let role: String = r.get(2)?;
    let id: i64 = r.get(0)?;
    let name: String = r.get(1)?;
    let created_unix_ms: i64 = r.get(3)?;
    let removed_unix_ms: Option<i64> = r.get(4)?;
    let token_revoked_unix_ms: Option<i64> = r.get(5)?;
    Ok(Role::parse(&role)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown role `{role}` of user {name}")))
        .map(|role| UserRecord {
            id: id as u64,
            name,
            role,
            created_unix_ms,
            removed_unix_ms,
            token_revoked_unix_ms,
        }))
}

fn job_row(r: &Row<'_>) -> Decoded<JobRecord> {
    let id: i64 = r.get(0)?;
    let spec: String = r.get(2)?;
    let state: String = r.get(3)?;
    let record = (|| {
        let spec: JobSpec = json::decode(&spec)
            .map_err(|e| StoreError::Corrupt(format!("spec of job {id}: {e}")))?;
        Ok(JobRecord {
            id: id as u64,
            owner: r.get::<_, i64>(1)? as u64,
            spec,
            state: parse_state(&state)?,
            node: r.get(4)?,
            reason: r.get(5)?,
            exit_code: r.get(6)?,
            submitted_unix_ms: r.get(7)?,
            updated_unix_ms: r.get(8)?,
            runtime: r.get(9)?,
            idempotency_key: r.get(10)?,
            outputs: r.get(11)?,
        })
    })();
    Ok(record)
}

fn node_row(r: &Row<'_>) -> Decoded<NodeRecord> {
    let name: String = r.get(0)?;
    let labels: String = r.get(3)?;
    let state: String = r.get(4)?;
    let cpus: u32 = r.get(1)?;
    let memory_mb: i64 = r.get(2)?;
    let registered_unix_ms: i64 = r.get(5)?;
    let last_seen_unix_ms: i64 = r.get(6)?;
    let id: u32 = r.get(7)?;
    let drain_reason: Option<String> = r.get(8)?;
    Ok((|| {
        Ok(NodeRecord {
            labels: json::decode(&labels)
                .map_err(|e| StoreError::Corrupt(format!("labels of node {name}: {e}")))?,
            state: NodeState::parse(&state).ok_or_else(|| {
                StoreError::Corrupt(format!("unknown state `{state}` of node {name}"))
            })?,
            name,
            id,
            cpus,
            memory_mb: memory_mb.max(0) as u64,
            registered_unix_ms,
            last_seen_unix_ms,
            drain_reason,
        })
    })())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    use super::*;

    fn spec() -> JobSpec {
        vgrid_jobfile::parse("t.toml", "image = \"tiny\"\ncommand = [\"/bin/true\"]\n")
            .expect("valid job file")
    }

    fn user(id: u64, name: &str, role: Role) -> Change {
        Change::AddUser {
            user: UserRecord {
                id,
                name: name.into(),
                role,
                created_unix_ms: 1,
                removed_unix_ms: None,
                token_revoked_unix_ms: None,
            },
            token_hash: hash_token(&format!("token-of-{name}")),
        }
    }

    fn job(id: u64, owner: u64) -> Change {
        Change::AddJob(Box::new(JobRecord {
            id,
            owner,
            spec: spec(),
            state: JobState::Pending,
            node: None,
            reason: "submitted".into(),
            exit_code: None,
            submitted_unix_ms: 1000 + id as i64,
            updated_unix_ms: 1000 + id as i64,
            runtime: None,
            idempotency_key: None,
            outputs: None,
        }))
    }

    #[test]
    fn a_jobs_outputs_are_kept_and_a_version_2_database_gets_the_column() -> Result<(), StoreError>
    {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let path = dir.path().join("vgrid.db");
        // A database of schema version 2, with a job, as an older vgrid
        // left it.
        {
            let mut conn = Connection::open(&path)?;
            conn.execute_batch(
                "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_unix_ms INTEGER NOT NULL);",
            )?;
            for (i, sql) in schema::MIGRATIONS.iter().take(2).enumerate() {
                let tx = conn.transaction()?;
                tx.execute_batch(sql)?;
                tx.execute(
                    "INSERT INTO schema_version (version, applied_unix_ms) VALUES (?1, 1)",
                    params![i as i64 + 1],
                )?;
                tx.commit()?;
            }
        }
        let mut store = Store::open(&path, 2)?;
        assert_eq!(store.read().schema_version()?, SCHEMA_VERSION);
        store.apply(&[user(1, "alice", Role::User), job(1, 1)])?;
        assert_eq!(store.read().job(1)?.and_then(|j| j.outputs), None);
        let manifest = "ab".repeat(32);
        store.apply(&[Change::SetOutputs {
            job_id: 1,
            manifest: manifest.clone(),
        }])?;
        assert_eq!(store.read().job(1)?.and_then(|j| j.outputs), Some(manifest));
        assert!(matches!(
            store.apply(&[Change::SetOutputs {
                job_id: 9,
                manifest: "cd".repeat(32),
            }]),
            Err(StoreError::Change { .. })
        ));
        Ok(())
    }

    #[test]
    fn opens_migrates_and_reopens() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let path = dir.path().join("vgrid.db");
        {
            let store = Store::open(&path, 5)?;
            assert_eq!(store.read().schema_version()?, SCHEMA_VERSION);
        }
        // A second open applies nothing and keeps the version.
        let store = Store::open(&path, 6)?;
        assert_eq!(store.read().schema_version()?, SCHEMA_VERSION);
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        assert_eq!(mode, "wal");
        let sync: i64 = store
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))?;
        assert_eq!(sync, 2, "synchronous must be FULL");
        Ok(())
    }

    #[test]
    fn the_database_and_its_wal_and_shm_are_private() -> Result<(), StoreError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let path = dir.path().join("vgrid.db");
        let modes = || -> Vec<u32> {
            ["", "-wal", "-shm"]
                .iter()
                .map(|s| {
                    let p = format!("{}{s}", path.display());
                    std::fs::metadata(&p).map_or(0, |m| m.permissions().mode() & 0o777)
                })
                .collect()
        };
        {
            let _store = Store::open(&path, 5)?;
            // Open: the WAL and the shared memory exist.
            assert_eq!(modes(), vec![0o600; 3]);
        }
        // A database an older vgrid left readable is closed at open.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let _store = Store::open(&path, 6)?;
        assert_eq!(modes(), vec![0o600; 3]);
        Ok(())
    }

    #[test]
    fn a_new_token_replaces_the_old_one() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut store = Store::open(&dir.path().join("db"), 0)?;
        store.apply(&[user(1, "n1", Role::Agent)])?;
        store.apply(&[Change::SetToken {
            user_id: 1,
            token_hash: hash_token("second"),
        }])?;
        assert_eq!(
            store.read().user_by_token(&hash_token("token-of-n1"))?,
            None
        );
        assert_eq!(
            store
                .read()
                .user_by_token(&hash_token("second"))?
                .map(|u| u.name),
            Some("n1".into())
        );
        let missing = store.apply(&[Change::SetToken {
            user_id: 9,
            token_hash: hash_token("x"),
        }]);
        assert!(missing.is_err());
        Ok(())
    }

    #[test]
    fn revoked_and_removed_users_keep_their_record_but_no_token() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut store = Store::open(&dir.path().join("db"), 0)?;
        store.apply(&[user(1, "ann", Role::User), user(2, "bob", Role::User)])?;
        store.apply(&[Change::RevokeToken {
            user_id: 1,
            unix_ms: 5,
        }])?;
        store.apply(&[Change::RemoveUser {
            user_id: 2,
            unix_ms: 6,
        }])?;
        for name in ["ann", "bob"] {
            let old = hash_token(&format!("token-of-{name}"));
            assert_eq!(store.read().user_by_token(&old)?, None, "{name}");
        }
        let users: Vec<UserRecord> = store
            .read()
            .users_with_token_hashes()?
            .into_iter()
            .map(|(u, _)| u)
            .collect();
        assert_eq!(users[0].token_revoked_unix_ms, Some(5));
        assert_eq!(users[1].removed_unix_ms, Some(6));
        assert!(!users[0].has_token() && !users[1].has_token());
        // A new token for a revoked user works; a removed user gets none.
        store.apply(&[Change::SetToken {
            user_id: 1,
            token_hash: hash_token("new"),
        }])?;
        let ann = store.read().user_by_token(&hash_token("new"))?;
        assert!(ann.is_some_and(|u| u.has_token()));
        let refused = store.apply(&[Change::SetToken {
            user_id: 2,
            token_hash: hash_token("other"),
        }]);
        assert!(refused.is_err());
        Ok(())
    }

    #[test]
    fn a_newer_schema_is_refused() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let path = dir.path().join("vgrid.db");
        {
            let store = Store::open(&path, 5)?;
            store.conn.execute(
                "INSERT INTO schema_version (version, applied_unix_ms) VALUES (?1, 0)",
                params![SCHEMA_VERSION + 1],
            )?;
        }
        match Store::open(&path, 6) {
            Err(StoreError::NewerSchema { found, known }) => {
                assert_eq!((found, known), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            }
            other => panic!("expected NewerSchema, got {:?}", other.map(|_| ())),
        }
        Ok(())
    }

    #[test]
    fn users_are_found_by_token_hash_only() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut store = Store::open(&dir.path().join("db"), 0)?;
        store.apply(&[user(1, "admin", Role::Admin), user(2, "alice", Role::User)])?;
        let found = store.read().user_by_token(&hash_token("token-of-alice"))?;
        assert_eq!(
            found.map(|u| (u.id, u.name, u.role)),
            Some((2, "alice".into(), Role::User))
        );
        assert_eq!(store.read().user_by_token(&hash_token("guess"))?, None);
        // The token itself is stored nowhere.
        let raw: i64 = store.conn.query_row(
            "SELECT COUNT(*) FROM users WHERE CAST(token_hash AS TEXT) LIKE '%token-of%'",
            [],
            |r| r.get(0),
        )?;
        assert_eq!(raw, 0);
        assert_eq!(store.read().users_with_token_hashes()?.len(), 2);
        assert_eq!(store.read().max_user_id()?, 2);
        Ok(())
    }

    #[test]
    fn a_batch_with_a_refused_change_writes_nothing() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut store = Store::open(&dir.path().join("db"), 0)?;
        store.apply(&[user(1, "alice", Role::User)])?;
        let err = store
            .apply(&[
                job(1, 1),
                user(2, "alice", Role::User), // duplicate name
                job(2, 1),
            ])
            .expect_err("refused");
        assert!(
            matches!(
                err,
                StoreError::Change {
                    index: 1,
                    what: "add user",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(store.read().jobs()?.is_empty(), "nothing of the batch");
        assert_eq!(store.read().history(1)?, vec![]);
        // The connection is usable afterwards.
        store.apply(&[job(1, 1)])?;
        assert_eq!(store.read().jobs()?.len(), 1);
        Ok(())
    }

    #[test]
    fn a_full_database_is_a_fault_that_passes_when_room_returns() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut store = Store::open(&dir.path().join("db"), 0)?;
        store.apply(&[user(1, "alice", Role::User)])?;
        let pages: i64 = store
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))?;
        store.limit_pages(pages as u64)?;
        let big: Vec<Change> = (1..200).map(|id| job(id, 1)).collect();
        let err = store.apply(&big).expect_err("no room");
        assert_eq!(err.fault(), Some(Fault::Full), "{}", err.chain());
        assert!(err.chain().contains("full"), "{}", err.chain());
        assert!(store.read().jobs()?.is_empty());
        store.limit_pages(1 << 30)?;
        store.probe(5)?;
        store.apply(&big)?;
        assert_eq!(store.read().jobs()?.len(), 199);
        Ok(())
    }

    #[test]
    fn transitions_are_recorded_in_order() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut store = Store::open(&dir.path().join("db"), 0)?;
        store.apply(&[user(1, "alice", Role::User), job(7, 1)])?;
        let step =
            |unix_ms, state, reason: &str, node: Option<&str>, exit_code| Change::Transition {
                job_id: 7,
                unix_ms,
                state,
                reason: reason.into(),
                node: node.map(str::to_string),
                exit_code,
            };
        store.apply(&[
            step(2000, JobState::Staging, "placed", Some("n1"), None),
            step(2001, JobState::Running, "command started", Some("n1"), None),
            step(
                2002,
                JobState::Preempted,
                "checkpointed for job 8",
                None,
                None,
            ),
        ])?;
        store.apply(&[step(2003, JobState::Done, "exited", Some("n2"), Some(3))])?;
        let job = store.read().job(7)?.expect("job 7");
        assert_eq!(job.state, JobState::Done);
        assert_eq!(job.node.as_deref(), Some("n2"));
        assert_eq!(job.exit_code, Some(3));
        assert_eq!(job.updated_unix_ms, 2003);
        assert_eq!(job.spec, spec());
        let states: Vec<(JobState, Option<String>)> = store
            .read()
            .history(7)?
            .into_iter()
            .map(|h| (h.state, h.node))
            .collect();
        assert_eq!(
            states,
            vec![
                (JobState::Pending, None),
                (JobState::Staging, Some("n1".into())),
                (JobState::Running, Some("n1".into())),
                (JobState::Preempted, None),
                (JobState::Done, Some("n2".into())),
            ]
        );
        assert!(store.read().unfinished_jobs()?.is_empty());
        let missing = store.apply(&[Change::Transition {
            job_id: 8,
            unix_ms: 0,
            state: JobState::Done,
            reason: String::new(),
            node: None,
            exit_code: None,
        }]);
        assert!(
            matches!(&missing, Err(StoreError::Change { source, .. }) if matches!(**source, StoreError::NoSuchJob(8))),
            "{missing:?}"
        );
        Ok(())
    }

    #[test]
    fn nodes_and_checkpoints_round_trip() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut store = Store::open(&dir.path().join("db"), 0)?;
        let node = NodeRecord {
            name: "n1".into(),
            id: 1,
            cpus: 8,
            memory_mb: 16384,
            labels: BTreeMap::from([("arch".into(), "x86_64".into())]),
            state: NodeState::Up,
            registered_unix_ms: 10,
            last_seen_unix_ms: 10,
            drain_reason: None,
        };
        let ckpt = CheckpointRecord {
            job_id: 1,
            seq: 1,
            node: "n1".into(),
            location: "1/1".into(),
            work_ms: 60_000,
            log_offset: 123,
            unix_ms: 70_000,
            manifest: Some("ab".repeat(32)),
        };
        store.apply(&[
            user(1, "alice", Role::User),
            job(1, 1),
            Change::PutNode(node.clone()),
            Change::NodeSeen {
                name: "n1".into(),
                state: NodeState::Lost,
                unix_ms: 99,
            },
            Change::AddCheckpoint(ckpt.clone()),
        ])?;
        let nodes = store.read().nodes()?;
        assert_eq!(store.read().max_node_id()?, 1);
        assert_eq!(
            nodes,
            vec![NodeRecord {
                state: NodeState::Lost,
                last_seen_unix_ms: 99,
                ..node.clone()
            }]
        );
        // A drain's reason is kept, and a forgotten node is gone.
        store.apply(&[Change::SetDrain {
            name: "n1".into(),
            reason: Some("disk swap".into()),
        }])?;
        assert_eq!(
            store.read().nodes()?[0].drain_reason.as_deref(),
            Some("disk swap")
        );
        assert_eq!(store.read().checkpoints(1)?, vec![(ckpt.clone(), true)]);
        let newer = CheckpointRecord {
            seq: 2,
            log_offset: 456,
            manifest: None,
            ..ckpt.clone()
        };
        store.apply(&[Change::AddCheckpoint(newer.clone())])?;
        assert_eq!(
            store.read().live_checkpoints()?,
            vec![ckpt.clone(), newer.clone()]
        );
        // One given up is listed, but nothing resumes from it.
        store.apply(&[Change::GiveUpCheckpoint { job_id: 1, seq: 2 }])?;
        assert_eq!(store.read().live_checkpoints()?, vec![ckpt.clone()]);
        assert_eq!(
            store.read().checkpoints(1)?,
            vec![(ckpt.clone(), true), (newer.clone(), false)]
        );
        // An ended job resumes from nothing.
        store.apply(&[Change::Transition {
            job_id: 1,
            unix_ms: 3000,
            state: JobState::Done,
            reason: "exited".into(),
            node: None,
            exit_code: Some(0),
        }])?;
        assert!(store.read().live_checkpoints()?.is_empty());
        let dup = store.apply(&[Change::AddCheckpoint(CheckpointRecord {
            location: "elsewhere".into(),
            ..ckpt
        })]);
        assert!(dup.is_err(), "a checkpoint sequence number is never reused");
        store.apply(&[Change::RemoveNode { name: "n1".into() }])?;
        assert!(store.read().nodes()?.is_empty());
        assert!(
            store
                .apply(&[Change::RemoveNode { name: "n1".into() }])
                .is_err()
        );
        Ok(())
    }

    #[test]
    fn the_scheduler_log_keeps_order() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut store = Store::open(&dir.path().join("db"), 0)?;
        let entries: Vec<Change> = (0..5)
            .map(|i| Change::AppendSchedulerLog {
                unix_ms: 100 - i,
                input: format!("input {i}"),
            })
            .collect();
        store.apply(&entries)?;
        let log = store.read().scheduler_log()?;
        let inputs: Vec<&str> = log.iter().map(|e| e.input.as_str()).collect();
        assert_eq!(
            inputs,
            ["input 0", "input 1", "input 2", "input 3", "input 4"]
        );
        assert!(log.windows(2).all(|w| w[0].seq < w[1].seq));
        Ok(())
    }

    #[test]
    fn readers_see_committed_changes() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut store = Store::open(&dir.path().join("db"), 0)?;
        let reader = store.reader()?;
        assert!(reader.read().jobs()?.is_empty());
        store.apply(&[user(1, "alice", Role::User), job(1, 1)])?;
        assert_eq!(reader.read().jobs()?.len(), 1);
        assert_eq!(reader.read().max_job_id()?, 1);
        Ok(())
    }

    #[test]
    fn changes_survive_a_store_that_is_never_closed() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let path = dir.path().join("db");
        let mut store = Store::open(&path, 0)?;
        store.apply(&[user(1, "alice", Role::User), job(1, 1), job(2, 1)])?;
        // Leak the connection: no close, no WAL checkpoint, as in a crash.
        std::mem::forget(store);
        let store = Store::open(&path, 0)?;
        store.read().integrity_check()?;
        assert_eq!(store.read().jobs()?.len(), 2);
        Ok(())
    }

    /// Env var that turns [`crash_child_writer`] into the writer of
    /// [`acknowledged_changes_survive_sigkill`].
    const CRASH_CHILD_DB: &str = "VGRID_STORE_TEST_CRASH_CHILD_DB";

    /// Not a test by itself: the child process of
    /// `acknowledged_changes_survive_sigkill`. It writes batches of jobs
    /// forever and prints the id of every job whose batch was committed.
    #[test]
    #[ignore = "helper process for acknowledged_changes_survive_sigkill"]
    fn crash_child_writer() -> Result<(), StoreError> {
        use std::io::Write;
        let Some(path) = std::env::var_os(CRASH_CHILD_DB) else {
            return Ok(());
        };
        let mut store = Store::open(Path::new(&path), 0)?;
        store.apply(&[user(1, "alice", Role::User)])?;
        let mut next = 1u64;
        let mut out = std::io::stdout().lock();
        loop {
            let batch: Vec<Change> = (next..next + 50).map(|id| job(id, 1)).collect();
            store.apply(&batch)?;
            for id in next..next + 50 {
                writeln!(out, "ACK {id}").map_err(|e| StoreError::Corrupt(e.to_string()))?;
            }
            out.flush()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            next += 50;
        }
    }

    #[test]
    fn acknowledged_changes_survive_sigkill() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("db");
        let mut child = Command::new(std::env::current_exe()?)
            .args([
                "tests::crash_child_writer",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_CHILD_DB, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no child stdout")?;
        let mut acked = 0u64;
        // Kill it in the middle of its work, after a few hundred commits.
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            if let Some(id) = line.strip_prefix("ACK ") {
                acked = id.parse()?;
                if acked >= 2_000 {
                    // `Child::kill` sends SIGKILL: no chance to clean up.
                    child.kill()?;
                    break;
                }
            }
        }
        let status = child.wait()?;
        assert!(!status.success(), "the writer must have been killed");
        assert!(acked >= 2_000, "the writer stopped early at {acked}");

        let store = Store::open(&path, 0)?;
        store.read().integrity_check()?;
        let jobs = store.read().jobs()?;
        // Every acknowledged job is there, and the ids have no gap: a batch
        // is all or nothing.
        assert!(jobs.len() as u64 >= acked, "{} < {acked}", jobs.len());
        assert_eq!(jobs.len() % 50, 0, "a batch was torn");
        for (i, j) in jobs.iter().enumerate() {
            assert_eq!(j.id, i as u64 + 1);
        }
        Ok(())
    }
}
