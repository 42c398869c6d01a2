//! Lambda entry point: build the app once per cold start, then serve API Gateway events with the router.

use std::sync::Arc;

use lambda_http::{run, Error};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    exchange_core::telemetry::init();
    let app = eligibility::App::from_aws_env().await?;
    run(eligibility::router(Arc::new(app))).await
}
