//! The davinci Lambda: builds the shared state once per cold start and serves the router.

use std::sync::Arc;

use davinci::crd::ehr::HttpEhr;
use davinci::{router, Davinci, Settings};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    exchange_core::telemetry::init();
    let core = Arc::new(exchange_core::app::App::from_aws_env().await?);
    // The EHR reader builds its HTTPS client on first use: most deployments never read from the EHR.
    let dv = Arc::new(Davinci::new(core, Arc::new(HttpEhr::new()), Settings::from_env()));
    lambda_http::run(router(dv)).await
}
