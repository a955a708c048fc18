//! What the controller does once, at start: its directories, its database,
//! and the first admin.

use std::path::{Path, PathBuf};

use vgrid_store::{Change, Store, UserRecord, generate_token, hash_token};

use crate::{ADMIN_TOKEN_FILE, Config, ControllerError};

/// Creates the data directory's parts and opens the database, with an
/// admin user on first start.
pub(crate) fn open(cfg: &Config, now: u64) -> Result<Store, ControllerError> {
    let data_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ControllerError::DataDir { path, source }
    };
    crate::output::create_private_dir(&cfg.data_dir).map_err(data_err(&cfg.data_dir))?;
    let mut store = Store::open(&cfg.data_dir.join("vgrid.db"), now as i64)?;
    ensure_admin(&mut store, cfg, now)?;
    Ok(store)
}

/// The output directory.
pub(crate) fn output_dir(cfg: &Config) -> PathBuf {
    cfg.data_dir.join("output")
}

/// Creates the admin user on first start, writing its token to
/// `admin.token` (0600) before the user is committed: a crash in between
/// leaves a file with a token that does not work yet, and the next start
/// writes a new one.
fn ensure_admin(store: &mut Store, cfg: &Config, now: u64) -> Result<(), ControllerError> {
    let users = store.read().users_with_token_hashes()?;
    if users
        .iter()
        .any(|(u, _)| u.role == vgrid_store::Role::Admin)
    {
        return Ok(());
    }
    let path = cfg.data_dir.join(ADMIN_TOKEN_FILE);
    let token_err = |source| ControllerError::AdminToken {
        path: path.clone(),
        source,
    };
    let token = generate_token().map_err(token_err)?;
    write_private(&path, &token).map_err(token_err)?;
    let id = store.read().max_user_id()? + 1;
    store.apply(&[Change::AddUser {
        user: UserRecord {
            id,
            name: "admin".into(),
            role: vgrid_store::Role::Admin,
            created_unix_ms: now as i64,
            removed_unix_ms: None,
            token_revoked_unix_ms: None,
        },
        token_hash: hash_token(&token),
    }])?;
    Ok(())
}

/// Writes a file readable only by its owner (the data directory holds
/// nothing for others), durably, under its name only once complete.
pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
