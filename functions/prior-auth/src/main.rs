//! The prior-auth Lambda: builds the shared state once per cold start and serves the router.

use std::sync::Arc;

use exchange_core::adapters::notifier::{LazyHttpNotifier, DELIVERY_TIMEOUT};
use prior_auth::{router, PriorAuth, Settings};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    exchange_core::telemetry::init();
    let core = Arc::new(exchange_core::app::App::from_aws_env().await?);
    // Deliveries are the worker's: the notifier is only built if this function ever posts one.
    let notifier = Arc::new(LazyHttpNotifier::new(DELIVERY_TIMEOUT));
    let pa = Arc::new(PriorAuth::new(core, notifier, Settings::default()));
    lambda_http::run(router(pa)).await
}
