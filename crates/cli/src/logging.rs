//! Where and how `vgrid` logs: to stderr, filtered by `VGRID_LOG` (default
//! `warn`), as text for people or as one JSON object per line for log
//! collectors (`--log-format json`, `VGRID_LOG_FORMAT=json`).
//!
//! What a long-running command tells its operator (`serving https://...`)
//! and a command's final error go through [`say`] and [`fatal`]: plain
//! lines in text, log events in JSON, so that a JSON stderr holds nothing
//! but JSON.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

/// The shape of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text; in colour only when stderr is a terminal.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`
    /// (with `message`).
    Json,
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The target of [`say`] and [`fatal`]: shown whatever `VGRID_LOG` says.
const STATUS: &str = "vgrid::status";

/// Installs the global subscriber; call once, first thing.
pub fn init(format: LogFormat) {
    let _ = FORMAT.set(format);
    let filter = EnvFilter::try_from_env("VGRID_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr);
    match format {
        // Colour only for a person: logs in files stay plain text.
        LogFormat::Text => builder
            .with_env_filter(filter)
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
        LogFormat::Json => {
            let filter = match format!("{STATUS}=info").parse() {
                Ok(directive) => filter.add_directive(directive),
                Err(_) => filter,
            };
            builder
                .with_env_filter(filter)
                .json()
                .with_ansi(false)
                .init()
        }
    }
}

fn json() -> bool {
    FORMAT.get() == Some(&LogFormat::Json)
}

/// Tells the operator something (`vgrid: serving ...` in text).
pub fn say(message: &str) {
    if json() {
        tracing::info!(target: STATUS, "{message}");
    } else {
        eprintln!("vgrid: {message}");
    }
}

/// The error a command ends with (`vgrid: error: ...` in text).
pub fn fatal(error: &anyhow::Error) {
    if json() {
        tracing::error!(target: STATUS, "{error:#}");
    } else {
        eprintln!("vgrid: error: {error:#}");
    }
}
