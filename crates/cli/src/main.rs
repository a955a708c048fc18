//! The `vgrid` command. Each subcommand lives in its own module; this file
//! only parses the command line and dispatches.

mod agent_cmd;
mod config;
mod connect;
mod credentials;
mod data_cmd;
mod data_dir;
mod docs_cmd;
mod exit;
mod image_cmd;
mod jobs_cmd;
mod logging;
mod nodes_cmd;
mod serve_cmd;
mod sim_cmd;
mod users_cmd;
mod vm_cmd;
mod waits;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Run batch jobs and services inside QEMU virtual machines.
///
/// vgrid runs batch jobs and on-demand services inside QEMU virtual
/// machines on a pool of nodes. `vgrid serve` starts the controller (an
/// HTTPS API with tokens, its state in SQLite, the scheduler) with a node
/// agent on the same machine; `vgrid agent` adds nodes. A job is a TOML job
/// file (docs/jobs.md): submit it, follow it with `ps`, `show`, `logs` and
/// `wait`, control it with `cancel`, `hold`, `release`, `suspend`,
/// `resume`, `checkpoint` and `migrate`. `vgrid sim` replays a workload
/// trace through the same scheduling core.
#[derive(Parser)]
#[command(
    name = "vgrid",
    version,
    after_help = "Examples and exit codes: vgrid --help",
    after_long_help = after_long_help()
)]
struct Cli {
    /// How log lines on stderr look: `text` (colour only on a terminal)
    /// or `json` (one object per line). Which lines: `VGRID_LOG`.
    #[arg(
        long,
        global = true,
        env = "VGRID_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a workload trace (SWF) through the scheduling core.
    Sim(sim_cmd::SimArgs),
    /// Build, import, list and remove guest images.
    #[command(subcommand)]
    Image(image_cmd::ImageCmd),
    /// Node-local VM commands (for administrators and tests).
    #[command(subcommand)]
    Vm(vm_cmd::VmCmd),
    /// Run the embedded server: controller, HTTP API and a local node agent.
    Serve(serve_cmd::ServeArgs),
    /// Run a node agent for a controller.
    Agent(agent_cmd::AgentArgs),
    /// Submit a job file (uploading its inputs); prints the job id.
    Submit(jobs_cmd::SubmitArgs),
    /// List jobs, filtered by state or user, as a table, columns or JSON.
    Ps(jobs_cmd::PsArgs),
    /// Show a job and its state history.
    Show(jobs_cmd::ShowArgs),
    /// Print a job's output, byte for byte as the job wrote it (so no
    /// --json: `vgrid show --json` describes the job).
    Logs(jobs_cmd::LogsArgs),
    /// Fetch a job's outputs (the files its job file names) to a directory.
    Output(data_cmd::OutputArgs),
    /// Wait for a job to end; exits with its exit status (see "Exit
    /// codes" in `vgrid --help`).
    Wait(jobs_cmd::WaitArgs),
    /// Cancel jobs.
    Cancel(jobs_cmd::IdsArgs),
    /// Keep waiting jobs from starting.
    Hold(jobs_cmd::IdsArgs),
    /// Let held jobs start.
    Release(jobs_cmd::IdsArgs),
    /// Pause running jobs' VMs.
    Suspend(jobs_cmd::IdsArgs),
    /// Continue suspended jobs.
    Resume(jobs_cmd::IdsArgs),
    /// Take a checkpoint of running jobs now.
    Checkpoint(jobs_cmd::IdsArgs),
    /// Move a job to another node (a running one through a checkpoint).
    Migrate(jobs_cmd::MigrateArgs),
    /// List nodes.
    Nodes(nodes_cmd::NodesArgs),
    /// Manage users (admin).
    #[command(subcommand)]
    Users(users_cmd::UsersCmd),
    /// Keep a credentials file (from `vgrid users add NAME --credentials
    /// FILE`) as yours: later commands use it to reach the controller.
    Login(users_cmd::LoginArgs),
    /// Print the shell completion script of a shell (bash, zsh, fish...).
    Completions(docs_cmd::CompletionsArgs),
    /// Write the man pages into a directory (for packaging).
    #[command(hide = true)]
    Man(docs_cmd::ManArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    if cli.command.only_prints() {
        die_quietly_on_closed_stdout();
    }
    let result = match cli.command {
        Command::Sim(args) => sim_cmd::run(args),
        Command::Image(cmd) => image_cmd::run(cmd),
        Command::Vm(cmd) => vm_cmd::run(cmd),
        Command::Serve(args) => serve_cmd::run(args),
        Command::Agent(args) => agent_cmd::run(args),
        Command::Submit(args) => jobs_cmd::submit(args),
        Command::Ps(args) => jobs_cmd::ps(args),
        Command::Show(args) => jobs_cmd::show(args),
        Command::Logs(args) => jobs_cmd::logs(args),
        Command::Output(args) => data_cmd::output(args),
        Command::Wait(args) => jobs_cmd::wait(args),
        Command::Cancel(args) => jobs_cmd::control("cancel", args),
        Command::Hold(args) => jobs_cmd::control("hold", args),
        Command::Release(args) => jobs_cmd::control("release", args),
        Command::Suspend(args) => jobs_cmd::control("suspend", args),
        Command::Resume(args) => jobs_cmd::control("resume", args),
        Command::Checkpoint(args) => jobs_cmd::control("checkpoint", args),
        Command::Migrate(args) => jobs_cmd::migrate(args),
        Command::Nodes(args) => nodes_cmd::run(args),
        Command::Users(cmd) => users_cmd::run(cmd),
        Command::Login(args) => users_cmd::login(args),
        Command::Completions(args) => docs_cmd::completions(Cli::command(), args),
        Command::Man(args) => docs_cmd::man(Cli::command(), args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            logging::fatal(&err);
            exit::Exit::of(&err).into()
        }
    }
}

/// `vgrid --help`'s end: examples, then the exit codes.
fn after_long_help() -> String {
    format!(
        "\
Examples:
  vgrid serve &                          # controller and a local node
  vgrid submit examples/hello.toml       # prints the job id
  vgrid ps --state pending,running       # your waiting and running jobs
  vgrid ps --format id,state,name        # chosen columns, no header
  vgrid show 1 --json                    # a job and its history as JSON
  vgrid logs -f 1                        # its output as it comes
  vgrid wait 1 && echo ok                # exits with the job's status
  vgrid cancel 3 4 5                     # several jobs at once

{}",
        exit::TABLE
    )
}

impl Command {
    /// Commands that only talk to the API or read files and print: like
    /// other Unix tools, they may simply end when their reader goes away
    /// (`vgrid show 1 | grep -m1 state`). The commands that run VMs, pipe
    /// QEMU's streams or serve are left alone: for them a closed pipe must
    /// stay an error they handle.
    fn only_prints(&self) -> bool {
        matches!(
            self,
            Command::Sim(_)
                | Command::Submit(_)
                | Command::Ps(_)
                | Command::Show(_)
                | Command::Logs(_)
                | Command::Wait(_)
                | Command::Cancel(_)
                | Command::Hold(_)
                | Command::Release(_)
                | Command::Suspend(_)
                | Command::Resume(_)
                | Command::Checkpoint(_)
                | Command::Migrate(_)
                | Command::Nodes(_)
                | Command::Users(_)
                | Command::Login(_)
                | Command::Completions(_)
        )
    }
}

/// Restores the default action of SIGPIPE (end the process), which the
/// Rust runtime sets to "ignore" so that a write to a closed pipe returns
/// an error; `println!` turns that error into a panic. Sockets are not
/// affected (the standard library sends with `MSG_NOSIGNAL`).
fn die_quietly_on_closed_stdout() {
    // SAFETY: called at the start of `main`, before any thread exists;
    // SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
