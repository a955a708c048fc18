//! The axum server: authenticates each request, parses it into a
//! [`Command`], and turns the [`Reply`] or [`CommandError`] into JSON.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::command::{Backend, Command, CommandError, Reply};
use crate::routes::{Body, Caller, Route};
use vgrid_api::types::{
    ActionsQuery, AddUserRequest, AgentReport, COMPLETE_HEADER, ErrorBody, IDEMPOTENCY_KEY_HEADER,
    JobView, JoinRequest, MigrateRequest, NEXT_OFFSET_HEADER, OutputQuery, Principal, RegisterNode,
    Role, SubmitRequest, check_idempotency_key,
};

/// Largest job file accepted, in bytes.
pub const MAX_JOB_FILE_BYTES: usize = 1 << 20;
/// Longest a wait or poll request is held open, in milliseconds.
pub const MAX_WAIT_MS: u64 = 60_000;
/// Most output bytes returned by one read.
pub const MAX_OUTPUT_READ: u64 = 1 << 20;

/// Every route of the API, in one table: the router is built from it
/// ([`crate::routes::build`]) and a test checks that the OpenAPI document
/// lists exactly these.
pub fn routes<B: Backend>() -> Vec<Route<B>> {
    use crate::store;
    let mut table = vec![
        Route::get("/openapi.json", openapi).public(),
        Route::post("/v1/jobs", submit::<B>),
        Route::get("/v1/jobs", list_jobs::<B>),
        Route::get("/v1/jobs/{id}", show_job::<B>),
        Route::get("/v1/jobs/{id}/wait", wait_job::<B>),
        Route::get("/v1/jobs/{id}/output", read_output::<B>),
        Route::get("/v1/jobs/{id}/outputs", store::get_job_outputs::<B>),
        Route::get(
            "/v1/jobs/{id}/outputs/chunks/{chunk}",
            store::get_job_output_chunk::<B>,
        ),
        Route::post("/v1/jobs/{id}/{verb}", control::<B>),
        Route::get("/v1/nodes", list_nodes::<B>),
        Route::get("/metrics", metrics::<B>),
        Route::post("/v1/users", add_user::<B>),
        Route::post("/v1/join", join::<B>)
            .public()
            .body_limit(MAX_JOIN_BYTES),
        Route::post("/v1/agent/register", register::<B>),
        Route::get("/v1/agent/actions", poll_actions::<B>),
        Route::post("/v1/agent/events", report::<B>),
        Route::post("/v1/agent/images", node_images::<B>),
        Route::put("/v1/agent/jobs/{id}/output", write_output::<B>),
        Route::get("/v1/images", store::list_images::<B>),
        Route::put("/v1/images/{name}", store::set_image::<B>),
        Route::put("/v1/store/chunks/{id}", store::put_chunk::<B>),
        Route::get("/v1/store/chunks/{id}", store::get_chunk::<B>),
        Route::put("/v1/store/manifests/{id}", store::put_manifest::<B>)
            .body_limit(store::MAX_LIST_BYTES),
        Route::get("/v1/store/manifests/{id}", store::get_manifest::<B>),
        Route::post("/v1/store/missing", store::missing::<B>).body_limit(store::MAX_LIST_BYTES),
    ];
    table.extend(crate::admin::routes::<B>());
    table
}

/// The API's routes and the dashboard over a backend. The dashboard's
/// layer turns a session cookie into the bearer token before the API's
/// own layers check it.
pub fn router<B: Backend>(backend: Arc<B>) -> Router {
    let api = crate::routes::build(routes::<B>(), backend.clone());
    crate::ui::with_dashboard(api, backend.clone()).layer(axum::middleware::from_fn_with_state(
        backend,
        crate::request_log::request_log::<B>,
    ))
}

/// An error answer: status plus JSON body.
pub struct ApiError {
    status: StatusCode,
    body: Box<ErrorBody>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: Box::new(ErrorBody {
                error: code.to_string(),
                message: message.into(),
                diagnostic: None,
            }),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad-request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(*self.body)).into_response()
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> ApiError {
        let (status, code) = match &e {
            CommandError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            CommandError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            CommandError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found"),
            CommandError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request"),
            CommandError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            CommandError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// Resolves the bearer token. The token goes nowhere else: not into logs,
/// not into errors.
pub(crate) fn principal<B: Backend>(
    backend: &B,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    let unauthorized =
        |why: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why.to_string());
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing `Authorization: Bearer <token>` header"))?;
    let value = value
        .to_str()
        .map_err(|_| unauthorized("the Authorization header is not text"))?;
    // The scheme is case-insensitive (RFC 9110, section 11.1).
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => {
            return Err(unauthorized(
                "the Authorization header must be `Bearer <token>`",
            ));
        }
    };
    backend
        .authenticate(token)
        .ok_or_else(|| unauthorized("the token is not valid"))
}

pub(crate) fn require_role(p: &Principal, allowed: &[Role], what: &str) -> Result<(), ApiError> {
    if allowed.contains(&p.role) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{what} needs an {} token", name_roles(allowed)),
        ))
    }
}

fn name_roles(roles: &[Role]) -> String {
    let names: Vec<&str> = roles
        .iter()
        .map(|r| match r {
            Role::User => "user",
            Role::Admin => "admin",
            Role::Agent => "agent",
        })
        .collect();
    names.join(" or ")
}

pub(crate) fn json_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the request body is not valid JSON for this call: {e}"
        ))
    })
}

pub(crate) fn path_id(path: Result<Path<u64>, PathRejection>) -> Result<u64, ApiError> {
    path.map(|Path(id)| id).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "a job id is a positive integer",
        )
    })
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {}", e.body_text())))
}

pub(crate) fn json(status: StatusCode, value: &impl serde::Serialize) -> ApiResult {
    Ok((status, axum::Json(value)).into_response())
}

/// A 500 for a backend that answered a command with the wrong kind of
/// reply (a bug, logged).
pub(crate) fn unexpected(reply: &Reply) -> ApiError {
    tracing::error!(?reply, "the backend answered with the wrong kind of reply");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the controller gave an unexpected answer",
    )
}

/// The API's OpenAPI 3.1 document (no token needed).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "jobs",
    responses(
        (status = 200, description = "this document", content_type = "application/json", body = Object)
    )
)]
async fn openapi() -> ApiResult {
    json(StatusCode::OK, &crate::openapi::document())
}

/// Submits a job file: validated (a refusal names line, column and field,
/// 400 `invalid-job-file`), its input data checked against the store
/// (403 for data the submitter did not upload), and stored before the
/// answer.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    request_body = SubmitRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 128 printable ASCII characters chosen by the client: a repeated submission with the same key by the same user returns the first job; with another job file it is a 409")
    ),
    responses(
        (status = 201, description = "the job was stored", body = vgrid_api::types::SubmitResponse),
        (status = 200, description = "a job with this `Idempotency-Key` existed: its id", body = vgrid_api::types::SubmitResponse),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::TooLarge),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
async fn submit<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult {
    require_role(&p, &[Role::User, Role::Admin], "submitting a job")?;
    if body.len() > MAX_JOB_FILE_BYTES + 4096 {
        return Err(ApiError::bad_request("the job file is larger than 1 MiB"));
    }
    let req: SubmitRequest = json_body(&body)?;
    let idempotency_key = match headers.get(IDEMPOTENCY_KEY_HEADER) {
        None => None,
        Some(v) => {
            let key = v.to_str().map_err(|_| {
                ApiError::bad_request("the Idempotency-Key header is not printable ASCII")
            })?;
            check_idempotency_key(key).map_err(ApiError::bad_request)?;
            Some(key.to_string())
        }
    };
    let mut spec = vgrid_jobfile::parse(&req.file_name, &req.source).map_err(|e| {
        let diagnostic = e.diagnostic().cloned();
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body: Box::new(ErrorBody {
                error: "invalid-job-file".into(),
                message: e.to_string(),
                diagnostic,
            }),
        }
    })?;
    crate::store::check_input_data(&*b, &p, &mut spec, req.input_data).await?;
    let cmd = Command::Submit {
        spec: Box::new(spec),
        hold: req.hold,
        idempotency_key,
    };
    match b.execute(p, cmd).await? {
        Reply::Submitted { id, created } => json(
            if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            &vgrid_api::types::SubmitResponse { id },
        ),
        other => Err(unexpected(&other)),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    all: bool,
    #[serde(default)]
    user: Option<String>,
}

/// Lists the caller's jobs, with `all` (admin) everyone's, with `user`
/// one user's.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    params(
        ("all" = Option<bool>, Query, description = "every user's jobs (admins only, 403 otherwise)"),
        ("user" = Option<String>, Query, description = "only this user's jobs (another user's: admins only, 403 otherwise)")
    ),
    responses(
        (status = 200, description = "jobs by id", body = Vec<JobView>),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
async fn list_jobs<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    match b
        .execute(
            p,
            Command::ListJobs {
                all: q.all,
                user: q.user,
            },
        )
        .await?
    {
        Reply::Jobs(jobs) => json(StatusCode::OK, &jobs),
        other => Err(unexpected(&other)),
    }
}

/// A job with its request, state history and checkpoints.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(
        ("id" = u64, Path, description = "the job's id", minimum = 1)
    ),
    responses(
        (status = 200, description = "the job", body = vgrid_api::types::JobDetail),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 404, response = crate::openapi::NotFound),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
async fn show_job<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    id: Result<Path<u64>, PathRejection>,
) -> ApiResult {
    let id = path_id(id)?;
    match b.execute(p, Command::ShowJob { id }).await? {
        Reply::Job(detail) => json(StatusCode::OK, &detail),
        other => Err(unexpected(&other)),
    }
}

#[derive(Deserialize)]
struct WaitQuery {
    #[serde(default)]
    wait_ms: Option<u64>,
}

/// Waits for a job to end.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/wait",
    tag = "jobs",
    params(
        ("id" = u64, Path, description = "the job's id", minimum = 1),
        ("wait_ms" = Option<u64>, Query, description = "how long to wait, in milliseconds (30000 by default, at most 60000)")
    ),
    responses(
        (status = 200, description = "the job, ended or as it stands (`ended` false: ask again)", body = vgrid_api::types::WaitResponse),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 404, response = crate::openapi::NotFound),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
async fn wait_job<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    id: Result<Path<u64>, PathRejection>,
    q: Result<Query<WaitQuery>, QueryRejection>,
) -> ApiResult {
    let id = path_id(id)?;
    let wait_ms = query(q)?.wait_ms.unwrap_or(30_000).min(MAX_WAIT_MS);
    match b.execute(p, Command::WaitJob { id, wait_ms }).await? {
        Reply::Waited(w) => json(StatusCode::OK, &w),
        other => Err(unexpected(&other)),
    }
}

#[derive(Deserialize)]
struct ReadOutputQuery {
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    max_bytes: Option<u64>,
}

/// The job's output from an offset.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/output",
    tag = "jobs",
    params(
        ("id" = u64, Path, description = "the job's id", minimum = 1),
        ("offset" = Option<u64>, Query, description = "first byte (0 by default)"),
        ("max_bytes" = Option<u64>, Query, description = "at most this many bytes (1 MiB, also the most)")
    ),
    responses(
        (status = 200, description = "output bytes (stdout and stderr of the command) from `offset`", content_type = "application/octet-stream", body = inline(crate::openapi::Binary),
            headers(
                ("x-vgrid-next-offset" = u64, description = "the offset to ask for next"),
                ("x-vgrid-complete" = bool, description = "the job has ended: no more output will come")
            )),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 404, response = crate::openapi::NotFound),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
async fn read_output<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    id: Result<Path<u64>, PathRejection>,
    q: Result<Query<ReadOutputQuery>, QueryRejection>,
) -> ApiResult {
    let id = path_id(id)?;
    let q = query(q)?;
    let max_bytes = q.max_bytes.unwrap_or(MAX_OUTPUT_READ).min(MAX_OUTPUT_READ);
    let cmd = Command::ReadOutput {
        id,
        offset: q.offset,
        max_bytes,
    };
    match b.execute(p, cmd).await? {
        Reply::Output {
            data,
            next_offset,
            complete,
        } => Ok((
            StatusCode::OK,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                ),
                (
                    header::HeaderName::from_static(NEXT_OFFSET_HEADER),
                    HeaderValue::from(next_offset),
                ),
                (
                    header::HeaderName::from_static(COMPLETE_HEADER),
                    HeaderValue::from_static(if complete { "true" } else { "false" }),
                ),
            ],
            data,
        )
            .into_response()),
        other => Err(unexpected(&other)),
    }
}

/// Controls a job: cancel, hold, release, suspend, resume, checkpoint, or
/// migrate (with an optional body naming the node). 409 when the job's
/// state does not allow it.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/{verb}",
    tag = "jobs",
    request_body = Option<MigrateRequest>,
    params(
        ("id" = u64, Path, description = "the job's id", minimum = 1),
        ("verb" = crate::openapi::JobVerb, Path, description = "what to do; another word is a 404")
    ),
    responses(
        (status = 200, description = "the job after the change was stored", body = JobView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::TooLarge),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
async fn control<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    path: Result<Path<(u64, String)>, PathRejection>,
    Body(body): Body,
) -> ApiResult {
    let (id, verb) = path
        .map(|Path(v)| v)
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such route"))?;
    let cmd = match verb.as_str() {
        "cancel" => Command::Cancel { id },
        "hold" => Command::Hold { id },
        "release" => Command::Release { id },
        "suspend" => Command::Suspend { id },
        "resume" => Command::Resume { id },
        "checkpoint" => Command::Checkpoint { id },
        "migrate" => {
            let req: MigrateRequest = if body.is_empty() {
                MigrateRequest::default()
            } else {
                json_body(&body)?
            };
            Command::Migrate { id, to: req.to }
        }
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("`{other}` is not a job action"),
            ));
        }
    };
    match b.execute(p, cmd).await? {
        Reply::Control(job) => json(StatusCode::OK, &job),
        other => Err(unexpected(&other)),
    }
}

/// Lists nodes with their capacity, free resources, images and jobs.
#[utoipa::path(
    get,
    path = "/v1/nodes",
    tag = "admin",
    responses(
        (status = 200, description = "nodes by name", body = Vec<vgrid_api::types::NodeView>),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
async fn list_nodes<B: Backend>(State(b): State<Arc<B>>, Caller(p): Caller) -> ApiResult {
    match b.execute(p, Command::ListNodes).await? {
        Reply::Nodes(nodes) => json(StatusCode::OK, &nodes),
        other => Err(unexpected(&other)),
    }
}

/// Counters and gauges in the Prometheus text format (admin).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "admin",
    responses(
        (status = 200, description = "OpenMetrics text (Prometheus reads it)", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
async fn metrics<B: Backend>(State(b): State<Arc<B>>, Caller(p): Caller) -> ApiResult {
    require_role(&p, &[Role::Admin], "reading metrics")?;
    match b.execute(p, Command::Metrics).await? {
        Reply::Metrics(text) => Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            text,
        )
            .into_response()),
        other => Err(unexpected(&other)),
    }
}

/// Adds a user (admin).
#[utoipa::path(
    post,
    path = "/v1/users",
    tag = "admin",
    request_body = AddUserRequest,
    responses(
        (status = 201, description = "the new user and its token, shown only this once", body = vgrid_api::types::AddUserResponse),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::TooLarge),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
async fn add_user<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    Body(body): Body,
) -> ApiResult {
    require_role(&p, &[Role::Admin], "adding a user")?;
    let req: AddUserRequest = json_body(&body)?;
    let cmd = Command::AddUser {
        name: req.name,
        role: req.role,
    };
    match b.execute(p, cmd).await? {
        Reply::UserAdded(u) => json(StatusCode::CREATED, &u),
        other => Err(unexpected(&other)),
    }
}

/// Most bytes of a join request: the one body anyone may send, so a
/// small one.
const MAX_JOIN_BYTES: usize = 4096;

/// A node joins with the secret of the controller's join token (no bearer
/// token: the secret is the credential; a wrong one is a 401) and gets an
/// agent token that acts only for this node.
#[utoipa::path(
    post,
    path = "/v1/join",
    tag = "agents",
    request_body = JoinRequest,
    responses(
        (status = 200, description = "the node's credential and the controller's CA", body = vgrid_api::types::JoinResponse),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::TooLarge),
        (status = 503, response = crate::openapi::Unavailable)
    )
)]
async fn join<B: Backend>(State(b): State<Arc<B>>, Body(body): Body) -> ApiResult {
    let req: JoinRequest = json_body(&body)?;
    let answer = b.join(req).await?;
    json(StatusCode::OK, &answer)
}

const AGENT_ROLES: &[Role] = &[Role::Agent, Role::Admin];

/// A node agent announces its node and the job attempts it still runs.
#[utoipa::path(
    post,
    path = "/v1/agent/register",
    tag = "agents",
    request_body = RegisterNode,
    responses(
        (status = 200, description = "heartbeat period and next action sequence", body = vgrid_api::types::RegisterResponse),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::TooLarge),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
async fn register<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    Body(body): Body,
) -> ApiResult {
    require_role(&p, AGENT_ROLES, "registering a node")?;
    let req: RegisterNode = json_body(&body)?;
    req.validate().map_err(ApiError::bad_request)?;
    match b.execute(p, Command::RegisterNode(req)).await? {
        Reply::Registered(r) => json(StatusCode::OK, &r),
        other => Err(unexpected(&other)),
    }
}

/// A node agent long-polls for its actions; every poll is a heartbeat.
#[utoipa::path(
    get,
    path = "/v1/agent/actions",
    tag = "agents",
    params(
        ActionsQuery
    ),
    responses(
        (status = 200, description = "actions after `after`, in order", body = Vec<vgrid_api::types::ActionEnvelope>),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 409, response = crate::openapi::Conflict),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
async fn poll_actions<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    q: Result<Query<ActionsQuery>, QueryRejection>,
) -> ApiResult {
    require_role(&p, AGENT_ROLES, "polling for actions")?;
    let q = query(q)?;
    let cmd = Command::PollActions {
        node: q.node,
        after: q.after,
        wait_ms: q.wait_ms.min(MAX_WAIT_MS),
    };
    match b.execute(p, cmd).await? {
        Reply::Actions(actions) => json(StatusCode::OK, &actions),
        other => Err(unexpected(&other)),
    }
}

/// A node agent says which images its node holds now.
#[utoipa::path(
    post,
    path = "/v1/agent/images",
    tag = "agents",
    request_body = vgrid_api::types::NodeImages,
    responses(
        (status = 204, description = "taken"),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::TooLarge),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
async fn node_images<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    Body(body): Body,
) -> ApiResult {
    require_role(&p, AGENT_ROLES, "reporting images")?;
    let req: vgrid_api::types::NodeImages = json_body(&body)?;
    req.validate().map_err(ApiError::bad_request)?;
    match b.execute(p, Command::NodeImages(req)).await? {
        Reply::Done => Ok(StatusCode::NO_CONTENT.into_response()),
        other => Err(unexpected(&other)),
    }
}

/// A node agent reports job events; a report is taken whole or refused whole.
#[utoipa::path(
    post,
    path = "/v1/agent/events",
    tag = "agents",
    request_body = AgentReport,
    responses(
        (status = 204, description = "stored"),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::TooLarge),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
async fn report<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    Body(body): Body,
) -> ApiResult {
    require_role(&p, AGENT_ROLES, "reporting events")?;
    let req: AgentReport = json_body(&body)?;
    req.validate().map_err(ApiError::bad_request)?;
    match b.execute(p, Command::Report(req)).await? {
        Reply::Done => Ok(StatusCode::NO_CONTENT.into_response()),
        other => Err(unexpected(&other)),
    }
}

/// A node agent writes job output at `offset`, cutting off what followed.
#[utoipa::path(
    put,
    path = "/v1/agent/jobs/{id}/output",
    tag = "agents",
    request_body(content = inline(crate::openapi::Binary), content_type = "application/octet-stream"),
    params(
        ("id" = u64, Path, description = "the job's id", minimum = 1),
        OutputQuery
    ),
    responses(
        (status = 204, description = "written"),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::TooLarge),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
async fn write_output<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    id: Result<Path<u64>, PathRejection>,
    q: Result<Query<OutputQuery>, QueryRejection>,
    Body(body): Body,
) -> ApiResult {
    require_role(&p, AGENT_ROLES, "writing job output")?;
    let id = path_id(id)?;
    let q = query(q)?;
    let cmd = Command::WriteOutput {
        id,
        node: q.node,
        attempt: q.attempt,
        offset: q.offset,
        data: body.to_vec(),
    };
    match b.execute(p, cmd).await? {
        Reply::Done => Ok(StatusCode::NO_CONTENT.into_response()),
        other => Err(unexpected(&other)),
    }
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve<B: Backend>(
    listener: tokio::net::TcpListener,
    backend: Arc<B>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(backend))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves the API over TLS with `config` on `listener` until `shutdown`
/// completes.
pub async fn serve_tls<B: Backend>(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    backend: Arc<B>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = crate::tls::TlsListener::new(listener, config)?;
    axum::serve(listener, router(backend))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    //! The server against a small in-memory backend, through the real
    //! client over a real socket.

    use std::sync::Mutex;

    use super::*;
    use vgrid_api::types::{JobView, SubmitResponse};
    use vgrid_client::{Client, ClientError};

    #[derive(Default)]
    struct FakeBackend {
        commands: Mutex<Vec<(String, Command)>>,
    }

    fn view(id: u64) -> JobView {
        JobView {
            id,
            name: "j".into(),
            owner: "alice".into(),
            state: vgrid_model::JobState::Pending,
            reason: "waiting".into(),
            node: None,
            class: "normal".into(),
            image: "tiny".into(),
            cpus: 1,
            memory_mb: 256,
            vms: 1,
            exit_code: None,
            submitted_unix_ms: 0,
            updated_unix_ms: 0,
            wait: None,
        }
    }

    impl Backend for FakeBackend {
        fn authenticate(&self, token: &str) -> Option<Principal> {
            let (id, role) = match token {
                "alice-token" => (1, Role::User),
                "admin-token" => (2, Role::Admin),
                "agent-token" => (3, Role::Agent),
                _ => return None,
            };
            Some(Principal {
                user_id: id,
                name: token.trim_end_matches("-token").into(),
                role,
            })
        }

        async fn join(
            &self,
            r: vgrid_api::types::JoinRequest,
        ) -> Result<vgrid_api::types::JoinResponse, CommandError> {
            if r.secret != "right" {
                return Err(CommandError::Unauthorized("wrong join secret".into()));
            }
            Ok(vgrid_api::types::JoinResponse {
                node: r.node,
                token: "node-token".into(),
                ca_pem: String::new(),
            })
        }

        async fn execute(&self, p: Principal, c: Command) -> Result<Reply, CommandError> {
            if let Ok(mut log) = self.commands.lock() {
                log.push((p.name.clone(), c.clone()));
            }
            match c {
                Command::Submit { .. } => Ok(Reply::Submitted {
                    id: 42,
                    created: true,
                }),
                Command::ListJobs { .. } => Ok(Reply::Jobs(vec![view(1)])),
                Command::ShowJob { id } => {
                    Err(CommandError::NotFound(format!("job {id} does not exist")))
                }
                Command::Cancel { id: 1 } => Err(CommandError::Conflict("job 1 has ended".into())),
                Command::Cancel { id } | Command::Hold { id } => {
                    Ok(Reply::Control(Box::new(view(id))))
                }
                Command::ReadOutput { offset, .. } => Ok(Reply::Output {
                    data: b"hello\n"[offset.min(6) as usize..].to_vec(),
                    next_offset: 6,
                    complete: true,
                }),
                Command::AddUser { name, role } => {
                    Ok(Reply::UserAdded(vgrid_api::types::AddUserResponse {
                        id: 9,
                        name,
                        role,
                        token: "new-token".into(),
                    }))
                }
                Command::Report(_) | Command::WriteOutput { .. } => Ok(Reply::Done),
                // A wrong reply kind must become a 500, not a panic.
                _ => Ok(Reply::Done),
            }
        }
    }

    async fn start() -> (String, Arc<FakeBackend>, tokio::sync::oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local addr");
        let backend = Arc::new(FakeBackend::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, backend.clone(), async move {
            let _ = stopped.await;
        }));
        (format!("http://{addr}"), backend, stop)
    }

    fn client(url: &str, token: &str) -> Client {
        Client::new(url, token).expect("client")
    }

    fn api_error(e: ClientError) -> (u16, ErrorBody) {
        match e {
            ClientError::Api { status, body } => (status, *body),
            other => panic!("expected an API error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn tokens_are_required_and_checked() {
        let (url, backend, _stop) = start().await;
        let (status, body) = api_error(
            client(&url, "wrong")
                .jobs(false)
                .await
                .expect_err("refused"),
        );
        assert_eq!((status, body.error.as_str()), (401, "unauthorized"));
        let raw = vgrid_client::plain_http()
            .get(format!("{url}/v1/jobs"))
            .send()
            .await
            .expect("request");
        assert_eq!(raw.status(), 401);
        let body: ErrorBody = raw.json().await.expect("JSON error body");
        assert!(body.message.contains("Bearer"), "{}", body.message);
        // Nothing reached the backend.
        assert!(backend.commands.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn the_bearer_scheme_is_case_insensitive() {
        let (url, _backend, _stop) = start().await;
        for scheme in ["Bearer", "bearer", "BEARER"] {
            let resp = vgrid_client::plain_http()
                .get(format!("{url}/v1/jobs"))
                .header("authorization", format!("{scheme} alice-token"))
                .send()
                .await
                .expect("request");
            assert_eq!(resp.status(), 200, "{scheme}");
        }
        let resp = vgrid_client::plain_http()
            .get(format!("{url}/v1/jobs"))
            .header("authorization", "Basic alice-token")
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 401);
    }

    #[tokio::test]
    async fn roles_gate_admin_and_agent_calls() {
        let (url, _backend, _stop) = start().await;
        let alice = client(&url, "alice-token");
        let (status, body) = api_error(
            alice
                .add_user("bob", Role::User)
                .await
                .expect_err("refused"),
        );
        assert_eq!((status, body.error.as_str()), (403, "forbidden"));
        let report = AgentReport {
            node: "n".into(),
            events: vec![],
        };
        let (status, _) = api_error(alice.report(&report).await.expect_err("refused"));
        assert_eq!(status, 403);
        let agent = client(&url, "agent-token");
        agent.report(&report).await.expect("agents may report");
        let (status, _) = api_error(
            agent
                .submit("j.toml", "", false)
                .await
                .expect_err("refused"),
        );
        assert_eq!(status, 403, "agents do not submit jobs");
        let added = client(&url, "admin-token")
            .add_user("bob", Role::User)
            .await
            .expect("admin adds users");
        assert_eq!(
            (added.name.as_str(), added.token.as_str()),
            ("bob", "new-token")
        );
    }

    #[tokio::test]
    async fn a_bad_job_file_is_refused_before_the_backend_with_its_position() {
        let (url, backend, _stop) = start().await;
        let alice = client(&url, "alice-token");
        let err = alice
            .submit(
                "job.toml",
                "image = \"tiny\"\ncommand = [\"/bin/true\"]\ncpus = 0\n",
                false,
            )
            .await
            .expect_err("refused");
        let (status, body) = api_error(err);
        assert_eq!((status, body.error.as_str()), (400, "invalid-job-file"));
        let d = body.diagnostic.expect("diagnostic");
        assert_eq!((d.line, d.column, d.field.as_deref()), (3, 8, Some("cpus")));
        assert!(
            body.message.starts_with("job.toml:3:8: field `cpus`"),
            "{}",
            body.message
        );
        assert!(
            backend.commands.lock().expect("lock").is_empty(),
            "nothing is created"
        );

        let id = alice
            .submit(
                "job.toml",
                "image = \"tiny\"\ncommand = [\"/bin/true\"]\n",
                true,
            )
            .await
            .expect("accepted");
        assert_eq!(id, 42);
        let log = backend.commands.lock().expect("lock");
        assert!(matches!(&log[0], (who, Command::Submit { hold: true, .. }) if who == "alice"));
    }

    #[tokio::test]
    async fn command_errors_map_to_statuses() {
        let (url, _backend, _stop) = start().await;
        let alice = client(&url, "alice-token");
        let (status, body) = api_error(alice.job(5).await.expect_err("missing"));
        assert_eq!((status, body.error.as_str()), (404, "not-found"));
        let (status, _) = api_error(alice.control(1, "cancel").await.expect_err("ended"));
        assert_eq!(status, 409);
        assert_eq!(alice.control(2, "hold").await.expect("held").id, 2);
        let (status, _) = api_error(alice.control(2, "explode").await.expect_err("no such verb"));
        assert_eq!(status, 404);
        // The fake answers `Done` to nodes: a wrong reply kind is a 500.
        let (status, body) = api_error(alice.nodes().await.expect_err("wrong reply"));
        assert_eq!((status, body.error.as_str()), (500, "internal"));
        // Malformed JSON is a 400 with a JSON body.
        let raw = vgrid_client::plain_http()
            .post(format!("{url}/v1/jobs"))
            .bearer_auth("alice-token")
            .body("{not json")
            .send()
            .await
            .expect("request");
        assert_eq!(raw.status(), 400);
        let body: ErrorBody = raw.json().await.expect("JSON error body");
        assert_eq!(body.error, "bad-request");
        let raw = vgrid_client::plain_http()
            .get(format!("{url}/v1/jobs/abc"))
            .bearer_auth("alice-token")
            .send()
            .await
            .expect("request");
        assert_eq!(raw.status(), 404);
    }

    #[tokio::test]
    async fn output_and_openapi_are_served() {
        let (url, _backend, _stop) = start().await;
        let alice = client(&url, "alice-token");
        let slice = alice.output(3, 2).await.expect("output");
        assert_eq!(
            (slice.data.as_slice(), slice.next_offset, slice.complete),
            (&b"llo\n"[..], 6, true)
        );
        assert_eq!(alice.jobs(true).await.expect("jobs")[0].id, 1);
        let doc = alice.openapi().await.expect("document");
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"]["/v1/jobs"]["post"].is_object());
        let unauthenticated = vgrid_client::plain_http()
            .get(format!("{url}/openapi.json"))
            .send()
            .await
            .expect("get");
        assert_eq!(unauthenticated.status(), 200);
        let _: SubmitResponse =
            serde_json::from_value(serde_json::json!({"id": 1})).expect("shape");
    }

    /// What the router's table says of each route, and what the document
    /// says of it.
    #[test]
    fn the_document_lists_every_route_of_the_table() {
        let doc = serde_json::to_value(crate::openapi::document()).expect("json");
        let table = routes::<FakeBackend>();
        let mut routed: Vec<(String, String)> = table
            .iter()
            .map(|r| (r.method.as_str().to_lowercase(), r.path.to_string()))
            .collect();
        routed.sort();
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                documented.push((method.clone(), path.clone()));
            }
        }
        documented.sort();
        assert_eq!(documented, routed);
        for r in &table {
            let op = &doc["paths"][r.path][r.method.as_str().to_lowercase()];
            let what = format!("{} {}", r.method, r.path);
            let responses = op["responses"].as_object().expect("responses");
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            match r.access {
                crate::routes::Access::Token => {
                    assert!(secured, "{what}: no bearer security");
                    assert!(responses.contains_key("401"), "{what}: no 401");
                }
                crate::routes::Access::Public => assert!(!secured, "{what} is public"),
            }
            if r.method == axum::http::Method::POST || r.method == axum::http::Method::PUT {
                assert!(responses.contains_key("413"), "{what}: no 413");
                assert!(responses.contains_key("400"), "{what}: no 400");
            }
            for (status, resp) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let reference = resp["$ref"].as_str().unwrap_or_default();
                    assert!(
                        reference.starts_with("#/components/responses/"),
                        "{what} {status}: not one of the error responses"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn every_route_of_the_table_is_routed() {
        let (url, _backend, _stop) = start().await;
        let http = vgrid_client::plain_http();
        for r in routes::<FakeBackend>() {
            let resp = http
                .request(
                    r.method.clone(),
                    format!("{url}{}", r.path.replace("{id}", "1")),
                )
                .bearer_auth("admin-token")
                .body("{}")
                .send()
                .await
                .expect("request");
            let status = resp.status();
            let body: ErrorBody = match resp.bytes().await {
                Ok(b) if status.is_client_error() => {
                    serde_json::from_slice(&b).expect("a JSON error body")
                }
                _ => continue,
            };
            assert_ne!(status, 405, "{} {} is not routed", r.method, r.path);
            assert!(
                !body.message.starts_with("there is no route"),
                "{} {} is not routed",
                r.method,
                r.path
            );
        }
    }

    #[tokio::test]
    async fn every_documented_job_verb_is_a_job_action() {
        let (url, backend, _stop) = start().await;
        let doc = serde_json::to_value(crate::openapi::document()).expect("json");
        let verbs = doc["components"]["schemas"]["JobVerb"]["enum"]
            .as_array()
            .expect("the verbs");
        assert_eq!(verbs.len(), 7);
        for verb in verbs {
            let verb = verb.as_str().expect("a word");
            let resp = vgrid_client::plain_http()
                .post(format!("{url}/v1/jobs/2/{verb}"))
                .bearer_auth("alice-token")
                .send()
                .await
                .expect("request");
            assert_ne!(resp.status(), 404, "{verb}");
        }
        assert_eq!(backend.commands.lock().expect("lock").len(), 7);
    }

    async fn error_of(resp: reqwest::Response) -> (u16, ErrorBody) {
        let status = resp.status().as_u16();
        let body = resp.json().await.expect("a JSON error body");
        (status, body)
    }

    #[tokio::test]
    async fn unknown_routes_and_wrong_methods_answer_json() {
        let (url, _backend, _stop) = start().await;
        let http = vgrid_client::plain_http();
        for (method, path) in [
            // `/` is the dashboard's page.
            (reqwest::Method::GET, "/nope"),
            (reqwest::Method::GET, "/v1/nope"),
            (reqwest::Method::POST, "/v1/jobs/1/2/3"),
        ] {
            // With or without a token: which routes exist is no secret.
            let (status, body) = error_of(
                http.request(method, format!("{url}{path}"))
                    .send()
                    .await
                    .expect("request"),
            )
            .await;
            assert_eq!((status, body.error.as_str()), (404, "not-found"), "{path}");
            assert!(body.message.contains(path), "{}", body.message);
        }
        let resp = http
            .delete(format!("{url}/v1/jobs"))
            .bearer_auth("alice-token")
            .send()
            .await
            .expect("request");
        let allow = resp
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
        let (status, body) = error_of(resp).await;
        assert_eq!((status, body.error.as_str()), (405, "method-not-allowed"));
    }

    #[tokio::test]
    async fn the_token_is_checked_before_the_body_and_large_bodies_get_json() {
        let (url, backend, _stop) = start().await;
        let http = vgrid_client::plain_http();
        let big = vec![b'x'; 3 << 20];
        let (status, body) = error_of(
            http.post(format!("{url}/v1/jobs"))
                .body(big.clone())
                .send()
                .await
                .expect("request"),
        )
        .await;
        assert_eq!((status, body.error.as_str()), (401, "unauthorized"));
        let (status, body) = error_of(
            http.post(format!("{url}/v1/jobs"))
                .bearer_auth("alice-token")
                .body(big)
                .send()
                .await
                .expect("request"),
        )
        .await;
        assert_eq!((status, body.error.as_str()), (413, "too-large"));
        assert!(body.message.contains("2097152 bytes"), "{}", body.message);
        // A body sent without a length is cut at the limit while it is
        // read: the same JSON.
        let (status, body) = chunked_post(&url, "/v1/jobs", "alice-token", 3 << 20).await;
        assert_eq!(
            (status, body.error.as_str()),
            (413, "too-large"),
            "{}",
            body.message
        );
        // The one body anyone may send is small.
        let (status, body) = error_of(
            http.post(format!("{url}/v1/join"))
                .body(vec![b' '; 5000])
                .send()
                .await
                .expect("request"),
        )
        .await;
        assert_eq!((status, body.error.as_str()), (413, "too-large"));
        assert!(body.message.contains("4096 bytes"), "{}", body.message);
        assert!(backend.commands.lock().expect("lock").is_empty());
    }

    /// POSTs `len` bytes with `Transfer-Encoding: chunked` (no length
    /// declared) over a plain socket, and reads the error answer.
    async fn chunked_post(url: &str, path: &str, token: &str, len: usize) -> (u16, ErrorBody) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = url.trim_start_matches("http://");
        let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        socket.write_all(head.as_bytes()).await.expect("head");
        let (mut rd, mut wr) = socket.into_split();
        // The server may answer (and stop reading) before all is sent.
        let writer = tokio::spawn(async move {
            let chunk = vec![b'x'; 64 << 10];
            let mut sent = 0;
            while sent < len {
                let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                if wr.write_all(&frame).await.is_err() {
                    return;
                }
                sent += chunk.len();
            }
            let _ = wr.write_all(b"0\r\n\r\n").await;
        });
        let mut answer = Vec::new();
        let _ = rd.read_to_end(&mut answer).await;
        writer.abort();
        let text = String::from_utf8_lossy(&answer);
        let status: u16 = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {text}"));
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        (
            status,
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}")),
        )
    }
}
