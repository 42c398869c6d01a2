//! Query strings answered as problem+json when they do not parse (axum's own rejection is plain text).

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::Problem;

/// A query string deserialized into `T`; a malformed one is a 400 problem+json naming the parameter (never its
/// value).
#[derive(Debug, Clone)]
pub struct ProblemQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ProblemQuery<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(q)) => Ok(ProblemQuery(q)),
            Err(e) => Err(Problem::bad_request(e.body_text())),
        }
    }
}
