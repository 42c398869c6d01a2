//! What the AWS tests share: the emulator check and one run's resources (table, bucket, KMS keys) on moto.

use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_kms::types::{KeySpec, KeyUsageType};

/// The environment variables [`AwsAdapters::from_env`] reads.
pub const NAME_VARS: [&str; 4] = ["TABLE_NAME", "BUCKET_NAME", "DATA_KEY_ID", "SIGNING_KEY_ID"];

/// What one run provisioned.
pub struct Fixture {
    /// The SDK configuration (moto's endpoint).
    pub config: SdkConfig,
    /// The table's name.
    pub table: String,
    /// The document bucket's name.
    pub bucket: String,
    /// The symmetric data key's id.
    pub data_key_id: String,
    /// The RSA_2048 signing key's id.
    pub signing_key_id: String,
}

/// `Some(endpoint)` when an emulator is configured; otherwise skips loudly, or panics when the run requires it.
pub fn endpoint_or_skip() -> Option<String> {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(endpoint) if !endpoint.trim().is_empty() => Some(endpoint),
        _ => {
            if std::env::var("EXCHANGE_REQUIRE_AWS_TESTS").as_deref() == Ok("1") {
                panic!(
                    "EXCHANGE_REQUIRE_AWS_TESTS=1 but AWS_ENDPOINT_URL is not set: run the tests with scripts/test, \
                     which starts moto and points the AWS SDK at it"
                );
            }
            // Written to the real stderr, not through `eprintln!`, so the test harness cannot capture it away.
            let banner = "\n\
################################################################################\n\
##  SKIPPED: aws_adapters - AWS_ENDPOINT_URL is not set.                      ##\n\
##  The DynamoDB/S3/KMS adapters were NOT tested. Run `scripts/test`, which   ##\n\
##  starts moto, or set EXCHANGE_REQUIRE_AWS_TESTS=1 to make this a failure.  ##\n\
################################################################################\n\n";
            let _ = std::io::stderr().write_all(banner.as_bytes());
            None
        }
    }
}

/// A suffix unique to this run, valid in table, bucket and key names (lowercase letters, digits, `-`).
pub fn run_id() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("{}-{}", std::process::id(), nanos % 1_000_000_000_000)
}

/// Creates the run's table (gsi1, TTL), bucket, data key and RSA signing key.
pub async fn provision(config: &SdkConfig, run: &str) -> Fixture {
    let table = format!("exchange-test-{run}");
    let bucket = format!("exchange-test-{run}");

    let dynamodb = aws_sdk_dynamodb::Client::new(config);
    let string_attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("attribute definition")
    };
    let key = |name: &str, key_type: KeyType| {
        KeySchemaElement::builder().attribute_name(name).key_type(key_type).build().expect("key schema element")
    };
    dynamodb
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(string_attr("pk"))
        .attribute_definitions(string_attr("sk"))
        .attribute_definitions(string_attr("gsi1pk"))
        .attribute_definitions(string_attr("gsi1sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("gsi1")
                .key_schema(key("gsi1pk", KeyType::Hash))
                .key_schema(key("gsi1sk", KeyType::Range))
                .projection(Projection::builder().projection_type(ProjectionType::All).build())
                .build()
                .expect("gsi1"),
        )
        .send()
        .await
        .expect("CreateTable");
    for attempt in 0.. {
        let described = dynamodb.describe_table().table_name(&table).send().await.expect("DescribeTable");
        if described.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            break;
        }
        assert!(attempt < 120, "table {table} did not become ACTIVE");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    dynamodb
        .update_time_to_live()
        .table_name(&table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder().attribute_name("ttl").enabled(true).build().expect("ttl spec"),
        )
        .send()
        .await
        .expect("UpdateTimeToLive");
    let ttl = dynamodb.describe_time_to_live().table_name(&table).send().await.expect("DescribeTimeToLive");
    let ttl = ttl.time_to_live_description().expect("TTL description");
    assert_eq!(ttl.attribute_name(), Some("ttl"), "the table's TTL attribute");
    assert!(
        matches!(ttl.time_to_live_status(), Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)),
        "TTL must be enabled, got {:?}",
        ttl.time_to_live_status()
    );

    let s3 = s3_client(config);
    s3.create_bucket().bucket(&bucket).send().await.expect("CreateBucket");

    let kms = aws_sdk_kms::Client::new(config);
    let data_key = kms
        .create_key()
        .description(format!("exchange test data key {run}"))
        .key_spec(KeySpec::SymmetricDefault)
        .key_usage(KeyUsageType::EncryptDecrypt)
        .send()
        .await
        .expect("CreateKey (symmetric)");
    let signing_key = kms
        .create_key()
        .description(format!("exchange test signing key {run}"))
        .key_spec(KeySpec::Rsa2048)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .expect("CreateKey (RSA_2048)");
    let key_id = |output: &aws_sdk_kms::operation::create_key::CreateKeyOutput| {
        output.key_metadata().map(|m| m.key_id().to_owned()).expect("key metadata")
    };

    Fixture {
        config: config.clone(),
        table,
        bucket,
        data_key_id: key_id(&data_key),
        signing_key_id: key_id(&signing_key),
    }
}

/// An S3 client for the test's own inspection, path-style like the adapter's against a local endpoint.
pub fn s3_client(config: &SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(config).force_path_style(true).build())
}
