//! The local runner's transfer endpoint: `PUT` and `GET /transfer/{token}` serve the one-time URLs that
//! [`LocalTransfers`](crate::adapters::embedded::LocalTransfers) issues, the way S3 serves presigned URLs in AWS.
//!
//! The token is the credential (no bearer token), so an unknown, used or expired token answers 404 or 403 and
//! says nothing else. Each grant works once: it is consumed by a conditional delete before the bytes move.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::Router;

use crate::adapters::embedded::local_transfers::{grant_key, Grant};
use crate::app::App;
use crate::domain::attachments::MAX_DOCUMENT_BYTES;
use crate::http::{media_type, read_body_max, Problem};
use crate::ports::{PortError, WriteOp};

/// `PUT /transfer/{token}` (upload) and `GET /transfer/{token}` (download), over `app`'s store and blobs.
pub fn routes(app: Arc<App>) -> Router {
    Router::new()
        .route("/transfer/{token}", put(upload).get(download))
        .with_state(app)
        .layer(DefaultBodyLimit::max(MAX_DOCUMENT_BYTES + 1))
}

fn no_such_url() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "No such transfer URL (unknown, already used or expired)")
}

fn port_problem(e: &PortError) -> Problem {
    Problem::from_port("transfer", e)
}

/// The grant for `token` if it allows `method` now; not consumed.
async fn grant(app: &App, token: &str, method: &str) -> Result<(Grant, u64), Problem> {
    // Tokens are 32 hex digits; anything else cannot name a grant (and must not reach the store as a key).
    if !crate::auth::is_hex_digest(token, 32) {
        return Err(no_such_url());
    }
    let item = app.store().get(&grant_key(token)).await.map_err(|e| port_problem(&e))?.ok_or_else(no_such_url)?;
    let version = item.version;
    let grant: Grant = serde_json::from_value(item.body).map_err(|_| no_such_url())?;
    if grant.method != method {
        return Err(no_such_url());
    }
    if grant.expires <= app.clock().now().unix_timestamp() {
        return Err(Problem::forbidden("the transfer URL has expired"));
    }
    Ok((grant, version))
}

/// Consumes the grant: exactly one request wins it.
async fn consume(app: &App, token: &str, version: u64) -> Result<(), Problem> {
    match app.store().transact(vec![WriteOp::Delete { key: grant_key(token), expected_version: version }]).await {
        Ok(()) => Ok(()),
        Err(PortError::Conflict(_) | PortError::NotFound(_)) => Err(no_such_url()),
        Err(e) => Err(port_problem(&e)),
    }
}

async fn upload(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let (grant, version) = grant(&app, &token, "PUT").await?;
    // Like a signed header of a presigned PUT: the declared media type must be the one the URL was issued for.
    if media_type(&headers) != grant.content_type.to_ascii_lowercase() {
        return Err(Problem::forbidden(format!("this URL accepts Content-Type {:?} only", grant.content_type)));
    }
    let body = read_body_max(body, MAX_DOCUMENT_BYTES)?;
    consume(&app, &token, version).await?;
    app.vault().blobs().put(&grant.path, body.to_vec()).await.map_err(|e| port_problem(&e))?;
    // No record follows this write: it must be durable before the URL (used up) answers 200.
    app.vault().blobs().sync().await.map_err(|e| port_problem(&e))?;
    Ok(StatusCode::OK.into_response())
}

async fn download(State(app): State<Arc<App>>, Path(token): Path<String>) -> Result<Response, Problem> {
    let (grant, version) = grant(&app, &token, "GET").await?;
    consume(&app, &token, version).await?;
    let bytes = app.vault().blobs().get(&grant.path).await.map_err(|e| match e {
        PortError::NotFound(_) => no_such_url(),
        other => port_problem(&other),
    })?;
    let mut resp = (StatusCode::OK, bytes).into_response();
    if let Ok(v) = HeaderValue::from_str(&grant.content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    Ok(resp)
}
