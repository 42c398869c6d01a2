//! The rest-hook notifier: POSTs notifications with hyper's pooled client. HTTPS (rustls, the system's roots)
//! comes with the `aws` feature, as in AWS every endpoint must be HTTPS; the local runner delivers over plain
//! HTTP too, so a newcomer can point a subscription at a listener on loopback.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::ports::{Delivery, Notifier, PortError, PortResult};

/// How long one delivery may take before it counts as failed (and is retried later).
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(feature = "aws")]
type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;
#[cfg(not(feature = "aws"))]
type Connector = hyper_util::client::legacy::connect::HttpConnector;

/// Posts notifications over HTTP(S).
#[derive(Clone)]
pub struct HttpNotifier {
    client: Client<Connector, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for HttpNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpNotifier").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl HttpNotifier {
    /// A notifier with the given per-delivery timeout. (With `aws`: reads the system's root certificates.)
    pub fn new(timeout: Duration) -> PortResult<Self> {
        #[cfg(feature = "aws")]
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| PortError::Unavailable(format!("no root certificates: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        #[cfg(not(feature = "aws"))]
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        Ok(HttpNotifier { client: Client::builder(TokioExecutor::new()).build(connector), timeout })
    }
}

impl HttpNotifier {
    /// GETs `url` with `headers` and reads at most `limit` bytes of the answer: how the exchange reads from a
    /// partner's FHIR server (CRD prefetch it was not sent). `Unavailable` when it cannot be reached in time or
    /// the answer is larger than `limit`.
    pub async fn get(&self, url: &str, headers: &[(&str, &str)], limit: usize) -> PortResult<(u16, Bytes)> {
        use http_body_util::BodyExt as _;
        let mut req =
            Request::builder().method(Method::GET).uri(url).header(header::USER_AGENT, "payer-provider-exchange");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(Bytes::new())).map_err(|e| PortError::Invalid(e.to_string()))?;
        let exchange = async {
            let resp =
                self.client.request(req).await.map_err(|e| PortError::Unavailable(format!("unreachable: {e}")))?;
            let status = resp.status().as_u16();
            let body = http_body_util::Limited::new(resp.into_body(), limit)
                .collect()
                .await
                .map_err(|e| PortError::Unavailable(format!("answer unreadable or too large: {e}")))?
                .to_bytes();
            Ok((status, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Err(PortError::Unavailable("timed out".into())),
            Ok(result) => result,
        }
    }
}

#[async_trait]
impl Notifier for HttpNotifier {
    async fn post(&self, endpoint: &str, headers: &[(String, String)], body: Vec<u8>) -> PortResult<Delivery> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(endpoint)
            .header(header::CONTENT_TYPE, "application/fhir+json")
            .header(header::USER_AGENT, "payer-provider-exchange");
        for (name, value) in headers {
            req = req.header(name.as_str(), value.as_str());
        }
        let req = req.body(Full::new(Bytes::from(body))).map_err(|e| PortError::Invalid(e.to_string()))?;
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => Err(PortError::Unavailable("notification endpoint timed out".into())),
            Ok(Err(e)) => Err(PortError::Unavailable(format!("notification endpoint unreachable: {e}"))),
            Ok(Ok(resp)) => {
                let status = resp.status().as_u16();
                Ok(if resp.status().is_success() { Delivery::Delivered(status) } else { Delivery::Refused(status) })
            }
        }
    }
}

/// An [`HttpNotifier`] built on first use. The HTTP functions hold one but never deliver (the worker does), so
/// they should not read the root certificates during their cold start.
#[derive(Debug)]
pub struct LazyHttpNotifier {
    timeout: Duration,
    cell: tokio::sync::OnceCell<HttpNotifier>,
}

impl LazyHttpNotifier {
    /// A notifier built with `timeout` when first asked to post.
    pub fn new(timeout: Duration) -> Self {
        LazyHttpNotifier { timeout, cell: tokio::sync::OnceCell::new() }
    }
}

#[async_trait]
impl Notifier for LazyHttpNotifier {
    async fn post(&self, endpoint: &str, headers: &[(String, String)], body: Vec<u8>) -> PortResult<Delivery> {
        let timeout = self.timeout;
        let notifier = self.cell.get_or_try_init(|| async move { HttpNotifier::new(timeout) }).await?;
        notifier.post(endpoint, headers, body).await
    }
}
