//! Conformance over `../shared/conformance/x12/`: third-party 270s answered, and third-party 271s / 999s / TA1 read
//! by the same guide tables the exchange writes with. Fails loudly when the folder is missing.

use std::path::PathBuf;

use exchange_core::x12::envelope::{parse_interchange, SetKind};
use exchange_core::x12::guide::{validate, x279a1};
use exchange_tests::{check_emitted, conformance_dir, x12_segments, TestExchange};
use time::macros::date;

fn x12_dir(sub: &str) -> PathBuf {
    let Some(dir) = conformance_dir() else {
        panic!(
            "../shared/conformance is missing: the X12 conformance target needs it (it is present in CI beside the clone)"
        );
    };
    dir.join("x12").join(sub)
}

fn read(sub: &str, name: &str) -> Vec<u8> {
    let path = x12_dir(sub).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The date each sample was written for: its date of service must not be out of the inquiry window.
fn clock_for(name: &str) -> time::Date {
    if name.starts_with("kartik") {
        date!(2026 - 04 - 12)
    } else {
        date!(2006 - 05 - 01)
    }
}

const CONFORMANT_270S: &[&str] = &[
    "kartik_270_batch_multi.x12",
    "kartik_270_custom_delimiters.x12",
    "kartik_270_realtime_single.x12",
    "lfh_dependent-health-benefit-check.270",
    "lfh_subscriber-health-benefit-check.270",
    "stupidedi_X279A1_generic-request-by-clinic-for-patient-subscriber-eligibility.edi",
    "stupidedi_X279A1_generic-request-by-physician-for-patient-dependent-eligibility.edi",
];

#[tokio::test]
async fn every_conformant_270_is_answered_with_271s() {
    for name in CONFORMANT_270S {
        let ex = TestExchange::on(clock_for(name)).await;
        let input = read("270", name);
        let reply = ex.post_270(&input).await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.text());
        let inbound = parse_interchange(&input, &[x279a1::KIND_270]).expect("conformant input");
        let expected_sets = inbound.sets().count();
        let (sets, acks) = check_emitted(&reply.body);
        assert!(acks.is_empty(), "{name}: unexpected 999 {acks:?}");
        assert_eq!(sets.len(), expected_sets, "{name}: one 271 per 270");
        let e = char::from(reply.body[3]);
        for set in &sets {
            assert!(
                !set.iter().any(|s| s.starts_with(&format!("AAA{e}"))),
                "{name}: the demo data knows this member, so no rejection is expected: {set:?}"
            );
            assert!(set.iter().any(|s| s.starts_with(&format!("EB{e}1{e}"))), "{name}: active coverage: {set:?}");
            assert!(set.iter().any(|s| s.starts_with(&format!("TRN{e}2{e}"))), "{name}: the inquiry's trace echoed");
        }
    }
}

#[tokio::test]
async fn the_batch_with_one_bad_set_rejects_only_that_set() {
    let name = "kartik_batch_with_one_bad_transaction.x12";
    let ex = TestExchange::on(clock_for(name)).await;
    let reply = ex.post_270(&read("270", name)).await;
    let (sets, acks) = check_emitted(&reply.body);
    assert_eq!(sets.len(), 2, "271s for sets 0001 and 0003");
    assert_eq!(acks.len(), 1, "one 999");
    let ack = &acks[0];
    let ak2 = ack.iter().position(|s| s == "AK2*270*0002*005010X279A1").expect("AK2 for set 0002");
    assert_eq!(ack[ak2 + 1], "IK3*NM1*9*2100*8", "NM1 is the 9th segment of the set, in loop 2100C (IK303 2100)");
    assert_eq!(ack[ak2 + 2], "IK4*2*1065*7*9", "NM102 (element 1065) has an invalid code value, 9");
    assert_eq!(ack[ak2 + 3], "IK5*R*5");
    assert!(
        ack.contains(&"AK2*270*0001*005010X279A1".to_owned()) && ack.contains(&"AK2*270*0003*005010X279A1".to_owned())
    );
    assert!(ack.contains(&"AK9*P*3*3*2".to_owned()), "partially accepted: {ack:?}");
    assert!(sets.iter().any(|s| s.iter().any(|x| x.starts_with("TRN*2*TRACE0004"))));
    assert!(sets.iter().any(|s| s.iter().any(|x| x.starts_with("TRN*2*TRACE0006"))));
    assert!(!sets.iter().any(|s| s.iter().any(|x| x.starts_with("TRN*2*TRACE0005"))));
}

#[tokio::test]
async fn the_custom_delimiter_file_is_answered_in_its_delimiters() {
    let name = "kartik_270_custom_delimiters.x12";
    let ex = TestExchange::on(clock_for(name)).await;
    let reply = ex.post_270(&read("270", name)).await;
    let body = &reply.body;
    assert_eq!(body[3], b'|', "element separator");
    assert_eq!(body[82], b'~', "repetition separator (ISA11)");
    assert_eq!(body[104], b':', "component separator");
    assert_eq!(body[105], b'!', "segment terminator");
    let segs = x12_segments(body);
    assert!(segs.iter().any(|s| s.starts_with("NM1|IL|1|DOE|CUSTOM")), "{segs:?}");
    assert!(segs.iter().any(|s| s.starts_with("EB|1||30~")), "repetitions use '~': {segs:?}");
    let (sets, _) = check_emitted(body);
    assert_eq!(sets.len(), 1);
}

/// The upstream 271 examples read cleanly with the same 271 guide tables the exchange's answers are checked with.
#[test]
fn upstream_271_examples_pass_the_271_guide() {
    for name in [
        "lfh_subscriber-health-benefit-check.271",
        "lfh_dependent-health-benefit-check.271",
        "stupidedi_X279A1_error-response-not-eligible-for-inquiries.edi",
    ] {
        let input = read("271", name);
        let ic = parse_interchange(&input, &[x279a1::KIND_271]).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        for set in ic.sets() {
            assert!(!set.ack.is_rejected(), "{name}: envelope {:?}", set.ack);
            let mut ack = set.ack.clone();
            validate(&x279a1::GUIDE_271, &set.body, &mut ack);
            assert!(ack.segment_errors.is_empty(), "{name}: {:?}", ack.segment_errors);
        }
    }
    // The known defect: a 271 under GS01=HS is a group the 271 functional identifier does not cover.
    let rejected = read("271", "kartik_271_rejected_subscriber.x12");
    let ic = parse_interchange(&rejected, &[x279a1::KIND_271]).expect("envelope");
    assert_eq!(ic.groups[0].errors, vec!["1"]);
}

/// The known SE01 defects in the 278 samples are found by the envelope checks (IK5 code 4).
#[test]
fn segment_count_defects_are_found() {
    const KIND_278: SetKind = SetKind { functional_id: "HI", set_id: "278", version: "005010X217" };
    for (name, bad) in [
        ("stupidedi_X217-admission-request-for-review.edi", true),
        ("stupidedi_X217-request-for-home-health-care.edi", true),
        ("stupidedi_X217-referral-request-for-review.edi", false),
    ] {
        let input = read("278", name);
        let ic = parse_interchange(&input, &[KIND_278]).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let codes: Vec<&str> = ic.sets().flat_map(|s| s.ack.set_codes.clone()).collect();
        assert_eq!(codes.contains(&"4"), bad, "{name}: {codes:?}");
    }
}

/// Every 278 sample reads cleanly with the 005010X217 guide of its direction (request or response), and every
/// response fails the request guide on its purpose code (BHT02 `11`: IK4 code 7): a response sent to the request
/// route is not taken for a request.
#[test]
fn the_278_samples_pass_the_guide_of_their_direction_and_responses_fail_the_request_guide() {
    use exchange_core::x12::guide::x217::{GUIDE_278_REQUEST, GUIDE_278_RESPONSE, KIND_278};
    let dir = x12_dir("278");
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("278 folder").flatten().map(|e| e.path()).collect();
    files.sort();
    assert_eq!(files.len(), 8);
    let mut responses = 0;
    for path in files {
        let is_response = path.to_string_lossy().contains("response");
        responses += usize::from(is_response);
        let own = if is_response { &GUIDE_278_RESPONSE } else { &GUIDE_278_REQUEST };
        let input = std::fs::read(&path).expect("read");
        let ic = parse_interchange(&input, &[KIND_278]).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        for set in ic.sets() {
            let mut ack = exchange_core::x12::SetAck::default();
            let located = validate(own, &set.body, &mut ack);
            assert!(ack.segment_errors.is_empty(), "{}: {:?}", path.display(), ack.segment_errors);
            assert!(located.iter().any(|l| l.loop_id == "2000E" && l.segment.is("UM")), "{}", path.display());
            if is_response {
                let mut as_request = exchange_core::x12::SetAck::default();
                validate(&GUIDE_278_REQUEST, &set.body, &mut as_request);
                assert!(as_request.is_rejected(), "{}: a response passed as a request", path.display());
                let bht = as_request.segment_errors.iter().find(|e| e.segment_id == "BHT").expect("BHT in error");
                assert!(bht.elements.iter().any(|e| e.position == 2 && e.code == "7"), "{}: {bht:?}", path.display());
            }
        }
    }
    assert_eq!(responses, 3, "the admission, emergency-admission and referral responses");
}

/// The 999 and TA1 samples tokenize and frame: BOM tolerated, TA1-only interchange read.
#[test]
fn acknowledgment_samples_are_read() {
    const KIND_999: SetKind = SetKind { functional_id: "FA", set_id: "999", version: "005010X231A1" };
    let ack = read("999", "stupidedi_X231A1_response-to-3-837s.edi");
    let ic = parse_interchange(&ack, &[KIND_999]).expect("999 with BOM");
    assert_eq!(ic.sets().count(), 1);
    assert!(!ic.sets().any(|s| s.ack.is_rejected()));
    // The TA1-only sample declares IEA01=1 with no group: the exchange counts groups strictly (TA1 021).
    let err = parse_interchange(&read("ta1", "staedi_wiki_x12_interchange_ack.txt"), &[KIND_999]).expect_err("IEA01");
    assert_eq!(err.note_code, "021");
}

/// BIN payloads: the CDA in the 275 sample is read byte for byte; the non-numeric BIN01 is a 999 error on BIN01.
#[test]
fn bin_segments_in_the_275_samples() {
    const KIND_275: SetKind = SetKind { functional_id: "PI", set_id: "275", version: "005010X211" };
    let input = read("275", "staedi_sample275_with_HL7_valid_BIN01.edi");
    let ic = parse_interchange(&input, &[KIND_275]).expect("275");
    let bin = ic.sets().flat_map(|s| s.body.iter()).find(|s| s.is("BIN")).expect("BIN segment");
    let payload = bin.binary().expect("payload");
    assert_eq!(payload.len().to_string(), bin.text(1));
    assert!(payload.starts_with(b"<levelone"));
    assert!(payload.ends_with(b">"));

    let bad = read("275", "staedi_nonnumeric_BIN01.edi");
    let ic = parse_interchange(&bad, &[KIND_275]).expect("the interchange itself is framed");
    let set = ic.sets().next().expect("one set");
    let err = &set.ack.segment_errors[0];
    assert_eq!((err.segment_id.as_str(), err.code), ("BIN", "8"));
    assert_eq!((err.elements[0].position, err.elements[0].data_element, err.elements[0].code), (1, 784, "6"));
}
