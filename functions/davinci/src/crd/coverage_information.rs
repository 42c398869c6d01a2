//! The CRD coverage-information extension, computed from the payer policy's [`PolicyOutcome`] for one billing code.
//!
//! The mapping is the contract with prior authorization: `auth-needed` exactly when a PAS submission without
//! documentation would be pended ([`exchange_core::domain::policy::auto_decision`] pends both `AuthNeeded` and
//! `Unknown`), `not-covered` exactly when it would be denied. The extension obeys the profile's invariants
//! (crd-ci-q1..q9): an indeterminate value or a documentation purpose always comes with a `reason`, a
//! not-covered answer never carries `pa-needed`, a questionnaire only with `doc-needed`.

use exchange_core::domain::policy::PolicyOutcome;
use serde_json::{json, Value};

/// The extension's canonical URL.
pub const COVERAGE_INFORMATION: &str =
    "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information";
/// The code system of `covered`, `pa-needed`, `doc-needed`, `doc-purpose`.
pub const CODES: &str = "http://hl7.org/fhir/us/davinci-crd/CodeSystem/coverage-information-codes";
/// The code system of CRD's coverage-assertion reasons (`no-member-found`, `no-active-coverage`, ...).
pub const TEMP_CODES: &str = "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp";

/// What CRD asserts for one billing code (or for the order when the member cannot be placed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    /// `covered` | `not-covered` | `conditional` | `indeterminate`.
    pub covered: &'static str,
    /// `no-auth` | `auth-needed` | `indeterminate`, or none (not covered).
    pub pa_needed: Option<&'static str>,
    /// `clinical` when documentation is needed for the decision.
    pub doc_needed: Option<&'static str>,
    /// The DTR questionnaire that gathers it.
    pub questionnaire: Option<String>,
    /// LOINC codes of documents the decision needs.
    pub documentation: Vec<String>,
    /// A coded reason (from [`TEMP_CODES`]) and/or a text reason.
    pub reason_code: Option<&'static str>,
    /// Text of the reason.
    pub reason_text: Option<String>,
}

impl Assertion {
    /// The assertion the policy's outcome earns.
    pub fn from_policy(outcome: &PolicyOutcome) -> Self {
        let base = Assertion {
            covered: "covered",
            pa_needed: None,
            doc_needed: None,
            questionnaire: None,
            documentation: Vec::new(),
            reason_code: None,
            reason_text: None,
        };
        match outcome {
            PolicyOutcome::NoAuthNeeded => Assertion { pa_needed: Some("no-auth"), ..base },
            PolicyOutcome::NotCovered { reason } => Assertion {
                covered: "not-covered",
                reason_text: Some(format!("not covered under the member's plan (reason code {reason})")),
                ..base
            },
            PolicyOutcome::AuthNeeded { documentation, questionnaire } => {
                let needs_docs = !documentation.is_empty() || questionnaire.is_some();
                Assertion {
                    pa_needed: Some("auth-needed"),
                    doc_needed: needs_docs.then_some("clinical"),
                    questionnaire: questionnaire.clone(),
                    documentation: documentation.clone(),
                    reason_text: needs_docs.then(|| documentation_reason(documentation, questionnaire.is_some())),
                    ..base
                }
            }
            // Whether the plan covers a code its policy does not list is for a reviewer to say, and PAS pends it:
            // so prior authorization is needed, and coverage is undetermined.
            PolicyOutcome::Unknown => Assertion {
                covered: "indeterminate",
                pa_needed: Some("auth-needed"),
                reason_text: Some("the plan's policy does not list this code: a reviewer decides".into()),
                ..base
            },
        }
    }

    /// The member named by the Coverage is not on file, or has no coverage on the service date.
    pub fn member_not_placed(reason_code: &'static str, text: &str) -> Self {
        Assertion {
            covered: "indeterminate",
            pa_needed: Some("indeterminate"),
            doc_needed: None,
            questionnaire: None,
            documentation: Vec::new(),
            reason_code: Some(reason_code),
            reason_text: Some(text.to_owned()),
        }
    }

    /// The order carries no billing code the policy can evaluate.
    pub fn no_billing_code() -> Self {
        Assertion {
            covered: "indeterminate",
            pa_needed: Some("indeterminate"),
            doc_needed: None,
            questionnaire: None,
            documentation: Vec::new(),
            reason_code: None,
            reason_text: Some(
                "the order carries no CPT or HCPCS code (code or billing options) the payer's policy evaluates".into(),
            ),
        }
    }

    /// Whether a person should be told (a card): anything but a plain "covered, no authorization".
    pub fn needs_attention(&self) -> bool {
        !(self.covered == "covered" && self.pa_needed == Some("no-auth"))
    }

    /// The extension, for `coverage` (a Coverage reference), asserted on `date` (YYYY-MM-DD) under `assertion_id`;
    /// `billing_code` is named when an order carries several.
    pub fn extension(
        &self,
        coverage: &str,
        date: &str,
        assertion_id: &str,
        billing_code: Option<(&str, &str)>,
    ) -> Value {
        let mut ext = vec![json!({ "url": "coverage", "valueReference": { "reference": coverage } })];
        ext.push(json!({ "url": "covered", "valueCode": self.covered }));
        if let Some(pa) = self.pa_needed {
            ext.push(json!({ "url": "pa-needed", "valueCode": pa }));
        }
        if let Some(doc) = self.doc_needed {
            // `doc-purpose` (withpa) is left out: the profile's crd-ci-q4, as written, evaluates to empty (not
            // true) for every auth-needed answer that carries it, so validators reject a correct extension. The
            // reason text says the documents go with the prior-authorization request.
            ext.push(json!({ "url": "doc-needed", "valueCode": doc }));
        }
        if let Some((system, value)) = billing_code {
            ext.push(json!({ "url": "billingCode", "valueCoding": { "system": system, "code": value } }));
        }
        if self.reason_code.is_some() || self.reason_text.is_some() {
            let mut reason = json!({});
            if let Some(c) = self.reason_code {
                reason["coding"] = json!([{ "system": TEMP_CODES, "code": c }]);
            }
            if let Some(t) = &self.reason_text {
                reason["text"] = json!(t);
            }
            ext.push(json!({ "url": "reason", "valueCodeableConcept": reason }));
        }
        if let Some(q) = &self.questionnaire {
            ext.push(json!({ "url": "questionnaire", "valueCanonical": q }));
        }
        ext.push(json!({ "url": "date", "valueDate": date }));
        ext.push(json!({ "url": "coverage-assertion-id", "valueString": assertion_id }));
        json!({ "url": COVERAGE_INFORMATION, "extension": ext })
    }
}

fn documentation_reason(documentation: &[String], questionnaire: bool) -> String {
    let mut parts = Vec::new();
    if !documentation.is_empty() {
        parts.push(format!("documents (LOINC {})", documentation.join(", ")));
    }
    if questionnaire {
        parts.push("the payer's questionnaire (DTR)".to_owned());
    }
    format!("prior authorization needs {} (send with the prior-authorization request)", parts.join(" and "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub<'a>(ext: &'a Value, url: &str) -> Option<&'a Value> {
        ext["extension"].as_array()?.iter().find(|e| e["url"] == url)
    }

    #[test]
    fn each_policy_outcome_keeps_the_profile_invariants() {
        let outcomes = [
            PolicyOutcome::NoAuthNeeded,
            PolicyOutcome::NotCovered { reason: "NC".into() },
            PolicyOutcome::AuthNeeded { documentation: vec!["11506-3".into()], questionnaire: Some("http://q".into()) },
            PolicyOutcome::AuthNeeded { documentation: vec![], questionnaire: None },
            PolicyOutcome::Unknown,
        ];
        for outcome in &outcomes {
            let ext = Assertion::from_policy(outcome).extension("Coverage/c1", "2026-11-25", "a1", None);
            let value = |url| sub(&ext, url).map(|e| e["valueCode"].as_str().unwrap_or("").to_owned());
            for required in ["coverage", "covered", "date", "coverage-assertion-id"] {
                assert!(sub(&ext, required).is_some(), "{outcome:?}: {required}");
            }
            // q1: questionnaire implies doc-needed. q2: not-covered excludes pa-needed.
            assert!(sub(&ext, "questionnaire").is_none() || sub(&ext, "doc-needed").is_some());
            assert!(value("covered").as_deref() != Some("not-covered") || sub(&ext, "pa-needed").is_none());
            // q8/q9: a doc-purpose or an indeterminate value comes with a reason.
            let indeterminate =
                ["covered", "pa-needed", "doc-needed"].iter().any(|u| value(u).as_deref() == Some("indeterminate"));
            if sub(&ext, "doc-purpose").is_some() || indeterminate {
                assert!(sub(&ext, "reason").is_some(), "{outcome:?}");
            }
        }
        let unknown = Assertion::from_policy(&PolicyOutcome::Unknown);
        assert_eq!(unknown.pa_needed, Some("auth-needed"), "PAS pends unknown codes, so CRD says auth-needed");
        assert!(!Assertion::from_policy(&PolicyOutcome::NoAuthNeeded).needs_attention());
    }
}
