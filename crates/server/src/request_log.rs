//! The request log: one line per HTTP request, at `info` on the target
//! `vgrid::request`, with the route's template (not the path, which holds
//! ids and names), the status, the duration and the user. The token never
//! appears; a request without a valid one logs `user="-"`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::command::Backend;

pub(crate) async fn request_log<B: Backend>(
    State(b): State<Arc<B>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("(no route)", |p| p.as_str())
        .to_string();
    let user = crate::server::principal(&*b, request.headers())
        .map_or_else(|_| "-".to_string(), |p| p.name);
    let response = next.run(request).await;
    tracing::info!(
        target: "vgrid::request",
        method = %method,
        path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_micros() as f64 / 1000.0,
        user,
        "request"
    );
    response
}
