//! DTR forms in the payer data: the Questionnaires a policy names, with what the payer fills in itself
//! ([`Prefill`]), and the ValueSets and Libraries they use. Stored per data set version by canonical URL, so a
//! reload never leaves a policy naming a form that is not there (checked at load).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a pre-filled answer comes from: what the payer already knows about the member, plan and order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrefillSource {
    /// The member id.
    #[serde(rename = "member.id")]
    MemberId,
    /// First name.
    #[serde(rename = "member.firstName")]
    FirstName,
    /// Last name.
    #[serde(rename = "member.lastName")]
    LastName,
    /// Date of birth.
    #[serde(rename = "member.dateOfBirth")]
    DateOfBirth,
    /// Plan id.
    #[serde(rename = "plan.id")]
    PlanId,
    /// Plan name.
    #[serde(rename = "plan.name")]
    PlanName,
    /// The billing code of the order the form is for.
    #[serde(rename = "order.code")]
    OrderCode,
}

/// One pre-filled item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prefill {
    /// The item's linkId.
    pub link_id: String,
    /// The source.
    pub from: PrefillSource,
}

/// A form: the Questionnaire and its pre-fill rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Form {
    /// The Questionnaire resource.
    pub resource: Value,
    /// Items the payer fills in.
    #[serde(default)]
    pub prefill: Vec<Prefill>,
}

impl Form {
    /// The Questionnaire's canonical URL.
    pub fn url(&self) -> &str {
        self.resource["url"].as_str().unwrap_or_default()
    }
}

/// A canonical reference without its `|version`.
pub fn canonical_url(canonical: &str) -> &str {
    canonical.split('|').next().unwrap_or(canonical)
}

/// The `|version` of a canonical reference, if any.
pub fn canonical_version(canonical: &str) -> Option<&str> {
    canonical.split_once('|').map(|(_, v)| v)
}

/// Every linkId of a Questionnaire's items, nested ones included.
pub fn link_ids(items: &Value) -> Vec<&str> {
    let mut out = Vec::new();
    for item in items.as_array().into_iter().flatten() {
        if let Some(id) = item["linkId"].as_str() {
            out.push(id);
        }
        out.extend(link_ids(&item["item"]));
    }
    out
}

/// The canonicals a Questionnaire depends on: its `cqf-library` extensions and its items' `answerValueSet`s.
pub fn dependencies(questionnaire: &Value) -> Vec<String> {
    fn value_sets(items: &Value, out: &mut Vec<String>) {
        for item in items.as_array().into_iter().flatten() {
            if let Some(vs) = item["answerValueSet"].as_str() {
                out.push(vs.to_owned());
            }
            value_sets(&item["item"], out);
        }
    }
    let mut out: Vec<String> = questionnaire["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["url"] == "http://hl7.org/fhir/StructureDefinition/cqf-library")
        .filter_map(|e| e["valueCanonical"].as_str().map(str::to_owned))
        .collect();
    value_sets(&questionnaire["item"], &mut out);
    out
}
