//! The table the router is built from, and what every route shares: the
//! token checked before the body is read, the body's limit, and JSON
//! errors for what no handler answers (no such route, wrong method, a
//! body too large).
//!
//! One table ([`crate::server::routes`]) lists every route with its
//! method, path, access and body limit; [`build`] makes the router from
//! it, and a test compares the same table with the OpenAPI document.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{self, MethodRouter};
use vgrid_api::types::Principal;

use crate::command::Backend;
use crate::server::{ApiError, principal};

/// The largest body a route takes unless its entry says otherwise (axum's
/// default, written down so that the 413 can say it).
pub const DEFAULT_BODY_LIMIT: usize = 2 << 20;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the OpenAPI document, and joining (the join secret in the
    /// body is the credential).
    Public,
    /// A bearer token, checked before the body is read.
    Token,
}

/// One route: method, path, access, body limit and handler.
pub struct Route<B> {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub body_limit: usize,
    endpoint: MethodRouter<Arc<B>>,
}

impl<B: Backend> Route<B> {
    fn with(method: Method, path: &'static str, endpoint: MethodRouter<Arc<B>>) -> Route<B> {
        Route {
            method,
            path,
            access: Access::Token,
            body_limit: DEFAULT_BODY_LIMIT,
            endpoint,
        }
    }

    pub fn get<H: Handler<T, Arc<B>>, T: 'static>(path: &'static str, h: H) -> Route<B> {
        Route::with(Method::GET, path, routing::get(h))
    }

    pub fn post<H: Handler<T, Arc<B>>, T: 'static>(path: &'static str, h: H) -> Route<B> {
        Route::with(Method::POST, path, routing::post(h))
    }

    pub fn put<H: Handler<T, Arc<B>>, T: 'static>(path: &'static str, h: H) -> Route<B> {
        Route::with(Method::PUT, path, routing::put(h))
    }

    pub fn delete<H: Handler<T, Arc<B>>, T: 'static>(path: &'static str, h: H) -> Route<B> {
        Route::with(Method::DELETE, path, routing::delete(h))
    }

    /// Callable without a token.
    pub fn public(self) -> Route<B> {
        Route {
            access: Access::Public,
            ..self
        }
    }

    /// Takes bodies of up to `bytes`.
    pub fn body_limit(self, bytes: usize) -> Route<B> {
        Route {
            body_limit: bytes,
            ..self
        }
    }

    /// The handler behind its layers. The layer added last runs first: the
    /// token, then the declared length, then the handler's extractors.
    fn endpoint(self, backend: &Arc<B>) -> MethodRouter<Arc<B>> {
        let limit = self.body_limit;
        let endpoint = self
            .endpoint
            .route_layer(DefaultBodyLimit::max(limit))
            .route_layer(middleware::from_fn(move |req: Request, next: Next| {
                limit_body(limit, req, next)
            }));
        match self.access {
            Access::Public => endpoint,
            Access::Token => endpoint.route_layer(middleware::from_fn_with_state(
                backend.clone(),
                authenticate::<B>,
            )),
        }
    }
}

/// The router of `table` over `backend`, with JSON answers for unknown
/// routes and wrong methods.
pub fn build<B: Backend>(table: Vec<Route<B>>, backend: Arc<B>) -> Router {
    let mut router = Router::new();
    for route in table {
        let path = route.path;
        router = router.route(path, route.endpoint(&backend));
    }
    // After the routes: axum gives it to the routes present when called.
    router
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(backend)
}

/// Resolves the token from the headers alone, so that a request without a
/// good one is refused before a byte of its body is read (nor a `100
/// Continue` sent); the handler finds the [`Principal`] as a [`Caller`].
async fn authenticate<B: Backend>(
    State(backend): State<Arc<B>>,
    mut req: Request,
    next: Next,
) -> Response {
    match principal(&*backend, req.headers()) {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// The route's body limit, for the 413 of a body that turns out too large
/// while it is read (one sent without a length).
#[derive(Clone, Copy)]
struct BodyLimit(usize);

/// Refuses a body whose declared length is over `limit` before reading it.
async fn limit_body(limit: usize, mut req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(limit).into_response();
    }
    req.extensions_mut().insert(BodyLimit(limit));
    next.run(req).await
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too-large",
        format!("the request body is larger than this call takes ({limit} bytes)"),
    )
}

/// The caller, as [`authenticate`] resolved it.
pub(crate) struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, ApiError> {
        // Absent only on a route the table marks public by mistake: refuse.
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "this call needs `Authorization: Bearer <token>`",
                )
            })
    }
}

/// The request body, read up to the route's limit; every refusal is the
/// API's JSON error.
pub(crate) struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Body, ApiError> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(DEFAULT_BODY_LIMIT, |l| l.0);
        Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large(limit)
                } else {
                    ApiError::bad_request(format!(
                        "cannot read the request body: {}",
                        e.body_text()
                    ))
                }
            })
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not-found",
        format!(
            "there is no route `{method} {}`; /openapi.json lists the API's routes",
            vgrid_model::names::display_safe(uri.path())
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!(
            "`{}` does not take {method}; the `Allow` header lists the methods it takes",
            vgrid_model::names::display_safe(uri.path())
        ),
    )
}
