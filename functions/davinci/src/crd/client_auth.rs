//! The CDS client's JWT (CDS Hooks "Trusting CDS Clients"): signed ES384 or RS384 by a key the calling partner
//! registered (`jwks`), issued by one of its registered CDS issuers, for this service's URL (`aud`), unexpired,
//! short-lived, and used once (`jti`, recorded with the answer). Every failure is a 401 naming the check that
//! failed, never the token's content.

use std::sync::Arc;

use axum::http::HeaderValue;
use exchange_core::domain::payer_data::PayerDataRepo;
use exchange_core::domain::{PartnerRole, TradingPartner};
use exchange_core::fhir::FhirError;
use exchange_core::jose::{check_claims, JoseError, UnverifiedJws};

/// Longest lifetime accepted for a CDS client JWT (the specification expects minutes).
pub const MAX_CDS_JWT_LIFETIME_SECS: i64 = 300;

/// An authenticated CDS client.
#[derive(Debug, Clone)]
pub struct CdsClient {
    /// The partner its issuer is registered to.
    pub partner: Arc<TradingPartner>,
    /// `iss`.
    pub issuer: String,
    /// `jti`, to record.
    pub jti: String,
    /// `exp`.
    pub expires: i64,
}

fn refused(e: &JoseError) -> FhirError {
    tracing::info!(reason = %e, "CDS Hooks request refused: client JWT");
    FhirError::Unauthorized(format!("the CDS client JWT was refused: {e}"))
}

/// Verifies the `Authorization: Bearer` JWT of a CDS Hooks request for the service at `audience`.
pub async fn authenticate(
    repo: &PayerDataRepo,
    authorization: Option<&HeaderValue>,
    audience: &str,
    now: i64,
) -> Result<CdsClient, FhirError> {
    let token = authorization
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| FhirError::Unauthorized("a CDS client JWT (Authorization: Bearer) is required".into()))?;
    let jws = UnverifiedJws::parse(token).map_err(|e| refused(&e))?;
    let issuer = jws.issuer().ok_or(JoseError::Claim("iss")).map_err(|e| refused(&e))?.to_owned();
    let partner = match repo.partner_by_cds_issuer(&issuer).await {
        Ok(Some(p)) if p.role == PartnerRole::Provider => p,
        Ok(_) => return Err(refused(&JoseError::UnknownKey)),
        Err(e) => return Err(FhirError::from_port("-", &e)),
    };
    let jwks = partner.jwks.clone().unwrap_or_default();
    let claims = jws.verify(&jwks).map_err(|e| refused(&e))?;
    let registered = check_claims(&claims, audience, now, MAX_CDS_JWT_LIFETIME_SECS).map_err(|e| refused(&e))?;
    Ok(CdsClient { partner: Arc::new(partner), issuer, jti: registered.jti, expires: registered.exp })
}
