//! The schema and its migrations.
//!
//! Each migration is applied once, in order, inside one transaction together
//! with the row that records it in `schema_version`. A database written by a
//! newer vgrid (a version we do not know) is refused rather than guessed at.

use rusqlite::{Connection, OptionalExtension, params};

use crate::StoreError;

/// The migrations, oldest first. Index `i` brings the schema to version `i+1`.
/// Never edit a published migration; add a new one.
pub(crate) const MIGRATIONS: &[&str] = &[
    // Version 1: users, jobs, history, nodes, checkpoints, scheduler log.
    r#"
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        token_hash BLOB NOT NULL UNIQUE,
        created_unix_ms INTEGER NOT NULL
    );
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        owner INTEGER NOT NULL REFERENCES users(id),
        spec TEXT NOT NULL,
        state TEXT NOT NULL,
        node TEXT,
        reason TEXT NOT NULL,
        exit_code INTEGER,
        submitted_unix_ms INTEGER NOT NULL,
        updated_unix_ms INTEGER NOT NULL,
        runtime TEXT
    );
    CREATE INDEX jobs_by_owner ON jobs(owner, id);
    CREATE TABLE job_history (
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        seq INTEGER NOT NULL,
        unix_ms INTEGER NOT NULL,
        state TEXT NOT NULL,
        reason TEXT NOT NULL,
        node TEXT,
        PRIMARY KEY (job_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        id INTEGER NOT NULL UNIQUE,
        cpus INTEGER NOT NULL,
        memory_mb INTEGER NOT NULL,
        labels TEXT NOT NULL,
        state TEXT NOT NULL,
        registered_unix_ms INTEGER NOT NULL,
        last_seen_unix_ms INTEGER NOT NULL
    );
    CREATE TABLE checkpoints (
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        seq INTEGER NOT NULL,
        node TEXT NOT NULL,
        location TEXT NOT NULL,
        work_ms INTEGER NOT NULL,
        log_offset INTEGER NOT NULL,
        unix_ms INTEGER NOT NULL,
        PRIMARY KEY (job_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE scheduler_log (
        seq INTEGER PRIMARY KEY,
        unix_ms INTEGER NOT NULL,
        input TEXT NOT NULL
    );
    "#,
    // Version 2: a row to probe whether the database can be written again
    // after a fault, and the idempotency key of a submission.
    r#"
    CREATE TABLE health (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        unix_ms INTEGER NOT NULL
    );
    ALTER TABLE jobs ADD COLUMN idempotency_key TEXT;
    CREATE UNIQUE INDEX jobs_by_idempotency_key ON jobs(owner, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    "#,
    // Version 3: a checkpoint's manifest in the content-addressed store,
    // and whether it may still be restored (one that failed to restore
    // too often is given up, and the job resumes from the one before).
    r#"
    ALTER TABLE checkpoints ADD COLUMN manifest TEXT;
    ALTER TABLE checkpoints ADD COLUMN restorable INTEGER NOT NULL DEFAULT 1;
    "#,
    // Version 4: the data manifest of a job's outputs in the controller's
    // content-addressed store, once its command has ended.
    r#"
    ALTER TABLE jobs ADD COLUMN outputs TEXT;
    "#,
    // Version 5: admins drain nodes (the reason outlives the node being
    // lost), remove users (kept for their jobs' owner, their name never
    // reused) and revoke tokens.
    r#"
    ALTER TABLE nodes ADD COLUMN drain_reason TEXT;
    ALTER TABLE users ADD COLUMN removed_unix_ms INTEGER;
    ALTER TABLE users ADD COLUMN token_revoked_unix_ms INTEGER;
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database to [`SCHEMA_VERSION`]; returns the version found.
pub(crate) fn migrate(conn: &mut Connection, unix_ms: i64) -> Result<i64, StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version INTEGER PRIMARY KEY,
             applied_unix_ms INTEGER NOT NULL
         );",
    )?;
    let found: i64 = conn
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .optional()?
        .flatten()
        .unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as i64 + 1;
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_unix_ms) VALUES (?1, ?2)",
            params![version, unix_ms],
        )?;
        tx.commit()?;
    }
    Ok(found)
}
