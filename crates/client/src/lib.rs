//! A typed client of vgrid's HTTP API, used by the CLI and the node
//! agents. The bodies are `vgrid-api`'s wire types; [`transfer`] moves
//! manifests and their chunks between a local store and the controller's,
//! [`data`] a user's job inputs up and outputs down.

mod admin;
pub mod data;
pub mod transfer;

use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use vgrid_cas::{ChunkId, ManifestId};

use vgrid_api::types::{
    ActionEnvelope, AddUserRequest, AddUserResponse, AgentReport, COMPLETE_HEADER, ChunkList,
    ErrorBody, IDEMPOTENCY_KEY_HEADER, ImageRef, JobDetail, JobView, JoinRequest, JoinResponse,
    LogSlice, MigrateRequest, NEXT_OFFSET_HEADER, NodeView, RegisterNode, RegisterResponse, Role,
    SetImage, SubmitRequest, SubmitResponse, WaitResponse,
};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached or the connection broke.
    #[error("cannot reach the vgrid controller at {url}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server refused the request; its JSON error says why.
    #[error("{}", .body.message)]
    Api { status: u16, body: Box<ErrorBody> },
    /// The server answered with something this client does not understand.
    #[error("unexpected answer from the controller: {0}")]
    Decode(String),
    /// The base URL is not usable.
    #[error("`{url}`: {why}")]
    BadUrl { url: String, why: &'static str },
}

impl ClientError {
    /// The HTTP status of an API refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// What kind of failure this is, for a caller that reacts by kind (the
    /// CLI's exit codes) rather than by message.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Connect { .. } => ErrorKind::Unreachable,
            ClientError::Decode(_) => ErrorKind::Protocol,
            ClientError::BadUrl { .. } => ErrorKind::Config,
            ClientError::Api { status, .. } => ErrorKind::of_status(*status),
        }
    }
}

/// The kinds of [`ClientError`]: one per way a script would react.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No answer: connection refused, TLS handshake failed, timed out.
    Unreachable,
    /// The request was refused as malformed: a bad job file, a bad
    /// parameter, a body too large (400, 413, 422).
    InvalidInput,
    /// The thing named does not exist, or is not the caller's (404).
    NotFound,
    /// The token is missing or wrong, or may not do this (401, 403).
    Forbidden,
    /// The request conflicts with the thing's state, e.g. cancelling a job
    /// that has ended (409).
    Conflict,
    /// The controller failed or cannot serve now (5xx).
    Server,
    /// An answer this client does not understand.
    Protocol,
    /// The client's own settings are unusable (a bad URL).
    Config,
    /// Any other refusal (another 4xx).
    Other,
}

impl ErrorKind {
    /// The kind of an HTTP refusal.
    pub fn of_status(status: u16) -> ErrorKind {
        match status {
            400 | 413 | 422 => ErrorKind::InvalidInput,
            401 | 403 => ErrorKind::Forbidden,
            404 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            500..=599 => ErrorKind::Server,
            _ => ErrorKind::Other,
        }
    }
}

/// A connection to one controller with one token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl std::fmt::Debug for Client {
    // The token is a secret: it never goes into debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of a controller that serves plain HTTP, which only a
    /// loopback address may (`vgrid serve --insecure-http`): tokens never
    /// cross a network in clear.
    pub fn new(base_url: &str, token: &str) -> Result<Client, ClientError> {
        let base = base_url.trim_end_matches('/').to_string();
        let url = reqwest::Url::parse(&base).map_err(|_| ClientError::BadUrl {
            url: base_url.to_string(),
            why: "not a URL",
        })?;
        if url.scheme() != "http" {
            return Err(ClientError::BadUrl {
                url: base_url.to_string(),
                why: "an https:// controller needs its CA: use Client::with_tls",
            });
        }
        if !is_loopback(&url) {
            return Err(ClientError::BadUrl {
                url: base_url.to_string(),
                why: "plain http:// is only for a controller on this machine's loopback; others serve https://",
            });
        }
        Self::build(base, token, plain_builder()?)
    }

    /// A client of a controller that serves HTTPS, trusting what `tls`
    /// trusts (see `vgrid-pki`: the controller's CA, or a pinned one to
    /// join).
    pub fn with_tls(
        base_url: &str,
        token: &str,
        tls: rustls::ClientConfig,
    ) -> Result<Client, ClientError> {
        let base = base_url.trim_end_matches('/').to_string();
        if !base.starts_with("https://") {
            return Err(ClientError::BadUrl {
                url: base_url.to_string(),
                why: "expected an https:// URL",
            });
        }
        Self::build(
            base,
            token,
            reqwest::Client::builder().tls_backend_preconfigured(tls),
        )
    }

    fn build(
        base: String,
        token: &str,
        builder: reqwest::ClientBuilder,
    ) -> Result<Client, ClientError> {
        let http = builder
            .connect_timeout(Duration::from_secs(10))
            // Long polls last at most a minute on the server side.
            .timeout(Duration::from_secs(90))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::Decode(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            token: token.to_string(),
        })
    }

    /// The controller's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    async fn send(&self, req: RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp = req.send().await.map_err(|source| ClientError::Connect {
            url: self.base.clone(),
            source,
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|source| ClientError::Connect {
            url: self.base.clone(),
            source,
        })?;
        let body = serde_json::from_slice::<ErrorBody>(&bytes).unwrap_or_else(|_| ErrorBody {
            error: "internal".into(),
            message: format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ),
            diagnostic: None,
        });
        Err(ClientError::Api {
            status: status.as_u16(),
            body: Box::new(body),
        })
    }

    async fn json<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, ClientError> {
        let resp = self.send(req).await?;
        let bytes = resp.bytes().await.map_err(|source| ClientError::Connect {
            url: self.base.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Submits a job file's text; returns the new job's id once stored.
    pub async fn submit(
        &self,
        file_name: &str,
        source: &str,
        hold: bool,
    ) -> Result<u64, ClientError> {
        self.submit_with_key(file_name, source, hold, None).await
    }

    /// [`Client::submit`] with an idempotency key: sent again with the same
    /// key (after a broken connection, say), it returns the job the first
    /// call made instead of making a second one.
    pub async fn submit_with_key(
        &self,
        file_name: &str,
        source: &str,
        hold: bool,
        idempotency_key: Option<&str>,
    ) -> Result<u64, ClientError> {
        let body = SubmitRequest {
            file_name: file_name.to_string(),
            source: source.to_string(),
            hold,
            input_data: None,
        };
        self.submit_request(&body, idempotency_key).await
    }

    /// Submits a whole [`SubmitRequest`] (with the manifest of the job's
    /// uploaded inputs, say), with an idempotency key when given.
    pub async fn submit_request(
        &self,
        body: &SubmitRequest,
        idempotency_key: Option<&str>,
    ) -> Result<u64, ClientError> {
        let mut req = self.request(Method::POST, "/v1/jobs").json(body);
        if let Some(key) = idempotency_key {
            req = req.header(IDEMPOTENCY_KEY_HEADER, key);
        }
        let r: SubmitResponse = self.json(req).await?;
        Ok(r.id)
    }

    pub async fn jobs(&self, all: bool) -> Result<Vec<JobView>, ClientError> {
        self.jobs_of(all, None).await
    }

    /// [`Client::jobs`], only `user`'s when given (another user's: admins
    /// only).
    pub async fn jobs_of(
        &self,
        all: bool,
        user: Option<&str>,
    ) -> Result<Vec<JobView>, ClientError> {
        let mut req = self.request(Method::GET, "/v1/jobs").query(&[("all", all)]);
        if let Some(user) = user {
            req = req.query(&[("user", user)]);
        }
        self.json(req).await
    }

    pub async fn job(&self, id: u64) -> Result<JobDetail, ClientError> {
        self.json(self.request(Method::GET, &format!("/v1/jobs/{id}")))
            .await
    }

    /// Waits up to `wait_ms` for the job to end.
    pub async fn wait(&self, id: u64, wait_ms: u64) -> Result<WaitResponse, ClientError> {
        self.json(
            self.request(Method::GET, &format!("/v1/jobs/{id}/wait"))
                .query(&[("wait_ms", wait_ms)]),
        )
        .await
    }

    /// Reads the job's output from `offset`.
    pub async fn output(&self, id: u64, offset: u64) -> Result<LogSlice, ClientError> {
        let resp = self
            .send(
                self.request(Method::GET, &format!("/v1/jobs/{id}/output"))
                    .query(&[("offset", offset)]),
            )
            .await?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .ok_or_else(|| ClientError::Decode(format!("missing header {name}")))
        };
        let next_offset = header(NEXT_OFFSET_HEADER)?
            .parse()
            .map_err(|_| ClientError::Decode(format!("bad header {NEXT_OFFSET_HEADER}")))?;
        let complete = header(COMPLETE_HEADER)? == "true";
        let data = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Connect {
                url: self.base.clone(),
                source,
            })?
            .to_vec();
        Ok(LogSlice {
            data,
            next_offset,
            complete,
        })
    }

    /// `verb` is one of cancel, hold, release, suspend, resume, checkpoint.
    pub async fn control(&self, id: u64, verb: &str) -> Result<JobView, ClientError> {
        self.json(self.request(Method::POST, &format!("/v1/jobs/{id}/{verb}")))
            .await
    }

    pub async fn migrate(&self, id: u64, to: Option<String>) -> Result<JobView, ClientError> {
        self.json(
            self.request(Method::POST, &format!("/v1/jobs/{id}/migrate"))
                .json(&MigrateRequest { to }),
        )
        .await
    }

    pub async fn nodes(&self) -> Result<Vec<NodeView>, ClientError> {
        self.json(self.request(Method::GET, "/v1/nodes")).await
    }

    pub async fn add_user(&self, name: &str, role: Role) -> Result<AddUserResponse, ClientError> {
        self.json(
            self.request(Method::POST, "/v1/users")
                .json(&AddUserRequest {
                    name: name.to_string(),
                    role,
                }),
        )
        .await
    }

    /// The OpenAPI document.
    pub async fn openapi(&self) -> Result<serde_json::Value, ClientError> {
        self.json(self.request(Method::GET, "/openapi.json")).await
    }

    // ---- The store ----

    /// Which of `chunks` the controller's store lacks.
    pub async fn missing_chunks(&self, chunks: &[ChunkId]) -> Result<Vec<ChunkId>, ClientError> {
        let list = ChunkList {
            chunks: chunks.iter().map(|c| c.hex()).collect(),
        };
        let back: ChunkList = self
            .json(self.request(Method::POST, "/v1/store/missing").json(&list))
            .await?;
        back.chunks
            .iter()
            .map(|h| {
                ChunkId::parse(h)
                    .ok_or_else(|| ClientError::Decode(format!("`{h}` is not a chunk id")))
            })
            .collect()
    }

    /// Sends a chunk in its stored form.
    pub async fn put_chunk(&self, id: &ChunkId, stored: Vec<u8>) -> Result<(), ClientError> {
        self.send(
            self.request(Method::PUT, &format!("/v1/store/chunks/{id}"))
                .body(stored),
        )
        .await?;
        Ok(())
    }

    /// A chunk's stored form (checked by the caller's store when kept).
    pub async fn get_chunk(&self, id: &ChunkId) -> Result<Vec<u8>, ClientError> {
        self.bytes(self.request(Method::GET, &format!("/v1/store/chunks/{id}")))
            .await
    }

    pub async fn put_manifest(&self, id: &ManifestId, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.send(
            self.request(Method::PUT, &format!("/v1/store/manifests/{id}"))
                .body(bytes),
        )
        .await?;
        Ok(())
    }

    pub async fn get_manifest(&self, id: &ManifestId) -> Result<Vec<u8>, ClientError> {
        self.bytes(self.request(Method::GET, &format!("/v1/store/manifests/{id}")))
            .await
    }

    /// The data manifest of a job's outputs (its bytes, as stored).
    pub async fn job_outputs(&self, id: u64) -> Result<Vec<u8>, ClientError> {
        self.bytes(self.request(Method::GET, &format!("/v1/jobs/{id}/outputs")))
            .await
    }

    /// A chunk of a job's outputs, in its stored form (check it with
    /// `vgrid_cas::chunk::decode`).
    pub async fn job_output_chunk(&self, id: u64, chunk: &ChunkId) -> Result<Vec<u8>, ClientError> {
        self.bytes(self.request(
            Method::GET,
            &format!("/v1/jobs/{id}/outputs/chunks/{chunk}"),
        ))
        .await
    }

    /// The images the controller's store holds.
    pub async fn images(&self) -> Result<Vec<ImageRef>, ClientError> {
        self.json(self.request(Method::GET, "/v1/images")).await
    }

    /// Names an image's manifest (admin).
    pub async fn set_image(&self, name: &str, manifest: &ManifestId) -> Result<(), ClientError> {
        self.send(
            self.request(Method::PUT, &format!("/v1/images/{name}"))
                .json(&SetImage {
                    manifest: manifest.hex(),
                }),
        )
        .await?;
        Ok(())
    }

    async fn bytes(&self, req: RequestBuilder) -> Result<Vec<u8>, ClientError> {
        let resp = self.send(req).await?;
        Ok(resp
            .bytes()
            .await
            .map_err(|source| ClientError::Connect {
                url: self.base.clone(),
                source,
            })?
            .to_vec())
    }

    // ---- Node agent calls ----

    /// Joins with the secret of a join token: the node's credential and the
    /// controller's CA.
    pub async fn join(&self, node: &str, secret: &str) -> Result<JoinResponse, ClientError> {
        let req = JoinRequest {
            node: node.to_string(),
            secret: secret.to_string(),
        };
        self.json(
            self.http
                .request(Method::POST, format!("{}/v1/join", self.base))
                .json(&req),
        )
        .await
    }

    pub async fn register(&self, req: &RegisterNode) -> Result<RegisterResponse, ClientError> {
        self.json(self.request(Method::POST, "/v1/agent/register").json(req))
            .await
    }

    pub async fn actions(
        &self,
        node: &str,
        after: u64,
        wait_ms: u64,
    ) -> Result<Vec<ActionEnvelope>, ClientError> {
        let after = after.to_string();
        let wait_ms = wait_ms.to_string();
        self.json(self.request(Method::GET, "/v1/agent/actions").query(&[
            ("node", node),
            ("after", after.as_str()),
            ("wait_ms", wait_ms.as_str()),
        ]))
        .await
    }

    /// Says which images the node holds now.
    pub async fn node_images(&self, node: &str, images: Vec<String>) -> Result<(), ClientError> {
        let body = vgrid_api::types::NodeImages {
            node: node.to_string(),
            images,
        };
        let resp = self
            .send(self.request(Method::POST, "/v1/agent/images").json(&body))
            .await?;
        expect_no_content(resp.status())
    }

    pub async fn report(&self, report: &AgentReport) -> Result<(), ClientError> {
        let resp = self
            .send(self.request(Method::POST, "/v1/agent/events").json(report))
            .await?;
        expect_no_content(resp.status())
    }

    pub async fn write_output(
        &self,
        id: u64,
        node: &str,
        attempt: u32,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<(), ClientError> {
        let attempt = attempt.to_string();
        let offset = offset.to_string();
        let resp = self
            .send(
                self.request(Method::PUT, &format!("/v1/agent/jobs/{id}/output"))
                    .query(&[
                        ("node", node),
                        ("attempt", attempt.as_str()),
                        ("offset", offset.as_str()),
                    ])
                    .body(data),
            )
            .await?;
        expect_no_content(resp.status())
    }
}

/// A builder of HTTP clients for plain http: it never uses TLS, but reqwest
/// wants a TLS configuration all the same, so it gets one that trusts
/// nobody.
fn plain_builder() -> Result<reqwest::ClientBuilder, ClientError> {
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let nobody = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Decode(format!("cannot build the HTTP client: {e}")))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Ok(reqwest::Client::builder().tls_backend_preconfigured(nobody))
}

/// A raw HTTP client for plain http (tests that send what the typed client
/// never would).
pub fn plain_http() -> reqwest::Client {
    plain_builder()
        .and_then(|b| {
            b.build()
                .map_err(|e| ClientError::Decode(format!("cannot build the HTTP client: {e}")))
        })
        .unwrap_or_default()
}

/// Whether `url` names this machine's loopback.
fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

fn expect_no_content(status: StatusCode) -> Result<(), ClientError> {
    if status == StatusCode::NO_CONTENT || status == StatusCode::OK {
        Ok(())
    } else {
        Err(ClientError::Decode(format!("expected 204, got {status}")))
    }
}
