//! A database that cannot be written (a full disk, a damaged page) costs
//! the writes that need it, never the service: reads go on, writes get a
//! clear error, and the controller takes writes again by itself once the
//! database can be written.

use vgrid_server::{Command, CommandError, Reply};

use super::replay_tests::Driver;
use crate::Config;

fn unavailable(r: Result<Reply, CommandError>) -> String {
    match r {
        Err(CommandError::Unavailable(m)) => m,
        other => panic!("expected 503, got {other:?}"),
    }
}

fn listed(d: &mut Driver) -> Vec<u64> {
    match d.call(Command::ListJobs {
        all: true,
        user: None,
    }) {
        Ok(Reply::Jobs(jobs)) => jobs.iter().map(|j| j.id).collect(),
        other => panic!("list: {other:?}"),
    }
}

#[test]
fn a_full_database_refuses_writes_serves_reads_and_recovers_by_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut d = Driver::open(Config::new(dir.path().to_path_buf()));
    let first = d.submit();
    let second = d.submit();
    let pages = std::fs::metadata(dir.path().join("vgrid.db"))
        .expect("db")
        .len()
        / 4096;
    // No room for one more page: the next write fails as on a full disk.
    d.actor.store.limit_pages(pages.max(1)).expect("limit");
    let spec = vgrid_jobfile::parse(
        "j.toml",
        "image = \"tiny\"\ncommand = [\"/bin/echo\", \"hi\"]\n",
    )
    .expect("valid");
    let submit = |hold| Command::Submit {
        spec: Box::new(spec.clone()),
        hold,
        idempotency_key: None,
    };
    let mut message = String::new();
    for _ in 0..50 {
        match d.call(submit(false)) {
            Ok(_) => continue,
            other => {
                message = unavailable(other);
                break;
            }
        }
    }
    assert!(message.contains("database or disk is full"), "{message}");
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(d.actor.degraded.is_some());
    let before = listed(&mut d);
    assert!(before.contains(&first) && before.contains(&second));
    // Reads are served; a job's history comes from the database.
    assert!(matches!(
        d.call(Command::ShowJob { id: first }),
        Ok(Reply::Job(_))
    ));
    // Writes are refused at once, with the cause.
    let refused = unavailable(d.call(Command::Cancel { id: first }));
    assert!(refused.contains("database or disk is full"), "{refused}");
    assert_eq!(listed(&mut d), before, "nothing changed");

    // Room comes back: the next probe finds it and writes work again.
    d.actor.store.limit_pages(1 << 30).expect("lift");
    if let Some(g) = &mut d.actor.degraded {
        g.next_probe_ms = 0;
    }
    let id = match d.call(submit(false)) {
        Ok(Reply::Submitted { id, .. }) => id,
        other => panic!("submit after recovery: {other:?}"),
    };
    assert!(d.actor.degraded.is_none());
    let after = listed(&mut d);
    assert_eq!(after.len(), before.len() + 1, "{before:?} -> {after:?}");
    assert_eq!(after.last(), Some(&id));
    assert!(matches!(
        d.call(Command::Cancel { id: first }),
        Ok(Reply::Control(_))
    ));
}

#[test]
fn a_damaged_page_costs_the_writes_that_touch_it_not_the_controller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("vgrid.db");
    let mut d = Driver::open(Config::new(dir.path().to_path_buf()));
    let first = d.submit();
    let _second = d.submit();
    // Move every page into the database file and find the job history's.
    let other = rusqlite::Connection::open(&db).expect("second connection");
    other
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    let page_size: i64 = other
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .expect("page size");
    let root: i64 = other
        .query_row(
            "SELECT rootpage FROM sqlite_master WHERE name = 'job_history'",
            [],
            |r| r.get(0),
        )
        .expect("root page");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&db)
            .expect("db file");
        f.seek(SeekFrom::Start(((root - 1) * page_size) as u64))
            .expect("seek");
        f.write_all(&vec![0xA5; page_size as usize])
            .expect("damage");
        f.sync_all().expect("sync");
    }
    // Another writer makes the controller's connection drop its cached
    // pages, as any change by another process would.
    other
        .execute("CREATE TABLE unrelated (x)", [])
        .expect("other write");
    drop(other);

    // Reading the damaged history is an error with its cause.
    match d.call(Command::ShowJob { id: first }) {
        Err(CommandError::Unavailable(m)) => assert!(m.contains("malformed"), "{m}"),
        other => panic!("expected 503 from a damaged page, got {other:?}"),
    }
    // A write that needs the page is refused with its cause; the
    // controller goes on and still answers reads.
    let spec = vgrid_jobfile::parse("j.toml", "image = \"tiny\"\ncommand = [\"/bin/true\"]\n")
        .expect("valid");
    let m = unavailable(d.call(Command::Submit {
        spec: Box::new(spec),
        hold: false,
        idempotency_key: None,
    }));
    assert!(m.contains("damaged"), "{m}");
    assert_eq!(listed(&mut d).len(), 2);
    // The probe (which does not touch the page) lets writes in again; the
    // ones that touch the page keep failing, one by one, clearly.
    if let Some(g) = &mut d.actor.degraded {
        g.next_probe_ms = 0;
    }
    let m = unavailable(d.call(Command::Cancel { id: first }));
    assert!(m.contains("damaged"), "{m}");
    assert_eq!(listed(&mut d).len(), 2);
}
