//! The axum server: authenticates each request, parses it into a
//! [`Command`], and turns the [`Reply`] or [`CommandError`] into JSON.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::command::{Backend, Command, CommandError, Reply};
use vgrid_api::types::{
    ActionsQuery, AddUserRequest, AgentReport, COMPLETE_HEADER, ErrorBody, IDEMPOTENCY_KEY_HEADER,
    JoinRequest, MigrateRequest, NEXT_OFFSET_HEADER, OutputQuery, Principal, RegisterNode, Role,
    SubmitRequest, check_idempotency_key,
};

/// Largest job file accepted, in bytes.
pub const MAX_JOB_FILE_BYTES: usize = 1 << 20;
/// Longest a wait or poll request is held open, in milliseconds.
pub const MAX_WAIT_MS: u64 = 60_000;
/// Most output bytes returned by one read.
pub const MAX_OUTPUT_READ: u64 = 1 << 20;

/// The API's routes and the dashboard over a backend.
pub fn router<B: Backend>(backend: Arc<B>) -> Router {
    crate::ui::with_dashboard(api_router(backend.clone()), backend)
}

/// The API's routes over a backend.
fn api_router<B: Backend>(backend: Arc<B>) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/v1/jobs", post(submit::<B>).get(list_jobs::<B>))
        .route("/v1/jobs/{id}", get(show_job::<B>))
        .route("/v1/jobs/{id}/wait", get(wait_job::<B>))
        .route("/v1/jobs/{id}/output", get(read_output::<B>))
        .route(
            "/v1/jobs/{id}/outputs",
            get(crate::store::get_job_outputs::<B>),
        )
        .route(
            "/v1/jobs/{id}/outputs/chunks/{chunk}",
            get(crate::store::get_job_output_chunk::<B>),
        )
        .route("/v1/jobs/{id}/{verb}", post(control::<B>))
        .route("/v1/nodes", get(list_nodes::<B>))
        .route("/metrics", get(metrics::<B>))
        .route("/v1/users", post(add_user::<B>))
        .route("/v1/join", post(join::<B>))
        .route("/v1/agent/register", post(register::<B>))
        .route("/v1/agent/actions", get(poll_actions::<B>))
        .route("/v1/agent/events", post(report::<B>))
        .route("/v1/agent/images", post(node_images::<B>))
        .route("/v1/agent/jobs/{id}/output", put(write_output::<B>))
        .route("/v1/images", get(crate::store::list_images::<B>))
        .route("/v1/images/{name}", put(crate::store::set_image::<B>))
        .route(
            "/v1/store/chunks/{id}",
            put(crate::store::put_chunk::<B>).get(crate::store::get_chunk::<B>),
        )
        .route(
            "/v1/store/manifests/{id}",
            put(crate::store::put_manifest::<B>)
                .get(crate::store::get_manifest::<B>)
                .layer(axum::extract::DefaultBodyLimit::max(
                    crate::store::MAX_LIST_BYTES,
                )),
        )
        .route(
            "/v1/store/missing",
            post(crate::store::missing::<B>).layer(axum::extract::DefaultBodyLimit::max(
                crate::store::MAX_LIST_BYTES,
            )),
        )
        .merge(crate::admin::routes::<B>())
        .with_state(backend)
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

fn unexpected(reply: &Reply) -> ApiError {
    tracing::error!(?reply, "the backend answered with the wrong kind of reply");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the controller gave an unexpected answer",
    )
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        crate::openapi::document().to_string(),
    )
        .into_response()
}

async fn submit<B: Backend>(State(b): State<Arc<B>>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let p = principal(&*b, &headers)?;
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

async fn list_jobs<B: Backend>(
    State(b): State<Arc<B>>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult {
    let p = principal(&*b, &headers)?;
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

async fn show_job<B: Backend>(
    State(b): State<Arc<B>>,
    headers: HeaderMap,
    id: Result<Path<u64>, PathRejection>,
) -> ApiResult {
    let p = principal(&*b, &headers)?;
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

async fn wait_job<B: Backend>(
    State(b): State<Arc<B>>,
    headers: HeaderMap,
    id: Result<Path<u64>, PathRejection>,
    q: Result<Query<WaitQuery>, QueryRejection>,
) -> ApiResult {
    let p = principal(&*b, &headers)?;
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

async fn read_output<B: Backend>(
    State(b): State<Arc<B>>,
    headers: HeaderMap,
    id: Result<Path<u64>, PathRejection>,
    q: Result<Query<ReadOutputQuery>, QueryRejection>,
) -> ApiResult {
    let p = principal(&*b, &headers)?;
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

async fn control<B: Backend>(
    State(b): State<Arc<B>>,
    headers: HeaderMap,
    path: Result<Path<(u64, String)>, PathRejection>,
    body: Bytes,
) -> ApiResult {
    let p = principal(&*b, &headers)?;
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

async fn list_nodes<B: Backend>(State(b): State<Arc<B>>, headers: HeaderMap) -> ApiResult {
    let p = principal(&*b, &headers)?;
    match b.execute(p, Command::ListNodes).await? {
        Reply::Nodes(nodes) => json(StatusCode::OK, &nodes),
        other => Err(unexpected(&other)),
    }
}

async fn metrics<B: Backend>(State(b): State<Arc<B>>, headers: HeaderMap) -> ApiResult {
    let p = principal(&*b, &headers)?;
    require_role(&p, &[Role::Admin], "reading metrics")?;
    match b.execute(p, Command::Metrics).await? {
        Reply::Metrics(text) => Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            )],
            text,
        )
            .into_response()),
        other => Err(unexpected(&other)),
    }
}

async fn add_user<B: Backend>(
    State(b): State<Arc<B>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let p = principal(&*b, &headers)?;
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

/// Most bytes of a join request.
const MAX_JOIN_BYTES: usize = 4096;

async fn join<B: Backend>(State(b): State<Arc<B>>, body: Bytes) -> ApiResult {
    if body.len() > MAX_JOIN_BYTES {
        return Err(ApiError::bad_request("the join request is too large"));
    }
    let req: JoinRequest = json_body(&body)?;
    let answer = b.join(req).await?;
    json(StatusCode::OK, &answer)
}

const AGENT_ROLES: &[Role] = &[Role::Agent, Role::Admin];

async fn register<B: Backend>(
    State(b): State<Arc<B>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let p = principal(&*b, &headers)?;
    require_role(&p, AGENT_ROLES, "registering a node")?;
    let req: RegisterNode = json_body(&body)?;
    req.validate().map_err(ApiError::bad_request)?;
    match b.execute(p, Command::RegisterNode(req)).await? {
        Reply::Registered(r) => json(StatusCode::OK, &r),
        other => Err(unexpected(&other)),
    }
}

async fn poll_actions<B: Backend>(
    State(b): State<Arc<B>>,
    headers: HeaderMap,
    q: Result<Query<ActionsQuery>, QueryRejection>,
) -> ApiResult {
    let p = principal(&*b, &headers)?;
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

async fn node_images<B: Backend>(
    State(b): State<Arc<B>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let p = principal(&*b, &headers)?;
    require_role(&p, AGENT_ROLES, "reporting images")?;
    let req: vgrid_api::types::NodeImages = json_body(&body)?;
    req.validate().map_err(ApiError::bad_request)?;
    match b.execute(p, Command::NodeImages(req)).await? {
        Reply::Done => Ok(StatusCode::NO_CONTENT.into_response()),
        other => Err(unexpected(&other)),
    }
}

async fn report<B: Backend>(State(b): State<Arc<B>>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let p = principal(&*b, &headers)?;
    require_role(&p, AGENT_ROLES, "reporting events")?;
    let req: AgentReport = json_body(&body)?;
    req.validate().map_err(ApiError::bad_request)?;
    match b.execute(p, Command::Report(req)).await? {
        Reply::Done => Ok(StatusCode::NO_CONTENT.into_response()),
        other => Err(unexpected(&other)),
    }
}

async fn write_output<B: Backend>(
    State(b): State<Arc<B>>,
    headers: HeaderMap,
    id: Result<Path<u64>, PathRejection>,
    q: Result<Query<OutputQuery>, QueryRejection>,
    body: Bytes,
) -> ApiResult {
    let p = principal(&*b, &headers)?;
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

    #[tokio::test]
    async fn every_documented_route_is_routed() {
        let (url, _backend, _stop) = start().await;
        let http = vgrid_client::plain_http();
        for (method, path) in crate::openapi::ROUTES {
            let method =
                reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let resp = http
                .request(
                    method.clone(),
                    format!("{url}{}", path.replace("{id}", "1")),
                )
                .bearer_auth("admin-token")
                .body("{}")
                .send()
                .await
                .expect("request");
            let status = resp.status();
            let body = resp.bytes().await.expect("body");
            assert_ne!(status, 405, "{method} {path} is not routed");
            if status == 404 {
                // A routed 404 always carries a JSON error; axum's own
                // "no route" 404 is empty.
                assert!(
                    serde_json::from_slice::<ErrorBody>(&body).is_ok(),
                    "{method} {path} is not routed"
                );
            }
        }
    }
}
