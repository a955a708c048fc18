//! How client commands find the controller, in this order:
//!
//! 1. `VGRID_URL` and `VGRID_TOKEN` (and `VGRID_CA`, the CA's PEM file,
//!    for an https:// URL);
//! 2. the user's credentials file (`vgrid login`), see
//!    [`crate::credentials`];
//! 3. the files `vgrid serve` writes into the data directory: `url`,
//!    `admin.token` and `tls/ca.pem`.

use std::path::Path;

use anyhow::Context;
use vgrid_client::Client;

use crate::credentials::Credentials;

/// The file `vgrid serve` writes its URL to.
pub const URL_FILE: &str = "url";
/// Where `vgrid serve` keeps its CA and certificates.
pub const TLS_DIR: &str = "tls";
/// The join token `vgrid serve` writes for nodes.
pub const JOIN_TOKEN_FILE: &str = "join-token";

/// A client for the controller named by the environment, the user's
/// credentials or the data directory.
pub fn client() -> anyhow::Result<Client> {
    if let (Some(url), Some(token)) = (env("VGRID_URL"), env("VGRID_TOKEN")) {
        let ca = env("VGRID_CA");
        return connect(&url, &token, || match &ca {
            Some(path) => Ok(vgrid_pki::read_ca(Path::new(path))?),
            None => anyhow::bail!(
                "VGRID_URL is https://: set VGRID_CA to the controller's CA certificate (its `tls/ca.pem`), or use `vgrid login`"
            ),
        });
    }
    if env("VGRID_URL").is_none()
        && env("VGRID_TOKEN").is_none()
        && let Some(path) = crate::credentials::user_file()
        && path.exists()
    {
        let c = Credentials::read(&path)?;
        return Ok(Client::with_tls(&c.controller, &c.token, c.tls()?)?);
    }
    let dir = crate::data_dir::data_dir()?;
    let url = match env("VGRID_URL") {
        Some(u) => u,
        None => read_dir_file(&dir, URL_FILE, "VGRID_URL")?,
    };
    let token = match env("VGRID_TOKEN") {
        Some(t) => t,
        None => read_dir_file(&dir, vgrid_controller::ADMIN_TOKEN_FILE, "VGRID_TOKEN")?,
    };
    connect(&url, &token, || {
        Ok(vgrid_pki::read_ca(&dir.join(TLS_DIR).join("ca.pem"))?)
    })
}

/// The controller's CA certificate (PEM) as the client finds it, in the
/// same order as [`client`]; `None` for a plain http:// controller.
pub fn ca_pem() -> anyhow::Result<Option<String>> {
    if let (Some(url), Some(_)) = (env("VGRID_URL"), env("VGRID_TOKEN")) {
        return match env("VGRID_CA") {
            Some(path) => Ok(Some(read_trimmed(Path::new(&path))? + "\n")),
            None if url.starts_with("https://") => {
                anyhow::bail!(
                    "VGRID_URL is https://: set VGRID_CA to the controller's CA certificate"
                )
            }
            None => Ok(None),
        };
    }
    if env("VGRID_URL").is_none()
        && env("VGRID_TOKEN").is_none()
        && let Some(path) = crate::credentials::user_file()
        && path.exists()
    {
        return Ok(Some(Credentials::read(&path)?.ca_pem));
    }
    let dir = crate::data_dir::data_dir()?;
    let url = read_dir_file(&dir, URL_FILE, "VGRID_URL")?;
    if url.starts_with("https://") {
        let path = dir.join(TLS_DIR).join("ca.pem");
        Ok(Some(std::fs::read_to_string(&path).with_context(|| {
            format!("cannot read {}", path.display())
        })?))
    } else {
        Ok(None)
    }
}

/// A client of `url`: https:// with the CA `ca` gives, or plain http:// to
/// a loopback address.
fn connect(
    url: &str,
    token: &str,
    ca: impl FnOnce() -> anyhow::Result<rustls::pki_types::CertificateDer<'static>>,
) -> anyhow::Result<Client> {
    if url.starts_with("https://") {
        let tls = vgrid_pki::client_config(ca()?)?;
        Ok(Client::with_tls(url, token, tls)?)
    } else {
        Ok(Client::new(url, token)?)
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn read_dir_file(dir: &Path, name: &str, variable: &str) -> anyhow::Result<String> {
    let path = dir.join(name);
    read_trimmed(&path).with_context(|| {
        format!(
            "cannot find the controller: set {variable}, log in with `vgrid login FILE`, or start `vgrid serve` with the same VGRID_DATA_DIR ({})",
            dir.display()
        )
    })
}

pub fn read_trimmed(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = text.trim().to_string();
    anyhow::ensure!(!text.is_empty(), "{} is empty", path.display());
    Ok(text)
}

/// Runs a future on a small runtime: client commands make a few calls and
/// exit.
pub fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(rt.block_on(f))
}

/// `2030-01-31 08:00:00Z` from Unix milliseconds, without a calendar crate.
pub fn format_time(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The calendar date of a day count since 1970-01-01 (proleptic Gregorian),
/// counting in 400-year eras that repeat exactly.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_as_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00Z");
        assert_eq!(format_time(951_868_800_000), "2000-03-01 00:00:00Z");
        assert_eq!(format_time(1_709_210_096_000), "2024-02-29 12:34:56Z");
        assert_eq!(format_time(-1000), "1969-12-31 23:59:59Z");
    }
}
