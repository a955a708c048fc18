//! The content-addressed store over HTTP: chunks, manifests and the image
//! names, for node agents (and admins). Users never read chunks: what is
//! theirs reaches them through their jobs.
//!
//! Every body is checked before it is kept: a chunk must hash to its name,
//! a manifest must hash to its id, parse, and have all its chunks in the
//! store already (so a manifest in the store is always complete).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use vgrid_api::types::{ChunkList, ImageRef, Role, SetImage};
use vgrid_cas::{CasError, ChunkId, ManifestId, ManifestKind, Store};

use crate::command::Backend;
use crate::server::{ApiError, ApiResult, json, json_body, principal, require_role};

/// Most bytes of a request that lists chunks or carries a manifest.
pub const MAX_LIST_BYTES: usize = 64 << 20;
/// Most bytes of a stored chunk (its codec byte and a raw chunk).
const MAX_STORED_CHUNK: usize = vgrid_cas::chunk::MAX_CHUNK as usize + 1;

const NODE_ROLES: &[Role] = &[Role::Agent, Role::Admin];

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
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    ApiError::new(status, code, text)
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

pub(crate) async fn missing<B: Backend>(
    State(b): State<Arc<B>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let p = principal(&*b, &headers)?;
    require_role(&p, NODE_ROLES, "asking the store")?;
    let store = store_of(&*b)?;
    let list: ChunkList = json_body(&body)?;
    let ids = list
        .chunks
        .iter()
        .map(|h| ChunkId::parse(h))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| ApiError::bad_request("a chunk id is 64 hexadecimal digits"))?;
    let missing = blocking(move || {
        Ok(ids
            .into_iter()
            .filter(|id| !store.has_chunk(id))
            .map(|id| id.hex())
            .collect::<Vec<_>>())
    })
    .await?;
    json(StatusCode::OK, &ChunkList { chunks: missing })
}

pub(crate) async fn put_chunk<B: Backend>(
    State(b): State<Arc<B>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> ApiResult {
    let p = principal(&*b, &headers)?;
    require_role(&p, NODE_ROLES, "writing to the store")?;
    let store = store_of(&*b)?;
    let id = chunk_id(id)?;
    if body.len() > MAX_STORED_CHUNK {
        return Err(ApiError::bad_request(
            "a stored chunk is at most 256 KiB and a byte",
        ));
    }
    let new = blocking(move || store.put_stored(&id, &body).map_err(cas_error)).await?;
    Ok(if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
    .into_response())
}

pub(crate) async fn get_chunk<B: Backend>(
    State(b): State<Arc<B>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let p = principal(&*b, &headers)?;
    require_role(&p, NODE_ROLES, "reading the store")?;
    let store = store_of(&*b)?;
    let id = chunk_id(id)?;
    let bytes = blocking(move || store.get_stored(&id).map_err(cas_error)).await?;
    Ok(bytes_response(bytes))
}

pub(crate) async fn put_manifest<B: Backend>(
    State(b): State<Arc<B>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> ApiResult {
    let p = principal(&*b, &headers)?;
    require_role(&p, NODE_ROLES, "writing to the store")?;
    let store = store_of(&*b)?;
    let id = manifest_id(id)?;
    blocking(move || {
        let m = vgrid_cas::Manifest::parse(&body)
            .map_err(|source| cas_error(CasError::BadManifest { id, source }))?;
        let missing = store.missing(&m);
        if !missing.is_empty() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "{} of the manifest's chunks are not in the store yet (the first: {})",
                    missing.len(),
                    missing[0]
                ),
            ));
        }
        store.put_manifest_bytes(&id, &body).map_err(cas_error)?;
        Ok(())
    })
    .await?;
    Ok(StatusCode::CREATED.into_response())
}

pub(crate) async fn get_manifest<B: Backend>(
    State(b): State<Arc<B>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let p = principal(&*b, &headers)?;
    require_role(&p, NODE_ROLES, "reading the store")?;
    let store = store_of(&*b)?;
    let id = manifest_id(id)?;
    let bytes = blocking(move || store.get_manifest_bytes(&id).map_err(cas_error)).await?;
    Ok(bytes_response(bytes))
}

/// Every image the store holds, by name.
pub(crate) async fn list_images<B: Backend>(
    State(b): State<Arc<B>>,
    headers: HeaderMap,
) -> ApiResult {
    principal(&*b, &headers)?;
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
pub(crate) async fn set_image<B: Backend>(
    State(b): State<Arc<B>>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> ApiResult {
    let p = principal(&*b, &headers)?;
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
