//! The connection: a reader task routing answers by id and broadcasting
//! events, and typed wrappers for the commands vgrid uses.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::sync::{broadcast, oneshot};

use crate::error::QmpError;
use crate::types::{AddFdInfo, Event, MigrationInfo, QemuVersion, StatusInfo};

/// A line longer than this is not QMP; the connection is dropped rather
/// than buffering without bound.
const MAX_LINE: usize = 16 << 20;

/// How many events a slow [`EventStream`] may fall behind before it loses
/// the oldest ones.
const EVENT_BACKLOG: usize = 256;

/// What QEMU answered to one command: its `return` value, or the error's
/// class and description.
type Reply = Result<Value, (String, String)>;

struct Shared {
    pending: HashMap<u64, oneshot::Sender<Reply>>,
    closed: bool,
}

struct Inner {
    stream: UnixStream,
    /// Serialises writers so two commands never interleave on the socket.
    write_lock: tokio::sync::Mutex<()>,
    // A std mutex: it is never held across an await.
    shared: Mutex<Shared>,
    next_id: AtomicU64,
    events: broadcast::Sender<Event>,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A panic while holding this lock cannot leave the map half-updated
        // (each operation is a single insert or remove), so poisoning is
        // ignored.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A QMP connection. Dropping it closes the socket (QEMU keeps running).
pub struct Qmp {
    inner: Arc<Inner>,
    reader: tokio::task::JoinHandle<()>,
    version: QemuVersion,
    timeout: Duration,
}

impl Drop for Qmp {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp")
            .field("version", &self.version)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Qmp {
    /// Connects to QEMU's QMP socket, reads the greeting and negotiates
    /// capabilities. `timeout` bounds the connection and, afterwards, every
    /// command (see [`Qmp::set_timeout`]).
    pub async fn connect(path: impl AsRef<Path>, timeout: Duration) -> Result<Qmp, QmpError> {
        let path = path.as_ref();
        let stream = match tokio::time::timeout(timeout, UnixStream::connect(path)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(QmpError::Connect {
                    path: path.to_path_buf(),
                    source,
                });
            }
            Err(_) => {
                return Err(QmpError::Timeout {
                    what: format!("connecting to {}", path.display()),
                    after: timeout,
                });
            }
        };
        Self::from_stream(stream, timeout).await
    }

    /// Like [`Qmp::connect`], over an already connected stream.
    pub async fn from_stream(stream: UnixStream, timeout: Duration) -> Result<Qmp, QmpError> {
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        let inner = Arc::new(Inner {
            stream,
            write_lock: tokio::sync::Mutex::new(()),
            shared: Mutex::new(Shared {
                pending: HashMap::new(),
                closed: false,
            }),
            next_id: AtomicU64::new(1),
            events,
        });
        let (greeting_tx, greeting_rx) = oneshot::channel();
        let reader = tokio::spawn(read_loop(inner.clone(), greeting_tx));
        let mut qmp = Qmp {
            inner,
            reader,
            version: QemuVersion {
                major: 0,
                minor: 0,
                micro: 0,
            },
            timeout,
        };
        let greeting = match tokio::time::timeout(timeout, greeting_rx).await {
            Ok(Ok(g)) => g?,
            Ok(Err(_)) => return Err(QmpError::Disconnected),
            Err(_) => {
                return Err(QmpError::Timeout {
                    what: "the QMP greeting".into(),
                    after: timeout,
                });
            }
        };
        qmp.version = greeting
            .pointer("/QMP/version/qemu")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| {
                QmpError::Protocol(format!("greeting without a QEMU version: {greeting}"))
            })?;
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// QEMU's version, from the greeting.
    pub fn version(&self) -> QemuVersion {
        self.version
    }

    /// The time every later command may take before [`QmpError::Timeout`].
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A stream of the events that arrive from now on.
    pub fn events(&self) -> EventStream {
        EventStream {
            rx: self.inner.events.subscribe(),
        }
    }

    /// Whether the connection is still open.
    pub fn is_connected(&self) -> bool {
        !self.inner.lock().closed
    }

    /// Runs a command and returns its `return` value.
    pub async fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        self.execute_with_fds(command, arguments, &[]).await
    }

    /// Runs a command whose message carries file descriptors (`getfd`,
    /// `add-fd`). QEMU receives its own duplicates; the caller may close
    /// its copies afterwards.
    pub async fn execute_with_fds(
        &self,
        command: &str,
        arguments: Option<Value>,
        fds: &[BorrowedFd<'_>],
    ) -> Result<Value, QmpError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut shared = self.inner.lock();
            if shared.closed {
                return Err(QmpError::Disconnected);
            }
            shared.pending.insert(id, tx);
        }
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(b'\n');
        let outcome = tokio::time::timeout(self.timeout, async {
            self.send(&bytes, fds).await?;
            rx.await.map_err(|_| QmpError::Disconnected)
        })
        .await;
        match outcome {
            Err(_) => {
                self.inner.lock().pending.remove(&id);
                Err(QmpError::Timeout {
                    what: format!("`{command}`"),
                    after: self.timeout,
                })
            }
            Ok(Err(e)) => {
                self.inner.lock().pending.remove(&id);
                Err(e)
            }
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err((class, desc)))) => Err(QmpError::Command {
                command: command.to_string(),
                class,
                desc,
            }),
        }
    }

    /// Runs a command and reads its answer as `T`.
    pub async fn execute_as<T: DeserializeOwned>(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<T, QmpError> {
        let value = self.execute(command, arguments).await?;
        serde_json::from_value(value).map_err(|e| QmpError::UnexpectedReply {
            command: command.to_string(),
            reason: e.to_string(),
        })
    }

    async fn send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), QmpError> {
        let _writer = self.inner.write_lock.lock().await;
        let stream = &self.inner.stream;
        let mut sent = 0;
        while sent < bytes.len() {
            stream.writable().await?;
            let rest = &bytes[sent..];
            let attach = sent == 0 && !fds.is_empty();
            let result = stream.try_io(Interest::WRITABLE, || {
                let iov = [std::io::IoSlice::new(rest)];
                if attach {
                    let mut space =
                        [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
                    let mut control = SendAncillaryBuffer::new(&mut space);
                    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            "too many file descriptors for one QMP command",
                        ));
                    }
                    rustix::net::sendmsg(stream.as_fd(), &iov, &mut control, SendFlags::NOSIGNAL)
                        .map_err(std::io::Error::from)
                } else {
                    rustix::net::send(stream.as_fd(), rest, SendFlags::NOSIGNAL)
                        .map_err(std::io::Error::from)
                }
            });
            match result {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    return Err(QmpError::Disconnected);
                }
                Err(e) => return Err(QmpError::Io(e)),
            }
        }
        Ok(())
    }

    /// `query-status`.
    pub async fn query_status(&self) -> Result<StatusInfo, QmpError> {
        self.execute_as("query-status", None).await
    }

    /// `query-version`.
    pub async fn query_version(&self) -> Result<QemuVersion, QmpError> {
        let value = self.execute("query-version", None).await?;
        value
            .get("qemu")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| QmpError::UnexpectedReply {
                command: "query-version".into(),
                reason: format!("no `qemu` version in {value}"),
            })
    }

    /// `stop`: pauses the vCPUs (and drains block I/O).
    pub async fn stop(&self) -> Result<(), QmpError> {
        self.execute("stop", None).await.map(drop)
    }

    /// `cont`: resumes the vCPUs.
    pub async fn cont(&self) -> Result<(), QmpError> {
        self.execute("cont", None).await.map(drop)
    }

    /// `system_powerdown`: presses the ACPI power button.
    pub async fn system_powerdown(&self) -> Result<(), QmpError> {
        self.execute("system_powerdown", None).await.map(drop)
    }

    /// `quit`: QEMU exits. The connection closing before the answer arrives
    /// counts as success.
    pub async fn quit(&self) -> Result<(), QmpError> {
        match self.execute("quit", None).await {
            Ok(_) | Err(QmpError::Disconnected) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `getfd`: hands QEMU a file descriptor under `name` (for `fd:NAME`
    /// migration URIs).
    pub async fn getfd(&self, name: &str, fd: BorrowedFd<'_>) -> Result<(), QmpError> {
        self.execute_with_fds("getfd", Some(json!({ "fdname": name })), &[fd])
            .await
            .map(drop)
    }

    /// `closefd`: forgets a descriptor given with [`Qmp::getfd`].
    pub async fn closefd(&self, name: &str) -> Result<(), QmpError> {
        self.execute("closefd", Some(json!({ "fdname": name })))
            .await
            .map(drop)
    }

    /// `add-fd`: adds a descriptor to an fd set, usable as `/dev/fdset/ID`
    /// where QEMU opens files by name (e.g. `blockdev-add`).
    pub async fn add_fd(
        &self,
        fd: BorrowedFd<'_>,
        fdset_id: Option<u64>,
        opaque: Option<&str>,
    ) -> Result<AddFdInfo, QmpError> {
        let mut args = json!({});
        if let Some(id) = fdset_id {
            args["fdset-id"] = json!(id);
        }
        if let Some(opaque) = opaque {
            args["opaque"] = json!(opaque);
        }
        let value = self.execute_with_fds("add-fd", Some(args), &[fd]).await?;
        serde_json::from_value(value).map_err(|e| QmpError::UnexpectedReply {
            command: "add-fd".into(),
            reason: e.to_string(),
        })
    }

    /// `remove-fd`: drops an fd set (QEMU closes it once unused).
    pub async fn remove_fd(&self, fdset_id: u64) -> Result<(), QmpError> {
        self.execute("remove-fd", Some(json!({ "fdset-id": fdset_id })))
            .await
            .map(drop)
    }

    /// `migrate-set-capabilities` with `(name, state)` pairs.
    pub async fn migrate_set_capabilities(&self, caps: &[(&str, bool)]) -> Result<(), QmpError> {
        let list: Vec<Value> = caps
            .iter()
            .map(|(name, state)| json!({ "capability": name, "state": state }))
            .collect();
        self.execute(
            "migrate-set-capabilities",
            Some(json!({ "capabilities": list })),
        )
        .await
        .map(drop)
    }

    /// `migrate-set-parameters` with a JSON object of parameters, e.g.
    /// `{"max-bandwidth": 1e12}`.
    pub async fn migrate_set_parameters(&self, params: Value) -> Result<(), QmpError> {
        self.execute("migrate-set-parameters", Some(params))
            .await
            .map(drop)
    }

    /// `migrate` to `uri` (`fd:NAME`, `tcp:HOST:PORT`, ...). It returns as
    /// soon as the migration started; follow it with [`Qmp::query_migrate`]
    /// or `MIGRATION` events.
    pub async fn migrate(&self, uri: &str) -> Result<(), QmpError> {
        self.execute("migrate", Some(json!({ "uri": uri })))
            .await
            .map(drop)
    }

    /// `migrate-incoming`, for a QEMU started with `-incoming defer`.
    pub async fn migrate_incoming(&self, uri: &str) -> Result<(), QmpError> {
        self.execute("migrate-incoming", Some(json!({ "uri": uri })))
            .await
            .map(drop)
    }

    /// `migrate_cancel`.
    pub async fn migrate_cancel(&self) -> Result<(), QmpError> {
        self.execute("migrate_cancel", None).await.map(drop)
    }

    /// `query-migrate`.
    pub async fn query_migrate(&self) -> Result<MigrationInfo, QmpError> {
        self.execute_as("query-migrate", None).await
    }

    /// `blockdev-add` with the node's options as JSON.
    pub async fn blockdev_add(&self, options: Value) -> Result<(), QmpError> {
        self.execute("blockdev-add", Some(options)).await.map(drop)
    }

    /// `blockdev-del`.
    pub async fn blockdev_del(&self, node_name: &str) -> Result<(), QmpError> {
        self.execute("blockdev-del", Some(json!({ "node-name": node_name })))
            .await
            .map(drop)
    }

    /// `blockdev-snapshot`: makes the (already added, backing-less) node
    /// `overlay` the new top of `node`'s chain; `node` becomes read-only.
    pub async fn blockdev_snapshot(&self, node: &str, overlay: &str) -> Result<(), QmpError> {
        self.execute(
            "blockdev-snapshot",
            Some(json!({ "node": node, "overlay": overlay })),
        )
        .await
        .map(drop)
    }
}

/// Events received after [`Qmp::events`] was called.
pub struct EventStream {
    rx: broadcast::Receiver<Event>,
}

impl EventStream {
    /// The next event, waiting at most `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Result<Event, QmpError> {
        self.next_matching(timeout, "an event", |_| true).await
    }

    /// The next event named `name`, waiting at most `timeout`.
    pub async fn wait_for(&mut self, name: &str, timeout: Duration) -> Result<Event, QmpError> {
        self.next_matching(timeout, &format!("event {name}"), |e| e.name == name)
            .await
    }

    /// The next event for which `pred` holds, waiting at most `timeout`.
    pub async fn next_matching(
        &mut self,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&Event) -> bool,
    ) -> Result<Event, QmpError> {
        let wait = async {
            loop {
                match self.rx.recv().await {
                    Ok(ev) if pred(&ev) => return Ok(ev),
                    Ok(_) => {}
                    // Missing a few unrelated events is harmless; the
                    // caller re-checks state when it matters.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(QmpError::Disconnected);
                    }
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| QmpError::Timeout {
                what: what.to_string(),
                after: timeout,
            })?
    }
}

async fn read_loop(inner: Arc<Inner>, greeting_tx: oneshot::Sender<Result<Value, QmpError>>) {
    let mut greeting_tx = Some(greeting_tx);
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let failure: Option<QmpError> = loop {
        if let Err(e) = inner.stream.readable().await {
            break Some(QmpError::Io(e));
        }
        match inner.stream.try_read(&mut chunk) {
            Ok(0) => break None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => break Some(QmpError::Io(e)),
        }
        let mut start = 0;
        let mut bad = None;
        while let Some(pos) = buf[start..].iter().position(|b| *b == b'\n') {
            let line = &buf[start..start + pos];
            start += pos + 1;
            if let Err(e) = dispatch(&inner, line, &mut greeting_tx) {
                bad = Some(e);
                break;
            }
        }
        buf.drain(..start);
        if bad.is_some() {
            break bad;
        }
        if buf.len() > MAX_LINE {
            break Some(QmpError::Protocol(format!(
                "a message longer than {MAX_LINE} bytes"
            )));
        }
    };
    let pending = {
        let mut shared = inner.lock();
        shared.closed = true;
        std::mem::take(&mut shared.pending)
    };
    // Dropping the senders wakes every waiting caller with Disconnected.
    drop(pending);
    if let Some(tx) = greeting_tx {
        let _ = tx.send(Err(failure.unwrap_or(QmpError::Disconnected)));
    }
}

/// Handles one line from QEMU. An error means the peer is not speaking QMP.
fn dispatch(
    inner: &Inner,
    line: &[u8],
    greeting_tx: &mut Option<oneshot::Sender<Result<Value, QmpError>>>,
) -> Result<(), QmpError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let msg: Value = serde_json::from_slice(line).map_err(|e| {
        QmpError::Protocol(format!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&line[..line.len().min(200)])
        ))
    })?;
    if msg.get("QMP").is_some() {
        match greeting_tx.take() {
            Some(tx) => {
                let _ = tx.send(Ok(msg));
                return Ok(());
            }
            None => return Err(QmpError::Protocol("a second greeting".into())),
        }
    }
    if greeting_tx.is_some() {
        return Err(QmpError::Protocol(format!(
            "expected the QMP greeting, got {msg}"
        )));
    }
    if let Some(name) = msg.get("event").and_then(Value::as_str) {
        let ts = msg.get("timestamp");
        let secs = ts
            .and_then(|t| t.get("seconds"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let micros = ts
            .and_then(|t| t.get("microseconds"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let event = Event {
            name: name.to_string(),
            data: msg.get("data").cloned().unwrap_or(Value::Null),
            timestamp_us: secs.saturating_mul(1_000_000).saturating_add(micros),
        };
        // No subscriber is fine: nobody is waiting for events right now.
        let _ = inner.events.send(event);
        return Ok(());
    }
    let reply: Reply = if let Some(ret) = msg.get("return") {
        Ok(ret.clone())
    } else if let Some(err) = msg.get("error") {
        let field = |k: &str| {
            err.get(k)
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string()
        };
        Err((field("class"), field("desc")))
    } else {
        return Err(QmpError::Protocol(format!("unknown message {msg}")));
    };
    // Answers without our numeric id (QEMU answers a command it could not
    // even parse without one) have no caller to go to.
    if let Some(id) = msg.get("id").and_then(Value::as_u64) {
        let tx = inner.lock().pending.remove(&id);
        if let Some(tx) = tx {
            let _ = tx.send(reply);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;

    const T: Duration = Duration::from_secs(10);

    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}"#;

    /// A scripted peer: sends the greeting, answers `qmp_capabilities`, then
    /// hands each later command line to `script`, writing what it returns.
    async fn fake_qemu(
        script: impl Fn(Value) -> Vec<String> + Send + 'static,
    ) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let (r, mut w) = sock.into_split();
            w.write_all(format!("{GREETING}\n").as_bytes())
                .await
                .unwrap();
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let cmd: Value = serde_json::from_str(&line).unwrap();
                let out = if cmd["execute"] == "qmp_capabilities" {
                    vec![json!({"return": {}, "id": cmd["id"]}).to_string()]
                } else {
                    script(cmd)
                };
                for l in out {
                    if w.write_all(format!("{l}\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        });
        (dir, path)
    }

    #[tokio::test]
    async fn answers_are_routed_by_id_and_events_broadcast() {
        let (_dir, path) = fake_qemu(|cmd| {
            // An event arrives before the answer, as QEMU may do.
            vec![
                json!({"event": "STOP", "timestamp": {"seconds": 2, "microseconds": 5}})
                    .to_string(),
                json!({"return": {"running": false, "status": "paused"}, "id": cmd["id"]})
                    .to_string(),
            ]
        })
        .await;
        let qmp = Qmp::connect(&path, T).await.unwrap();
        assert_eq!(qmp.version().to_string(), "7.2.2");
        let mut events = qmp.events();
        let status = qmp.query_status().await.unwrap();
        assert!(!status.running);
        assert_eq!(status.status, crate::RunState::Paused);
        let ev = events.wait_for("STOP", T).await.unwrap();
        assert_eq!(ev.timestamp_us, 2_000_005);
    }

    #[tokio::test]
    async fn qemu_errors_become_command_errors() {
        let (_dir, path) = fake_qemu(|cmd| {
            vec![json!({"error": {"class": "CommandNotFound", "desc": "The command frob has not been found"}, "id": cmd["id"]}).to_string()]
        })
        .await;
        let qmp = Qmp::connect(&path, T).await.unwrap();
        let err = qmp.execute("frob", None).await.unwrap_err();
        match err {
            QmpError::Command { command, class, .. } => {
                assert_eq!(command, "frob");
                assert_eq!(class, "CommandNotFound");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let (_dir, path) = fake_qemu(|_| Vec::new()).await;
        let mut qmp = Qmp::connect(&path, T).await.unwrap();
        qmp.set_timeout(Duration::from_millis(50));
        let err = qmp.query_status().await.unwrap_err();
        assert!(matches!(err, QmpError::Timeout { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_peer_without_greeting_times_out_on_connect() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let _server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(sock);
        });
        let err = Qmp::connect(&path, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(err, QmpError::Timeout { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn garbage_is_a_protocol_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let _ = sock.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let err = Qmp::connect(&path, T).await.unwrap_err();
        assert!(matches!(err, QmpError::Protocol(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_closed_connection_fails_pending_commands() {
        let (_dir, path) = fake_qemu(|_| vec!["this is not json".to_string()]).await;
        let qmp = Qmp::connect(&path, T).await.unwrap();
        let err = qmp.query_status().await.unwrap_err();
        assert!(matches!(err, QmpError::Disconnected), "{err:?}");
        assert!(!qmp.is_connected());
        assert!(matches!(
            qmp.stop().await.unwrap_err(),
            QmpError::Disconnected
        ));
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_connect_error_naming_it() {
        let err = Qmp::connect("/nonexistent/qmp.sock", T).await.unwrap_err();
        assert!(matches!(err, QmpError::Connect { .. }));
        assert!(err.to_string().contains("/nonexistent/qmp.sock"));
    }
}
