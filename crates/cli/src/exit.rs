//! The exit codes of `vgrid`, defined once: a script tells "the job file is
//! wrong" from "the controller is down" without reading messages. The
//! numbers follow BSD's sysexits.h where one fits, so that they mean the
//! same as in mail and network tools; 1 and 2 are what Slurm and clap use.

use std::process::ExitCode;

use vgrid_client::{ClientError, ErrorKind};

/// Why `vgrid` ended. The table in [`TABLE`] is printed by `vgrid --help`
/// and copied in docs/api.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// It worked.
    Ok = 0,
    /// Any failure without a code of its own (a local file that cannot be
    /// written, say).
    Failure = 1,
    /// The command line is wrong (clap's own code).
    Usage = 2,
    /// The input was refused: a job file (checked here or by the
    /// controller), a parameter, a body too large (HTTP 400, 413).
    InvalidInput = 65,
    /// The job, node, image or file named does not exist, or is not yours
    /// (HTTP 404).
    NotFound = 66,
    /// The controller cannot be reached: connection refused, TLS failure,
    /// timeout.
    Unreachable = 69,
    /// The controller failed or cannot serve now (HTTP 5xx).
    ServerError = 70,
    /// The thing's state does not allow it now, e.g. cancelling a job that
    /// has ended (HTTP 409).
    Conflict = 75,
    /// The controller answered something this client does not understand.
    Protocol = 76,
    /// The token is missing or wrong, or may not do this (HTTP 401, 403).
    Forbidden = 77,
    /// The client's settings are unusable (a bad `VGRID_URL`).
    Config = 78,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

impl Exit {
    /// The code for a failed API call.
    pub fn of_client(e: &ClientError) -> Exit {
        match e.kind() {
            ErrorKind::Unreachable => Exit::Unreachable,
            ErrorKind::InvalidInput => Exit::InvalidInput,
            ErrorKind::NotFound => Exit::NotFound,
            ErrorKind::Forbidden => Exit::Forbidden,
            ErrorKind::Conflict => Exit::Conflict,
            ErrorKind::Server => Exit::ServerError,
            ErrorKind::Protocol => Exit::Protocol,
            ErrorKind::Config => Exit::Config,
            ErrorKind::Other => Exit::Failure,
        }
    }

    /// The code for any error a command returned: the first cause in its
    /// chain that has a code of its own decides.
    pub fn of(err: &anyhow::Error) -> Exit {
        for cause in err.chain() {
            if let Some(e) = cause.downcast_ref::<ClientError>() {
                return Exit::of_client(e);
            }
            if let Some(e) = cause.downcast_ref::<vgrid_jobfile::JobFileError>() {
                return match e {
                    vgrid_jobfile::JobFileError::Invalid(_) => Exit::InvalidInput,
                    vgrid_jobfile::JobFileError::Read { source, .. } => Exit::of_io(source),
                };
            }
            if let Some(e) = cause.downcast_ref::<std::io::Error>() {
                return Exit::of_io(e);
            }
        }
        Exit::Failure
    }

    /// A missing local file is "not found" like a missing job; other I/O
    /// failures have no code of their own.
    fn of_io(e: &std::io::Error) -> Exit {
        match e.kind() {
            std::io::ErrorKind::NotFound => Exit::NotFound,
            _ => Exit::Failure,
        }
    }

    /// The code shared by several failures (`cancel 3 4 5`): theirs when
    /// they agree, else the generic failure.
    pub fn common(codes: impl IntoIterator<Item = Exit>) -> Exit {
        let mut codes = codes.into_iter();
        let Some(first) = codes.next() else {
            return Exit::Ok;
        };
        if codes.all(|c| c == first) {
            first
        } else {
            Exit::Failure
        }
    }
}

/// The table for `vgrid --help` (and docs/api.md, which a test keeps in
/// step with it).
pub const TABLE: &str = "\
Exit codes:
   0  success
   1  failure without a code of its own
   2  usage: the command line is wrong
  65  invalid input: a job file or parameter refused (HTTP 400, 413)
  66  not found: no such job, node, image or file, or not yours (HTTP 404)
  69  unreachable: connection refused, TLS failure or timeout
  70  controller error (HTTP 5xx)
  75  conflict: the job's state does not allow it now (HTTP 409)
  76  protocol: an answer this vgrid does not understand
  77  forbidden: token missing or wrong, or not allowed (HTTP 401, 403)
  78  configuration: unusable client settings (a bad VGRID_URL)
`vgrid wait` exits with the job's own status once the job has ended (1 when
it ended without one); the codes above only when it could not wait.
Several ids (`vgrid cancel 3 4 5`): every id is tried; the exit code is the
failures' code when they share one, else 1.";

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> ClientError {
        ClientError::Api {
            status,
            body: Box::new(vgrid_api::types::ErrorBody {
                error: "x".into(),
                message: "x".into(),
                diagnostic: None,
            }),
        }
    }

    #[test]
    fn http_statuses_map_to_their_codes() {
        for (status, exit) in [
            (400, Exit::InvalidInput),
            (413, Exit::InvalidInput),
            (401, Exit::Forbidden),
            (403, Exit::Forbidden),
            (404, Exit::NotFound),
            (409, Exit::Conflict),
            (500, Exit::ServerError),
            (503, Exit::ServerError),
            (418, Exit::Failure),
        ] {
            assert_eq!(Exit::of_client(&api(status)), exit, "{status}");
            // Through anyhow, with context on top, as commands return it.
            let err = anyhow::Error::new(api(status)).context("while doing x");
            assert_eq!(Exit::of(&err), exit, "{status}");
        }
    }

    #[test]
    fn a_refused_job_file_is_invalid_input_and_a_missing_one_not_found() {
        let refused = vgrid_jobfile::parse("j.toml", "image = 1\n").expect_err("refused");
        assert_eq!(Exit::of(&refused.into()), Exit::InvalidInput);
        let missing = std::fs::read("/nonexistent/vgrid-job.toml").expect_err("absent");
        let err = anyhow::Error::new(missing).context("cannot read job file");
        assert_eq!(Exit::of(&err), Exit::NotFound);
        assert_eq!(Exit::of(&anyhow::anyhow!("plain")), Exit::Failure);
    }

    #[test]
    fn several_failures_share_a_code_only_when_they_agree() {
        assert_eq!(Exit::common([]), Exit::Ok);
        assert_eq!(
            Exit::common([Exit::NotFound, Exit::NotFound]),
            Exit::NotFound
        );
        assert_eq!(
            Exit::common([Exit::NotFound, Exit::Conflict]),
            Exit::Failure
        );
    }

    /// Every code in the enum is in the help table, and the table says
    /// nothing of a code that does not exist.
    #[test]
    fn the_help_table_lists_every_code() {
        let all = [
            Exit::Ok,
            Exit::Failure,
            Exit::Usage,
            Exit::InvalidInput,
            Exit::NotFound,
            Exit::Unreachable,
            Exit::ServerError,
            Exit::Conflict,
            Exit::Protocol,
            Exit::Forbidden,
            Exit::Config,
        ];
        let listed: Vec<u8> = TABLE
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        let codes: Vec<u8> = all.iter().map(|e| *e as u8).collect();
        assert_eq!(listed, codes);
    }

    /// docs/api.md shows the same table as `vgrid --help`.
    #[test]
    fn the_docs_show_the_help_table() {
        let doc = include_str!("../../../docs/api.md");
        for line in TABLE.lines().take_while(|l| !l.starts_with('`')) {
            assert!(doc.contains(line), "docs/api.md lacks `{line}`");
        }
    }
}
