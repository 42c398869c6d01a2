//! One policy, no contradictions: a property test. Random plan policies (covered or not, prior authorization or
//! not, documents and a questionnaire or not, codes the policy does not list) are loaded for the demo members;
//! for every member and service code, CRD's order-sign answer (through HTTP) and the prior-authorization intake
//! that PAS and the 278 share (a submission without documentation) must agree: CRD says `auth-needed` exactly when
//! the item would be pended, and `not-covered` exactly when it would be denied.

use exchange_core::domain::payer_data::PayerData;
use exchange_core::domain::policy::{DocumentationRequirement, PolicyRule, PriorAuthorization};
use exchange_core::domain::prior_auth::{CaseItem, Decision, Requester, Subscriber, Urgency};
use exchange_tests::davinci::*;
use exchange_tests::demo_data_path;
use prior_auth::intake::{take, Intake, Request};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use time::macros::datetime;

const CODES: [(&str, &str, &str); 8] = [
    ("CPT", CPT, "70551"),
    ("CPT", CPT, "70553"),
    ("CPT", CPT, "97110"),
    ("CPT", CPT, "27447"),
    ("CPT", CPT, "99213"),
    ("HCPCS", HCPCS, "E0431"),
    ("HCPCS", HCPCS, "S9090"),
    ("HCPCS", HCPCS, "G0202"),
];

fn random_policy(rng: &mut StdRng) -> Vec<PolicyRule> {
    let mut rules = Vec::new();
    for (system, _, code) in CODES {
        // About one code in five is not listed at all: a reviewer decides.
        if rng.gen_bool(0.2) {
            continue;
        }
        let covered = rng.gen_bool(0.75);
        let pa = rng.gen_bool(0.5);
        rules.push(PolicyRule {
            code_system: system.into(),
            code: code.into(),
            covered,
            prior_authorization: if pa { PriorAuthorization::Required } else { PriorAuthorization::NotRequired },
            denial_reason: (!covered).then(|| "NC".to_owned()),
            documentation: if rng.gen_bool(0.5) {
                vec![DocumentationRequirement { loinc: "11506-3".into(), display: None }]
            } else {
                vec![]
            },
            questionnaire: rng
                .gen_bool(0.3)
                .then(|| "http://example.org/fhir/Questionnaire/imaging-prior-auth".to_owned()),
        });
    }
    rules
}

#[tokio::test]
async fn crd_and_prior_authorization_never_disagree() {
    let x = DvExchange::new(&demo_data_path(), datetime!(2026-11-25 10:00 UTC), DvExchange::settings()).await;
    let base = PayerData::parse(&std::fs::read(demo_data_path()).expect("demo")).expect("valid");
    let provider = base.trading_partners.iter().find(|p| p.id.as_str() == "demo-provider").cloned().expect("provider");
    let now = datetime!(2026-11-25 10:00 UTC);
    let mut rng = StdRng::seed_from_u64(0x5eed_0057);
    let (mut checked, mut auth_needed, mut denied) = (0, 0, 0);
    for round in 0..4 {
        let mut data = base.clone();
        for plan in &mut data.plans {
            plan.policy = random_policy(&mut rng);
        }
        // The CDS client registration is part of the data set the exchange was built with.
        for p in &mut data.trading_partners {
            if p.id.as_str() == "demo-provider" {
                let registered = x.dv.core.repo().partner(&p.id).await.expect("store").expect("registered");
                p.jwks = registered.jwks;
                p.cds_issuers = registered.cds_issuers;
            }
        }
        x.dv.core.repo().load(&data).await.expect("load");
        for member in &data.members {
            for (i, (system, fhir_system, code)) in CODES.iter().enumerate() {
                let order = service_request(&format!("o{i}"), fhir_system, code);
                let cov = coverage("cov", member.member_id(), "DEMOPAYER");
                let r = x.call("order-sign-crd", &order_sign(&[order], &[cov])).await;
                assert_eq!(r.status, 200, "{}", r.text());
                let answer = r.json();
                let ext = coverage_information(actions(&answer)[0]).into_iter().next().cloned().expect("extension");
                let crd_auth = sub_value(&ext, "pa-needed") == Some(&json!("auth-needed"));
                let crd_denied = sub_value(&ext, "covered") == Some(&json!("not-covered"));

                let request = Request {
                    payer_ids: vec!["DEMOPAYER".into()],
                    payer_name: "DEMO HEALTH PLAN".into(),
                    subscriber: Subscriber {
                        member_id: member.member_id().to_owned(),
                        last_name: member.person.last_name.clone(),
                        ..Subscriber::default()
                    },
                    requester: Requester {
                        id_qualifier: "XX".into(),
                        id: "1234567893".into(),
                        name: "ACME".into(),
                        first_name: None,
                    },
                    trace: None,
                    request_category: "HS".into(),
                    certification_type: "I".into(),
                    diagnoses: vec![],
                    urgency: Urgency::Standard,
                    items: vec![CaseItem {
                        sequence: 1,
                        code_system: (*system).into(),
                        code: (*code).into(),
                        quantity: None,
                        service_from: None,
                        service_to: None,
                        decision: None,
                        certified_period: None,
                        trace: None,
                        decided_at: None,
                        extended_review: false,
                    }],
                    supplied_documentation: vec![],
                    fhir: None,
                };
                let intake = take(x.dv.core.repo(), &provider, "pas", "property", request, now).await.expect("intake");
                let decision = match intake {
                    Intake::Decided(case) => case.items[0].decision.clone(),
                    Intake::Rejected(_) => None,
                };
                let pended = matches!(decision, Some(Decision::Pended { .. }));
                let pas_denied = matches!(decision, Some(Decision::NotCertified { .. }));
                assert_eq!(
                    crd_auth, pended,
                    "round {round}, {system} {code}: CRD auth-needed vs PAS pended ({decision:?}) {ext}"
                );
                assert_eq!(
                    crd_denied, pas_denied,
                    "round {round}, {system} {code}: CRD not-covered vs PAS denied ({decision:?})"
                );
                checked += 1;
                auth_needed += usize::from(pended);
                denied += usize::from(pas_denied);
            }
        }
    }
    // The generator reached every outcome.
    assert!(
        checked >= 200 && auth_needed > 10 && denied > 10,
        "{checked} checked, {auth_needed} pended, {denied} denied"
    );
}
