//! The payer policy: per plan and service code, whether the code is covered, whether it needs prior authorization,
//! and what documentation a decision needs (LOINC-coded attachments or a Questionnaire).
//!
//! The rules live with their plan in the payer data (`plans[].policy`), so they are versioned, validated and cached
//! with it. Prior-authorization auto-decisions come from [`auto_decision`]; CRD and DTR are to read the same
//! [`PolicyOutcome`] so that the answers never disagree.

use serde::{Deserialize, Serialize};

use super::payer_data::Plan;
use super::prior_auth::Decision;

/// Whether a code needs prior authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PriorAuthorization {
    /// A decision is needed before the service.
    Required,
    /// No prior authorization.
    NotRequired,
}

/// A documentation requirement: a LOINC-coded document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentationRequirement {
    /// LOINC code of the document.
    pub loinc: String,
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

/// One policy rule of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// Code system: `CPT`, `HCPCS`, or `X12-1365` (service type).
    pub code_system: String,
    /// The code.
    pub code: String,
    /// Whether the plan covers it.
    pub covered: bool,
    /// Whether it needs prior authorization (ignored when not covered).
    pub prior_authorization: PriorAuthorization,
    /// The reason code given when it is not covered (HCR03 / PAS reviewActionReason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denial_reason: Option<String>,
    /// Documents a decision needs.
    #[serde(default)]
    pub documentation: Vec<DocumentationRequirement>,
    /// Canonical URL of the DTR Questionnaire that gathers what a decision needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub questionnaire: Option<String>,
}

/// What the policy says about one code under one plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyOutcome {
    /// Not covered, with the denial reason.
    NotCovered {
        /// Reason code.
        reason: String,
    },
    /// Covered, no prior authorization needed.
    NoAuthNeeded,
    /// Covered, prior authorization needed; a person decides, with this documentation.
    AuthNeeded {
        /// LOINC codes of the documents the decision needs.
        documentation: Vec<String>,
        /// The DTR Questionnaire, when there is one.
        questionnaire: Option<String>,
    },
    /// The plan's policy says nothing about the code: a person decides.
    Unknown,
}

/// The policy code system (`CPT`, `HCPCS`, `X12-1365`) of a FHIR coding system URL; other systems are kept as
/// given. One mapping for every FHIR channel (PAS items, CRD orders, DTR), so they ask the policy the same question.
/// CMS publishes the HCPCS system with both `http` and `https`; both are seen in Da Vinci examples.
pub fn fhir_code_system(system: &str) -> String {
    match system {
        "http://www.ama-assn.org/go/cpt" => "CPT".into(),
        "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
        | "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
        | "https://bluebutton.cms.gov/resources/codesystem/hcpcs" => "HCPCS".into(),
        "https://codesystem.x12.org/005010/1365" => "X12-1365".into(),
        other => other.to_owned(),
    }
}

/// Evaluates the plan's policy for one code.
pub fn evaluate(plan: &Plan, code_system: &str, code: &str) -> PolicyOutcome {
    let Some(rule) = plan.policy.iter().find(|r| same_system(&r.code_system, code_system) && r.code == code) else {
        return PolicyOutcome::Unknown;
    };
    if !rule.covered {
        return PolicyOutcome::NotCovered { reason: rule.denial_reason.clone().unwrap_or_default() };
    }
    match rule.prior_authorization {
        PriorAuthorization::NotRequired => PolicyOutcome::NoAuthNeeded,
        PriorAuthorization::Required => PolicyOutcome::AuthNeeded {
            documentation: rule.documentation.iter().map(|d| d.loinc.clone()).collect(),
            questionnaire: rule.questionnaire.clone(),
        },
    }
}

/// Whether two code systems name the same codes: CPT is HCPCS Level I, and X12 278s carry CPT codes under the
/// HCPCS qualifier (`HC`), as do some PAS submissions.
fn same_system(a: &str, b: &str) -> bool {
    let level_one = |s: &str| s.eq_ignore_ascii_case("CPT") || s.eq_ignore_ascii_case("HCPCS");
    a.eq_ignore_ascii_case(b) || (level_one(a) && level_one(b))
}

/// The automatic decision for a submitted item: certified when no authorization is needed, not certified when not
/// covered, pended otherwise (asking for whatever documentation was not supplied).
pub fn auto_decision(outcome: &PolicyOutcome, supplied_documentation: &[String]) -> Decision {
    match outcome {
        PolicyOutcome::NoAuthNeeded => Decision::Certified,
        PolicyOutcome::NotCovered { reason } => Decision::NotCertified { reasons: vec![reason.clone()] },
        PolicyOutcome::AuthNeeded { documentation, .. } => Decision::Pended {
            documentation: documentation.iter().filter(|d| !supplied_documentation.contains(d)).cloned().collect(),
        },
        PolicyOutcome::Unknown => Decision::Pended { documentation: Vec::new() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fhir_systems_map_to_policy_systems() {
        assert_eq!(fhir_code_system("http://www.ama-assn.org/go/cpt"), "CPT");
        assert_eq!(fhir_code_system("http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"), "HCPCS");
        assert_eq!(fhir_code_system("https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"), "HCPCS");
        assert_eq!(fhir_code_system("https://codesystem.x12.org/005010/1365"), "X12-1365");
        assert_eq!(fhir_code_system("http://loinc.org"), "http://loinc.org");
    }
    use crate::domain::payer_data::PayerData;

    fn gold() -> Plan {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/local-runner/demo/payer-data.json");
        let data = PayerData::parse(&std::fs::read(path).expect("demo data")).expect("valid");
        data.plans.into_iter().find(|p| p.id == "GOLD-123").expect("GOLD-123")
    }

    #[test]
    fn outcomes_and_auto_decisions() {
        let plan = gold();
        assert_eq!(evaluate(&plan, "CPT", "97110"), PolicyOutcome::NoAuthNeeded);
        assert_eq!(auto_decision(&evaluate(&plan, "CPT", "97110"), &[]), Decision::Certified);

        let mri = evaluate(&plan, "cpt", "70551");
        let PolicyOutcome::AuthNeeded { documentation, questionnaire } = &mri else { panic!("MRI needs auth") };
        assert_eq!(documentation, &vec!["18748-4".to_owned(), "11506-3".to_owned()]);
        assert!(questionnaire.is_some());
        assert_eq!(
            auto_decision(&mri, &["18748-4".into()]),
            Decision::Pended { documentation: vec!["11506-3".into()] }
        );

        let denied = evaluate(&plan, "HCPCS", "S9090");
        assert!(matches!(denied, PolicyOutcome::NotCovered { .. }));
        assert!(matches!(auto_decision(&denied, &[]), Decision::NotCertified { reasons } if !reasons[0].is_empty()));

        assert_eq!(evaluate(&plan, "CPT", "99999"), PolicyOutcome::Unknown);
        assert_eq!(evaluate(&plan, "HCPCS", "97110"), PolicyOutcome::NoAuthNeeded, "CPT is HCPCS Level I");
        assert_eq!(evaluate(&plan, "X12-1365", "97110"), PolicyOutcome::Unknown);
        assert!(auto_decision(&PolicyOutcome::Unknown, &[]).is_pending());
    }

    #[test]
    fn policy_rules_are_validated_on_load() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/local-runner/demo/payer-data.json");
        let demo: serde_json::Value = serde_json::from_slice(&std::fs::read(path).expect("demo")).expect("json");

        let mut no_reason = demo.clone();
        no_reason["plans"][0]["policy"][2].as_object_mut().expect("rule").remove("denialReason");
        let err = PayerData::parse(no_reason.to_string().as_bytes()).expect_err("a denial needs its reason");
        assert!(err.to_string().contains("/plans/0/policy/2"), "{err}");

        let mut twice = demo.clone();
        let rule = twice["plans"][0]["policy"][0].clone();
        twice["plans"][0]["policy"].as_array_mut().expect("rules").push(rule);
        let err = PayerData::parse(twice.to_string().as_bytes()).expect_err("one rule per code");
        assert!(err.to_string().contains("/plans/0/policy/3: code listed twice"), "{err}");
    }
}
