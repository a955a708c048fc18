//! The HTTP contract of a real `vgrid serve` over its real TLS: every
//! answer that is not a success is the API's JSON error (unknown routes,
//! wrong methods, bodies too large), the token is checked before a body
//! is read, and `/openapi.json` documents every route the server has.
//! Requests are written by hand, byte for byte, so that the test controls
//! what a normal client would hide (`Expect: 100-continue`, a body the
//! server refuses to read).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vgrid_api::types::ErrorBody;
use vgrid_testkit::local::Local;

/// The answer to one request: status, headers (lowercase names), body.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }

    fn error(&self) -> ErrorBody {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{}",
            self.head
        );
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not the API's JSON error ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// The controller of one data directory, reached over TLS with its CA.
struct Controller {
    _server: Local,
    addr: String,
    tls: Arc<rustls::ClientConfig>,
    admin: String,
}

impl Controller {
    fn start(data: &Path) -> Controller {
        let server = Local::serve(
            Path::new(env!("CARGO_BIN_EXE_vgrid")),
            data,
            &["--no-agent"],
        );
        let url = std::fs::read_to_string(data.join("url")).expect("url");
        let addr = url
            .trim()
            .strip_prefix("https://")
            .expect("an https:// URL")
            .to_string();
        let ca = vgrid_pki::read_ca(&data.join("tls/ca.pem")).expect("the controller's CA");
        let tls = Arc::new(vgrid_pki::client_config(ca).expect("TLS configuration"));
        let admin = std::fs::read_to_string(data.join("admin.token"))
            .expect("admin token")
            .trim()
            .to_string();
        Controller {
            _server: server,
            addr,
            tls,
            admin,
        }
    }

    fn connect(&self) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        let tcp = TcpStream::connect(&self.addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        // The server may stop reading a body it refuses: writing must not
        // hang on a full window.
        tcp.set_write_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        // Clients check the CA, not the name (docs/api.md).
        let name = rustls::pki_types::ServerName::try_from("vgrid").expect("name");
        let conn = rustls::ClientConnection::new(self.tls.clone(), name).expect("TLS");
        rustls::StreamOwned::new(conn, tcp)
    }

    /// Sends `head` (request line and headers, without the blank line)
    /// and then, unless `expect_continue`, `body`; reads the answer.
    /// With `expect_continue` the body is sent only after a `100
    /// Continue`, as curl does for large bodies.
    fn request(&self, head: &str, body: &[u8], expect_continue: bool) -> Answer {
        let mut s = self.connect();
        let mut text = format!(
            "{head}\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.addr,
            body.len()
        );
        if expect_continue {
            text.push_str("Expect: 100-continue\r\n");
        }
        text.push_str("\r\n");
        s.write_all(text.as_bytes()).expect("request head");
        let _ = s.flush();
        if !expect_continue {
            // A server that answers early may close before all is sent.
            let _ = s.write_all(body).and_then(|()| s.flush());
        }
        // Read without writing what a refused body left unsent (the
        // stream's own `read` would try to send it first).
        let (conn, sock) = (&mut s.conn, &mut s.sock);
        let mut raw = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            match conn.reader().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    match conn.read_tls(sock) {
                        Ok(0) => break,
                        Ok(_) => {
                            if let Err(e) = conn.process_new_packets() {
                                panic!("TLS error in the answer to {head}: {e}");
                            }
                        }
                        // A reset after the answer does not lose it.
                        Err(_) if !raw.is_empty() => break,
                        Err(e) => panic!("no answer to {head}: {e}"),
                    }
                }
                // The server closed without a TLS close_notify.
                Err(_) => break,
            }
        }
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no answer head: {}", String::from_utf8_lossy(&raw)));
        let head_text = String::from_utf8_lossy(&raw[..split]).to_string();
        let status = head_text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status: {head_text}"));
        Answer {
            status,
            head: head_text,
            body: raw[split + 4..].to_vec(),
        }
    }

    fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.call("GET", path, token, b"")
    }

    fn call(&self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Answer {
        let mut head = format!("{method} {path} HTTP/1.1");
        if let Some(t) = token {
            head.push_str(&format!("\r\nAuthorization: Bearer {t}"));
        }
        self.request(&head, body, false)
    }
}

#[test]
fn unknown_routes_and_wrong_methods_answer_with_json_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Controller::start(dir.path());
    for token in [None, Some(c.admin.as_str())] {
        // `/` is the dashboard's page.
        for path in ["/nope", "/v1/nope", "/v1/jobs/1/outputs/chunks"] {
            let a = c.get(path, token);
            assert_eq!(a.status, 404, "{path}: {}", a.head);
            let e = a.error();
            assert_eq!(e.error, "not-found");
            assert!(e.message.contains(path), "{}", e.message);
        }
    }
    let a = c.call("DELETE", "/v1/jobs", Some(&c.admin), b"");
    assert_eq!(a.status, 405, "{}", a.head);
    assert_eq!(a.error().error, "method-not-allowed");
    let allow = a.header("allow").unwrap_or_default();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let a = c.call("PUT", "/openapi.json", None, b"{}");
    assert_eq!(
        (a.status, a.error().error),
        (405, "method-not-allowed".into())
    );
}

#[test]
fn the_token_is_checked_before_a_large_body_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Controller::start(dir.path());
    let big = vec![b'x'; 3 << 20];
    // Without a token: 401 before the body, and no `100 Continue`: the
    // server never asked for a byte of it.
    let a = c.request("POST /v1/jobs HTTP/1.1", &big, true);
    assert_eq!(a.status, 401, "{}", a.head);
    assert_eq!(a.error().error, "unauthorized");
    // A client that sends the body anyway gets the same answer.
    let a = c.call("POST", "/v1/jobs", None, &big);
    assert_eq!((a.status, a.error().error), (401, "unauthorized".into()));
    let a = c.call("POST", "/v1/jobs", Some("vgt_not-a-token"), &big);
    assert_eq!((a.status, a.error().error), (401, "unauthorized".into()));
    // With a good token, the body is too large: JSON that says the limit.
    let head = format!(
        "POST /v1/jobs HTTP/1.1\r\nAuthorization: Bearer {}",
        c.admin
    );
    for expect_continue in [true, false] {
        let a = c.request(&head, &big, expect_continue);
        assert_eq!(a.status, 413, "{}", a.head);
        let e = a.error();
        assert_eq!(e.error, "too-large");
        assert!(e.message.contains("2097152 bytes"), "{}", e.message);
    }
    // Joining, the one call without a token, takes a small body only;
    // a real join still works.
    let a = c.call("POST", "/v1/join", None, &[b' '; 5000]);
    assert_eq!((a.status, a.error().error), (413, "too-large".into()));
    let token = std::fs::read_to_string(dir.path().join("join-token")).expect("join token");
    let secret = token
        .trim()
        .splitn(3, '_')
        .nth(2)
        .expect("vgj_<ca>_<secret>");
    let join = serde_json::json!({ "node": "n1", "secret": secret });
    let a = c.call("POST", "/v1/join", None, join.to_string().as_bytes());
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    // The same route still takes a body of its size.
    let job = serde_json::json!({
        "file_name": "j.toml",
        "source": "image = \"tiny\"\ncommand = [\"/bin/true\"]\n",
        "hold": true,
    });
    let a = c.request(&head, job.to_string().as_bytes(), false);
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
}

/// A value for each path parameter that the route's handler parses.
fn fill(path: &str) -> String {
    path.replace("{id}", "1")
        .replace("{chunk}", &"0".repeat(64))
        .replace("{verb}", "hold")
        .replace("{name}", "tiny")
}

#[test]
fn the_served_document_covers_every_route_of_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Controller::start(dir.path());
    let a = c.get("/openapi.json", None);
    assert_eq!(a.status, 200);
    let doc: serde_json::Value = serde_json::from_slice(&a.body).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    // The router's own table, over the controller's real backend type.
    let table = vgrid_server::server::routes::<vgrid_controller::ControllerHandle>();
    let mut routed: Vec<(String, String)> = table
        .iter()
        .map(|r| (r.method.as_str().to_string(), r.path.to_string()))
        .collect();
    routed.sort();
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    assert_eq!(documented, routed);
    // And the server routes each: with the admin's token, no documented
    // call is a 405 or the answer to a path it does not have.
    for (method, path) in &documented {
        let a = c.call(method, &fill(path), Some(&c.admin), b"{}");
        assert_ne!(a.status, 405, "{method} {path}: {}", a.head);
        if a.status >= 400 {
            let e = a.error();
            assert!(
                !e.message.starts_with("there is no route"),
                "{method} {path}: {}",
                e.message
            );
        }
    }
}
