use std::sync::Arc;

use rustls::pki_types::ServerName;

use super::*;

/// A TLS handshake in memory between a server with `pki` and a client
/// with `client`; the client's error when it refuses.
fn handshake(pki: &ServerPki, client: rustls::ClientConfig) -> Result<(), String> {
    let server_cfg = Arc::new(pki.server_config().map_err(|e| e.to_string())?);
    let mut server = rustls::ServerConnection::new(server_cfg).map_err(|e| e.to_string())?;
    let name = ServerName::try_from("10.0.0.9").map_err(|e| e.to_string())?;
    let mut client =
        rustls::ClientConnection::new(Arc::new(client), name).map_err(|e| e.to_string())?;
    for _ in 0..10 {
        let mut buf = Vec::new();
        client.write_tls(&mut buf).map_err(|e| e.to_string())?;
        server.read_tls(&mut &buf[..]).map_err(|e| e.to_string())?;
        server.process_new_packets().map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        server.write_tls(&mut buf).map_err(|e| e.to_string())?;
        client.read_tls(&mut &buf[..]).map_err(|e| e.to_string())?;
        client.process_new_packets().map_err(|e| e.to_string())?;
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
    }
    Err("the handshake did not finish".into())
}

#[test]
fn the_ca_is_made_once_and_the_server_certificate_at_every_start() {
    let top = tempfile::tempdir().expect("tempdir");
    let dir = top.path().join("tls");
    let a = ServerPki::load_or_create(&dir, &["127.0.0.1".into()]).expect("made");
    let b = ServerPki::load_or_create(&dir, &["localhost".into()]).expect("loaded");
    assert_eq!(a.fingerprint(), b.fingerprint(), "the CA stays");
    assert_ne!(
        a.server_chain, b.server_chain,
        "the server certificate is new"
    );
    use std::os::unix::fs::PermissionsExt;
    // Certificates are public, but nobody else needs them: private too.
    for (file, mode) in [("ca.key", 0o600), ("server.key", 0o600), ("ca.pem", 0o600)] {
        let m = std::fs::metadata(dir.join(file)).expect(file);
        assert_eq!(m.permissions().mode() & 0o777, mode, "{file}");
    }
    assert_eq!(
        std::fs::metadata(&dir).expect("dir").permissions().mode() & 0o777,
        0o700
    );
    // A client that trusts the CA accepts both, whatever the name.
    handshake(&b, client_config(a.ca_cert.clone()).expect("config")).expect("trusted");
    handshake(&a, pinned_client_config(b.fingerprint()).expect("config")).expect("pinned");
}

#[test]
fn another_ca_is_refused_and_says_which() {
    let one = tempfile::tempdir().expect("tempdir");
    let two = tempfile::tempdir().expect("tempdir");
    let a = ServerPki::load_or_create(one.path(), &[]).expect("a");
    let b = ServerPki::load_or_create(two.path(), &[]).expect("b");
    let err =
        handshake(&b, client_config(a.ca_cert.clone()).expect("config")).expect_err("another CA");
    assert!(err.contains("not issued by the CA"), "{err}");
    let err = handshake(&b, pinned_client_config(a.fingerprint()).expect("config"))
        .expect_err("another pin");
    assert!(err.contains("not the one the join token names"), "{err}");
    assert!(err.contains(&a.fingerprint().0), "{err}");
    assert!(err.contains(&b.fingerprint().0), "{err}");
}

#[test]
fn join_tokens_round_trip_and_bad_ones_say_why() {
    let ca = Fingerprint("ab".repeat(32));
    let t = JoinToken::generate(ca.clone()).expect("token");
    let text = t.to_string();
    assert!(text.starts_with("vgj_abab"), "{text}");
    assert_eq!(JoinToken::parse(&format!(" {text}\n")).expect("parses"), t);
    assert!(
        !format!("{t:?}").contains(&t.secret),
        "the secret is never shown"
    );
    for (bad, why) in [
        ("vgt_123", "does not start"),
        ("vgj_abc", "no `_`"),
        (
            &format!("vgj_{}_{}", "zz".repeat(32), "00".repeat(32)),
            "fingerprint",
        ),
        (&format!("vgj_{}_{}", "ab".repeat(32), "00"), "secret"),
    ] {
        let e = JoinToken::parse(bad).expect_err("refused").to_string();
        assert!(e.contains(why), "{bad}: {e}");
        assert!(!e.contains(&"00".repeat(32)), "no secret in errors: {e}");
    }
}
