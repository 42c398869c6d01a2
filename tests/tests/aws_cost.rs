//! What each flow costs in AWS: every request of each flow is sent through the functions' routers over the AWS
//! adapters against moto, with moto's request recorder on, and the calls moto received are counted (DynamoDB
//! operations and the write and read units their items need, S3 requests, KMS requests). Prints the per-flow table
//! the README quotes, priced at AWS's list prices, and asserts the write path's rules from the counted calls: at
//! most one DynamoDB transaction per request, and no item written by two different requests (the per-partner
//! control-number counter, one increment per 100 interchanges per instance, is the one allowed exception).
//!
//! Needs moto (`scripts/test` starts it); skipped like `aws_adapters` without it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use aws_config::BehaviorVersion;
use base64::Engine as _;
use exchange_core::app::App;
use exchange_core::domain::payer_data::PayerData;
use exchange_tests::aws_fixture::{endpoint_or_skip, provision, run_id};
use exchange_tests::{demo_data_path, repo_root};
use serde_json::Value;

/// Requests per flow.
const ROUNDS: u64 = 12;

/// AWS list prices, us-east-1, from the AWS Price List files of 2026-08/09 (see the README's cost section).
mod price {
    /// Lambda arm64, per GB-second.
    pub const LAMBDA_GB_SECOND: f64 = 0.000_013_333_4;
    /// Lambda, per request.
    pub const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
    /// API Gateway HTTP API, per request (up to 512 KB).
    pub const HTTP_API_REQUEST: f64 = 1.00 / 1e6;
    /// DynamoDB on-demand, per write request unit.
    pub const WRU: f64 = 0.625 / 1e6;
    /// DynamoDB on-demand, per read request unit.
    pub const RRU: f64 = 0.125 / 1e6;
    /// S3 PUT, COPY, POST, LIST.
    pub const S3_PUT: f64 = 0.005 / 1e3;
    /// S3 GET and the rest.
    pub const S3_GET: f64 = 0.0004 / 1e3;
    /// KMS symmetric and RSA_2048 requests.
    pub const KMS: f64 = 0.03 / 1e4;
}

/// One call moto received.
#[derive(Debug)]
struct Call {
    service: &'static str,
    operation: String,
    /// Write and read units (DynamoDB only).
    wru: f64,
    rru: f64,
    /// Keys the call writes (DynamoDB only), as `pk/sk`.
    writes: Vec<String>,
}

/// Calls moto's recorder (`reset-recording`, `start-recording`, `stop-recording`, `download-recording`).
async fn moto(endpoint: &str, action: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let method = if action == "download-recording" { "GET" } else { "POST" };
    let mut stream = tokio::net::TcpStream::connect(&host).await.expect("connect to moto");
    let request = format!(
        "{method} /moto-api/recorder/{action} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").map_or(raw.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200") || head.starts_with("http/1.0 200"), "moto recorder {action}: {head}");
    let body = if head.contains("transfer-encoding: chunked") { dechunk(&raw[split..]) } else { raw[split..].to_vec() };
    String::from_utf8_lossy(&body).into_owned()
}

/// The body of a chunked HTTP/1.1 answer.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..eol]).ok().and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let rest = &body[eol + 2..];
        match size {
            Some(size) if size > 0 && rest.len() >= size => {
                out.extend_from_slice(&rest[..size]);
                body = rest[size..].strip_prefix(b"\r\n").unwrap_or(&rest[size..]);
            }
            _ => break,
        }
    }
    out
}

/// DynamoDB's item size: attribute names plus values (strings and binaries by length, numbers about one byte per
/// two digits).
fn item_size(item: &serde_json::Map<String, Value>) -> usize {
    fn value_size(v: &Value) -> usize {
        let Some(obj) = v.as_object() else { return 1 };
        obj.iter()
            .map(|(kind, x)| match kind.as_str() {
                "S" => x.as_str().map_or(0, str::len),
                "N" => x.as_str().map_or(1, |n| n.len() / 2 + 1),
                "B" => x.as_str().map_or(0, |b| b.len() * 3 / 4),
                "M" => 3 + x.as_object().map_or(0, |m| m.iter().map(|(k, v)| k.len() + value_size(v)).sum::<usize>()),
                "L" => 3 + x.as_array().map_or(0, |l| l.iter().map(value_size).sum::<usize>()),
                _ => 1,
            })
            .sum()
    }
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn key_of(item: &Value) -> String {
    format!("{}/{}", item["pk"]["S"].as_str().unwrap_or(""), item["sk"]["S"].as_str().unwrap_or(""))
}

fn kb(bytes: usize) -> f64 {
    bytes.div_ceil(1024).max(1) as f64
}

/// The calls in a moto recording.
fn calls(recording: &str) -> Vec<Call> {
    let mut out = Vec::new();
    for line in recording.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(entry) = serde_json::from_str::<Value>(line) else { continue };
        let header = |name: &str| {
            entry["headers"]
                .as_object()
                .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
                .and_then(|(_, v)| v.as_str())
                .unwrap_or("")
                .to_owned()
        };
        let body_text = match entry["body_encoded"].as_bool() {
            Some(true) => entry["body"]
                .as_str()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default(),
            _ => entry["body"].as_str().unwrap_or("").to_owned(),
        };
        let target = header("X-Amz-Target");
        if let Some(op) = target.strip_prefix("DynamoDB_20120810.") {
            let body: Value = serde_json::from_str(&body_text).unwrap_or(Value::Null);
            let mut call =
                Call { service: "dynamodb", operation: op.to_owned(), wru: 0.0, rru: 0.0, writes: Vec::new() };
            match op {
                "TransactWriteItems" => {
                    for t in body["TransactItems"].as_array().into_iter().flatten() {
                        if let Some(item) = t["Put"]["Item"].as_object() {
                            // Transactional writes cost two units per KB; the index copy one more.
                            call.wru += 2.0 * kb(item_size(item));
                            if item.contains_key("gsi1pk") {
                                call.wru += kb(item_size(item));
                            }
                            call.writes.push(key_of(&t["Put"]["Item"]));
                        } else if let Some(key) = t["Delete"]["Key"].as_object() {
                            call.wru += 2.0 * kb(item_size(key));
                            call.writes.push(key_of(&t["Delete"]["Key"]));
                        } else if t["Update"].is_object() {
                            call.wru += 2.0;
                            call.writes.push(key_of(&t["Update"]["Key"]));
                        } else if t["ConditionCheck"].is_object() {
                            call.wru += 2.0;
                        }
                    }
                }
                "PutItem" => {
                    if let Some(item) = body["Item"].as_object() {
                        call.wru += kb(item_size(item));
                        if item.contains_key("gsi1pk") {
                            call.wru += kb(item_size(item));
                        }
                    }
                    call.writes.push(key_of(&body["Item"]));
                }
                "UpdateItem" | "DeleteItem" => {
                    call.wru += 1.0;
                    call.writes.push(key_of(&body["Key"]));
                }
                // Items here are under 4 KB: one unit for a strongly consistent read, half on the index.
                "GetItem" => call.rru += 1.0,
                "Query" => call.rru += if body["IndexName"].is_string() { 0.5 } else { 1.0 },
                _ => {}
            }
            out.push(call);
        } else if let Some(op) = target.strip_prefix("TrentService.") {
            out.push(Call { service: "kms", operation: op.to_owned(), wru: 0.0, rru: 0.0, writes: Vec::new() });
        } else {
            let method = entry["method"].as_str().unwrap_or("");
            let op = match method {
                "PUT" => "PutObject",
                "GET" => "GetObject",
                "HEAD" => "HeadObject",
                "DELETE" => "DeleteObject",
                _ => "other",
            };
            out.push(Call { service: "s3", operation: op.to_owned(), wru: 0.0, rru: 0.0, writes: Vec::new() });
        }
    }
    out
}

/// One flow's requests, distinct per round.
struct Flow {
    name: &'static str,
    path: &'static str,
    content_type: &'static str,
    /// Lambda memory of the function that serves it (MB, from the template).
    memory_mb: f64,
    body: Box<dyn Fn(u64) -> Vec<u8>>,
}

fn event_file(path: &str) -> String {
    std::fs::read_to_string(repo_root().join("events").join(path)).expect("event payload")
}

fn flows() -> Vec<Flow> {
    let x270 = event_file("eligibility/sample-270.x12");
    let x278 = event_file("prior-auth/sample-278.x12");
    let json: Value = serde_json::from_str(&event_file("eligibility/eligibility-request.json")).expect("json");
    let pas: Value = serde_json::from_str(&event_file("prior-auth/sample-pas-bundle.json")).expect("pas");
    let cdex: Value = serde_json::from_str(&event_file("attachments/submit-attachment-parameters.json")).expect("cdex");
    vec![
        Flow {
            name: "X12 270 → 271",
            path: "/x12/270",
            content_type: "application/edi-x12",
            memory_mb: 1024.0,
            body: Box::new(move |n| x270.replace("000000101", &format!("{:09}", 500_000 + n)).into_bytes()),
        },
        Flow {
            name: "JSON eligibility",
            path: "/eligibility",
            content_type: "application/json",
            memory_mb: 1024.0,
            body: Box::new(move |n| {
                let mut b = json.clone();
                b["controlNumber"] = Value::from(format!("{:09}", 600_000 + n));
                b.to_string().into_bytes()
            }),
        },
        Flow {
            name: "PAS $submit",
            path: "/fhir/Claim/$submit",
            content_type: "application/fhir+json",
            memory_mb: 1024.0,
            body: Box::new(move |n| {
                let mut b = pas.clone();
                b["identifier"]["value"] = Value::from(format!("COST-{n}"));
                b.to_string().into_bytes()
            }),
        },
        Flow {
            name: "X12 278 → 278",
            path: "/x12/278",
            content_type: "application/edi-x12",
            memory_mb: 1024.0,
            body: Box::new(move |n| x278.replace("000000201", &format!("{:09}", 700_000 + n)).into_bytes()),
        },
        Flow {
            name: "CDex $submit-attachment",
            path: "/fhir/$submit-attachment",
            content_type: "application/fhir+json",
            memory_mb: 2048.0,
            body: Box::new(move |n| {
                let mut b = cdex.clone();
                for p in b["parameter"].as_array_mut().into_iter().flatten() {
                    if p["name"] == "TrackingId" {
                        p["valueIdentifier"]["value"] = Value::from(format!("COST-{n}"));
                    }
                }
                b.to_string().into_bytes()
            }),
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_calls_and_cost_per_flow() {
    let Some(endpoint) = endpoint_or_skip() else { return };
    let run = run_id();
    let config = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let fixture = provision(&config, &run).await;
    std::env::set_var("TABLE_NAME", &fixture.table);
    std::env::set_var("BUCKET_NAME", &fixture.bucket);
    std::env::set_var("DATA_KEY_ID", &fixture.data_key_id);
    std::env::set_var("SIGNING_KEY_ID", &fixture.signing_key_id);
    let app = Arc::new(App::from_aws_env().await.expect("the app over moto"));
    let data = PayerData::parse(&std::fs::read(demo_data_path()).expect("demo data")).expect("demo data valid");
    app.repo().load(&data).await.expect("load the demo data");
    let notifier =
        exchange_core::adapters::notifier::HttpNotifier::new(std::time::Duration::from_secs(2)).expect("notifier");
    let pa = Arc::new(prior_auth::PriorAuth::new(app.clone(), Arc::new(notifier), prior_auth::Settings::default()));
    let router = eligibility::router(app.clone())
        .merge(prior_auth::routes(pa))
        .merge(attachments::routes(Arc::new(attachments::Attachments::new(app.clone()))));
    let partner = data.trading_partners.iter().find(|p| p.id.as_str() == "demo-provider").expect("demo-provider");
    let token = app.tokens().issue(partner, app.clock().now(), 3600).await.expect("token");

    let mut written_by: HashMap<String, HashSet<String>> = HashMap::new();
    let mut report = String::from(
        "| flow | DynamoDB calls (transactions) | WRU | RRU | S3 PUT / GET | KMS | wall ms (moto) | $ per 1,000 (Lambda + HTTP API + DynamoDB + S3 + KMS) |\n|---|---|---|---|---|---|---|---|\n",
    );
    for flow in flows() {
        // One request first: the instance's first-request work (token key, payer data, control-number block).
        let warm =
            exchange_tests::request(&router, "POST", flow.path, flow.content_type, Some(&token), &(flow.body)(0)).await;
        assert_eq!(warm.status, 200, "{}: {}", flow.name, warm.text());
        let mut ops: BTreeMap<(&'static str, String), f64> = BTreeMap::new();
        let (mut wru, mut rru, mut millis) = (0.0, 0.0, 0.0);
        for n in 1..=ROUNDS {
            moto(&endpoint, "reset-recording").await;
            moto(&endpoint, "start-recording").await;
            let started = Instant::now();
            let reply =
                exchange_tests::request(&router, "POST", flow.path, flow.content_type, Some(&token), &(flow.body)(n))
                    .await;
            millis += started.elapsed().as_secs_f64() * 1000.0;
            moto(&endpoint, "stop-recording").await;
            assert_eq!(reply.status, 200, "{}: {}", flow.name, reply.text());
            let recorded = calls(&moto(&endpoint, "download-recording").await);
            let transactions = recorded.iter().filter(|c| c.operation == "TransactWriteItems").count();
            assert!(transactions <= 1, "{}: {transactions} DynamoDB transactions in one request", flow.name);
            let request = format!("{}#{n}", flow.name);
            for c in &recorded {
                *ops.entry((c.service, c.operation.clone())).or_default() += 1.0;
                wru += c.wru;
                rru += c.rru;
                for key in &c.writes {
                    written_by.entry(key.clone()).or_default().insert(request.clone());
                }
            }
        }
        let per = |v: f64| v / ROUNDS as f64;
        let count = |service: &str, op: Option<&str>| -> f64 {
            per(ops.iter().filter(|((s, o), _)| *s == service && op.is_none_or(|op| o == op)).map(|(_, n)| n).sum())
        };
        let s3_put = count("s3", Some("PutObject"));
        let s3_get = count("s3", None) - s3_put;
        let kms = count("kms", None);
        let (wru, rru, ms) = (per(wru), per(rru), per(millis));
        let lambda = price::LAMBDA_REQUEST + (ms / 1000.0) * (flow.memory_mb / 1024.0) * price::LAMBDA_GB_SECOND;
        let cost = 1000.0
            * (lambda
                + price::HTTP_API_REQUEST
                + wru * price::WRU
                + rru * price::RRU
                + s3_put * price::S3_PUT
                + s3_get * price::S3_GET
                + kms * price::KMS);
        let dynamo_ops: Vec<String> =
            ops.iter().filter(|((s, _), _)| *s == "dynamodb").map(|((_, o), n)| format!("{} {o}", per(*n))).collect();
        let kms_ops: Vec<String> =
            ops.iter().filter(|((s, _), _)| *s == "kms").map(|((_, o), n)| format!("{} {o}", per(*n))).collect();
        report.push_str(&format!(
            "| {} | {} | {wru:.1} | {rru:.1} | {s3_put:.1} / {s3_get:.1} | {} | {ms:.1} | ${cost:.4} |\n",
            flow.name,
            dynamo_ops.join(", "),
            if kms_ops.is_empty() { "0".to_owned() } else { kms_ops.join(", ") },
        ));
    }
    println!("{report}");
    // No item is written by two different requests, except each partner's control-number counter.
    let shared: Vec<_> = written_by
        .iter()
        .filter(|(key, requests)| requests.len() > 1 && !key.ends_with("/SEQ#ISA13"))
        .map(|(key, requests)| format!("{key} by {}", requests.len()))
        .collect();
    assert!(shared.is_empty(), "items written by several requests: {shared:?}");
}
