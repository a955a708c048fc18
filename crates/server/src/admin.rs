//! The administrators' routes: drain, resume and forget nodes; list and
//! remove users; rotate and revoke tokens. Each needs an admin token,
//! except rotating one's own token.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use vgrid_api::types::{DrainRequest, MAX_DRAIN_REASON, Principal, Role};

use crate::command::{Backend, Command, Reply};
use crate::server::{ApiError, ApiResult, json, json_body, principal, require_role};

/// The routes, merged into [`crate::router`].
pub fn routes<B: Backend>() -> Router<Arc<B>> {
    Router::new()
        .route("/v1/nodes/{name}/drain", post(drain::<B>))
        .route("/v1/nodes/{name}/resume", post(resume::<B>))
        .route("/v1/nodes/{name}", delete(remove_node::<B>))
        .route("/v1/users", get(list_users::<B>))
        .route("/v1/users/{name}", delete(remove_user::<B>))
        .route(
            "/v1/users/{name}/token",
            post(rotate_token::<B>).delete(revoke_token::<B>),
        )
}

fn path_name(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(name)| name)
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such route"))
}

fn unexpected(reply: &Reply) -> ApiError {
    tracing::error!(?reply, "the backend answered with the wrong kind of reply");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the controller gave an unexpected answer",
    )
}

/// The principal of an admin token.
fn admin<B: Backend>(b: &B, headers: &HeaderMap, what: &str) -> Result<Principal, ApiError> {
    let p = principal(b, headers)?;
    require_role(&p, &[Role::Admin], what)?;
    Ok(p)
}

/// Runs an admin's command that answers with one node.
async fn one_node<B: Backend>(b: &B, p: Principal, cmd: Command) -> ApiResult {
    match b.execute(p, cmd).await? {
        Reply::Nodes(mut nodes) if nodes.len() == 1 => json(StatusCode::OK, &nodes.remove(0)),
        other => Err(unexpected(&other)),
    }
}

/// Runs an admin's command that answers with nothing.
async fn done<B: Backend>(b: &B, p: Principal, cmd: Command) -> ApiResult {
    match b.execute(p, cmd).await? {
        Reply::Done => Ok(StatusCode::NO_CONTENT.into_response()),
        other => Err(unexpected(&other)),
    }
}

async fn drain<B: Backend>(
    State(b): State<Arc<B>>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> ApiResult {
    // The token before the body.
    let p = admin(&*b, &headers, "draining a node")?;
    let name = path_name(name)?;
    let req: DrainRequest = if body.is_empty() {
        DrainRequest::default()
    } else {
        json_body(&body)?
    };
    if let Some(r) = &req.reason
        && (r.len() > MAX_DRAIN_REASON || r.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(format!(
            "a drain reason is at most {MAX_DRAIN_REASON} bytes of text without control characters"
        )));
    }
    let cmd = Command::DrainNode {
        name,
        reason: req.reason,
    };
    one_node(&*b, p, cmd).await
}

async fn resume<B: Backend>(
    State(b): State<Arc<B>>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let p = admin(&*b, &headers, "resuming a node")?;
    let name = path_name(name)?;
    one_node(&*b, p, Command::ResumeNode { name }).await
}

async fn remove_node<B: Backend>(
    State(b): State<Arc<B>>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let p = admin(&*b, &headers, "removing a node")?;
    let name = path_name(name)?;
    done(&*b, p, Command::RemoveNode { name }).await
}

async fn list_users<B: Backend>(State(b): State<Arc<B>>, headers: HeaderMap) -> ApiResult {
    let p = admin(&*b, &headers, "listing users")?;
    match b.execute(p, Command::ListUsers).await? {
        Reply::Users(users) => json(StatusCode::OK, &users),
        other => Err(unexpected(&other)),
    }
}

async fn remove_user<B: Backend>(
    State(b): State<Arc<B>>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let p = admin(&*b, &headers, "removing a user")?;
    let name = path_name(name)?;
    done(&*b, p, Command::RemoveUser { name }).await
}

async fn rotate_token<B: Backend>(
    State(b): State<Arc<B>>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    // Any principal: the controller lets users rotate only their own.
    let p = principal(&*b, &headers)?;
    let name = path_name(name)?;
    match b.execute(p, Command::RotateToken { name }).await? {
        Reply::UserAdded(u) => json(StatusCode::OK, &u),
        other => Err(unexpected(&other)),
    }
}

async fn revoke_token<B: Backend>(
    State(b): State<Arc<B>>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let p = admin(&*b, &headers, "revoking a token")?;
    let name = path_name(name)?;
    done(&*b, p, Command::RevokeToken { name }).await
}
