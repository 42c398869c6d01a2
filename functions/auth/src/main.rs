//! The auth Lambda: builds the shared state once per cold start and serves the token endpoint.

use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    exchange_core::telemetry::init();
    let core = Arc::new(exchange_core::app::App::from_aws_env().await?);
    let auth = Arc::new(auth::Auth::new(core, auth::Settings::from_env()));
    lambda_http::run(auth::router(auth)).await
}
