//! The one command enum that every transport emits. The HTTP server parses
//! requests into a [`Command`] and hands it to a [`Backend`] (the
//! controller); no HTTP type goes further in.

use std::future::Future;

use vgrid_model::JobSpec;

use vgrid_api::types::{
    ActionEnvelope, AddUserResponse, AgentReport, JobDetail, JobView, JoinRequest, JoinResponse,
    NodeImages, NodeView, Principal, RegisterNode, RegisterResponse, Role, UserView, WaitResponse,
};

/// A request to the controller, on behalf of a [`Principal`].
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Submit {
        spec: Box<JobSpec>,
        hold: bool,
        /// A client's key for safe retries (see
        /// [`vgrid_api::types::IDEMPOTENCY_KEY_HEADER`]).
        idempotency_key: Option<String>,
    },
    ListJobs {
        all: bool,
        /// Only this user's jobs: anyone's for an admin, a user's own
        /// otherwise.
        user: Option<String>,
    },
    ShowJob {
        id: u64,
    },
    /// Answers once the job has ended, or when `wait_ms` has passed.
    WaitJob {
        id: u64,
        wait_ms: u64,
    },
    Cancel {
        id: u64,
    },
    Hold {
        id: u64,
    },
    Release {
        id: u64,
    },
    Suspend {
        id: u64,
    },
    Resume {
        id: u64,
    },
    Checkpoint {
        id: u64,
    },
    Migrate {
        id: u64,
        to: Option<String>,
    },
    ListNodes,
    /// Counters and gauges in the Prometheus text format (admin).
    Metrics,
    AddUser {
        name: String,
        role: Role,
    },
    /// Users and their roles, never their tokens (admin).
    ListUsers,
    /// Removes a user who has no job left that has not ended (admin).
    RemoveUser {
        name: String,
    },
    /// Gives the user a new token; the old one stops working (admin, or
    /// the user for their own).
    RotateToken {
        name: String,
    },
    /// The user's token stops working; none works until a rotation
    /// (admin).
    RevokeToken {
        name: String,
    },
    /// Nothing new is placed on the node; its jobs run on (admin).
    DrainNode {
        name: String,
        reason: Option<String>,
    },
    /// A drained node takes work again (admin).
    ResumeNode {
        name: String,
    },
    /// Forgets a drained or lost node without jobs (admin).
    RemoveNode {
        name: String,
    },
    ReadOutput {
        id: u64,
        offset: u64,
        max_bytes: u64,
    },
    /// Where a job's outputs stand (its owner's or an admin's).
    JobOutputs {
        id: u64,
    },
    /// A node whose join secret the backend checked gets its credential
    /// (made, or made anew).
    JoinNode {
        node: String,
    },
    // Node agent commands.
    RegisterNode(RegisterNode),
    /// The images a node holds now.
    NodeImages(NodeImages),
    /// Answers with actions after `after`, waiting up to `wait_ms` for some.
    PollActions {
        node: String,
        after: u64,
        wait_ms: u64,
    },
    Report(AgentReport),
    WriteOutput {
        id: u64,
        node: String,
        attempt: u32,
        offset: u64,
        data: Vec<u8>,
    },
}

/// The controller's answer; each command has one matching variant.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Submitted {
        id: u64,
        /// False when an earlier submission with the same idempotency key
        /// made the job.
        created: bool,
    },
    Jobs(Vec<JobView>),
    Job(Box<JobDetail>),
    Waited(Box<WaitResponse>),
    Control(Box<JobView>),
    Nodes(Vec<NodeView>),
    Users(Vec<UserView>),
    /// Prometheus text exposition format.
    Metrics(String),
    UserAdded(AddUserResponse),
    Joined(JoinResponse),
    Output {
        data: Vec<u8>,
        next_offset: u64,
        complete: bool,
    },
    JobOutputs(Box<JobOutputs>),
    Registered(RegisterResponse),
    Actions(Vec<ActionEnvelope>),
    Done,
}

/// Where a job's outputs stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutputs {
    pub job: JobView,
    /// How many outputs its job file names.
    pub wanted: usize,
    /// The data manifest of its outputs, once collected.
    pub manifest: Option<String>,
}

/// Why the controller refused a command. Each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The credential is missing or wrong (HTTP 401).
    #[error("{0}")]
    Unauthorized(String),
    /// The principal may not do this at all (HTTP 403).
    #[error("{0}")]
    Forbidden(String),
    /// No such thing, or not visible to the principal (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed or impossible (HTTP 400).
    #[error("{0}")]
    BadRequest(String),
    /// The request conflicts with the current state, e.g. cancelling a
    /// finished job (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The controller cannot take requests now, e.g. it is shutting down or
    /// its database failed (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
}

/// What the HTTP server needs from the controller.
pub trait Backend: Send + Sync + 'static {
    /// Resolves a bearer token. Implementations compare hashes, never log
    /// the token, and answer from memory (this runs on every request).
    fn authenticate(&self, token: &str) -> Option<Principal>;

    /// A node joins with the secret of the join token: answers with its
    /// credential and the controller's CA, or 401 for a wrong secret.
    fn join(
        &self,
        request: JoinRequest,
    ) -> impl Future<Output = Result<JoinResponse, CommandError>> + Send;

    /// The content-addressed store the controller hosts, if any.
    fn store(&self) -> Option<std::sync::Arc<vgrid_cas::Store>> {
        None
    }

    /// Carries out a command. The reply comes once any change it made is
    /// durable.
    fn execute(
        &self,
        principal: Principal,
        command: Command,
    ) -> impl Future<Output = Result<Reply, CommandError>> + Send;
}
