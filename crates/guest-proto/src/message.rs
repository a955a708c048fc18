//! The messages inside frames.
//!
//! Guest -> host, on the port `org.vgrid.out` ([`GuestMessage`]):
//!
//! | kind | message | payload |
//! |---|---|---|
//! | 1 | `Hello` | JSON `{"protocol":1,"agent_version":"0.1.0"}` |
//! | 2 | `Log` | JSON `{"message":"..."}`: an agent progress line |
//! | 3 | `Started` | JSON `{"pid":123}`: the command is running |
//! | 4 | `Stdout` | raw bytes of the command's standard output |
//! | 5 | `Stderr` | raw bytes of the command's standard error |
//! | 6 | `Exited` | JSON `{"code":0,"signal":null}` |
//! | 7 | `AgentError` | JSON `{"message":"..."}` |
//! | 8 | `Staging` | JSON `{"phase":"in","path":"a.txt","bytes":12}` |
//! | 9 | `Pong` | JSON `{"id":7}` |
//! | 10 | `RunStarted` | JSON `{"run":5,"pid":123}`: run 5's command is running |
//! | 11 | `RunExited` | JSON `{"run":5,"code":0,"signal":null,"error":null}`: run 5 ended; its outputs are staged out |
//!
//! Host -> guest, on the port `org.vgrid.ctl` ([`HostMessage`]):
//!
//! | kind | message | payload |
//! |---|---|---|
//! | 65 | `Stop` | JSON `{"grace_secs":10}`: SIGTERM the command, SIGKILL after the grace period, then stage out and power off |
//! | 66 | `Ping` | JSON `{"id":7}`: the agent answers `Pong` with the same id |
//! | 67 | `SetClock` | JSON `{"unix_ms":1767225600000}`: set the guest's wall clock (after a restore or migration the guest's clock lags by the time it was stopped) |
//! | 68 | `Run` | JSON [`RunRequest`](crate::RunRequest) `{"id":5,"argv":["true"],"env":{},"user":null,"workdir":null,"staging":null}`: run a command in a VM kept running |
//!
//! Order of a run: `Hello`, `Log`s, `Staging` (in), `Started`, output,
//! `Staging` (out), `Exited`, then the VM powers off: the host may copy the
//! outputs away as soon as it reads `Exited`. The outcome of a run is
//! its `Exited` message. When the agent cannot set up the job (bad context,
//! a mount that fails) it sends `AgentError` and powers off without
//! `Exited`; when the command cannot be executed it sends `AgentError` and
//! `Exited` with code 127. A failure to stage outputs out is an
//! `AgentError` before `Exited`. Unknown kinds are reported as
//! [`MessageError::UnknownKind`] so that a reader can skip them.
//!
//! A VM started with `keep` in its context does not power off after its
//! command: each task (the context's own command first, as run `run`,
//! then every `Run` the host sends) goes `Staging` (in), `RunStarted`,
//! output, `Staging` (out), `RunExited`. Runs execute one at a time in the
//! order they arrived, so the output frames between `RunStarted` and
//! `RunExited` of a run are that run's. `RunExited` comes last, after the
//! outputs are staged out; its `error` is set when the agent could not set
//! the run up (stage in, bad request) or stage its outputs out, and then
//! `code` may be absent. A command that cannot be executed ends with code
//! 127 as above. The VM powers off only when the host sends `Stop`.

use serde::{Deserialize, Serialize};

use crate::context::RunRequest;
use crate::frame::{Frame, MAX_PAYLOAD, encode_into};

/// A frame that is not a message this side understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("message kind {kind}: bad payload: {reason}")]
    BadPayload { kind: u8, reason: String },
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code, when the command exited.
    pub code: Option<i32>,
    /// The signal number, when a signal killed the command.
    pub signal: Option<i32>,
}

impl ExitStatus {
    /// The status as a shell reports it: the code, or 128 + the signal.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => 255,
        }
    }

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Which way files are being staged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StagingPhase {
    In,
    Out,
}

/// A message from the guest agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestMessage {
    Hello {
        protocol: u32,
        agent_version: String,
    },
    Log {
        message: String,
    },
    Started {
        pid: u32,
    },
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exited(ExitStatus),
    AgentError {
        message: String,
    },
    /// One file (or directory tree) copied, with its size in bytes.
    Staging {
        phase: StagingPhase,
        path: String,
        bytes: u64,
    },
    Pong {
        id: u64,
    },
    /// The command of run `run` (a VM kept running) started.
    RunStarted {
        run: u64,
        pid: u32,
    },
    /// Run `run` ended: its command's status, and what went wrong around it.
    RunExited {
        run: u64,
        status: ExitStatus,
        /// Set when the run could not be set up or its outputs staged out.
        error: Option<String>,
    },
}

/// A message from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMessage {
    Stop {
        grace_secs: u32,
    },
    Ping {
        id: u64,
    },
    /// Milliseconds since the Unix epoch.
    SetClock {
        unix_ms: u64,
    },
    /// A task for a VM kept running.
    Run(RunRequest),
}

mod kind {
    pub const HELLO: u8 = 1;
    pub const LOG: u8 = 2;
    pub const STARTED: u8 = 3;
    pub const STDOUT: u8 = 4;
    pub const STDERR: u8 = 5;
    pub const EXITED: u8 = 6;
    pub const AGENT_ERROR: u8 = 7;
    pub const STAGING: u8 = 8;
    pub const PONG: u8 = 9;
    pub const RUN_STARTED: u8 = 10;
    pub const RUN_EXITED: u8 = 11;
    pub const STOP: u8 = 65;
    pub const PING: u8 = 66;
    pub const SET_CLOCK: u8 = 67;
    pub const RUN: u8 = 68;
}

#[derive(Serialize, Deserialize)]
struct HelloBody {
    protocol: u32,
    agent_version: String,
}
#[derive(Serialize, Deserialize)]
struct MessageBody {
    message: String,
}
#[derive(Serialize, Deserialize)]
struct PidBody {
    pid: u32,
}
#[derive(Serialize, Deserialize)]
struct StagingBody {
    phase: StagingPhase,
    path: String,
    bytes: u64,
}
#[derive(Serialize, Deserialize)]
struct IdBody {
    id: u64,
}
#[derive(Serialize, Deserialize)]
struct ClockBody {
    unix_ms: u64,
}
#[derive(Serialize, Deserialize)]
struct StopBody {
    grace_secs: u32,
}
#[derive(Serialize, Deserialize)]
struct RunStartedBody {
    run: u64,
    pid: u32,
}
#[derive(Serialize, Deserialize)]
struct RunExitedBody {
    run: u64,
    code: Option<i32>,
    signal: Option<i32>,
    #[serde(default)]
    error: Option<String>,
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn parse<'a, T: Deserialize<'a>>(kind: u8, payload: &'a [u8]) -> Result<T, MessageError> {
    serde_json::from_slice(payload).map_err(|e| MessageError::BadPayload {
        kind,
        reason: e.to_string(),
    })
}

/// Longest text carried in a `Log` or `AgentError`, so a frame stays small.
const MAX_TEXT: usize = 64 * 1024;

fn clip(text: &str) -> String {
    if text.len() <= MAX_TEXT {
        return text.to_string();
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

impl GuestMessage {
    /// Appends the message's frame(s) to `out`. Output longer than one
    /// frame's payload is split into several frames of the same kind.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            GuestMessage::Stdout(bytes) | GuestMessage::Stderr(bytes) => {
                let k = if matches!(self, GuestMessage::Stdout(_)) {
                    kind::STDOUT
                } else {
                    kind::STDERR
                };
                if bytes.is_empty() {
                    encode_into(k, bytes, out);
                }
                for chunk in bytes.chunks(MAX_PAYLOAD) {
                    encode_into(k, chunk, out);
                }
            }
            GuestMessage::Hello {
                protocol,
                agent_version,
            } => encode_into(
                kind::HELLO,
                &json(&HelloBody {
                    protocol: *protocol,
                    agent_version: agent_version.clone(),
                }),
                out,
            ),
            GuestMessage::Log { message } => encode_into(
                kind::LOG,
                &json(&MessageBody {
                    message: clip(message),
                }),
                out,
            ),
            GuestMessage::Started { pid } => {
                encode_into(kind::STARTED, &json(&PidBody { pid: *pid }), out)
            }
            GuestMessage::Exited(status) => encode_into(kind::EXITED, &json(status), out),
            GuestMessage::AgentError { message } => encode_into(
                kind::AGENT_ERROR,
                &json(&MessageBody {
                    message: clip(message),
                }),
                out,
            ),
            GuestMessage::Staging { phase, path, bytes } => encode_into(
                kind::STAGING,
                &json(&StagingBody {
                    phase: *phase,
                    path: clip(path),
                    bytes: *bytes,
                }),
                out,
            ),
            GuestMessage::Pong { id } => encode_into(kind::PONG, &json(&IdBody { id: *id }), out),
            GuestMessage::RunStarted { run, pid } => encode_into(
                kind::RUN_STARTED,
                &json(&RunStartedBody {
                    run: *run,
                    pid: *pid,
                }),
                out,
            ),
            GuestMessage::RunExited { run, status, error } => encode_into(
                kind::RUN_EXITED,
                &json(&RunExitedBody {
                    run: *run,
                    code: status.code,
                    signal: status.signal,
                    error: error.as_deref().map(clip),
                }),
                out,
            ),
        }
    }

    /// The message's bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Reads a message from a decoded frame.
    pub fn from_frame(frame: &Frame) -> Result<Self, MessageError> {
        let k = frame.kind;
        let p = &frame.payload;
        Ok(match k {
            kind::HELLO => {
                let b: HelloBody = parse(k, p)?;
                GuestMessage::Hello {
                    protocol: b.protocol,
                    agent_version: b.agent_version,
                }
            }
            kind::LOG => GuestMessage::Log {
                message: parse::<MessageBody>(k, p)?.message,
            },
            kind::STARTED => GuestMessage::Started {
                pid: parse::<PidBody>(k, p)?.pid,
            },
            kind::STDOUT => GuestMessage::Stdout(p.clone()),
            kind::STDERR => GuestMessage::Stderr(p.clone()),
            kind::EXITED => GuestMessage::Exited(parse(k, p)?),
            kind::AGENT_ERROR => GuestMessage::AgentError {
                message: parse::<MessageBody>(k, p)?.message,
            },
            kind::STAGING => {
                let b: StagingBody = parse(k, p)?;
                GuestMessage::Staging {
                    phase: b.phase,
                    path: b.path,
                    bytes: b.bytes,
                }
            }
            kind::PONG => GuestMessage::Pong {
                id: parse::<IdBody>(k, p)?.id,
            },
            kind::RUN_STARTED => {
                let b: RunStartedBody = parse(k, p)?;
                GuestMessage::RunStarted {
                    run: b.run,
                    pid: b.pid,
                }
            }
            kind::RUN_EXITED => {
                let b: RunExitedBody = parse(k, p)?;
                GuestMessage::RunExited {
                    run: b.run,
                    status: ExitStatus {
                        code: b.code,
                        signal: b.signal,
                    },
                    error: b.error,
                }
            }
            other => return Err(MessageError::UnknownKind(other)),
        })
    }
}

impl HostMessage {
    /// The message's bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            HostMessage::Stop { grace_secs } => encode_into(
                kind::STOP,
                &json(&StopBody {
                    grace_secs: *grace_secs,
                }),
                &mut out,
            ),
            HostMessage::Ping { id } => {
                encode_into(kind::PING, &json(&IdBody { id: *id }), &mut out)
            }
            HostMessage::SetClock { unix_ms } => encode_into(
                kind::SET_CLOCK,
                &json(&ClockBody { unix_ms: *unix_ms }),
                &mut out,
            ),
            HostMessage::Run(req) => encode_into(kind::RUN, &json(req), &mut out),
        }
        out
    }

    /// Reads a message from a decoded frame.
    pub fn from_frame(frame: &Frame) -> Result<Self, MessageError> {
        let k = frame.kind;
        let p = &frame.payload;
        Ok(match k {
            kind::STOP => HostMessage::Stop {
                grace_secs: parse::<StopBody>(k, p)?.grace_secs,
            },
            kind::SET_CLOCK => HostMessage::SetClock {
                unix_ms: parse::<ClockBody>(k, p)?.unix_ms,
            },
            kind::PING => HostMessage::Ping {
                id: parse::<IdBody>(k, p)?.id,
            },
            kind::RUN => HostMessage::Run(parse(k, p)?),
            other => return Err(MessageError::UnknownKind(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameDecoder;

    fn decode_guest(bytes: &[u8]) -> Vec<GuestMessage> {
        let mut dec = FrameDecoder::new();
        dec.push(bytes);
        let mut out = Vec::new();
        while let Ok(Some(frame)) = dec.next_frame() {
            out.push(GuestMessage::from_frame(&frame).expect("known message"));
        }
        out
    }

    #[test]
    fn guest_messages_round_trip() {
        let msgs = vec![
            GuestMessage::Hello {
                protocol: 1,
                agent_version: "0.1.0".into(),
            },
            GuestMessage::Log {
                message: "network up".into(),
            },
            GuestMessage::Started { pid: 42 },
            GuestMessage::Stdout(b"hello\n".to_vec()),
            GuestMessage::Stderr(vec![0xff, 0, 1]),
            GuestMessage::Exited(ExitStatus {
                code: None,
                signal: Some(15),
            }),
            GuestMessage::AgentError {
                message: "mount failed".into(),
            },
            GuestMessage::Staging {
                phase: StagingPhase::Out,
                path: "out.txt".into(),
                bytes: 12,
            },
            GuestMessage::Pong { id: 9 },
            GuestMessage::RunStarted { run: 5, pid: 77 },
            GuestMessage::RunExited {
                run: 5,
                status: ExitStatus {
                    code: Some(2),
                    signal: None,
                },
                error: None,
            },
            GuestMessage::RunExited {
                run: 6,
                status: ExitStatus {
                    code: None,
                    signal: None,
                },
                error: Some("staging input `a` in: no such file".into()),
            },
        ];
        let mut bytes = Vec::new();
        for m in &msgs {
            m.encode_into(&mut bytes);
        }
        assert_eq!(decode_guest(&bytes), msgs);
    }

    #[test]
    fn host_messages_round_trip() {
        for m in [
            HostMessage::Stop { grace_secs: 10 },
            HostMessage::Ping { id: 3 },
            HostMessage::SetClock {
                unix_ms: 1_767_225_600_000,
            },
            HostMessage::Run(RunRequest::new(5, vec!["true".into()])),
            HostMessage::Run(RunRequest {
                env: [("A".to_string(), "b".to_string())].into(),
                user: Some(crate::User {
                    name: "alice".into(),
                    uid: Some(1001),
                    gid: None,
                }),
                workdir: Some("/work/x".into()),
                staging: Some(crate::Staging {
                    tag: "stage".into(),
                    inputs: vec!["in.txt".into()],
                    outputs: vec![],
                }),
                ..RunRequest::new(u64::MAX, vec!["sh".into(), "-c".into(), "echo".into()])
            }),
        ] {
            let mut dec = FrameDecoder::new();
            dec.push(&m.encode());
            let frame = dec.next_frame().unwrap().unwrap();
            assert_eq!(HostMessage::from_frame(&frame), Ok(m));
        }
    }

    #[test]
    fn long_output_is_split_into_several_frames() {
        let big = vec![7u8; MAX_PAYLOAD * 2 + 5];
        let msgs = decode_guest(&GuestMessage::Stdout(big.clone()).encode());
        assert_eq!(msgs.len(), 3);
        let joined: Vec<u8> = msgs
            .into_iter()
            .flat_map(|m| match m {
                GuestMessage::Stdout(b) => b,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(joined, big);
    }

    #[test]
    fn bad_payloads_and_unknown_kinds_are_errors() {
        let frame = Frame {
            kind: kind::EXITED,
            payload: b"{not json".to_vec(),
        };
        assert!(matches!(
            GuestMessage::from_frame(&frame),
            Err(MessageError::BadPayload { kind: 6, .. })
        ));
        let frame = Frame {
            kind: 200,
            payload: vec![],
        };
        assert_eq!(
            GuestMessage::from_frame(&frame),
            Err(MessageError::UnknownKind(200))
        );
        let stop_on_wrong_port = Frame {
            kind: kind::STOP,
            payload: b"{\"grace_secs\":1}".to_vec(),
        };
        assert!(GuestMessage::from_frame(&stop_on_wrong_port).is_err());
    }

    #[test]
    fn a_run_exit_without_error_field_reads_as_none() {
        let frame = Frame {
            kind: kind::RUN_EXITED,
            payload: br#"{"run":3,"code":0,"signal":null}"#.to_vec(),
        };
        assert_eq!(
            GuestMessage::from_frame(&frame),
            Ok(GuestMessage::RunExited {
                run: 3,
                status: ExitStatus {
                    code: Some(0),
                    signal: None
                },
                error: None
            })
        );
        let bad_run = Frame {
            kind: kind::RUN,
            payload: br#"{"id":"x","argv":[]}"#.to_vec(),
        };
        assert!(matches!(
            HostMessage::from_frame(&bad_run),
            Err(MessageError::BadPayload { kind: 68, .. })
        ));
    }

    #[test]
    fn any_kind_with_any_payload_decodes_or_errs_without_panicking() {
        // A small deterministic generator (xorshift) instead of a property
        // testing crate: every kind, payloads of JSON-ish and random bytes.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let samples: [&[u8]; 6] = [
            b"",
            b"{}",
            b"null",
            br#"{"run":1}"#,
            br#"{"id":1,"argv":[""],"env":{"A=":"\u0000"}}"#,
            br#"{"run":18446744073709551615,"pid":4294967295,"code":-1,"signal":9,"error":""}"#,
        ];
        for kind in 0..=255u8 {
            for payload in samples {
                let frame = Frame {
                    kind,
                    payload: payload.to_vec(),
                };
                let _ = GuestMessage::from_frame(&frame);
                let _ = HostMessage::from_frame(&frame);
            }
            for _ in 0..20 {
                let len = (next() % 64) as usize;
                let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let frame = Frame { kind, payload };
                let _ = GuestMessage::from_frame(&frame);
                let _ = HostMessage::from_frame(&frame);
            }
        }
    }

    #[test]
    fn exit_status_maps_to_shell_codes() {
        let exited = ExitStatus {
            code: Some(3),
            signal: None,
        };
        let killed = ExitStatus {
            code: None,
            signal: Some(9),
        };
        assert_eq!(exited.shell_code(), 3);
        assert_eq!(killed.shell_code(), 137);
        assert!(!killed.success());
    }

    #[test]
    fn long_log_text_is_clipped_on_a_char_boundary() {
        let text = "é".repeat(MAX_TEXT);
        let msgs = decode_guest(&GuestMessage::Log { message: text }.encode());
        match &msgs[0] {
            GuestMessage::Log { message } => assert!(message.len() <= MAX_TEXT + 3),
            other => panic!("unexpected {other:?}"),
        }
    }
}
