//! The web dashboard: its page and assets (embedded in the binary), the
//! login that turns a token into a session cookie, and the layer that lets
//! that cookie stand for the token on every API route.
//!
//! The page's script calls the same JSON API as the CLI, so what a user
//! sees is decided where it always is (the controller's visibility
//! checks). A session keeps the token it was opened with, in memory only,
//! and every request is authenticated with it anew: a revoked token ends
//! its sessions at once.
//!
//! Cookie requests that change something must carry [`CSRF_HEADER`]: a
//! page of another site cannot send a custom header without a CORS
//! preflight, which this server never grants. The cookie is also
//! `SameSite=Strict`, and a browser's `Sec-Fetch-Site` must be
//! `same-origin` when present.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::command::Backend;
use crate::server::{ApiError, ApiResult, json, json_body, principal};
use vgrid_api::types::Role;

/// The session cookie. `__Host-` makes browsers refuse it unless it is
/// `Secure`, for the whole host and set by it.
pub const COOKIE: &str = "__Host-vgrid-session";
/// The header the page's script sends with every state-changing request.
pub const CSRF_HEADER: &str = "x-vgrid-csrf";
/// How long a session lasts after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept at once; the oldest goes first beyond that.
pub const MAX_SESSIONS: usize = 10_000;
/// Most bytes of a login request.
const MAX_LOGIN_BYTES: usize = 4096;

const INDEX_HTML: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");
const ICON_SVG: &str = include_str!("../ui/icon.svg");

/// Everything the page loads comes from this server; nothing is inline.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

struct Session {
    token: String,
    expires: Instant,
}

/// The open sessions, by cookie value. In memory: a restart logs
/// everyone out.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn open(&self, token: &str) -> Result<String, ApiError> {
        let id = random_id()?;
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            id.clone(),
            Session {
                token: token.to_string(),
                expires: now + SESSION_TTL,
            },
        );
        Ok(id)
    }

    fn token(&self, id: &str) -> Option<String> {
        let map = self.lock();
        map.get(id)
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.token.clone())
    }

    fn close(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the map cannot leave it inconsistent.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// 32 random bytes in hex, from the TLS library's generator.
fn random_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "no random numbers for a session",
            )
        })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `api` with the dashboard's routes and the session layer around all.
pub fn with_dashboard<B: Backend>(api: Router, backend: Arc<B>) -> Router {
    let sessions = Arc::new(Sessions::default());
    let ui = Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX_HTML)))
        .route(
            "/ui/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/ui/app.css",
            get(|| asset("text/css; charset=utf-8", APP_CSS)),
        )
        .route("/ui/icon.svg", get(|| asset("image/svg+xml", ICON_SVG)))
        .route("/ui/login", post(login::<B>))
        .route("/ui/logout", post(logout::<B>))
        .route("/ui/session", get(whoami::<B>))
        .with_state((backend, sessions.clone()));
    api.merge(ui)
        .layer(axum::middleware::from_fn_with_state(sessions, cookie_auth))
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            // The assets change with the binary: always ask again.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// The session cookie's value, if the request carries one.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// Whether a browser request may change something: it carries the custom
/// header, and the browser does not say it came from another site.
fn csrf_checked(headers: &HeaderMap) -> Result<(), ApiError> {
    let forbidden = |why: &str| ApiError::new(StatusCode::FORBIDDEN, "csrf", why.to_string());
    if !headers.contains_key(CSRF_HEADER) {
        return Err(forbidden(
            "a request with the session cookie that changes something needs the X-Vgrid-Csrf header",
        ));
    }
    match headers
        .get("sec-fetch-site")
        .map(|v| v.to_str().unwrap_or(""))
    {
        None | Some("same-origin") | Some("none") => Ok(()),
        Some(_) => Err(forbidden("the request came from another site")),
    }
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Lets the session cookie stand for its token: a request without an
/// `Authorization` header but with a live session gets the session's
/// token as its bearer token, after the CSRF check for state-changing
/// methods. A bearer token always wins over the cookie.
async fn cookie_auth(
    State(sessions): State<Arc<Sessions>>,
    mut req: Request,
    next: Next,
) -> Response {
    let headers = req.headers();
    if headers.contains_key(header::AUTHORIZATION) || req.uri().path().starts_with("/ui/") {
        return next.run(req).await;
    }
    let Some(id) = session_cookie(headers) else {
        return next.run(req).await;
    };
    if changes_state(req.method())
        && let Err(e) = csrf_checked(headers)
    {
        return e.into_response();
    }
    let Some(token) = sessions.token(id) else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the session has ended: log in again",
        )
        .into_response();
    };
    match HeaderValue::from_str(&format!("Bearer {token}")) {
        Ok(mut value) => {
            value.set_sensitive(true);
            req.headers_mut().insert(header::AUTHORIZATION, value);
            next.run(req).await
        }
        Err(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the session is not valid",
        )
        .into_response(),
    }
}

/// `POST /ui/login`.
#[derive(Deserialize)]
struct LoginRequest {
    token: String,
}

/// Who a session is (`POST /ui/login`, `GET /ui/session`).
#[derive(Serialize)]
struct SessionView {
    name: String,
    role: Role,
}

type UiState<B> = State<(Arc<B>, Arc<Sessions>)>;

fn set_cookie(value: &str, max_age: Duration) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
        max_age.as_secs()
    ))
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "bad cookie"))
}

async fn login<B: Backend>(
    State((backend, sessions)): UiState<B>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    // Without this, another site could log a browser in as someone else.
    csrf_checked(&headers)?;
    if body.len() > MAX_LOGIN_BYTES {
        return Err(ApiError::bad_request("the login request is too large"));
    }
    let req: LoginRequest = json_body(&body)?;
    let token = req.token.trim();
    if token.is_empty() {
        return Err(ApiError::bad_request("enter a token"));
    }
    let p = backend.authenticate(token).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the token is not valid",
        )
    })?;
    if p.role == Role::Agent {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a node's token cannot open the dashboard: use a user's or an admin's",
        ));
    }
    let id = sessions.open(token)?;
    let mut resp = json(
        StatusCode::OK,
        &SessionView {
            name: p.name,
            role: p.role,
        },
    )?;
    resp.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&id, SESSION_TTL)?);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

async fn logout<B: Backend>(State((_, sessions)): UiState<B>, headers: HeaderMap) -> ApiResult {
    csrf_checked(&headers)?;
    if let Some(id) = session_cookie(&headers) {
        sessions.close(id);
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, set_cookie("", Duration::ZERO)?);
    Ok(resp)
}

async fn whoami<B: Backend>(
    State((backend, sessions)): UiState<B>,
    headers: HeaderMap,
) -> ApiResult {
    let p = match session_cookie(&headers).and_then(|id| sessions.token(id)) {
        Some(token) => backend.authenticate(&token).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the session's token is no longer valid: log in again",
            )
        })?,
        None => principal(&*backend, &headers)?,
    };
    json(
        StatusCode::OK,
        &SessionView {
            name: p.name,
            role: p.role,
        },
    )
}

#[cfg(test)]
mod tests {
    //! The login, the cookie and the CSRF check against a small backend,
    //! over a real socket.

    use std::sync::Mutex;

    use super::*;
    use crate::command::{Command, CommandError, Reply};
    use vgrid_api::types::{ErrorBody, Principal};

    /// Records who each command came from.
    #[derive(Default)]
    struct Recorder {
        seen: Mutex<Vec<(String, Command)>>,
    }

    impl Backend for Recorder {
        fn authenticate(&self, token: &str) -> Option<Principal> {
            let (user_id, role) = match token {
                "alice-token" => (1, Role::User),
                "admin-token" => (2, Role::Admin),
                "agent-token" => (3, Role::Agent),
                _ => return None,
            };
            Some(Principal {
                user_id,
                name: token.trim_end_matches("-token").into(),
                role,
            })
        }

        async fn join(
            &self,
            _: vgrid_api::types::JoinRequest,
        ) -> Result<vgrid_api::types::JoinResponse, CommandError> {
            Err(CommandError::Unauthorized("no joins here".into()))
        }

        async fn execute(&self, p: Principal, c: Command) -> Result<Reply, CommandError> {
            self.seen
                .lock()
                .expect("lock")
                .push((p.name.clone(), c.clone()));
            match c {
                Command::ListJobs { .. } => Ok(Reply::Jobs(vec![])),
                _ => Err(CommandError::Conflict("recorded".into())),
            }
        }
    }

    async fn start() -> (String, Arc<Recorder>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let backend = Arc::new(Recorder::default());
        tokio::spawn(crate::serve(
            listener,
            backend.clone(),
            std::future::pending(),
        ));
        (url, backend)
    }

    fn http() -> reqwest::Client {
        vgrid_client::plain_http()
    }

    /// Logs in with `token`; the answer and the cookie's `name=value`.
    async fn login(url: &str, token: &str) -> (reqwest::Response, Option<String>) {
        let resp = http()
            .post(format!("{url}/ui/login"))
            .header(CSRF_HEADER, "1")
            .json(&serde_json::json!({ "token": token }))
            .send()
            .await
            .expect("login");
        let cookie = resp
            .headers()
            .get(header::SET_COOKIE)
            .map(|v| v.to_str().expect("text").to_string());
        (resp, cookie)
    }

    fn pair(set_cookie: &str) -> String {
        set_cookie
            .split(';')
            .next()
            .expect("name=value")
            .to_string()
    }

    async fn error(resp: reqwest::Response) -> (u16, ErrorBody) {
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("a JSON error"))
    }

    #[tokio::test]
    async fn a_login_sets_a_strict_cookie_that_stands_for_the_token() {
        let (url, backend) = start().await;
        let (resp, cookie) = login(&url, "alice-token").await;
        assert_eq!(resp.status(), 200);
        let cookie = cookie.expect("a cookie");
        for part in [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=43200",
        ] {
            assert!(
                cookie.split("; ").any(|p| p == part),
                "{part} missing: {cookie}"
            );
        }
        let value = pair(&cookie);
        let id = value
            .strip_prefix("__Host-vgrid-session=")
            .expect("the cookie's name");
        assert_eq!(id.len(), 64, "32 random bytes in hex");
        let me: serde_json::Value = resp.json().await.expect("who");
        assert_eq!(me, serde_json::json!({"name": "alice", "role": "user"}));

        let jobs = http()
            .get(format!("{url}/v1/jobs"))
            .header(header::COOKIE, &value)
            .send()
            .await
            .expect("jobs");
        assert_eq!(jobs.status(), 200);
        assert_eq!(backend.seen.lock().expect("lock")[0].0, "alice");
        let who = http()
            .get(format!("{url}/ui/session"))
            .header(header::COOKIE, format!("other=1; {value}"))
            .send()
            .await
            .expect("session");
        assert_eq!(who.status(), 200);
        // A bearer token wins over the cookie.
        http()
            .get(format!("{url}/v1/jobs"))
            .header(header::COOKIE, &value)
            .bearer_auth("admin-token")
            .send()
            .await
            .expect("jobs");
        assert_eq!(backend.seen.lock().expect("lock")[1].0, "admin");
    }

    #[tokio::test]
    async fn a_wrong_token_a_nodes_token_and_a_login_without_the_csrf_header_are_refused() {
        let (url, _) = start().await;
        let (resp, cookie) = login(&url, "wrong").await;
        assert!(cookie.is_none());
        let (status, body) = error(resp).await;
        assert_eq!(
            (status, body.message.as_str()),
            (401, "the token is not valid")
        );
        let (resp, cookie) = login(&url, "agent-token").await;
        assert!(cookie.is_none());
        assert_eq!(error(resp).await.0, 403);
        let resp = http()
            .post(format!("{url}/ui/login"))
            .json(&serde_json::json!({ "token": "alice-token" }))
            .send()
            .await
            .expect("login");
        assert!(resp.headers().get(header::SET_COOKIE).is_none());
        let (status, body) = error(resp).await;
        assert_eq!((status, body.error.as_str()), (403, "csrf"));
    }

    #[tokio::test]
    async fn a_cookie_request_that_changes_state_needs_the_header_and_the_same_origin() {
        let (url, backend) = start().await;
        let cookie = pair(&login(&url, "alice-token").await.1.expect("cookie"));
        let cancel = || {
            http()
                .post(format!("{url}/v1/jobs/7/cancel"))
                .header(header::COOKIE, &cookie)
        };
        let (status, body) = error(cancel().send().await.expect("cancel")).await;
        assert_eq!((status, body.error.as_str()), (403, "csrf"));
        let (status, body) = error(
            cancel()
                .header(CSRF_HEADER, "1")
                .header("sec-fetch-site", "cross-site")
                .send()
                .await
                .expect("cancel"),
        )
        .await;
        assert_eq!((status, body.error.as_str()), (403, "csrf"));
        assert!(
            backend.seen.lock().expect("lock").is_empty(),
            "nothing refused reached the backend"
        );
        let resp = cancel()
            .header(CSRF_HEADER, "1")
            .header("sec-fetch-site", "same-origin")
            .send()
            .await
            .expect("cancel");
        assert_eq!(resp.status(), 409, "the backend's answer");
        assert!(matches!(
            backend.seen.lock().expect("lock")[0],
            (ref who, Command::Cancel { id: 7 }) if who == "alice"
        ));
    }

    #[tokio::test]
    async fn a_logout_ends_the_session_on_the_server() {
        let (url, _) = start().await;
        let cookie = pair(&login(&url, "alice-token").await.1.expect("cookie"));
        let resp = http()
            .post(format!("{url}/ui/logout"))
            .header(header::COOKIE, &cookie)
            .header(CSRF_HEADER, "1")
            .send()
            .await
            .expect("logout");
        assert_eq!(resp.status(), 204);
        let cleared = resp
            .headers()
            .get(header::SET_COOKIE)
            .expect("a cleared cookie")
            .to_str()
            .expect("text");
        assert!(cleared.contains("Max-Age=0"), "{cleared}");
        // The old cookie, replayed, opens nothing.
        let (status, body) = error(
            http()
                .get(format!("{url}/v1/jobs"))
                .header(header::COOKIE, &cookie)
                .send()
                .await
                .expect("jobs"),
        )
        .await;
        assert_eq!(
            (status, body.message.as_str()),
            (401, "the session has ended: log in again")
        );
    }

    #[tokio::test]
    async fn the_page_and_its_assets_are_served_with_a_strict_policy() {
        let (url, _) = start().await;
        let page = http().get(format!("{url}/")).send().await.expect("page");
        assert_eq!(page.status(), 200);
        let csp = page
            .headers()
            .get(header::CONTENT_SECURITY_POLICY)
            .expect("a CSP")
            .to_str()
            .expect("text")
            .to_string();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        let html = page.text().await.expect("html");
        assert!(html.contains("<script src=\"/ui/app.js\""), "{html}");
        assert_eq!(
            html.matches("<script").count(),
            1,
            "no inline script: the CSP would refuse it"
        );
        for (path, kind) in [
            ("/ui/app.js", "text/javascript"),
            ("/ui/app.css", "text/css"),
            ("/ui/icon.svg", "image/svg+xml"),
        ] {
            let resp = http().get(format!("{url}{path}")).send().await.expect(path);
            assert_eq!(resp.status(), 200, "{path}");
            let ct = resp.headers()[header::CONTENT_TYPE].to_str().expect("text");
            assert!(ct.starts_with(kind), "{path}: {ct}");
        }
        // The page gives nothing away without a login.
        let who = http()
            .get(format!("{url}/ui/session"))
            .send()
            .await
            .expect("session");
        assert_eq!(who.status(), 401);
    }
}
