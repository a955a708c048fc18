//! The administrators' routes: drain, resume and forget nodes; list and
//! remove users; rotate and revoke tokens. Each needs an admin token,
//! except rotating one's own token.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use vgrid_api::types::{DrainRequest, MAX_DRAIN_REASON, Principal, Role};

use crate::command::{Backend, Command, Reply};
use crate::routes::{Body, Caller, Route};
use crate::server::{ApiError, ApiResult, json, json_body, require_role, unexpected};

/// The routes, in [`crate::server::routes`]' table.
pub fn routes<B: Backend>() -> Vec<Route<B>> {
    vec![
        Route::post("/v1/nodes/{name}/drain", drain::<B>),
        Route::post("/v1/nodes/{name}/resume", resume::<B>),
        Route::delete("/v1/nodes/{name}", remove_node::<B>),
        Route::get("/v1/users", list_users::<B>),
        Route::delete("/v1/users/{name}", remove_user::<B>),
        Route::post("/v1/users/{name}/token", rotate_token::<B>),
        Route::delete("/v1/users/{name}/token", revoke_token::<B>),
    ]
}

fn path_name(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(name)| name)
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such route"))
}

/// The caller, if an admin.
fn admin(p: Principal, what: &str) -> Result<Principal, ApiError> {
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

/// Drains a node: no new job is placed there, its jobs run on (admin).
#[utoipa::path(
    post,
    path = "/v1/nodes/{name}/drain",
    tag = "admin",
    request_body = DrainRequest,
    params(("name" = String, Path, description = "node name")),
    responses(
        (status = 200, description = "the node after the change", body = vgrid_api::types::NodeView),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::TooLarge),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
async fn drain<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    name: Result<Path<String>, PathRejection>,
    Body(body): Body,
) -> ApiResult {
    let p = admin(p, "draining a node")?;
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

/// Puts a drained node back to work (admin).
#[utoipa::path(
    post,
    path = "/v1/nodes/{name}/resume",
    tag = "admin",
    params(("name" = String, Path, description = "node name")),
    responses(
        (status = 200, description = "the node after the change", body = vgrid_api::types::NodeView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 413, response = crate::openapi::TooLarge),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
async fn resume<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let p = admin(p, "resuming a node")?;
    let name = path_name(name)?;
    one_node(&*b, p, Command::ResumeNode { name }).await
}

/// Forgets a drained or lost node without jobs (admin).
#[utoipa::path(
    delete,
    path = "/v1/nodes/{name}",
    tag = "admin",
    params(("name" = String, Path, description = "node name")),
    responses(
        (status = 204, description = "forgotten"),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
async fn remove_node<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let p = admin(p, "removing a node")?;
    let name = path_name(name)?;
    done(&*b, p, Command::RemoveNode { name }).await
}

/// Lists the users, never their tokens (admin).
#[utoipa::path(
    get,
    path = "/v1/users",
    tag = "admin",
    responses(
        (status = 200, description = "users by id", body = [vgrid_api::types::UserView]),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
async fn list_users<B: Backend>(State(b): State<Arc<B>>, Caller(p): Caller) -> ApiResult {
    let p = admin(p, "listing users")?;
    match b.execute(p, Command::ListUsers).await? {
        Reply::Users(users) => json(StatusCode::OK, &users),
        other => Err(unexpected(&other)),
    }
}

/// Removes a user without jobs that have not ended (admin).
#[utoipa::path(
    delete,
    path = "/v1/users/{name}",
    tag = "admin",
    params(("name" = String, Path, description = "user name")),
    responses(
        (status = 204, description = "removed; the name is never given again"),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
async fn remove_user<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let p = admin(p, "removing a user")?;
    let name = path_name(name)?;
    done(&*b, p, Command::RemoveUser { name }).await
}

/// Gives a user a new token; the old one stops working (admin, or the
/// user for their own).
#[utoipa::path(
    post,
    path = "/v1/users/{name}/token",
    tag = "admin",
    params(("name" = String, Path, description = "user name")),
    responses(
        (status = 200, description = "the new token, shown only this once", body = vgrid_api::types::AddUserResponse),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 413, response = crate::openapi::TooLarge),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
async fn rotate_token<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    // Any principal: the controller lets users rotate only their own.
    let name = path_name(name)?;
    match b.execute(p, Command::RotateToken { name }).await? {
        Reply::UserAdded(u) => json(StatusCode::OK, &u),
        other => Err(unexpected(&other)),
    }
}

/// Revokes a user's token until the next rotation (admin).
#[utoipa::path(
    delete,
    path = "/v1/users/{name}/token",
    tag = "admin",
    params(("name" = String, Path, description = "user name")),
    responses(
        (status = 204, description = "the token stops working"),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
async fn revoke_token<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let p = admin(p, "revoking a token")?;
    let name = path_name(name)?;
    done(&*b, p, Command::RevokeToken { name }).await
}
