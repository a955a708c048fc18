//! The PKI's files: made once, read at every start.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use crate::{PkiError, ServerPki};

pub(crate) const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
const SERVER_CERT: &str = "server.pem";
const SERVER_KEY: &str = "server.key";

/// The CA's subject follows from its key, so that the CA can issue again
/// from its key alone (an issuer is its name and its key), and two
/// controllers' CAs never share a name (a client that trusts one sees the
/// other as an unknown issuer, not as a bad signature).
fn ca_params(key: &KeyPair) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    let id = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.public_key_raw());
    let short: String = id.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    dn.push(DnType::OrganizationName, "vgrid");
    dn.push(DnType::CommonName, format!("vgrid controller CA {short}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // rcgen's default validity (1975 to 4096): a private CA that nobody
    // must remember to renew; trust ends by removing it, not by a date.
    Ok(params)
}

pub(crate) fn load_or_create(dir: &Path, names: &[String]) -> Result<ServerPki, PkiError> {
    create_private_dir(dir)?;
    let ca_key_path = dir.join(CA_KEY);
    let ca_cert_path = dir.join(CA_CERT);
    let ca_key = if ca_key_path.exists() && ca_cert_path.exists() {
        let pem = read_text(&ca_key_path)?;
        KeyPair::from_pem(&pem).map_err(|e| PkiError::BadPem {
            path: ca_key_path.clone(),
            why: e.to_string(),
        })?
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params(&key)?.self_signed(&key)?;
        // The key first: a crash between the two leaves a key without a
        // certificate, and the next start makes both again.
        write_file(&ca_key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&ca_cert_path, cert.pem().as_bytes(), 0o600)?;
        key
    };
    let ca_cert = read_cert(&ca_cert_path)?;
    let ca_pem = read_text(&ca_cert_path)?;
    // The server certificate is issued again at every start, so that it
    // names the addresses the controller has now.
    let issuer = Issuer::new(ca_params(&ca_key)?, &ca_key);
    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "vgrid controller");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = params.signed_by(&server_key, &issuer)?;
    write_file(
        &dir.join(SERVER_KEY),
        server_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_file(&dir.join(SERVER_CERT), server.pem().as_bytes(), 0o600)?;
    Ok(ServerPki {
        ca_cert,
        ca_pem,
        server_chain: vec![server.der().clone()],
        server_key: PrivatePkcs8KeyDer::from(server_key.serialize_der()),
    })
}

fn create_private_dir(dir: &Path) -> Result<(), PkiError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(PkiError::Io {
            action: "create directory",
            path: dir.to_path_buf(),
            source,
        }),
    }
}

fn read_text(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn read_cert(path: &Path) -> Result<CertificateDer<'static>, PkiError> {
    parse_cert_pem(&read_text(path)?, path)
}

pub(crate) fn parse_cert_pem(
    text: &str,
    origin: &Path,
) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_slice(text.as_bytes()).map_err(|e| PkiError::BadPem {
        path: origin.to_path_buf(),
        why: e.to_string(),
    })
}

/// Writes a file through a temporary one, fsynced, then renamed.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let io = |action: &'static str, path: PathBuf| {
        move |source| PkiError::Io {
            action,
            path,
            source,
        }
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("create", tmp.clone()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io("write", tmp.clone()))?;
    std::fs::rename(&tmp, path).map_err(io("rename into", path.to_path_buf()))?;
    Ok(())
}
