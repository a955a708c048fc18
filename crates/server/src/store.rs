//! The content-addressed store over HTTP: chunks, manifests and the image
//! names, for node agents (and admins); a job's inputs from its submitter
//! and its outputs to its owner.
//!
//! Users write only data: they may ask which chunks the store lacks, send
//! chunks, and send manifests of kind `data`, each recorded as theirs (the
//! ref `data/<user>/<id>`), which a submission of theirs may then name as
//! its input data ([`check_input_data`]). The store records who sent each
//! chunk: to a user, a chunk only others sent is missing, and a user's
//! manifest may name only chunks that user sent, so that deduplication
//! across users neither tells one about another's files nor lets a job
//! read a chunk its owner never had. Users never read chunks or
//! manifests by id: a job's outputs reach its owner through the job
//! (`/v1/jobs/{id}/outputs`, and only the chunks its manifest lists).
//!
//! Every body is checked before it is kept: a chunk must hash to its name,
//! a manifest must hash to its id, parse, and have all its chunks in the
//! store already (so a manifest in the store is always complete).

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use vgrid_api::types::{ChunkList, ImageRef, Principal, Role, SetImage};
use vgrid_cas::{CasError, ChunkId, Manifest, ManifestId, ManifestKind, Store};
use vgrid_model::JobSpec;

use crate::command::{Backend, Command, JobOutputs, Reply};
use crate::routes::{Body, Caller};
use crate::server::{ApiError, ApiResult, json, json_body, require_role};

/// Most bytes of a request that lists chunks or carries a manifest.
pub const MAX_LIST_BYTES: usize = 64 << 20;
/// Most bytes of a stored chunk (its codec byte and a raw chunk).
const MAX_STORED_CHUNK: usize = vgrid_cas::chunk::MAX_CHUNK as usize + 1;

const NODE_ROLES: &[Role] = &[Role::Agent, Role::Admin];
/// Who may send to the store (users only data, see [`put_manifest`]).
const WRITERS: &[Role] = &[Role::Agent, Role::Admin, Role::User];

/// The ref that records a data manifest as uploaded by `user`.
pub fn data_ref(user: &str, id: &ManifestId) -> String {
    format!("data/{user}/{id}")
}

/// The ref that keeps a job's outputs.
pub fn outputs_ref(job: u64) -> String {
    format!("outputs/{job}")
}

fn store_of<B: Backend>(b: &B) -> Result<Arc<Store>, ApiError> {
    b.store().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "this controller has no store",
        )
    })
}

fn cas_error(e: CasError) -> ApiError {
    let status = match &e {
        CasError::MissingChunk { .. } | CasError::MissingManifest { .. } => StatusCode::NOT_FOUND,
        CasError::RefusedChunk { .. }
        | CasError::ManifestHash { .. }
        | CasError::BadManifest { .. }
        | CasError::BadRef(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let code = match status {
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::BAD_REQUEST => "bad-request",
        _ => "unavailable",
    };
    ApiError::new(status, code, vgrid_model::sentence(&e))
}

fn chunk_id(p: Result<Path<String>, PathRejection>) -> Result<ChunkId, ApiError> {
    p.ok()
        .and_then(|Path(s)| ChunkId::parse(&s))
        .ok_or_else(|| ApiError::bad_request("a chunk id is 64 hexadecimal digits"))
}

fn manifest_id(p: Result<Path<String>, PathRejection>) -> Result<ManifestId, ApiError> {
    p.ok()
        .and_then(|Path(s)| ManifestId::parse(&s))
        .ok_or_else(|| ApiError::bad_request("a manifest id is 64 hexadecimal digits"))
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "a store task failed",
        )
    })?
}

fn bytes_response(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
}

/// Which of these chunks the store lacks: what an upload still has to send.
#[utoipa::path(
    post,
    path = "/v1/store/missing",
    tag = "store",
    request_body = ChunkList,
    responses(
        (status = 200, description = "the chunks the store lacks (to a user: those the user has not sent)", body = ChunkList),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::TooLarge),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn missing<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    Body(body): Body,
) -> ApiResult {
    require_role(&p, WRITERS, "asking the store")?;
    let store = store_of(&*b)?;
    let list: ChunkList = json_body(&body)?;
    let ids = list
        .chunks
        .iter()
        .map(|h| ChunkId::parse(h))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| ApiError::bad_request("a chunk id is 64 hexadecimal digits"))?;
    // A user learns only which of their own chunks the store has: every
    // other is "missing" to them, whoever else sent it.
    let user = (p.role == Role::User).then(|| p.name.clone());
    let missing = blocking(move || {
        Ok(ids
            .into_iter()
            .filter(|id| match &user {
                Some(who) => !store.sent_by(who, id),
                None => !store.has_chunk(id),
            })
            .map(|id| id.hex())
            .collect::<Vec<_>>())
    })
    .await?;
    json(StatusCode::OK, &ChunkList { chunks: missing })
}

/// Stores a chunk (agents, admins, users sending a job's inputs).
#[utoipa::path(
    put,
    path = "/v1/store/chunks/{id}",
    tag = "store",
    request_body(content = inline(crate::openapi::Binary), content_type = "application/octet-stream", description = "the stored form: a codec byte, then the bytes, zstd-compressed or raw; it must hash (BLAKE3, uncompressed) to its id"),
    params(
        ("id" = String, Path, description = "the object's id: 64 lowercase hexadecimal digits (BLAKE3)")
    ),
    responses(
        (status = 201, description = "stored"), (status = 200, description = "it was there"),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::TooLarge),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn put_chunk<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    id: Result<Path<String>, PathRejection>,
    Body(body): Body,
) -> ApiResult {
    require_role(&p, WRITERS, "writing to the store")?;
    let store = store_of(&*b)?;
    let id = chunk_id(id)?;
    if body.len() > MAX_STORED_CHUNK {
        return Err(ApiError::bad_request(
            "a stored chunk is at most 256 KiB and a byte",
        ));
    }
    let user = (p.role == Role::User).then(|| p.name.clone());
    let new = blocking(move || {
        let new = store.put_stored(&id, &body).map_err(cas_error)?;
        match user {
            // Recorded as theirs; and the answer does not say whether
            // someone else had sent it.
            Some(who) => {
                store.mark_sender(&who, &id).map_err(cas_error)?;
                Ok(true)
            }
            None => Ok(new),
        }
    })
    .await?;
    Ok(if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
    .into_response())
}

/// A chunk's stored form (agents, admins).
#[utoipa::path(
    get,
    path = "/v1/store/chunks/{id}",
    tag = "store",
    params(
        ("id" = String, Path, description = "the object's id: 64 lowercase hexadecimal digits (BLAKE3)")
    ),
    responses(
        (status = 200, description = "the stored chunk, verified before it is sent", content_type = "application/octet-stream", body = inline(crate::openapi::Binary)),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_chunk<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    require_role(&p, NODE_ROLES, "reading the store")?;
    let store = store_of(&*b)?;
    let id = chunk_id(id)?;
    let bytes = blocking(move || store.get_stored(&id).map_err(cas_error)).await?;
    Ok(bytes_response(bytes))
}

/// Stores a manifest (agents, admins; users only manifests of kind
/// `data`, recorded as theirs).
#[utoipa::path(
    put,
    path = "/v1/store/manifests/{id}",
    tag = "store",
    request_body(content = Object, content_type = "application/json", description = "the manifest's bytes: it must hash to its id, parse, and have every chunk in the store"),
    params(
        ("id" = String, Path, description = "the object's id: 64 lowercase hexadecimal digits (BLAKE3)")
    ),
    responses(
        (status = 201, description = "stored"),
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
pub(crate) async fn put_manifest<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    id: Result<Path<String>, PathRejection>,
    Body(body): Body,
) -> ApiResult {
    require_role(&p, WRITERS, "writing to the store")?;
    let store = store_of(&*b)?;
    let id = manifest_id(id)?;
    blocking(move || {
        let m = vgrid_cas::Manifest::parse(&body)
            .map_err(|source| cas_error(CasError::BadManifest { id, source }))?;
        if p.role == Role::User && m.kind != ManifestKind::Data {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "a user sends only data manifests (a job's inputs) to the store",
            ));
        }
        // A user's manifest may name only chunks that user sent.
        let missing: Vec<ChunkId> = if p.role == Role::User {
            m.chunk_ids()
                .into_iter()
                .filter(|id| !store.sent_by(&p.name, id))
                .collect()
        } else {
            store.missing(&m)
        };
        if !missing.is_empty() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "{} of the manifest's chunks are not in the store yet{} (the first: {})",
                    missing.len(),
                    if p.role == Role::User {
                        " as sent by you"
                    } else {
                        ""
                    },
                    missing[0]
                ),
            ));
        }
        store.put_manifest_bytes(&id, &body).map_err(cas_error)?;
        // Data a user (or an admin) sends is theirs to name as input data.
        if m.kind == ManifestKind::Data && p.role != Role::Agent {
            store
                .set_ref(&data_ref(&p.name, &id), &id)
                .map_err(cas_error)?;
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::CREATED.into_response())
}

/// A manifest's bytes (agents, admins).
#[utoipa::path(
    get,
    path = "/v1/store/manifests/{id}",
    tag = "store",
    params(
        ("id" = String, Path, description = "the object's id: 64 lowercase hexadecimal digits (BLAKE3)")
    ),
    responses(
        (status = 200, description = "the manifest", content_type = "application/json", body = Object),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_manifest<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    require_role(&p, NODE_ROLES, "reading the store")?;
    let store = store_of(&*b)?;
    let id = manifest_id(id)?;
    let bytes = blocking(move || store.get_manifest_bytes(&id).map_err(cas_error)).await?;
    Ok(bytes_response(bytes))
}

/// Every image the store holds, by name.
#[utoipa::path(
    get,
    path = "/v1/images",
    tag = "store",
    responses(
        (status = 200, description = "images by name", body = Vec<ImageRef>),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 404, response = crate::openapi::NotFound),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_images<B: Backend>(State(b): State<Arc<B>>, _: Caller) -> ApiResult {
    let store = store_of(&*b)?;
    let images = blocking(move || {
        let mut out = Vec::new();
        for name in store.list_refs("images").map_err(cas_error)? {
            let Some(id) = store.get_ref(&name).map_err(cas_error)? else {
                continue;
            };
            let size = store.get_manifest(&id).map(|m| m.size()).unwrap_or(0);
            out.push(ImageRef {
                name: name.trim_start_matches("images/").to_string(),
                manifest: id.hex(),
                size,
            });
        }
        Ok(out)
    })
    .await?;
    json(StatusCode::OK, &images)
}

/// Names an image's manifest (admin): it must be in the store, complete,
/// and describe an image.
#[utoipa::path(
    put,
    path = "/v1/images/{name}",
    tag = "store",
    request_body = SetImage,
    params(
        ("name" = String, Path, description = "the image's name")
    ),
    responses(
        (status = 204, description = "named"),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::TooLarge),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn set_image<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    name: Result<Path<String>, PathRejection>,
    Body(body): Body,
) -> ApiResult {
    require_role(&p, &[Role::Admin], "naming an image")?;
    let store = store_of(&*b)?;
    let Ok(Path(name)) = name else {
        return Err(ApiError::bad_request("bad image name"));
    };
    let req: SetImage = json_body(&body)?;
    let id = ManifestId::parse(&req.manifest)
        .ok_or_else(|| ApiError::bad_request("a manifest id is 64 hexadecimal digits"))?;
    blocking(move || {
        let m = store.get_manifest(&id).map_err(cas_error)?;
        if m.kind != ManifestKind::Image {
            return Err(ApiError::bad_request(format!(
                "manifest {id} is not an image's"
            )));
        }
        store
            .set_ref(&format!("images/{name}"), &id)
            .map_err(cas_error)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Checks the input data a submission names against the job file and the
/// store, and puts it in the spec: a job with inputs needs the data
/// manifest its submitter uploaded (the ref `data/<user>/<id>`), holding
/// exactly one file per input named as [`JobSpec::input_names`] says; a job
/// without inputs takes none.
pub(crate) async fn check_input_data<B: Backend>(
    b: &B,
    p: &Principal,
    spec: &mut JobSpec,
    input_data: Option<String>,
) -> Result<(), ApiError> {
    let text = match (spec.inputs.is_empty(), input_data) {
        (true, None) => return Ok(()),
        (true, Some(_)) => {
            return Err(ApiError::bad_request(
                "`input_data` names input files, but the job file has no `inputs`",
            ));
        }
        (false, None) => {
            return Err(ApiError::bad_request(
                "the job file has `inputs`: upload them to the store first and name their data manifest as `input_data` (`vgrid submit` does both)",
            ));
        }
        (false, Some(text)) => text,
    };
    let id = ManifestId::parse(&text)
        .filter(|id| id.hex() == text)
        .ok_or_else(|| {
            ApiError::bad_request("`input_data` is a manifest id: 64 lowercase hexadecimal digits")
        })?;
    let store = store_of(b)?;
    let user = p.name.clone();
    let names = spec.input_names();
    blocking(move || {
        let theirs = store
            .get_ref(&data_ref(&user, &id))
            .map_err(cas_error)?
            .is_some_and(|r| r == id);
        if !theirs {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "input data {id} was not uploaded by {user}: a job reads only data its owner sent"
                ),
            ));
        }
        let m = store.get_manifest(&id).map_err(cas_error)?;
        let held: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        if m.kind != ManifestKind::Data || held.iter().ne(names.iter()) {
            return Err(ApiError::bad_request(format!(
                "input data {id} holds {}, but the job's inputs are named {} (by the file names of their `to`)",
                quoted(&held),
                quoted(&names.iter().map(String::as_str).collect::<Vec<_>>())
            )));
        }
        Ok(())
    })
    .await?;
    spec.input_data = Some(id.hex());
    Ok(())
}

fn quoted(names: &[&str]) -> String {
    if names.is_empty() {
        return "no files".into();
    }
    let shown: Vec<String> = names
        .iter()
        .take(8)
        .map(|n| format!("`{}`", vgrid_model::names::display_safe(n)))
        .collect();
    let more = names.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// The outputs of job `id` as the principal may see them: a 404 for a job
/// that is not theirs (as for one that does not exist), a 409 for one that
/// has not ended, a 404 saying why for one without outputs.
async fn job_outputs<B: Backend>(b: &B, p: Principal, id: u64) -> Result<ManifestId, ApiError> {
    let out: JobOutputs = match b.execute(p, Command::JobOutputs { id }).await? {
        Reply::JobOutputs(o) => *o,
        other => {
            tracing::error!(?other, "the backend answered with the wrong kind of reply");
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the controller gave an unexpected answer",
            ));
        }
    };
    let state = out.job.state;
    let reason = vgrid_model::names::display_safe(&out.job.reason).into_owned();
    match out.manifest {
        Some(hex) => ManifestId::parse(&hex).ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("the database holds `{hex}` as job {id}'s outputs, not a manifest id"),
            )
        }),
        None if out.wanted == 0 => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("job {id} has no outputs: its job file names none"),
        )),
        None if !state.is_terminal() => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "job {id} has not ended yet (it is {state}: {reason}); its outputs are collected when its command ends"
            ),
        )),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("job {id} ended without outputs: it is {state} ({reason})"),
        )),
    }
}

/// `GET /v1/jobs/{id}/outputs`: the data manifest of a job's outputs
/// (owner or admin).
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/outputs",
    tag = "jobs",
    params(
        ("id" = u64, Path, description = "the job's id", minimum = 1)
    ),
    responses(
        (status = 200, description = "the data manifest of the outputs (JSON; its BLAKE3 hash is its id)", content_type = "application/json", body = Object),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_job_outputs<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    id: Result<Path<u64>, PathRejection>,
) -> ApiResult {
    require_role(&p, &[Role::User, Role::Admin], "reading a job's outputs")?;
    let id = crate::server::path_id(id)?;
    let manifest = job_outputs(&*b, p, id).await?;
    let store = store_of(&*b)?;
    let bytes = blocking(move || store.get_manifest_bytes(&manifest).map_err(cas_error)).await?;
    Ok(bytes_response(bytes))
}

/// The chunks of a few recently read output manifests, so that fetching
/// a large output does not parse its manifest once per chunk.
static LISTED: std::sync::Mutex<Vec<(ManifestId, Arc<HashSet<ChunkId>>)>> =
    std::sync::Mutex::new(Vec::new());
const LISTED_KEPT: usize = 16;

fn listed_chunks(store: &Store, id: &ManifestId) -> Result<Arc<HashSet<ChunkId>>, ApiError> {
    if let Ok(cache) = LISTED.lock()
        && let Some((_, set)) = cache.iter().find(|(m, _)| m == id)
    {
        return Ok(set.clone());
    }
    let m: Manifest = store.get_manifest(id).map_err(cas_error)?;
    let set = Arc::new(m.chunk_ids().into_iter().collect::<HashSet<_>>());
    if let Ok(mut cache) = LISTED.lock() {
        if cache.len() >= LISTED_KEPT {
            cache.remove(0);
        }
        cache.push((*id, set.clone()));
    }
    Ok(set)
}

/// `GET /v1/jobs/{id}/outputs/chunks/{chunk}`: a chunk the job's outputs
/// manifest lists (owner or admin), in its stored form.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/outputs/chunks/{chunk}",
    tag = "jobs",
    params(
        ("id" = u64, Path, description = "the job's id", minimum = 1),
        ("chunk" = String, Path, description = "64 lowercase hexadecimal digits (BLAKE3)")
    ),
    responses(
        (status = 200, description = "the chunk's stored form: a codec byte, then the bytes, zstd-compressed or raw; check it against its id", content_type = "application/octet-stream", body = inline(crate::openapi::Binary)),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::Unavailable)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_job_output_chunk<B: Backend>(
    State(b): State<Arc<B>>,
    Caller(p): Caller,
    path: Result<Path<(u64, String)>, PathRejection>,
) -> ApiResult {
    require_role(&p, &[Role::User, Role::Admin], "reading a job's outputs")?;
    let Ok(Path((id, chunk))) = path else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "a job id is a positive integer",
        ));
    };
    let chunk = ChunkId::parse(&chunk)
        .ok_or_else(|| ApiError::bad_request("a chunk id is 64 hexadecimal digits"))?;
    let manifest = job_outputs(&*b, p, id).await?;
    let store = store_of(&*b)?;
    let bytes = blocking(move || {
        if !listed_chunks(&store, &manifest)?.contains(&chunk) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("chunk {chunk} is not one of job {id}'s outputs"),
            ));
        }
        store.get_stored(&chunk).map_err(cas_error)
    })
    .await?;
    Ok(bytes_response(bytes))
}
