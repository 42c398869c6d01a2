//! The eligibility function end to end: API Gateway events through the Lambda router, over the embedded adapters.

use std::sync::Arc;

use async_trait_free::FailingBlobs;
use exchange_core::ports::{EncryptionContext, Query, StateStore};
use exchange_tests::{check_emitted, load_event, with_token, Inquiry270, TestExchange};
use serde_json::json;
use time::macros::date;

const TODAY: time::Date = date!(2026 - 04 - 12);

fn seg_starting<'a>(segments: &'a [String], prefix: &str) -> Vec<&'a String> {
    segments.iter().filter(|s| s.starts_with(prefix)).collect()
}

async fn answer(ex: &TestExchange, inquiry: &Inquiry270) -> Vec<String> {
    let reply = ex.post_270(&inquiry.build()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (sets, acks) = check_emitted(&reply.body);
    assert!(acks.is_empty(), "unexpected 999: {acks:?}");
    assert_eq!(sets.len(), 1);
    sets.into_iter().next().unwrap_or_default()
}

#[tokio::test]
async fn health_is_open() {
    let ex = TestExchange::on(TODAY).await;
    let mut event = load_event("eligibility/post-270.json");
    event["rawPath"] = json!("/health");
    event["requestContext"]["http"]["method"] = json!("GET");
    event["requestContext"]["http"]["path"] = json!("/health");
    event["body"] = json!(null);
    let reply = ex.send_event(&event).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["status"], "ok");
}

#[tokio::test]
async fn the_sample_event_is_answered_with_a_271() {
    let ex = TestExchange::on(TODAY).await;
    let event = with_token(load_event("eligibility/post-270.json"), &ex.token("demo-provider").await);
    let reply = ex.send_event(&event).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), "application/edi-x12");
    let (sets, acks) = check_emitted(&reply.body);
    assert!(acks.is_empty());
    let set = &sets[0];
    assert!(set.contains(&"BHT*0022*11*REF-0001*20260412*1000".to_owned()), "{set:?}");
    assert!(set.contains(&"TRN*2*TRACE-0001*9DEMOPROV1".to_owned()), "trace echoed with TRN01=2: {set:?}");
    assert!(set.iter().any(|s| s.starts_with("NM1*IL*1*SMITH*ROBERT*") && s.ends_with("*MI*11122333301")));
    assert!(set.contains(&"EB*1**30^1^33^35^47^86^88^98^AL^MH^UC*HM*GOLD 123 PLAN".to_owned()), "{set:?}");
    // Deductible 1500 with 350 met: 1150 remaining (EB06 = 29).
    assert!(set.contains(&"EB*C*IND*30*HM**29*1150*****Y".to_owned()), "{set:?}");
    // Primary care provider in a 2120 loop.
    assert!(set
        .windows(3)
        .any(|w| w[0] == "LS*2120" && w[1].starts_with("NM1*P3*1*JONES*MARCUS") && w[2] == "LE*2120"));
    // Answered in the partner's delimiters, with its ISA sender as our receiver.
    assert!(reply
        .text()
        .starts_with("ISA*00*          *00*          *ZZ*DEMOPAYER      *ZZ*DEMOPROVIDER   *260412*1000*^*00501*"));
}

#[tokio::test]
async fn callers_are_authenticated_and_scoped() {
    let ex = TestExchange::on(TODAY).await;
    let body = Inquiry270::default().build();
    let none = ex.post("/x12/270", "application/edi-x12", None, &body).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.header("content-type"), "application/problem+json");
    assert_eq!(none.header("www-authenticate"), "Bearer");
    let forged = ex.post("/x12/270", "application/edi-x12", Some("eyJhbGciOiJFUzM4NCJ9.e30.AAAA"), &body).await;
    assert_eq!(forged.status, 401);
    let payer = ex.token("demo-payer").await;
    let forbidden = ex.post("/x12/270", "application/edi-x12", Some(&payer), &body).await;
    assert_eq!(forbidden.status, 403);
    assert!(!forbidden.text().contains("SMITH"));
    let json_forbidden = ex.post("/eligibility", "application/json", Some(&payer), b"{}").await;
    assert_eq!(json_forbidden.status, 403);
}

#[tokio::test]
async fn bodies_that_are_not_x12_get_problem_json() {
    let ex = TestExchange::on(TODAY).await;
    let token = ex.token("demo-provider").await;
    let json_body = ex.post("/x12/270", "application/json", Some(&token), b"{}").await;
    assert_eq!(json_body.status, 415);
    let empty = ex.post("/x12/270", "application/edi-x12", Some(&token), b"").await;
    assert_eq!(empty.status, 400);
    assert_eq!(empty.header("content-type"), "application/problem+json");
    let prose = ex.post("/x12/270", "text/plain", Some(&token), b"hello, is this eligibility?").await;
    assert_eq!(prose.status, 400);
    let huge = vec![b'A'; 6 * 1024 * 1024 + 10];
    let too_large = ex.post("/x12/270", "application/edi-x12", Some(&token), &huge).await;
    assert_eq!(too_large.status, 413);
    assert_eq!(too_large.json()["status"], 413);
}

fn ta1_of(reply: &exchange_tests::Reply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.text());
    let segs = reply.segments();
    assert!(segs.last().is_some_and(|s| s.starts_with("IEA*0*")), "a TA1-only interchange has IEA01=0: {segs:?}");
    segs.iter().find(|s| s.starts_with("TA1*")).cloned().unwrap_or_default()
}

#[tokio::test]
async fn broken_interchanges_get_a_ta1() {
    let ex = TestExchange::on(TODAY).await;
    let good = String::from_utf8(Inquiry270 { isa13: 7, ..Default::default() }.build()).unwrap_or_default();

    let mismatched = good.replace("IEA*1*000000007", "IEA*1*000000008");
    assert_eq!(ta1_of(&ex.post_270(mismatched.as_bytes()).await), "TA1*000000007*260412*1000*R*001");

    let truncated = &good[..good.len() - 40];
    assert_eq!(ta1_of(&ex.post_270(truncated.as_bytes()).await), "TA1*000000007*260412*1000*R*023");

    let v4010 = good.replacen("*^*00501*", "*U*00401*", 1);
    assert_eq!(ta1_of(&ex.post_270(v4010.as_bytes()).await), "TA1*000000007*260412*1000*R*017");

    let short_isa = good.replacen("*00*          *00*          *", "*00**00**", 1);
    assert_eq!(ta1_of(&ex.post_270(short_isa.as_bytes()).await), "TA1*000000007*260412*1000*R*022");

    let unknown_sender = good.replace("DEMOPROVIDER   *ZZ", "SOMEONEELSE    *ZZ");
    assert_eq!(ta1_of(&ex.post_270(unknown_sender.as_bytes()).await), "TA1*000000007*260412*1000*R*006");
}

#[tokio::test]
async fn a_bad_set_gets_a_999_and_the_good_ones_their_271s() {
    let ex = TestExchange::on(TODAY).await;
    let one = String::from_utf8(Inquiry270 { isa13: 1, ..Default::default() }.build()).unwrap_or_default();
    let set = |n: &str, nm1: &str| -> String {
        let start = one.find("ST*270").unwrap_or(0);
        let end = one.find("GE*").unwrap_or(one.len());
        one[start..end].replace("0001", n).replace("NM1*IL*1*SMITH*ROBERT****MI*11122333301", nm1)
    };
    let body = format!(
        "{}{}{}{}GE*3*1~\nIEA*1*000000001~\n",
        &one[..one.find("ST*270").unwrap_or(0)],
        set("0001", "NM1*IL*1*SMITH*ROBERT****MI*11122333301"),
        set("0002", "NM1*IL*9*SMITH*ROBERT****MI*11122333301"),
        set("0003", "NM1*IL*1*SMITH*ROBERT****MI*11122333301"),
    );
    let reply = ex.post_270(body.as_bytes()).await;
    let (sets, acks) = check_emitted(&reply.body);
    assert_eq!(sets.len(), 2, "271s for sets 1 and 3");
    assert_eq!(acks.len(), 1);
    let ack = &acks[0];
    assert!(ack.contains(&"AK1*HS*1*005010X279A1".to_owned()));
    let i = ack.iter().position(|s| s == "AK2*270*0002*005010X279A1").expect("AK2 for the bad set");
    assert_eq!(ack[i + 1], "IK3*NM1*9*2100*8");
    assert_eq!(ack[i + 2], "IK4*2*1065*7*9");
    assert_eq!(ack[i + 3], "IK5*R*5");
    assert!(ack.contains(&"AK9*P*3*3*2".to_owned()), "{ack:?}");
    assert_eq!(seg_starting(ack, "IK5*A").len(), 2);
}

#[tokio::test]
async fn member_matching_follows_the_search_options() {
    let ex = TestExchange::on(TODAY).await;
    let with = |subscriber: &[&str]| Inquiry270 {
        subscriber: subscriber.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    };
    // Member id + date of birth; member id + name; name + date of birth.
    for subscriber in [
        vec!["NM1*IL*1******MI*11122333301", "DMG*D8*19430519", "EQ*30"],
        vec!["NM1*IL*1*SMITH*ROBERT****MI*11122333301", "EQ*30"],
        vec!["NM1*IL*1*SMITH*ROBERT", "DMG*D8*19430519", "EQ*30"],
    ] {
        let set = answer(&ex, &with(&subscriber)).await;
        assert!(set.iter().any(|s| s.ends_with("*MI*11122333301")), "{set:?}");
        assert!(set.iter().any(|s| s.starts_with("EB*1**30")), "{set:?}");
        assert!(seg_starting(&set, "AAA").is_empty(), "{set:?}");
    }
    let cases: &[(&[&str], &str)] = &[
        (&["NM1*IL*1*SMITH*ROBERT****MI*99999999", "EQ*30"], "AAA*N**72*C"),
        (&["NM1*IL*1******MI*11122333301", "DMG*D8*19500101", "EQ*30"], "AAA*N**71*C"),
        (&["NM1*IL*1*JONES*ROBERT****MI*11122333301", "EQ*30"], "AAA*N**73*C"),
        (&["NM1*IL*1*NOBODY*NEMO", "DMG*D8*19700101", "EQ*30"], "AAA*N**75*C"),
        (&["NM1*IL*1*ROE*ALEX", "DMG*D8*20000101", "EQ*30"], "AAA*N**76*C"),
        (&["NM1*IL*1*SMITH", "DMG*D8*19430519", "EQ*30"], "AAA*N**73*C"),
        (&["NM1*IL*1*SMITH*ROBERT****MI*11122333301", "DTP*291*D8*20200101", "EQ*30"], "AAA*N**62*C"),
        (&["NM1*IL*1*SMITH*ROBERT****MI*11122333301", "DTP*291*D8*20270101", "EQ*30"], "AAA*N**63*C"),
    ];
    for (subscriber, aaa) in cases {
        let set = answer(&ex, &with(subscriber)).await;
        let nm1 = set.iter().position(|s| s.starts_with("NM1*IL")).expect("2100C");
        let found = set[nm1..].iter().find(|s| s.starts_with("AAA")).map(String::as_str);
        assert_eq!(found, Some(*aaa), "{subscriber:?} -> {set:?}");
        assert!(seg_starting(&set, "EB*").is_empty(), "no benefits with a rejection");
    }
}

#[tokio::test]
async fn provider_and_payer_rejections_sit_at_their_loops() {
    let ex = TestExchange::on(TODAY).await;
    let set = answer(&ex, &Inquiry270 { provider: ("XX".into(), "1555555550".into()), ..Default::default() }).await;
    let nm1 = set.iter().position(|s| s.starts_with("NM1*1P")).expect("2100B");
    assert_eq!(set[nm1 + 1], "AAA*N**41*N", "another partner's provider: {set:?}");
    assert!(seg_starting(&set, "NM1*IL").is_empty(), "no subscriber data returned");

    let set = answer(&ex, &Inquiry270 { provider: ("XX".into(), "1234567890".into()), ..Default::default() }).await;
    assert!(set.contains(&"AAA*N**43*C".to_owned()), "bad NPI check digit: {set:?}");

    let set = answer(&ex, &Inquiry270 { payer_id: "OTHERPAYER".into(), ..Default::default() }).await;
    let nm1 = set.iter().position(|s| s.starts_with("NM1*PR")).expect("2100A");
    assert_eq!(set[nm1 + 1], "AAA*N**79*C", "{set:?}");
}

#[tokio::test]
async fn dependents_are_answered_in_2000d() {
    let ex = TestExchange::on(TODAY).await;
    let inquiry = Inquiry270 {
        subscriber: vec!["NM1*IL*1******MI*11122333301".into()],
        dependent: Some(vec!["NM1*03*1*SMITH*MARY".into(), "DMG*D8*19781014".into(), "EQ*30".into()]),
        ..Default::default()
    };
    let set = answer(&ex, &inquiry).await;
    let hl4 = set.iter().position(|s| s == "HL*4*3*23*0").expect("2000D");
    assert!(set.contains(&"HL*3*2*22*1".to_owned()));
    assert!(set[..hl4].iter().all(|s| !s.starts_with("EB*")), "no benefits at 2000C when the patient is a dependent");
    assert!(set[hl4..].iter().any(|s| s.starts_with("NM1*03*1*SMITH*MARY")));
    assert!(set[hl4..].contains(&"INS*N*19".to_owned()));
    assert!(set[hl4..].iter().any(|s| s.starts_with("EB*1**30")));

    let unknown = Inquiry270 {
        subscriber: inquiry.subscriber.clone(),
        dependent: Some(vec!["NM1*03*1*SMITH*JOHN".into(), "DMG*D8*19781014".into(), "EQ*30".into()]),
        ..Default::default()
    };
    let set = answer(&ex, &unknown).await;
    let nm1 = set.iter().position(|s| s.starts_with("NM1*03")).expect("2100D");
    assert_eq!(set[nm1 + 1], "AAA*N**67*C");

    // A dependent with a unique member id is the subscriber for the guide: answered at 2000C.
    let own_id = Inquiry270 {
        subscriber: vec!["NM1*IL*1*O'BRIEN*KIM****MI*W100200301".into(), "DMG*D8*20150720".into(), "EQ*30".into()],
        ..Default::default()
    };
    let set = answer(&ex, &own_id).await;
    assert!(!set.iter().any(|s| s.starts_with("HL*4")));
    assert!(set.iter().any(|s| s.starts_with("NM1*IL*1*O'BRIEN*KIM*") && s.ends_with("*MI*W100200301")), "{set:?}");
    assert!(set.iter().any(|s| s.starts_with("EB*1**30")));
}

#[tokio::test]
async fn service_types_and_terminated_coverage() {
    let ex = TestExchange::on(TODAY).await;
    let set = answer(
        &ex,
        &Inquiry270 {
            subscriber: vec![
                "NM1*IL*1*SMITH*ROBERT****MI*11122333301".into(),
                "DMG*D8*19430519".into(),
                "EQ*98".into(),
            ],
            ..Default::default()
        },
    )
    .await;
    let eb: Vec<_> = seg_starting(&set, "EB*");
    assert_eq!(eb[0], "EB*1**98*HM*GOLD 123 PLAN");
    assert!(eb.contains(&&"EB*B*IND*98*HM**27*25*****Y".to_owned()), "{eb:?}");
    assert!(eb.contains(&&"EB*B*IND*98*HM**27*60*****N".to_owned()), "{eb:?}");
    assert!(!eb.iter().any(|s| s.starts_with("EB*C")), "a specific code answers that benefit only");

    let set = answer(
        &ex,
        &Inquiry270 {
            subscriber: vec!["NM1*IL*1*DOE*TERRY****MI*000123457".into(), "DMG*D8*19750505".into(), "EQ*30".into()],
            ..Default::default()
        },
    )
    .await;
    assert!(set.contains(&"EB*6**30*HM*GOLD 123 PLAN".to_owned()), "inactive: {set:?}");
    assert!(set.contains(&"DTP*347*D8*20251231".to_owned()), "with its end date: {set:?}");
    assert_eq!(seg_starting(&set, "EB*").len(), 1);
}

#[tokio::test]
async fn retries_are_idempotent_and_reused_control_numbers_are_refused() {
    let ex = TestExchange::on(TODAY).await;
    let body = Inquiry270 { isa13: 42, ..Default::default() }.build();
    let first = ex.post_270(&body).await;
    let second = ex.post_270(&body).await;
    assert_eq!(first.body, second.body, "the retry gets the original answer");
    assert_eq!(second.header("idempotent-replayed"), "true");
    let records =
        ex.adapters.store.query(&Query::prefix("PARTNER#demo-provider", "INQUIRY#", 100)).await.expect("query");
    assert_eq!(records.items.len(), 1, "the retry created nothing new");

    let different = Inquiry270 { isa13: 42, payer_id: "DCMEDICAID".into(), ..Default::default() }.build();
    assert_eq!(ta1_of(&ex.post_270(&different).await), "TA1*000000042*260412*1000*R*025");
}

#[tokio::test]
async fn control_numbers_are_never_reused_across_restarts() {
    let ex = TestExchange::on(TODAY).await;
    let isa13 = |r: &exchange_tests::Reply| r.segments()[0].split('*').nth(13).unwrap_or("").to_owned();
    let a = isa13(&ex.post_270(&Inquiry270 { isa13: 1, ..Default::default() }.build()).await);
    let b = isa13(&ex.post_270(&Inquiry270 { isa13: 2, ..Default::default() }.build()).await);
    let ex = ex.reopen().await;
    let c = isa13(&ex.post_270(&Inquiry270 { isa13: 3, ..Default::default() }.build()).await);
    // One instance issues consecutive numbers from its block; the restarted one reserves the next block, so a number
    // the first instance might still have issued is never issued again.
    let block = exchange_core::control_numbers::BLOCK;
    let (a, b, c) = (a.parse::<u64>().unwrap_or(0), b.parse::<u64>().unwrap_or(0), c.parse::<u64>().unwrap_or(0));
    assert_eq!((a, b), (block, block + 1));
    assert_eq!(c, 2 * block, "the restart starts past the whole first block");
}

#[tokio::test]
async fn the_raw_interchange_is_vaulted_encrypted() {
    let ex = TestExchange::on(TODAY).await;
    let body = Inquiry270::default().build();
    assert_eq!(ex.post_270(&body).await.status, 200);
    let records =
        ex.adapters.store.query(&Query::prefix("PARTNER#demo-provider", "INQUIRY#", 10)).await.expect("query");
    let record = &records.items[0].body;
    assert_eq!(record["sets"], 1);
    let path = record["requestPath"].as_str().expect("request path");
    // A 270 is small: it is kept in the database (with the group commit), and what is on disk is ciphertext.
    assert!(ex.adapters.store.blob_paths().expect("paths").iter().any(|p| p == path), "vaulted in the database");
    let stored =
        exchange_core::ports::BlobStore::get(ex.adapters.blobs.as_ref(), path).await.expect("the stored object");
    assert!(!stored.windows(5).any(|w| w == b"SMITH"), "the stored object is encrypted");
    assert!(!stored.windows(11).any(|w| w == b"11122333301"), "the stored object is encrypted");
    let text = serde_json::to_string(record).unwrap_or_default();
    assert!(!text.contains("SMITH") && !text.contains("11122333301"), "the inquiry record holds no PHI");
    let plain =
        ex.app.vault().get(path, &EncryptionContext::for_document(path, "DEMOPAYER"), None).await.expect("vault read");
    assert_eq!(plain, body);
}

#[tokio::test]
async fn a_failed_write_leaves_nothing_behind() {
    let blobs = Arc::new(FailingBlobs::default());
    let ex = TestExchange::with_blobs(TODAY, Some(blobs.clone())).await;
    let reply = ex.post_270(&Inquiry270::default().build()).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.header("content-type"), "application/problem+json");
    assert_eq!(reply.json()["retryable"], true);
    let records = ex.adapters.store.query(&Query::prefix("PARTNER#demo-provider", "", 100)).await.expect("query");
    assert!(
        records.items.iter().all(|i| !i.key.sk.starts_with("INQUIRY#") && !i.key.sk.starts_with("IDEMP#")),
        "no inquiry or idempotency record"
    );
    assert!(blobs.stored().is_empty(), "the request document written before the failure was removed");
}

#[tokio::test]
async fn json_eligibility() {
    let ex = TestExchange::on(TODAY).await;
    let token = ex.token("demo-provider").await;
    let event = with_token(load_event("eligibility/post-eligibility.json"), &token);
    let reply = ex.send_event(&event).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let v = reply.json();
    assert_eq!(v["controlNumber"], "123456789");
    assert_eq!(v["subscriber"]["memberId"], "11122333301");
    assert_eq!(v["planStatus"][0]["statusCode"], "1");
    assert!(v["benefitsInformation"].as_array().is_some_and(|b| b
        .iter()
        .any(|b| b["code"] == "C" && b["timeQualifierCode"] == "29" && b["benefitAmount"] == "1150")));
    let raw = v["x12"].as_str().unwrap_or("");
    let (sets, _) = check_emitted(raw.as_bytes());
    assert_eq!(sets.len(), 1);

    let missing = ex.post("/eligibility", "application/json", Some(&token), br#"{"controlNumber":"123456789"}"#).await;
    assert_eq!(missing.status, 400);
    let errors = missing.json()["errors"].as_array().cloned().unwrap_or_default();
    assert!(errors.iter().any(|e| e["message"].as_str().is_some_and(|m| m.contains("subscriber"))), "{errors:?}");

    let not_json = ex.post("/eligibility", "application/json", Some(&token), b"{nope").await;
    assert_eq!(not_json.status, 400);
    let wrong_type = ex.post("/eligibility", "text/plain", Some(&token), b"{}").await;
    assert_eq!(wrong_type.status, 415);

    let bad_dob = json!({"controlNumber": "123456789", "tradingPartnerServiceId": "DEMOPAYER",
        "provider": {"organizationName": "ACME", "npi": "1234567893"},
        "subscriber": {"memberId": "11122333301", "dateOfBirth": "19431340"}});
    let reply = ex.post("/eligibility", "application/json", Some(&token), bad_dob.to_string().as_bytes()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["errors"][0]["code"], "58");
}

/// Every demo member, as subscriber (and each dependent in 2000D), for a spread of service types: every answer passes
/// the envelope checks and the 271 guide tables, and says active or inactive coverage.
#[tokio::test]
async fn every_demo_member_gets_a_guide_conformant_271() {
    let ex = TestExchange::on(TODAY).await;
    let data: serde_json::Value =
        serde_json::from_slice(&std::fs::read(exchange_tests::demo_data_path()).unwrap_or_default())
            .unwrap_or_default();
    let members = data["members"].as_array().cloned().unwrap_or_default();
    assert!(members.len() >= 10);
    let mut answered = 0;
    for m in &members {
        let id = m["memberId"].as_str().unwrap_or_default();
        let dob = m["dateOfBirth"].as_str().unwrap_or_default();
        for eq in ["30", "98", "47", "33", "BT", "42", "30^98^UC"] {
            let inquiry = Inquiry270 {
                subscriber: vec![format!("NM1*IL*1******MI*{id}"), format!("DMG*D8*{dob}"), format!("EQ*{eq}")],
                ..Default::default()
            };
            let set = answer(&ex, &inquiry).await;
            assert!(
                set.iter().any(|s| s.starts_with("EB*1*") || s.starts_with("EB*6*") || s.starts_with("EB*I*")),
                "{set:?}"
            );
            answered += 1;
        }
        for d in m["dependents"].as_array().cloned().unwrap_or_default() {
            let inquiry = Inquiry270 {
                subscriber: vec![format!("NM1*IL*1******MI*{id}")],
                dependent: Some(vec![
                    format!(
                        "NM1*03*1*{}*{}",
                        d["lastName"].as_str().unwrap_or(""),
                        d["firstName"].as_str().unwrap_or("")
                    ),
                    format!("DMG*D8*{}", d["dateOfBirth"].as_str().unwrap_or("")),
                    "EQ*30".to_owned(),
                ]),
                ..Default::default()
            };
            let set = answer(&ex, &inquiry).await;
            assert!(set.iter().any(|s| s.starts_with("INS*N*")), "{set:?}");
            answered += 1;
        }
    }
    assert!(answered > 70);
}

#[tokio::test]
async fn json_retries_with_an_idempotency_key_get_the_original_answer() {
    let ex = TestExchange::on(TODAY).await;
    let token = ex.token("demo-provider").await;
    let mut event = with_token(load_event("eligibility/post-eligibility.json"), &token);
    event["headers"]["idempotency-key"] = json!("retry-1");
    let first = ex.send_event(&event).await;
    let second = ex.send_event(&event).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body, second.body, "the raw 271 inside carries the same control numbers");
    assert_eq!(second.header("idempotent-replayed"), "true");
    assert_eq!(second.header("content-type"), "application/json");

    event["body"] = json!(event["body"].as_str().unwrap_or("").replace("123456789\"", "987654321\""));
    let reused = ex.send_event(&event).await;
    assert_eq!(reused.status, 422, "{}", reused.text());
    assert_eq!(reused.header("content-type"), "application/problem+json");
}

#[tokio::test]
async fn payer_data_unavailable_is_aaa_42() {
    let ex = TestExchange::with_store(TODAY, |inner| Arc::new(async_trait_free::NoPayerData(inner))).await;
    let set = answer(&ex, &Inquiry270::default()).await;
    let nm1 = set.iter().position(|s| s.starts_with("NM1*PR")).expect("2100A");
    assert_eq!(set[nm1 + 1], "AAA*Y**42*R", "valid request, unable to respond now, resubmission allowed: {set:?}");
}

#[tokio::test]
async fn an_unknown_transaction_set_is_rejected_in_the_999() {
    let ex = TestExchange::on(TODAY).await;
    let body = String::from_utf8(Inquiry270::default().build())
        .unwrap_or_default()
        .replace("ST*270*0001*005010X279A1", "ST*837*0001*005010X279A1");
    let reply = ex.post_270(body.as_bytes()).await;
    let (sets, acks) = check_emitted(&reply.body);
    assert!(sets.is_empty());
    assert!(acks[0].contains(&"IK5*R*1".to_owned()), "transaction set not supported: {:?}", acks[0]);
    assert!(acks[0].contains(&"AK9*R*1*1*0".to_owned()));
}

mod async_trait_free {
    //! A blob store that accepts inbound documents and fails on outbound ones, to show nothing is half-written.

    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use exchange_core::ports::{BlobStore, PortError, PortResult};

    use std::sync::Arc;

    use exchange_core::ports::{Item, Key, Page, Query, StateStore, WriteOp};

    /// A state store whose payer-data pointer cannot be read (everything else works).
    pub struct NoPayerData(pub Arc<dyn StateStore>);

    #[async_trait::async_trait]
    impl StateStore for NoPayerData {
        async fn get(&self, key: &Key) -> PortResult<Option<Item>> {
            if key.pk == "PAYERDATA" {
                return Err(PortError::Unavailable("injected failure".into()));
            }
            self.0.get(key).await
        }
        async fn put_new(&self, item: Item) -> PortResult<()> {
            self.0.put_new(item).await
        }
        async fn update(&self, item: Item, expected_version: u64) -> PortResult<u64> {
            self.0.update(item, expected_version).await
        }
        async fn query(&self, query: &Query) -> PortResult<Page> {
            self.0.query(query).await
        }
        async fn query_gsi1(&self, query: &Query) -> PortResult<Page> {
            self.0.query_gsi1(query).await
        }
        async fn transact(&self, ops: Vec<WriteOp>) -> PortResult<()> {
            self.0.transact(ops).await
        }
        async fn increment(&self, key: &Key) -> PortResult<u64> {
            self.0.increment(key).await
        }
    }

    #[derive(Default)]
    pub struct FailingBlobs {
        objects: Mutex<BTreeMap<String, Vec<u8>>>,
    }

    impl FailingBlobs {
        pub fn stored(&self) -> Vec<String> {
            self.objects.lock().map(|o| o.keys().cloned().collect()).unwrap_or_default()
        }
    }

    #[async_trait::async_trait]
    impl BlobStore for FailingBlobs {
        async fn put(&self, path: &str, bytes: Vec<u8>) -> PortResult<()> {
            if path.starts_with("outbound/") {
                return Err(PortError::Unavailable("injected failure".into()));
            }
            self.objects.lock().map_err(|_| PortError::Unavailable("poisoned".into()))?.insert(path.to_owned(), bytes);
            Ok(())
        }
        async fn get(&self, path: &str) -> PortResult<Vec<u8>> {
            self.objects
                .lock()
                .map_err(|_| PortError::Unavailable("poisoned".into()))?
                .get(path)
                .cloned()
                .ok_or_else(|| PortError::NotFound(path.to_owned()))
        }
        async fn delete(&self, path: &str) -> PortResult<()> {
            self.objects.lock().map_err(|_| PortError::Unavailable("poisoned".into()))?.remove(path);
            Ok(())
        }
        async fn size(&self, path: &str) -> PortResult<u64> {
            self.get(path).await.map(|b| b.len() as u64)
        }
    }
}

/// Many callers at once with one Idempotency-Key: every one gets the one answer (one computed, the rest replayed
/// once it committed), never 503 or 409, and one inquiry is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_idempotency_key_get_the_one_answer() {
    let ex = Arc::new(TestExchange::on(TODAY).await);
    let token = ex.token("demo-provider").await;
    let mut event = with_token(load_event("eligibility/post-eligibility.json"), &token);
    event["headers"]["idempotency-key"] = json!("race-1");
    let replies = exchange_tests::at_once(32, || {
        let (ex, event) = (ex.clone(), event.clone());
        async move { ex.send_event(&event).await }
    })
    .await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(replies.iter().all(|r| r.body == replies[0].body), "one answer for all");
    assert_eq!(replies.iter().filter(|r| r.header("idempotent-replayed") != "true").count(), 1);
    let records =
        ex.adapters.store.query(&Query::prefix("PARTNER#demo-provider", "INQUIRY#", 100)).await.expect("query");
    assert_eq!(records.items.len(), 1, "one inquiry recorded");
}
