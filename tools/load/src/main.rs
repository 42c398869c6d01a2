//! `exchange-load`: the load harness's client (`scripts/load` starts the runner and calls it).
//!
//! ```text
//! exchange-load URL TOKEN CONNECTIONS SECONDS ROUTE...
//! ```
//!
//! For each route in turn, CONNECTIONS keep-alive HTTP/1.1 connections (one partner's token) send requests back to
//! back for SECONDS; every request is distinct (its own ISA13, control number, Bundle.identifier or TrackingId), so
//! nothing is answered from the idempotency records. Prints one line per route: requests per second, latency
//! percentiles, non-2xx answers, and the throughput as a ratio of the first route's (run `health` first: the HTTP
//! floor of the same run). Routes: `health`, `x12-270`, `eligibility`, `pas-submit`, `x12-278`, `cdex`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

/// One route's request template.
struct Route {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    content_type: &'static str,
    /// The body of request `n` (distinct for each `n`).
    body: Box<dyn Fn(u64) -> Vec<u8> + Send + Sync>,
}

/// What one route's run measured.
struct Measured {
    requests: u64,
    non_2xx: u64,
    errors: u64,
    elapsed: Duration,
    /// Latencies in microseconds, sorted.
    latencies: Vec<u32>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * (self.latencies.len() - 1) as f64).round() as usize;
        f64::from(self.latencies[rank.min(self.latencies.len() - 1)]) / 1000.0
    }
}

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events")
}

fn read(path: &str) -> Result<String, String> {
    let file = events_dir().join(path);
    std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))
}

/// An interchange with ISA13 and IEA02 replaced by `n` (nine digits).
fn with_control_number(template: &str, original: &str, n: u64) -> Vec<u8> {
    let number = format!("{:09}", n % 1_000_000_000);
    template.replace(original, &number).into_bytes()
}

fn route(name: &str) -> Result<Route, String> {
    Ok(match name {
        "health" => Route {
            name: "health",
            method: "GET",
            path: "/health",
            content_type: "application/json",
            body: Box::new(|_| Vec::new()),
        },
        "x12-270" => {
            let template = read("eligibility/sample-270.x12")?;
            Route {
                name: "x12-270",
                method: "POST",
                path: "/x12/270",
                content_type: "application/edi-x12",
                body: Box::new(move |n| with_control_number(&template, "000000101", n)),
            }
        }
        "x12-278" => {
            let template = read("prior-auth/sample-278.x12")?;
            Route {
                name: "x12-278",
                method: "POST",
                path: "/x12/278",
                content_type: "application/edi-x12",
                body: Box::new(move |n| with_control_number(&template, "000000201", n)),
            }
        }
        "eligibility" => {
            let template: serde_json::Value =
                serde_json::from_str(&read("eligibility/eligibility-request.json")?).map_err(|e| e.to_string())?;
            Route {
                name: "eligibility",
                method: "POST",
                path: "/eligibility",
                content_type: "application/json",
                body: Box::new(move |n| {
                    let mut body = template.clone();
                    body["controlNumber"] = serde_json::Value::from(format!("{:09}", n % 1_000_000_000));
                    body.to_string().into_bytes()
                }),
            }
        }
        "pas-submit" => {
            let template: serde_json::Value =
                serde_json::from_str(&read("prior-auth/sample-pas-bundle.json")?).map_err(|e| e.to_string())?;
            Route {
                name: "pas-submit",
                method: "POST",
                path: "/fhir/Claim/$submit",
                content_type: "application/fhir+json",
                body: Box::new(move |n| {
                    let mut body = template.clone();
                    body["identifier"]["value"] = serde_json::Value::from(format!("LOAD-{n}"));
                    body.to_string().into_bytes()
                }),
            }
        }
        "cdex" => {
            let template: serde_json::Value =
                serde_json::from_str(&read("attachments/submit-attachment-parameters.json")?)
                    .map_err(|e| e.to_string())?;
            Route {
                name: "cdex",
                method: "POST",
                path: "/fhir/$submit-attachment",
                content_type: "application/fhir+json",
                body: Box::new(move |n| {
                    let mut body = template.clone();
                    if let Some(params) = body["parameter"].as_array_mut() {
                        for p in params.iter_mut().filter(|p| p["name"] == "TrackingId") {
                            p["valueIdentifier"]["value"] = serde_json::Value::from(format!("LOAD-{n}"));
                        }
                    }
                    body.to_string().into_bytes()
                }),
            }
        }
        other => return Err(format!("unknown route {other}")),
    })
}

/// One connection sending requests back to back until `deadline`; returns its latencies and counts.
async fn connection(
    addr: String,
    authority: String,
    token: Arc<str>,
    route: Arc<Route>,
    counter: Arc<AtomicU64>,
    deadline: Instant,
) -> (Vec<u32>, u64, u64) {
    let mut latencies = Vec::new();
    let (mut non_2xx, mut errors) = (0, 0);
    'reconnect: while Instant::now() < deadline {
        let Ok(stream) = tokio::net::TcpStream::connect(&addr).await else {
            errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) = http1::handshake(TokioIo::new(stream)).await else {
            errors += 1;
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < deadline {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let body = (route.body)(n);
            let request = http::Request::builder()
                .method(route.method)
                .uri(route.path)
                .header(http::header::HOST, authority.as_str())
                .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
                .header(http::header::CONTENT_TYPE, route.content_type)
                .body(Full::new(Bytes::from(body)));
            let Ok(request) = request else {
                errors += 1;
                continue;
            };
            let started = Instant::now();
            if sender.ready().await.is_err() {
                errors += 1;
                continue 'reconnect;
            }
            match sender.send_request(request).await {
                Ok(response) => {
                    let ok = response.status().is_success();
                    let drained = response.into_body().collect().await.is_ok();
                    latencies.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
                    if !ok {
                        non_2xx += 1;
                    }
                    if !drained {
                        errors += 1;
                        continue 'reconnect;
                    }
                }
                Err(_) => {
                    errors += 1;
                    continue 'reconnect;
                }
            }
        }
    }
    (latencies, non_2xx, errors)
}

async fn run(url: &str, token: &str, connections: usize, seconds: u64, route: Route, base: u64) -> Measured {
    let authority = url.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let token: Arc<str> = Arc::from(token);
    let route = Arc::new(route);
    let counter = Arc::new(AtomicU64::new(base));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            tokio::spawn(connection(
                authority.clone(),
                authority.clone(),
                token.clone(),
                route.clone(),
                counter.clone(),
                deadline,
            ))
        })
        .collect();
    let mut measured = Measured { requests: 0, non_2xx: 0, errors: 0, elapsed: Duration::ZERO, latencies: Vec::new() };
    for task in tasks {
        if let Ok((latencies, non_2xx, errors)) = task.await {
            measured.requests += latencies.len() as u64;
            measured.latencies.extend(latencies);
            measured.non_2xx += non_2xx;
            measured.errors += errors;
        }
    }
    measured.elapsed = started.elapsed();
    measured.latencies.sort_unstable();
    measured
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, token, connections, seconds, routes @ ..] = args.as_slice() else {
        eprintln!("usage: exchange-load URL TOKEN CONNECTIONS SECONDS ROUTE...");
        return std::process::ExitCode::FAILURE;
    };
    let (Ok(connections), Ok(seconds)) = (connections.parse::<usize>(), seconds.parse::<u64>()) else {
        eprintln!("CONNECTIONS and SECONDS are numbers");
        return std::process::ExitCode::FAILURE;
    };
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
        eprintln!("cannot start the async runtime");
        return std::process::ExitCode::FAILURE;
    };
    // Control numbers start from the clock, so a rerun against the same data directory is not a replay.
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() % 1_000 * 100_000)
        .unwrap_or(0);
    println!(
        "{:<12} {:>5} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9}",
        "route", "conns", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "non-2xx", "errors", "x health"
    );
    let mut floor: Option<f64> = None;
    let mut failed = false;
    for (i, name) in routes.iter().enumerate() {
        let route = match route(name) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let label = route.name;
        let m = runtime.block_on(run(url, token, connections, seconds, route, base + (i as u64) * 100_000_000));
        let rate = m.rate();
        let ratio = floor.map(|f| rate / f).unwrap_or(1.0);
        if floor.is_none() {
            floor = Some(rate);
        }
        failed |= m.non_2xx > 0 || m.errors > 0;
        println!(
            "{:<12} {:>5} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8} {:>7} {:>9.3}",
            label,
            connections,
            rate,
            m.percentile_ms(50.0),
            m.percentile_ms(99.0),
            m.percentile_ms(99.9),
            m.non_2xx,
            m.errors,
            ratio
        );
    }
    if failed {
        std::process::ExitCode::from(2)
    } else {
        std::process::ExitCode::SUCCESS
    }
}
