//! No PHI in logs. Every log line the functions write while they answer the conformance material and the demo
//! flows (270s, JSON eligibility, 278s, PAS submissions and inquiry, 275s, CDex submissions, CRD hooks, DTR, and a
//! few bad inputs carrying PHI) is captured, through the very JSON subscriber the functions install, at TRACE for
//! every crate; the test fails if any member name, member id, date of birth or document text from those inputs (or
//! from the payer data they are matched against) appears in it.
//!
//! One test in its own binary: the subscriber is process-global.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use exchange_tests::davinci::{coverage, order_sign, service_request, DvExchange, CPT};
use exchange_tests::prior_auth::{conformance_data_path, PaExchange};
use exchange_tests::{conformance_dir, demo_data_path, repo_root, TestExchange};
use serde_json::{json, Value};
use time::macros::{date, datetime};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// The PHI of an X12 input: NM103/NM104/NM109 of patients, subscribers and dependents (IL, QC, 03), DMG02.
fn x12_phi(bytes: &[u8], out: &mut Vec<String>) {
    if bytes.len() < 106 {
        return;
    }
    let (element, terminator) = (bytes[3] as char, bytes[105] as char);
    let text = String::from_utf8_lossy(bytes);
    for segment in text.split(terminator) {
        let e: Vec<&str> = segment.trim().split(element).collect();
        match e.first().copied() {
            Some("NM1") if matches!(e.get(1).copied(), Some("IL" | "QC" | "03")) => {
                out.extend([3, 4, 9].iter().filter_map(|i| e.get(*i)).map(|s| s.to_string()));
            }
            Some("DMG") => out.extend(e.get(2).map(|s| s.to_string())),
            _ => {}
        }
    }
}

/// The PHI of a FHIR input: Patient names, birth dates and identifiers, Coverage subscriber ids, member-id
/// parameters, and the text of inline documents.
fn fhir_phi(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            match o.get("resourceType").and_then(Value::as_str) {
                Some("Patient") => {
                    for name in o.get("name").and_then(Value::as_array).into_iter().flatten() {
                        out.extend(name["family"].as_str().map(str::to_owned));
                        out.extend(
                            name["given"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|g| g.as_str().map(str::to_owned)),
                        );
                    }
                    out.extend(o.get("birthDate").and_then(Value::as_str).map(str::to_owned));
                    for id in o.get("identifier").and_then(Value::as_array).into_iter().flatten() {
                        out.extend(id["value"].as_str().map(str::to_owned));
                    }
                }
                Some("Coverage") => out.extend(o.get("subscriberId").and_then(Value::as_str).map(str::to_owned)),
                _ => {}
            }
            if o.get("name").and_then(Value::as_str) == Some("MemberId") {
                out.extend(o.get("valueIdentifier").and_then(|i| i["value"].as_str()).map(str::to_owned));
            }
            if let Some(data) = o.get("data").and_then(Value::as_str) {
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) {
                    // A distinctive stretch of the document's text, and of its encoding.
                    let text = String::from_utf8_lossy(&bytes).split_whitespace().collect::<Vec<_>>().join(" ");
                    out.extend(text.get(..48.min(text.len())).map(str::to_owned));
                }
                out.push(data.chars().take(48).collect());
            }
            o.values().for_each(|v| fhir_phi(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| fhir_phi(v, out)),
        _ => {}
    }
}

/// Members of a payer data file: names, ids, dates of birth (both spellings), dependents too.
fn payer_data_phi(path: &Path, out: &mut Vec<String>) {
    let data: Value = serde_json::from_slice(&std::fs::read(path).expect("payer data")).expect("json");
    fn person(p: &Value, out: &mut Vec<String>) {
        for field in ["firstName", "lastName", "memberId", "dateOfBirth"] {
            if let Some(s) = p[field].as_str() {
                out.push(s.to_owned());
                if field == "dateOfBirth" && s.len() == 8 {
                    out.push(format!("{}-{}-{}", &s[..4], &s[4..6], &s[6..]));
                }
            }
        }
    }
    for m in data["members"].as_array().into_iter().flatten() {
        person(m, out);
        m["dependents"].as_array().into_iter().flatten().for_each(|d| person(d, out));
    }
}

/// The interchange under its own ISA13 (and IEA02), so that none is refused as a reused control number.
fn fresh_isa13(body: &[u8], control: u32) -> Vec<u8> {
    exchange_tests::prior_auth::with_isa13_bytes(body, control)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_member_name_id_birth_date_or_document_text_reaches_the_logs() {
    let captured = Captured::default();
    let sink = captured.clone();
    tracing::subscriber::set_global_default(exchange_core::telemetry::json_subscriber("trace", move || sink.clone()))
        .expect("the only subscriber in this binary");
    let conformance = conformance_dir().expect("../shared/conformance is missing: this test needs it (present in CI)");
    let mut phi: Vec<String> = Vec::new();
    payer_data_phi(&demo_data_path(), &mut phi);
    payer_data_phi(&conformance_data_path(), &mut phi);

    // Eligibility over the demo data: every conformance 270, the sample, the JSON request, and bad JSON with PHI.
    let elig = TestExchange::on(date!(2026 - 03 - 10)).await;
    let mut x12_inputs: Vec<Vec<u8>> =
        files(&conformance.join("x12/270")).iter().map(|p| std::fs::read(p).expect("270")).collect();
    x12_inputs.push(std::fs::read(repo_root().join("events/eligibility/sample-270.x12")).expect("sample"));
    // Each interchange under its own ISA13, so that none is refused as a reused control number before its sets
    // are read.
    for (n, body) in x12_inputs.iter().enumerate() {
        x12_phi(body, &mut phi);
        elig.post_270(&fresh_isa13(body, 100 + n as u32)).await;
    }
    let provider = elig.token("demo-provider").await;
    let json_request = std::fs::read(repo_root().join("events/eligibility/eligibility-request.json")).expect("json");
    fhir_phi(&serde_json::from_slice(&json_request).expect("json"), &mut phi);
    assert_eq!(elig.post("/eligibility", "application/json", Some(&provider), &json_request).await.status, 200);
    let bad = json!({"controlNumber": "123456789", "tradingPartnerServiceId": "DEMOPAYER",
        "provider": {"organizationName": "Clinic", "npi": "1234567893"},
        "subscriber": {"memberId": 11122333301_u64, "firstName": "ZEBEDIAH", "lastName": "QUILLFEATHER", "dateOfBirth": "19770707x"}});
    phi.extend(["ZEBEDIAH", "QUILLFEATHER", "19770707x", "11122333301"].map(str::to_owned));
    let refused = elig.post("/eligibility", "application/json", Some(&provider), bad.to_string().as_bytes()).await;
    assert_eq!(refused.status, 400, "{}", refused.text());

    // Prior authorization and attachments over the conformance payer data.
    let mut pa = PaExchange::new(&conformance_data_path(), datetime!(2026-11-25 10:00 UTC)).await;
    let svc = Arc::new(attachments::Attachments::new(pa.pa.core.clone()));
    pa.router = pa.router.clone().merge(attachments::routes(svc));
    for path in files(&conformance.join("x12/278")).iter().filter(|p| p.to_string_lossy().contains("request")) {
        let body = std::fs::read(path).expect("278");
        x12_phi(&body, &mut phi);
        pa.post_278("sample-provider", &fresh_isa13(&body, 200 + phi.len() as u32)).await;
    }
    for path in files(&conformance.join("davinci/pas")).iter().filter(|p| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        name.starts_with("Bundle-") && !name.contains("Response") && !name.contains("Notification")
    }) {
        let bundle: Value = serde_json::from_slice(&std::fs::read(path).expect("bundle")).expect("json");
        fhir_phi(&bundle, &mut phi);
        if bundle["entry"][0]["resource"]["use"] == "preauthorization" && path.to_string_lossy().contains("Inquiry") {
            pa.inquire("sample-provider", &bundle).await;
        } else {
            pa.submit("sample-provider", &bundle).await;
        }
    }
    let token = pa.token("sample-provider").await;
    for path in files(&conformance.join("x12/275")) {
        let body = std::fs::read(&path).expect("275");
        x12_phi(&body, &mut phi);
        let body = fresh_isa13(&body, 300 + phi.len() as u32);
        pa.send("POST", "/x12/275", "application/edi-x12", &token, &body).await;
    }
    let cdex_token = pa.token("cdex-provider").await;
    for path in files(&conformance.join("davinci/cdex"))
        .iter()
        .filter(|p| p.to_string_lossy().contains("cdex-parameters-example"))
    {
        let body = std::fs::read(path).expect("cdex");
        fhir_phi(&serde_json::from_slice(&body).expect("json"), &mut phi);
        pa.send("POST", "/fhir/$submit-attachment", "application/fhir+json", &cdex_token, &body).await;
    }

    // CRD and DTR over the demo data: the IG's hook requests, an order-sign about a demo member, a package.
    let dv = DvExchange::new(&demo_data_path(), datetime!(2026-03-10 10:00 UTC), DvExchange::settings()).await;
    for path in files(&conformance.join("davinci/crd-hooks")).iter().filter(|p| p.to_string_lossy().contains("Request"))
    {
        let request: Value = serde_json::from_slice(&std::fs::read(path).expect("hook")).expect("json");
        fhir_phi(&request, &mut phi);
        let service = match request["hook"].as_str() {
            Some("order-select") => "order-select-crd",
            Some("appointment-book") => "appointment-book-crd",
            Some("encounter-start") => "encounter-start-crd",
            Some("encounter-discharge") => "encounter-discharge-crd",
            Some("order-dispatch") => "order-dispatch-crd",
            _ => "order-sign-crd",
        };
        dv.call(service, &request).await;
    }
    let order = service_request("mri", CPT, "70551");
    let ours = order_sign(std::slice::from_ref(&order), &[coverage("cov1", "11122333301", "DEMOPAYER")]);
    assert_eq!(dv.call("order-sign-crd", &ours).await.status, 200);
    let package = json!({"resourceType": "Parameters", "parameter": [
        {"name": "coverage", "resource": coverage("cov1", "11122333301", "DEMOPAYER")},
        {"name": "order", "resource": order}
    ]});
    assert_eq!(dv.dtr("$questionnaire-package", "demo-provider", &package).await.status, 200);
    let dtr_input: Value = serde_json::from_slice(
        &std::fs::read(conformance.join("davinci/dtr/Parameters-QuestionnairePackageInputParamsExample.json"))
            .expect("dtr"),
    )
    .expect("json");
    fhir_phi(&dtr_input, &mut phi);
    dv.dtr("$questionnaire-package", "demo-provider", &dtr_input).await;

    let log = String::from_utf8_lossy(&captured.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    // `NO_PHI_LOG_DUMP=FILE` keeps the captured log for a person to read.
    if let Ok(path) = std::env::var("NO_PHI_LOG_DUMP") {
        let _ = std::fs::write(path, &log);
    }
    // The capture works: the flows' own lines are there.
    for expected in
        ["CRD hook answered", "audit appended", "270 answered", "PAS submission decided", "attachment received"]
    {
        assert!(log.contains(expected), "the log should contain {expected:?}; capture broken?");
    }
    phi.retain(|s| s.trim().len() >= 4);
    phi.sort();
    phi.dedup();
    assert!(phi.len() > 40, "the inputs' PHI was found: {} values", phi.len());
    let leaked: Vec<(&String, String)> = phi
        .iter()
        .filter_map(|p| log.lines().find(|l| l.contains(p.as_str())).map(|line| (p, line.chars().take(300).collect())))
        .collect();
    assert!(
        leaked.is_empty(),
        "PHI in the logs ({} values); first lines: {:#?}",
        leaked.len(),
        &leaked[..leaked.len().min(5)]
    );
}
