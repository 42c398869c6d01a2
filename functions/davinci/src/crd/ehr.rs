//! Reading what the client did not prefetch from the EHR's FHIR server, with the `fhirAuthorization` it lent us.
//! Only when the deployment allows it ([`crate::Settings::fetch_from_ehr`]): the CRD answer is due within seconds,
//! and a payer may not want its functions calling out. Each read is bounded in time and size.

use std::time::Duration;

use async_trait::async_trait;
use exchange_core::adapters::notifier::HttpNotifier;
use exchange_core::ports::PortError;
use serde_json::Value;
use tokio::sync::OnceCell;

/// How long one read from the EHR may take (the whole CRD answer is due in 5 s).
pub const EHR_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest answer read from the EHR.
pub const EHR_MAX_BYTES: usize = 2 * 1024 * 1024;

/// A FHIR server the client named.
#[async_trait]
pub trait EhrFhir: Send + Sync + 'static {
    /// GETs `base/path_and_query` with the bearer token and returns the resource (or search Bundle).
    async fn read(&self, base: &str, path_and_query: &str, bearer: &str) -> Result<Value, PortError>;
}

/// Reads over HTTPS (HTTP too in the local runner), the client built on first use so cold starts do not pay for
/// the root certificates.
#[derive(Debug)]
pub struct HttpEhr {
    client: OnceCell<HttpNotifier>,
}

impl HttpEhr {
    /// A reader (nothing is built until the first read).
    pub fn new() -> Self {
        HttpEhr { client: OnceCell::new() }
    }
}

impl Default for HttpEhr {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl EhrFhir for HttpEhr {
    async fn read(&self, base: &str, path_and_query: &str, bearer: &str) -> Result<Value, PortError> {
        let client = self.client.get_or_try_init(|| async { HttpNotifier::new(EHR_READ_TIMEOUT) }).await?;
        let url = format!("{}/{}", base.trim_end_matches('/'), path_and_query);
        let auth = format!("Bearer {bearer}");
        let (status, body) = client
            .get(&url, &[("authorization", auth.as_str()), ("accept", "application/fhir+json")], EHR_MAX_BYTES)
            .await?;
        if !(200..300).contains(&status) {
            return Err(PortError::Unavailable(format!("EHR answered HTTP {status}")));
        }
        serde_json::from_slice(&body).map_err(|_| PortError::Unavailable("EHR answer is not JSON".into()))
    }
}
