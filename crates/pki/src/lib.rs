//! The controller's own public-key infrastructure.
//!
//! `vgrid serve` makes a certificate authority at its first start (an
//! ECDSA P-256 key and a self-signed certificate, nothing to install) and
//! issues its server certificate from it. Everything that talks to the
//! controller trusts that CA alone:
//!
//! - a node agent learns it from its **join token**, which carries the
//!   CA certificate's SHA-256 fingerprint (the pin) beside a secret, as
//!   `kubeadm join` and k3s agents do: the first connection is accepted only
//!   from a server whose chain ends in a CA with that fingerprint, and the
//!   agent then keeps the CA certificate;
//! - the CLI on the controller's host reads `ca.pem` from the data
//!   directory; a user elsewhere gets it in a credentials file.
//!
//! Host names are not checked: only the controller holds the CA's key, so
//! a certificate the CA signed is the controller, whatever address the
//! client used to reach it (a node behind another name, a test namespace).
//!
//! Files, all 0600 in a 0700 directory (certificates are public, but no
//! other local user needs them): `ca.pem`, `ca.key`, `server.pem`,
//! `server.key`.

mod files;
mod verify;

use std::path::{Path, PathBuf};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub use verify::{client_config, pinned_client_config};

/// Why the PKI could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a PEM file of the expected kind: {why}")]
    BadPem { path: PathBuf, why: String },
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("`{token}` is not a join token: {why}")]
    BadJoinToken { token: String, why: &'static str },
    #[error("cannot read random bytes: {0}")]
    Random(String),
}

/// A CA certificate's SHA-256 fingerprint, as lower-case hex (what
/// `openssl x509 -noout -fingerprint -sha256` prints, without colons).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub String);

impl Fingerprint {
    pub fn of(cert: &CertificateDer<'_>) -> Fingerprint {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.as_ref());
        Fingerprint(hex(digest.as_ref()))
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The controller's CA and server identity, loaded from (or made in) a
/// directory.
pub struct ServerPki {
    pub ca_cert: CertificateDer<'static>,
    pub ca_pem: String,
    pub server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivatePkcs8KeyDer<'static>,
}

impl ServerPki {
    /// Loads the CA and the server certificate from `dir`, making them
    /// first when they are not there. `names` are the host names and IP
    /// addresses put into a new server certificate (informative: clients
    /// check the CA, not the name).
    pub fn load_or_create(dir: &Path, names: &[String]) -> Result<ServerPki, PkiError> {
        files::load_or_create(dir, names)
    }

    /// The CA's fingerprint: what a join token pins.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.ca_cert)
    }

    /// The server side's rustls configuration: the server certificate with
    /// the CA certificate after it (a joining agent compares the CA with
    /// its pin before it has it).
    pub fn server_config(&self) -> Result<rustls::ServerConfig, PkiError> {
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = PrivateKeyDer::Pkcs8(self.server_key.clone_key());
        let mut chain = self.server_chain.clone();
        chain.push(self.ca_cert.clone());
        Ok(rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?)
    }
}

/// A join token: the CA's fingerprint and a secret, one string.
///
/// `vgj_<64 hex: the CA's SHA-256>_<64 hex: the secret>`
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca: Fingerprint,
    pub secret: String,
}

impl std::fmt::Debug for JoinToken {
    // The secret never goes into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca", &self.ca)
            .field("secret", &"<redacted>")
            .finish()
    }
}

const JOIN_PREFIX: &str = "vgj_";

impl JoinToken {
    /// A new token for the CA with fingerprint `ca`.
    pub fn generate(ca: Fingerprint) -> Result<JoinToken, PkiError> {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| PkiError::Random("the system's random source failed".into()))?;
        Ok(JoinToken {
            ca,
            secret: hex(&bytes),
        })
    }

    /// Parses the text form, saying what is wrong with a bad one.
    pub fn parse(text: &str) -> Result<JoinToken, PkiError> {
        let text = text.trim();
        let bad = |why| PkiError::BadJoinToken {
            token: redact(text),
            why,
        };
        let rest = text
            .strip_prefix(JOIN_PREFIX)
            .ok_or_else(|| bad("it does not start with `vgj_`"))?;
        let (ca, secret) = rest
            .split_once('_')
            .ok_or_else(|| bad("it has no `_` between the CA fingerprint and the secret"))?;
        let is_hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_hex64(ca) {
            return Err(bad("the CA fingerprint is not 64 hexadecimal digits"));
        }
        if !is_hex64(secret) {
            return Err(bad("the secret is not 64 hexadecimal digits"));
        }
        Ok(JoinToken {
            ca: Fingerprint(ca.to_ascii_lowercase()),
            secret: secret.to_ascii_lowercase(),
        })
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{JOIN_PREFIX}{}_{}", self.ca.0, self.secret)
    }
}

/// A token shortened for error messages: never the whole secret.
fn redact(text: &str) -> String {
    let head: String = text.chars().take(12).collect();
    if text.chars().count() > 12 {
        format!("{head}…")
    } else {
        head
    }
}

/// What a controller keeps of a join token's secret: its BLAKE3 hash.
pub fn hash_secret(secret: &str) -> blake3::Hash {
    blake3::hash(secret.trim().as_bytes())
}

/// Reads a CA certificate from a PEM file.
pub fn read_ca(path: &Path) -> Result<CertificateDer<'static>, PkiError> {
    files::read_cert(path)
}

/// Parses a CA certificate from PEM text (a credentials file, a join
/// answer).
pub fn parse_ca_pem(text: &str, origin: &Path) -> Result<CertificateDer<'static>, PkiError> {
    files::parse_cert_pem(text, origin)
}

#[cfg(test)]
mod tests;
