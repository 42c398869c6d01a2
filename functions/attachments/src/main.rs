//! The attachments Lambda: builds the shared state once per cold start and serves the router.

use std::sync::Arc;

use attachments::{router, Attachments};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    exchange_core::telemetry::init();
    let core = Arc::new(exchange_core::app::App::from_aws_env().await?);
    lambda_http::run(router(Arc::new(Attachments::new(core)))).await
}
