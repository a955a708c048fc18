//! The client side: trust the controller's CA and nothing else.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

use crate::{Fingerprint, PkiError};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client configuration that accepts a server whose certificate the CA
/// `ca` signed, whatever name the client used.
pub fn client_config(ca: CertificateDer<'static>) -> Result<rustls::ClientConfig, PkiError> {
    let verifier = CaOnly::new(ca)?;
    config(Arc::new(verifier))
}

/// A client configuration for joining: it accepts a server whose chain
/// ends in a CA with fingerprint `pin`, and whose certificate that CA
/// signed.
pub fn pinned_client_config(pin: Fingerprint) -> Result<rustls::ClientConfig, PkiError> {
    config(Arc::new(Pinned { pin }))
}

fn config(verifier: Arc<dyn ServerCertVerifier>) -> Result<rustls::ClientConfig, PkiError> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// Checks chains against one CA; the name is not checked (only the
/// controller holds the CA's key).
#[derive(Debug)]
struct CaOnly {
    inner: Arc<WebPkiServerVerifier>,
    ca: Fingerprint,
}

impl CaOnly {
    fn new(ca: CertificateDer<'static>) -> Result<CaOnly, PkiError> {
        let fingerprint = Fingerprint::of(&ca);
        let mut roots = RootCertStore::empty();
        roots.add(ca)?;
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| PkiError::Tls(Error::General(e.to_string())))?;
        Ok(CaOnly {
            inner,
            ca: fingerprint,
        })
    }
}

impl ServerCertVerifier for CaOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            Err(Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
                Err(Error::General(format!(
                    "the server's certificate was not issued by the CA this client trusts ({}); is it the controller this node joined or this user was given?",
                    self.ca
                )))
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Finds the CA with the pinned fingerprint in the server's chain, then
/// checks the chain against it as [`CaOnly`] does.
#[derive(Debug)]
struct Pinned {
    pin: Fingerprint,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|c| Fingerprint::of(c) == self.pin)
        else {
            let offered: Vec<String> = intermediates
                .iter()
                .map(|c| Fingerprint::of(c).to_string())
                .collect();
            return Err(Error::General(format!(
                "the controller's CA is not the one the join token names: the token pins {}, the controller offers {}",
                self.pin,
                if offered.is_empty() {
                    "no CA".to_string()
                } else {
                    offered.join(", ")
                }
            )));
        };
        let verifier =
            CaOnly::new(ca.clone().into_owned()).map_err(|e| Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
