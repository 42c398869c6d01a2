//! The local runner as a newcomer uses it: start it, read its banner, call it with the printed token, ask for
//! another token while it runs, and restart it on the same data directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Runner {
    child: Child,
    url: String,
    token: String,
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data_dir: &std::path::Path) -> Runner {
    let mut child = Command::new(env!("CARGO_BIN_EXE_exchange-local"))
        .env("EXCHANGE_ADDR", "127.0.0.1:0")
        .env("EXCHANGE_DATA_DIR", data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn exchange-local");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut url, mut token) = (String::new(), String::new());
    while Instant::now() < deadline && (url.is_empty() || token.is_empty()) {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(u) = line.strip_prefix("listening on ") {
            url = u.trim().to_owned();
        }
        if let Some(t) = line.trim().strip_prefix("export TOKEN=") {
            token = t.to_owned();
        }
    }
    assert!(!url.is_empty() && !token.is_empty(), "the banner names the URL and a token");
    // Keep reading what the runner prints, as a terminal would.
    std::thread::spawn(move || lines.for_each(drop));
    Runner { child, url, token }
}

/// A minimal HTTP/1.1 client: method, path, headers, body → (status, body).
fn request(url: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let host = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).expect("write");
    stream.write_all(body).expect("write body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[test]
fn serves_the_sample_270_with_the_printed_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runner = start(dir.path());
    let (status, body) = request(&runner.url, "GET", "/health", &[], b"");
    assert_eq!((status, body.contains("ok")), (200, true));

    let sample = std::fs::read(dir.path().join("sample-270.x12")).expect("the banner's sample file");
    let auth = format!("Bearer {}", runner.token);
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/edi-x12")];
    let (status, first_answer) = request(&runner.url, "POST", "/x12/270", &headers, &sample);
    assert_eq!(status, 200, "{first_answer}");
    let body = &first_answer;
    assert!(body.contains("ST*271*0001*005010X279A1~"), "{body}");
    assert!(body.contains("EB*1**30"), "{body}");

    // `token PARTNER` works while the server holds the database.
    let out = Command::new(env!("CARGO_BIN_EXE_exchange-local"))
        .args(["token", "demo-payer"])
        .env("EXCHANGE_DATA_DIR", dir.path())
        .output()
        .expect("token command");
    assert!(out.status.success());
    let payer_token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let auth = format!("Bearer {payer_token}");
    let (status, _) = request(
        &runner.url,
        "POST",
        "/x12/270",
        &[("Authorization", &auth), ("Content-Type", "application/edi-x12")],
        &sample,
    );
    assert_eq!(status, 403, "a payer does not make eligibility inquiries");
    let unknown = Command::new(env!("CARGO_BIN_EXE_exchange-local"))
        .args(["token", "nobody"])
        .env("EXCHANGE_DATA_DIR", dir.path())
        .output()
        .expect("token command");
    assert!(!unknown.status.success());
    drop(runner);

    // After a restart on the same data directory, a retry of the same interchange still gets the original answer.
    let runner = start(dir.path());
    let auth = format!("Bearer {}", runner.token);
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/edi-x12")];
    let (status, replayed) = request(&runner.url, "POST", "/x12/270", &headers, &sample);
    assert_eq!(status, 200);
    assert_eq!(replayed, first_answer);

    // Every one of those requests is in the audit trail, which the admin reads and verifies while the server
    // runs, and the command line verifies once it is stopped.
    let out = Command::new(env!("CARGO_BIN_EXE_exchange-local"))
        .args(["token", "admin"])
        .env("EXCHANGE_DATA_DIR", dir.path())
        .output()
        .expect("token command");
    let admin = format!("Bearer {}", String::from_utf8_lossy(&out.stdout).trim());
    let (status, trail) =
        request(&runner.url, "GET", "/admin/audit?partner=demo-provider", &[("Authorization", &admin)], b"");
    assert_eq!(status, 200, "{trail}");
    let trail: serde_json::Value = serde_json::from_str(&trail).expect("a Bundle");
    let operations: Vec<&str> = trail["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["resource"]["source"]["site"].as_str())
        .collect();
    assert_eq!(operations, ["POST /x12/270", "POST /x12/270"], "the first answer and its replay");
    let (status, verified) = request(&runner.url, "GET", "/admin/audit/verify", &[("Authorization", &admin)], b"");
    assert_eq!(status, 200);
    assert!(verified.contains("\"intact\":true"), "{verified}");
    let (status, _) = request(&runner.url, "GET", "/admin/audit/verify", &[("Authorization", auth.as_str())], b"");
    assert_eq!(status, 403, "a provider does not read the audit trail");
    drop(runner);
    let out = Command::new(env!("CARGO_BIN_EXE_exchange-local"))
        .args(["audit-verify"])
        .env("EXCHANGE_DATA_DIR", dir.path())
        .output()
        .expect("audit-verify");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact"));
}

#[test]
fn load_payer_data_refuses_a_bad_file_and_names_the_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.json");
    let demo: serde_json::Value =
        serde_json::from_str(include_str!("../demo/payer-data.json")).expect("demo data parses");
    let mut broken = demo.clone();
    broken["members"][2]["dateOfBirth"] = serde_json::Value::from("1988-12-31");
    std::fs::write(&bad, serde_json::to_vec(&broken).expect("json")).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_exchange-local"))
        .args(["load-payer-data", bad.to_str().expect("path")])
        .env("EXCHANGE_DATA_DIR", dir.path().join("data"))
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("/members/2/dateOfBirth"), "{stderr}");
    assert!(!stderr.contains("1988-12-31"), "the bad value (PHI) is not echoed: {stderr}");
    assert!(stderr.contains("nothing was loaded"));

    let good = dir.path().join("good.json");
    std::fs::write(&good, serde_json::to_vec(&demo).expect("json")).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_exchange-local"))
        .args(["load-payer-data", good.to_str().expect("path")])
        .env("EXCHANGE_DATA_DIR", dir.path().join("data"))
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("loaded 2 plans"));
}

/// [`request`] that reports a refused or cut connection as `None` instead of failing (the runner may be killed).
fn try_request(url: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Option<(u16, String)> {
    let host = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut req =
        format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok())?;
    let (_, body) = text.split_once("\r\n\r\n")?;
    Some((status, body.to_owned()))
}

/// `kill -9` mid-load, three times over: every answered 270 is still there after the restart (sending it again
/// gets the original answer, byte for byte, from the idempotency record committed with it), and `audit-verify`
/// finds every record sealed or waiting to be sealed, none changed, removed or inserted.
#[test]
fn acknowledged_requests_survive_kill_9_and_the_audit_trail_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sample = {
        let runner = start(dir.path());
        drop(runner);
        std::fs::read_to_string(dir.path().join("sample-270.x12")).expect("sample")
    };
    let mut acknowledged: Vec<(Vec<u8>, String)> = Vec::new();
    for round in 0..3u64 {
        let runner = start(dir.path());
        let auth = format!("Bearer {}", runner.token);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers: Vec<_> = (0..8u64)
            .map(|w| {
                let (url, auth, sample, stop) = (runner.url.clone(), auth.clone(), sample.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut answered = Vec::new();
                    let mut n = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let isa13 = format!("{:09}", 100_000_000 + round * 10_000_000 + w * 100_000 + n);
                        n += 1;
                        let body = sample.replace("000000101", &isa13).into_bytes();
                        let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/edi-x12")];
                        match try_request(&url, "/x12/270", &headers, &body) {
                            Some((200, answer)) if answer.contains("ST*271*") => answered.push((body, answer)),
                            Some((status, answer)) => panic!("unexpected answer {status}: {answer}"),
                            None => break,
                        }
                    }
                    answered
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        let mut runner = runner;
        runner.child.kill().expect("kill -9");
        let _ = runner.child.wait();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in workers {
            acknowledged.extend(w.join().expect("worker"));
        }
    }
    assert!(acknowledged.len() > 50, "the load got answers: {}", acknowledged.len());

    let verify = Command::new(env!("CARGO_BIN_EXE_exchange-local"))
        .args(["audit-verify"])
        .env("EXCHANGE_DATA_DIR", dir.path())
        .output()
        .expect("audit-verify");
    let report = String::from_utf8_lossy(&verify.stdout).into_owned();
    assert!(verify.status.success(), "{report}{}", String::from_utf8_lossy(&verify.stderr));
    assert!(report.contains("intact"), "{report}");

    let runner = start(dir.path());
    let auth = format!("Bearer {}", runner.token);
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/edi-x12")];
    for (body, answer) in &acknowledged {
        let (status, again) =
            try_request(&runner.url, "/x12/270", &headers, body).expect("the restarted runner answers");
        assert_eq!(status, 200);
        assert_eq!(&again, answer, "an acknowledged interchange is answered from its stored record");
    }
}
