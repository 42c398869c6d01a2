//! `exchange-local`: every function's routes on loopback, over the embedded adapters and the demo data.
//!
//! ```text
//! exchange-local                         serve (EXCHANGE_ADDR, default 127.0.0.1:3000; EXCHANGE_DATA_DIR, default .exchange)
//! exchange-local token PARTNER           print a bearer token for a registered partner
//! exchange-local load-payer-data FILE    validate and load a payer data file (nothing is loaded if any record is bad)
//! exchange-local audit-verify            verify the audit trail against its signed digests; exit 1 naming each problem
//! exchange-local audit-seal              seal what can be sealed now (the server does this every few seconds)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use eligibility::App;
use exchange_core::adapters::embedded::LocalKeyService;
use exchange_core::auth::{TokenService, TOKEN_LIFETIME_SECS};
use exchange_core::domain::payer_data::PayerData;
use exchange_core::domain::TradingPartner;

/// The demo data set seeded on first start.
const DEMO_PAYER_DATA: &str = include_str!("../demo/payer-data.json");
/// The sample 270 the start-up banner's `curl` sends.
const SAMPLE_270: &str = include_str!("../../../events/eligibility/sample-270.x12");
/// Local tokens live longer than the five minutes of AWS tokens, so a newcomer's pasted `curl` keeps working.
const LOCAL_TOKEN_LIFETIME_SECS: i64 = 12 * 3600;
/// Partner registrations (no PHI), kept beside the database so `token` works while the server holds its lock.
const PARTNERS_FILE: &str = "partners.json";

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: exchange-local [serve | token PARTNER | load-payer-data FILE | audit-verify | audit-seal]";

/// How often the runner's sealer takes the audit records into digests (a record is sealed within
/// `SEAL_GRACE` + this).
const SEAL_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

fn data_dir() -> PathBuf {
    std::env::var_os("EXCHANGE_DATA_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".exchange"))
}

fn addr() -> Result<SocketAddr, String> {
    let raw = std::env::var("EXCHANGE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    raw.parse().map_err(|_| format!("EXCHANGE_ADDR={raw} is not an address like 127.0.0.1:3000"))
}

fn main() -> ExitCode {
    exchange_core::telemetry::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            [] | ["serve"] => serve().await,
            ["token", partner] => token(partner).await,
            ["load-payer-data", file] => load_payer_data(Path::new(file)).await,
            ["audit-verify"] => audit_verify().await,
            ["audit-seal"] => audit_seal().await,
            ["--help"] | ["-h"] | ["help"] => {
                println!("{USAGE}");
                Ok(())
            }
            _ => Err(USAGE.to_owned()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The app over the data directory; transfer URLs (large documents) are issued under `base_url`.
async fn open_app(dir: &Path, base_url: &str) -> Result<App, String> {
    App::embedded(dir, base_url).map_err(|e| format!("cannot open the data directory {}: {e}", dir.display()))
}

async fn load(app: &App, dir: &Path, data: &PayerData) -> Result<u64, String> {
    let version = app.repo().load(data).await.map_err(|e| e.to_string())?;
    let partners = serde_json::to_vec_pretty(&data.trading_partners).map_err(|e| e.to_string())?;
    std::fs::write(dir.join(PARTNERS_FILE), partners).map_err(|e| format!("cannot write {PARTNERS_FILE}: {e}"))?;
    Ok(version)
}

async fn serve() -> Result<(), String> {
    let dir = data_dir();
    let addr = addr()?;
    // Bound first: the one-time transfer URLs name the address actually listened on.
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let app = open_app(&dir, &format!("http://{local}")).await?;
    if app.repo().current().await.map_err(|e| e.to_string())?.is_none() {
        let demo = PayerData::parse(DEMO_PAYER_DATA.as_bytes()).map_err(|e| format!("demo data: {e}"))?;
        load(&app, &dir, &demo).await?;
        eprintln!("seeded the demo payer data into {}", dir.display());
    }
    let sample = dir.join("sample-270.x12");
    std::fs::write(&sample, SAMPLE_270).map_err(|e| format!("cannot write {}: {e}", sample.display()))?;
    let partner = partner_from_file(&dir, "demo-provider")?;
    let token = app
        .tokens()
        .issue(&partner, app.clock().now(), LOCAL_TOKEN_LIFETIME_SECS)
        .await
        .map_err(|e| format!("cannot sign a token: {e}"))?;

    let app = Arc::new(app);
    // Locally, notifications go to plain-HTTP listeners too, and the worker runs in-process.
    let notifier =
        exchange_core::adapters::notifier::HttpNotifier::new(exchange_core::adapters::notifier::DELIVERY_TIMEOUT)
            .map_err(|e| format!("cannot build the notifier: {e}"))?;
    let settings = prior_auth::Settings { allow_http_endpoints: true, ..prior_auth::Settings::default() };
    let pa = Arc::new(prior_auth::PriorAuth::new(app.clone(), Arc::new(notifier), settings));
    tokio::spawn(prior_auth::worker::run_forever(pa.clone(), std::time::Duration::from_secs(1)));
    let attachments = Arc::new(attachments::Attachments::new(app.clone()));
    tokio::spawn(exchange_core::domain::cleanup::run_forever(
        app.store().clone(),
        app.vault().blobs().clone(),
        app.clock().clone(),
        std::time::Duration::from_secs(60),
    ));
    if let Ok(sealer) = app.sealer() {
        tokio::spawn(exchange_core::domain::audit::seal::Sealer::clone(sealer).run_forever(SEAL_EVERY));
    }
    // Locally the CRD services may read missing prefetch from a plain-HTTP EHR sandbox, and CDS client JWTs name
    // this address as their audience.
    let davinci_settings = davinci::Settings {
        public_base_url: Some(format!("http://{local}")),
        fetch_from_ehr: true,
        allow_http_ehr: true,
    };
    let dv =
        Arc::new(davinci::Davinci::new(app.clone(), Arc::new(davinci::crd::ehr::HttpEhr::new()), davinci_settings));
    // Client assertions name this address's token URL as their audience.
    let token_endpoint =
        Arc::new(auth::Auth::new(app.clone(), auth::Settings { public_base_url: Some(format!("http://{local}")) }));
    let router = eligibility::router(app.clone())
        .merge(auth::routes(token_endpoint))
        .merge(prior_auth::routes(pa))
        .merge(attachments::routes(attachments))
        .merge(davinci::open_routes(dv.clone()))
        .merge(davinci::routes(dv))
        .merge(exchange_core::http::transfer::routes(app.clone()));
    // The banner is for a person at a terminal: a closed stdout must not take the server down with it.
    let banner = format!(
        "listening on http://{local}\n\ntoken for demo-provider (valid 12 hours; another: exchange-local token PARTNER):\n  export TOKEN={token}\n\nsend the sample 270:\n  curl -s -X POST http://{local}/x12/270 -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/edi-x12' --data-binary @{}\n",
        sample.display()
    );
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes());
        let _ = out.flush();
    }
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| format!("server error: {e}"))
}

fn partner_from_file(dir: &Path, id: &str) -> Result<TradingPartner, String> {
    let path = dir.join(PARTNERS_FILE);
    let bytes = std::fs::read(&path)
        .map_err(|e| format!("cannot read {} (start the runner once first): {e}", path.display()))?;
    let partners: Vec<TradingPartner> =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    partners.into_iter().find(|p| p.id.as_str() == id).ok_or_else(|| format!("no trading partner '{id}' is registered"))
}

async fn token(partner: &str) -> Result<(), String> {
    let dir = data_dir();
    let p = partner_from_file(&dir, partner)?;
    let keys = LocalKeyService::load_or_create(&dir.join("keys")).map_err(|e| e.to_string())?;
    let tokens = TokenService::new(Arc::new(keys), eligibility::TOKEN_ISSUER);
    let lifetime = if std::env::var_os("EXCHANGE_SHORT_TOKENS").is_some() {
        TOKEN_LIFETIME_SECS
    } else {
        LOCAL_TOKEN_LIFETIME_SECS
    };
    let t = tokens
        .issue(&p, time::OffsetDateTime::now_utc(), lifetime)
        .await
        .map_err(|e| format!("cannot sign a token: {e}"))?;
    println!("{t}");
    Ok(())
}

/// Verifies the data directory's audit trail against its signed digests (the server must be stopped: the database
/// is locked while it runs; `GET /admin/audit/verify` checks a running one). Exit 1 naming each problem.
async fn audit_verify() -> Result<(), String> {
    let app = open_app(&data_dir(), "").await?;
    let sealer = app.sealer().map_err(|e| e.to_string())?;
    let partners: Vec<String> = match app.repo().current().await.map_err(|e| e.to_string())? {
        Some(c) => c.partners.iter().map(|p| p.as_str().to_owned()).collect(),
        None => Vec::new(),
    };
    let report = sealer.verify_with_partners(app.clock().now(), &partners).await.map_err(|e| e.to_string())?;
    println!(
        "{} partners, {} digests, {} records: {} sealed, {} not sealed yet{}",
        report.partners,
        report.digests,
        report.records,
        report.sealed,
        report.unsealed,
        report.oldest_unsealed_at.as_deref().map(|at| format!(" (oldest {at})")).unwrap_or_default()
    );
    for p in &report.problems {
        let digest = p.digest.map(|d| format!(" digest {d}")).unwrap_or_default();
        let record = p.record.as_deref().map(|r| format!(" record {r}")).unwrap_or_default();
        println!("{}: partner {}{digest}{record}: {}", p.kind, p.partner, p.detail);
    }
    if report.is_intact() {
        println!("the audit trail is intact");
        Ok(())
    } else {
        Err(format!("the audit trail has {} problem(s)", report.problems.len()))
    }
}

/// Seals the audit trail once (`exchange-local audit-seal`, with the server stopped): what the server's sealer
/// task does every few seconds.
async fn audit_seal() -> Result<(), String> {
    let app = open_app(&data_dir(), "").await?;
    let sealer = app.sealer().map_err(|e| e.to_string())?;
    loop {
        let pass = sealer.seal(app.clock().now()).await.map_err(|e| e.to_string())?;
        println!("sealed {} records in {} digests", pass.records, pass.digests);
        if !pass.more {
            return Ok(());
        }
    }
}

async fn load_payer_data(file: &Path) -> Result<(), String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let data = PayerData::parse(&bytes).map_err(|e| format!("{}: {e}\nnothing was loaded", file.display()))?;
    let dir = data_dir();
    let app = open_app(&dir, "").await?;
    let version = load(&app, &dir, &data).await?;
    println!(
        "loaded {} plans, {} members, {} trading partners as version {version}",
        data.plans.len(),
        data.members.len(),
        data.trading_partners.len()
    );
    Ok(())
}
