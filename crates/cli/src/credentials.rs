//! Credentials: where a controller is, the token to use there, and the CA
//! to trust, in one private file.
//!
//! - A user's, written by `vgrid login FILE` (from the file `vgrid users
//!   add NAME --credentials FILE` made) to `$XDG_CONFIG_HOME/vgrid/credentials.json`
//!   (or `~/.config/vgrid/credentials.json`).
//! - A node's, written by `vgrid agent --join-token ...` to
//!   `$VGRID_DATA_DIR/agent/credentials.json`.
//!
//! Persisted: a change of the form needs a new [`FORMAT`].

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The form of the file this build writes and reads.
pub const FORMAT: u32 = 1;

#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub format: u32,
    /// The controller's URL, `https://HOST:PORT`.
    pub controller: String,
    /// Who the token is (a user name, or the node's name).
    pub name: String,
    pub token: String,
    /// The controller's CA certificate (PEM).
    pub ca_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("controller", &self.controller)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn read(path: &Path) -> anyhow::Result<Credentials> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read credentials {}", path.display()))?;
        let c: Credentials = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a vgrid credentials file", path.display()))?;
        anyhow::ensure!(
            c.format <= FORMAT,
            "{} has format {}, but this vgrid reads only up to {FORMAT}: use a newer vgrid",
            path.display(),
            c.format
        );
        Ok(c)
    }

    /// Writes the file 0600 (its directory made 0700 when missing).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_string_pretty(self)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    }

    /// A TLS client configuration trusting this controller's CA only.
    pub fn tls(&self) -> anyhow::Result<rustls::ClientConfig> {
        let ca = vgrid_pki::parse_ca_pem(&self.ca_pem, Path::new("credentials"))?;
        Ok(vgrid_pki::client_config(ca)?)
    }
}

/// The user's credentials file.
pub fn user_file() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(config.join("vgrid").join("credentials.json"))
}
