//! HTTP glue shared by every function: problem+json answers, the caller middleware, request ids, body limits.

pub mod body;
pub mod caller;
pub mod problem;
pub mod query;
pub mod transfer;
pub mod x12_inbound;

pub use body::{answer_response, media_type, read_body, read_body_max};
pub use caller::{require_caller, Authenticator, CallerContext};
pub use problem::Problem;
pub use query::ProblemQuery;
pub use x12_inbound::{receive_x12, ta1_answer, x12_reply_response, x12_response, X12Request, X12Route};

/// The exchange's public base URL (`https://api.example.com`): `configured` when set, else the request's `Host`
/// with `X-Forwarded-Proto` (https when absent). The audiences of partner-signed JWTs (CDS client JWTs, SMART client
/// assertions) are URLs under it, so in AWS it should be configured (`PUBLIC_BASE_URL`) rather than trusted from
/// headers.
pub fn public_base_url(configured: Option<&str>, headers: &axum::http::HeaderMap) -> String {
    if let Some(base) = configured {
        return base.trim_end_matches('/').to_owned();
    }
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let proto = headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()).unwrap_or("https");
    format!("{proto}://{host}")
}

/// Lambda's synchronous payload limit: a request body above it is refused with 413.
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

/// Media type of X12 bodies.
pub const X12_MEDIA_TYPE: &str = "application/edi-x12";
