//! A real headless Chromium driven over the DevTools protocol, for the
//! dashboard's tests: a minimal client (commands and their answers over
//! one websocket, one page in flat session mode), no browser automation
//! framework in between.
//!
//! ```no_run
//! # fn test() {
//! let Some(chromium) = vgrid_testkit::browser::require_chromium() else { return };
//! let mut page = vgrid_testkit::browser::Browser::launch(&chromium, &[]).expect("chromium");
//! page.navigate("https://127.0.0.1:7777/").expect("page");
//! let title = page.eval("document.title").expect("title");
//! # let _ = title;
//! # }
//! ```

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// Chromium, or `None` (test skipped, saying why) when it is missing
/// outside CI; with `CI=true` a missing Chromium panics.
pub fn require_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("VGRID_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    match ["chromium", "chromium-browser"]
        .iter()
        .find_map(|n| crate::find_in_path(n))
    {
        Some(p) => Some(p),
        None => crate::skip_or_panic(
            "`chromium` (Debian package chromium) is not installed: the dashboard's browser tests need it",
        ),
    }
}

/// One headless Chromium with one page. Dropping it kills the browser.
pub struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    errors: Vec<String>,
    _profile: tempfile::TempDir,
}

/// How long one DevTools command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

impl Browser {
    /// Starts Chromium headless with a fresh profile and `extra` flags, and
    /// opens a blank page.
    pub fn launch(chromium: &Path, extra: &[String]) -> Result<Browser, String> {
        let profile = tempfile::tempdir().map_err(|e| format!("profile directory: {e}"))?;
        let mut cmd = Command::new(chromium);
        cmd.arg("--headless")
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args([
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-gpu",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--mute-audio",
                "--disable-dev-shm-usage",
            ])
            .args(extra);
        // Chromium refuses to run as root with its sandbox; tests run as
        // root in CI and load only the test's own loopback controller.
        if is_root() {
            cmd.arg("--no-sandbox");
        }
        cmd.arg("about:blank")
            .env("HOME", profile.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", chromium.display()))?;
        let url = match devtools_url(&mut child) {
            Ok(url) => url,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let ws = connect(&url)?;
        ws.get_ref()
            .set_read_timeout(Some(COMMAND_TIMEOUT))
            .map_err(|e| format!("socket: {e}"))?;
        let mut browser = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            errors: Vec::new(),
            _profile: profile,
        };
        let target = browser.send("", "Target.createTarget", json!({"url": "about:blank"}))?;
        let target = target["targetId"]
            .as_str()
            .ok_or("no target id")?
            .to_string();
        let attached = browser.send(
            "",
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        )?;
        browser.session = attached["sessionId"]
            .as_str()
            .ok_or("no session id")?
            .to_string();
        browser.call("Page.enable", json!({}))?;
        browser.call("Runtime.enable", json!({}))?;
        browser.call("Log.enable", json!({}))?;
        browser.call("Network.enable", json!({}))?;
        Ok(browser)
    }

    /// Sends a command to the page and returns its result.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let session = self.session.clone();
        self.send(&session, method, params)
    }

    fn send(&mut self, session: &str, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !session.is_empty() {
            msg["sessionId"] = json!(session);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .map_err(|e| format!("{method}: cannot send: {e}"))?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            if Instant::now() > deadline {
                return Err(format!("{method}: no answer in {COMMAND_TIMEOUT:?}"));
            }
            let frame = self
                .ws
                .read()
                .map_err(|e| format!("{method}: cannot read: {e}"))?;
            let Message::Text(text) = frame else {
                continue;
            };
            let answer: Value =
                serde_json::from_str(&text).map_err(|e| format!("{method}: bad JSON: {e}"))?;
            self.note_error(&answer);
            // Events (no id) and other answers are not ours.
            if answer["id"].as_u64() != Some(id) {
                continue;
            }
            if let Some(err) = answer.get("error") {
                return Err(format!("{method}: {err}"));
            }
            return Ok(answer["result"].clone());
        }
    }

    /// What went wrong in the page so far: uncaught exceptions, and errors
    /// it logged (a refused Content-Security-Policy among them) other than
    /// failed requests, which the tests provoke on purpose.
    pub fn page_errors(&self) -> &[String] {
        &self.errors
    }

    fn note_error(&mut self, event: &Value) {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => self.errors.push(format!(
                "exception: {}",
                params["exceptionDetails"]["exception"]["description"]
                    .as_str()
                    .unwrap_or(&params["exceptionDetails"]["text"].to_string())
            )),
            Some("Log.entryAdded")
                if params["entry"]["level"] == "error"
                    && params["entry"]["source"] != "network" =>
            {
                self.errors.push(format!(
                    "{}: {}",
                    params["entry"]["source"], params["entry"]["text"]
                ));
            }
            _ => {}
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns
    /// its value; a thrown exception is an error.
    pub fn eval(&mut self, expression: &str) -> Result<Value, String> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(format!(
                "`{expression}` threw: {}",
                e["exception"]["description"]
                    .as_str()
                    .unwrap_or(&e.to_string())
            ));
        }
        Ok(r["result"]["value"].clone())
    }

    /// Evaluates `expression` until its value is truthy (not false, null,
    /// 0 or ""), or fails after `timeout` with `what` and the last value.
    pub fn wait_for(
        &mut self,
        what: &str,
        expression: &str,
        timeout: Duration,
    ) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(expression)?;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return Ok(v);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "timed out after {timeout:?} waiting for {what} (`{expression}` was {v})"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Loads `url` and waits until the document has loaded.
    pub fn navigate(&mut self, url: &str) -> Result<(), String> {
        let r = self.call("Page.navigate", json!({"url": url}))?;
        if let Some(e) = r.get("errorText") {
            return Err(format!("cannot load {url}: {e}"));
        }
        self.wait_for(
            "the page to load",
            "document.readyState === 'complete'",
            Duration::from_secs(30),
        )?;
        Ok(())
    }

    /// Sets the viewport: CSS pixels, device pixel ratio, and whether it
    /// is a phone (mobile viewport and touch).
    pub fn set_viewport(
        &mut self,
        width: u32,
        height: u32,
        scale: f64,
        mobile: bool,
    ) -> Result<(), String> {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile}),
        )?;
        Ok(())
    }

    /// Saves a PNG of the viewport to `path`.
    pub fn screenshot(&mut self, path: &Path) -> Result<(), String> {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}))?;
        let data = r["data"].as_str().ok_or("no screenshot data")?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| format!("screenshot: {e}"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(path, png).map_err(|e| format!("{}: {e}", path.display()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The websocket to `url` (`ws://host:port/...`, loopback, no TLS).
fn connect(url: &str) -> Result<WebSocket<TcpStream>, String> {
    let addr = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| format!("not a ws:// URL: {url}"))?;
    let stream = TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let (ws, _) = tungstenite::client(url, stream)
        .map_err(|e| format!("DevTools handshake with {url}: {e}"))?;
    Ok(ws)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Reads Chromium's stderr until it prints its DevTools websocket URL;
/// the rest of its stderr is drained in a thread so it never blocks.
fn devtools_url(child: &mut Child) -> Result<String, String> {
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(Ok(url.trim().to_string()));
                    sent = true;
                } else {
                    seen.push(line);
                }
            }
        }
        if !sent {
            let _ = tx.send(Err(seen.join("\n")));
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(url)) => Ok(url),
        Ok(Err(log)) => Err(format!("chromium exited before DevTools listened:\n{log}")),
        Err(_) => Err("chromium printed no DevTools URL in 60 s".into()),
    }
}

/// The `--ignore-certificate-errors-spki-list` value that makes Chromium
/// accept exactly the server whose certificate (PEM) is `cert_pem`: the
/// base64 SHA-256 of its SubjectPublicKeyInfo. The TLS handshake proves
/// the server holds that key, so nothing else passes, unlike
/// `--ignore-certificate-errors`.
pub fn spki_pin(cert_pem: &str) -> Result<String, String> {
    let b64: String = cert_pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("the certificate's PEM: {e}"))?;
    let spki = subject_public_key_info(&der).ok_or("the certificate's DER has no SPKI")?;
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki);
    Ok(base64::engine::general_purpose::STANDARD.encode(hash.as_ref()))
}

/// One DER element: its tag, the whole element, its contents, and what
/// follows it.
struct Der<'a> {
    tag: u8,
    whole: &'a [u8],
    contents: &'a [u8],
    rest: &'a [u8],
}

/// The DER element at the start of `d`.
fn der_element(d: &[u8]) -> Option<Der<'_>> {
    let tag = *d.first()?;
    let first = *d.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = d
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some(Der {
        tag,
        whole: d.get(..end)?,
        contents: d.get(header..end)?,
        rest: d.get(end..)?,
    })
}

/// Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version,
/// serialNumber, signature, issuer, validity, subject,
/// subjectPublicKeyInfo, ... }, ... } (RFC 5280, 4.1).
fn subject_public_key_info(cert: &[u8]) -> Option<&[u8]> {
    let cert = der_element(cert)?.contents;
    let tbs = der_element(cert)?.contents;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = der_element(rest)?.rest;
    }
    for _ in 0..5 {
        rest = der_element(rest)?.rest;
    }
    let spki = der_element(rest)?;
    (spki.tag == 0x30).then_some(spki.whole)
}
