//! Payer data: the plans, benefits, members and trading partners eligibility is answered from.
//!
//! The data comes from one JSON document (schema: `shared/schemas/payer-data.schema.json`). [`PayerData::parse`]
//! validates it whole (JSON Schema, then cross-record rules) and names the bad record by its position, never by
//! its content (member data is PHI). [`PayerDataRepo::load`] writes a validated data set under a new version and
//! only then switches the current-version pointer, so readers never see a half-loaded data set.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use super::forms::{canonical_url, canonical_version, dependencies, link_ids, Form};
use super::ids::{MemberId, PartnerId};
use super::partner::TradingPartner;
use crate::ports::{Item, Key, PortError, StateStore, WriteOp};

/// The JSON Schema, compiled into the binary.
pub const SCHEMA: &str = include_str!("../../schemas/payer-data.schema.json");

/// Why a payer data document was refused.
#[derive(Debug, thiserror::Error)]
pub enum PayerDataError {
    /// Not JSON.
    #[error("payer data is not valid JSON: {0}")]
    Json(String),
    /// Schema violations, one line each, naming the record by its JSON pointer.
    #[error("payer data does not match its schema:\n{}", .0.join("\n"))]
    Schema(Vec<String>),
    /// A cross-record rule failed (unknown plan, duplicate member id, ...).
    #[error("payer data is inconsistent: {0}")]
    Inconsistent(String),
    /// Storing failed; nothing became current.
    #[error("storing payer data failed: {0}")]
    Store(#[from] PortError),
}

/// The payer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payer {
    /// Payer id (2100A NM109).
    pub id: String,
    /// Payer name.
    pub name: String,
    /// Other accepted payer ids.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Media types the payer accepts as attachment documents.
    #[serde(default = "default_attachment_content_types")]
    pub attachment_content_types: Vec<String>,
}

/// What a payer accepts as attachment documents unless its data says otherwise: PDF, C-CDA and other XML, plain
/// text, the common scanned-image formats and FHIR JSON.
pub fn default_attachment_content_types() -> Vec<String> {
    [
        "application/pdf",
        "application/xml",
        "text/xml",
        "application/hl7-v3+xml",
        "text/plain",
        "image/tiff",
        "image/jpeg",
        "image/png",
        "application/fhir+json",
        "application/json",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

impl Payer {
    /// Whether `id` names this payer.
    pub fn answers_to(&self, id: &str) -> bool {
        self.id.eq_ignore_ascii_case(id) || self.aliases.iter().any(|a| a.eq_ignore_ascii_case(id))
    }

    /// Whether the payer accepts attachment documents of media type `content_type` (parameters ignored).
    pub fn accepts_content_type(&self, content_type: &str) -> bool {
        let bare = bare_media_type(content_type);
        self.attachment_content_types.iter().any(|t| t.eq_ignore_ascii_case(&bare))
    }
}

/// A media type without its parameters, trimmed and lowercased (`Text/Plain; charset=utf-8` → `text/plain`).
pub fn bare_media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// What a benefit line says (EB01).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BenefitKind {
    /// EB01=1.
    ActiveCoverage,
    /// EB01=A.
    CoInsurance,
    /// EB01=B.
    CoPayment,
    /// EB01=C.
    Deductible,
    /// EB01=G.
    OutOfPocket,
    /// EB01=F.
    Limitations,
    /// EB01=I.
    NonCovered,
}

impl BenefitKind {
    /// The EB01 code.
    pub fn eb01(self) -> &'static str {
        match self {
            BenefitKind::ActiveCoverage => "1",
            BenefitKind::CoInsurance => "A",
            BenefitKind::CoPayment => "B",
            BenefitKind::Deductible => "C",
            BenefitKind::OutOfPocket => "G",
            BenefitKind::Limitations => "F",
            BenefitKind::NonCovered => "I",
        }
    }
}

/// Benefit time period (EB06).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TimePeriod {
    /// 23.
    CalendarYear,
    /// 22.
    ServiceYear,
    /// 27.
    Visit,
    /// 32.
    Lifetime,
    /// 7.
    Day,
    /// 25 (contract year).
    Year,
}

impl TimePeriod {
    /// The EB06 code.
    pub fn eb06(self) -> &'static str {
        match self {
            TimePeriod::CalendarYear => "23",
            TimePeriod::ServiceYear => "22",
            TimePeriod::Visit => "27",
            TimePeriod::Lifetime => "32",
            TimePeriod::Day => "7",
            TimePeriod::Year => "25",
        }
    }
}

/// A quantity (EB09/EB10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quantity {
    /// EB09 qualifier.
    pub qualifier: String,
    /// EB10 value.
    pub value: String,
}

/// One benefit of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Benefit {
    /// What it is.
    pub kind: BenefitKind,
    /// Service type codes it applies to.
    pub service_types: Vec<String>,
    /// EB02.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage_level: Option<String>,
    /// EB06.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_period: Option<TimePeriod>,
    /// EB07 (decimal string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    /// EB08 (decimal fraction string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<String>,
    /// EB09/EB10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<Quantity>,
    /// EB12.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_network: Option<String>,
    /// EB11: whether prior authorization is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_required: Option<bool>,
    /// MSG01.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Plan id.
    pub id: String,
    /// Plan name (EB05).
    pub name: String,
    /// Group number (REF*6P).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_number: Option<String>,
    /// Group name (REF*6P REF03).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    /// EB04 insurance type.
    pub insurance_type: String,
    /// Benefits.
    pub benefits: Vec<Benefit>,
    /// Prior-authorization policy per service code.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy: Vec<super::policy::PolicyRule>,
}

/// A coverage period on a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Coverage {
    /// Plan id.
    pub plan_id: String,
    /// First covered day (CCYYMMDD).
    pub begin: String,
    /// Last covered day (CCYYMMDD), when terminated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
}

impl Coverage {
    /// Whether the coverage includes every day of `from..=to` (CCYYMMDD strings compare as dates).
    pub fn covers(&self, from: &str, to: &str) -> bool {
        self.begin.as_str() <= from && self.end.as_deref().is_none_or(|end| to <= end)
    }
}

/// A postal address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    /// N301.
    pub line1: String,
    /// N302.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    /// N401.
    pub city: String,
    /// N402.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// N403.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
}

/// Amount already met toward a deductible or out-of-pocket maximum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Accumulator {
    /// `deductible` or `outOfPocket`.
    pub kind: BenefitKind,
    /// IND or FAM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage_level: Option<String>,
    /// Network (EB12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_network: Option<String>,
    /// Amount met.
    pub met: String,
}

/// A primary care provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrimaryCareProvider {
    /// NPI.
    pub npi: String,
    /// Last or organisation name.
    pub last_name: String,
    /// First name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
}

/// A person's demographics.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    /// Own member id, when the payer assigned one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Middle name or initial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub middle_name: Option<String>,
    /// Suffix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// CCYYMMDD.
    pub date_of_birth: String,
    /// F, M or U.
    pub gender: String,
    /// Address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
}

impl std::fmt::Debug for Person {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Person(<redacted>)")
    }
}

/// A dependent of a subscriber.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependent {
    /// Demographics.
    #[serde(flatten)]
    pub person: Person,
    /// INS02 relationship to the subscriber.
    pub relationship: String,
    /// The dependent's own coverage, when it differs from the subscriber's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<Vec<Coverage>>,
}

/// A subscriber with their coverage and dependents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// Demographics (member id required for subscribers).
    #[serde(flatten)]
    pub person: Person,
    /// Coverage periods.
    pub coverage: Vec<Coverage>,
    /// Accumulators.
    #[serde(default)]
    pub accumulators: Vec<Accumulator>,
    /// Primary care provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_care_provider: Option<PrimaryCareProvider>,
    /// Dependents.
    #[serde(default)]
    pub dependents: Vec<Dependent>,
}

impl Member {
    /// The subscriber's member id.
    pub fn member_id(&self) -> &str {
        self.person.member_id.as_deref().unwrap_or("")
    }
}

/// A whole payer data document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayerData {
    /// The payer.
    pub payer: Payer,
    /// Plans.
    pub plans: Vec<Plan>,
    /// Subscribers (with dependents).
    pub members: Vec<Member>,
    /// Trading partners.
    pub trading_partners: Vec<TradingPartner>,
    /// DTR forms (Questionnaires with their pre-fill rules).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub questionnaires: Vec<Form>,
    /// ValueSets the forms use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub value_sets: Vec<serde_json::Value>,
    /// Libraries the forms use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub libraries: Vec<serde_json::Value>,
}

fn compiled_schema() -> Result<&'static jsonschema::Validator, PayerDataError> {
    static VALIDATOR: OnceLock<Result<jsonschema::Validator, String>> = OnceLock::new();
    let compiled = VALIDATOR.get_or_init(|| {
        let schema: serde_json::Value = serde_json::from_str(SCHEMA).map_err(|e| e.to_string())?;
        jsonschema::validator_for(&schema).map_err(|e| e.to_string())
    });
    compiled.as_ref().map_err(|e| PayerDataError::Json(format!("embedded schema is invalid: {e}")))
}

impl PayerData {
    /// Parses and validates a payer data document: JSON Schema first (every violation listed with its location),
    /// then cross-record rules. Error messages name records by position, never by content.
    pub fn parse(json: &[u8]) -> Result<Self, PayerDataError> {
        let value: serde_json::Value = serde_json::from_slice(json).map_err(|e| PayerDataError::Json(e.to_string()))?;
        let validator = compiled_schema()?;
        let problems: Vec<String> = validator
            .iter_errors(&value)
            .take(50)
            .map(|e| format!("  at {}: {}", e.instance_path(), schema_message(&e)))
            .collect();
        if !problems.is_empty() {
            return Err(PayerDataError::Schema(problems));
        }
        let data: PayerData = serde_json::from_value(value).map_err(|e| PayerDataError::Json(e.to_string()))?;
        data.check_consistency()?;
        Ok(data)
    }

    fn check_consistency(&self) -> Result<(), PayerDataError> {
        let plan_ids: HashSet<&str> = self.plans.iter().map(|p| p.id.as_str()).collect();
        if plan_ids.len() != self.plans.len() {
            return Err(PayerDataError::Inconsistent("two plans share an id".into()));
        }
        for (i, plan) in self.plans.iter().enumerate() {
            let mut codes = HashSet::new();
            for (j, rule) in plan.policy.iter().enumerate() {
                if !codes.insert((rule.code_system.as_str(), rule.code.as_str())) {
                    return Err(PayerDataError::Inconsistent(format!("/plans/{i}/policy/{j}: code listed twice")));
                }
            }
        }
        let mut member_ids = HashSet::new();
        for (i, m) in self.members.iter().enumerate() {
            let mut ids = vec![m.member_id().to_ascii_uppercase()];
            for (j, c) in m.coverage.iter().enumerate() {
                if !plan_ids.contains(c.plan_id.as_str()) {
                    return Err(PayerDataError::Inconsistent(format!("/members/{i}/coverage/{j}: unknown planId")));
                }
                if c.end.as_deref().is_some_and(|end| end < c.begin.as_str()) {
                    return Err(PayerDataError::Inconsistent(format!("/members/{i}/coverage/{j}: end before begin")));
                }
            }
            for (j, d) in m.dependents.iter().enumerate() {
                if let Some(id) = &d.person.member_id {
                    ids.push(id.to_ascii_uppercase());
                }
                for (k, c) in d.coverage.iter().flatten().enumerate() {
                    if !plan_ids.contains(c.plan_id.as_str()) {
                        return Err(PayerDataError::Inconsistent(format!(
                            "/members/{i}/dependents/{j}/coverage/{k}: unknown planId"
                        )));
                    }
                }
            }
            for id in ids {
                if !member_ids.insert(id) {
                    return Err(PayerDataError::Inconsistent(format!("/members/{i}: member id used twice")));
                }
            }
            for (j, a) in m.accumulators.iter().enumerate() {
                if !matches!(a.kind, BenefitKind::Deductible | BenefitKind::OutOfPocket) {
                    return Err(PayerDataError::Inconsistent(format!("/members/{i}/accumulators/{j}: kind")));
                }
            }
        }
        self.check_forms()?;
        let mut partner_ids = HashSet::new();
        let mut cds_issuers = HashSet::new();
        for (i, p) in self.trading_partners.iter().enumerate() {
            if !partner_ids.insert(p.id.as_str()) {
                return Err(PayerDataError::Inconsistent(format!("/tradingPartners/{i}: partner id used twice")));
            }
            if !p.cds_issuers.is_empty() && p.jwks.as_ref().is_none_or(|k| k.keys.is_empty()) {
                return Err(PayerDataError::Inconsistent(format!(
                    "/tradingPartners/{i}: cdsIssuers need the keys (jwks) their requests are verified with"
                )));
            }
            for iss in &p.cds_issuers {
                if !cds_issuers.insert(iss.as_str()) {
                    return Err(PayerDataError::Inconsistent(format!(
                        "/tradingPartners/{i}: a CDS issuer is registered to two partners"
                    )));
                }
            }
        }
        Ok(())
    }
}

impl PayerData {
    /// Forms: unique canonicals, pre-fill naming real items, dependencies present, every questionnaire a policy
    /// names present (so CRD never points a provider at a form DTR cannot serve), and each small enough to store.
    fn check_forms(&self) -> Result<(), PayerDataError> {
        let mut canonicals: HashMap<&str, Option<&str>> = HashMap::new();
        let resources = self
            .questionnaires
            .iter()
            .map(|f| ("questionnaires", &f.resource))
            .chain(self.value_sets.iter().map(|v| ("valueSets", v)))
            .chain(self.libraries.iter().map(|l| ("libraries", l)));
        for (i, (list, r)) in resources.enumerate() {
            let url = r["url"].as_str().unwrap_or_default();
            if canonicals.insert(url, r["version"].as_str()).is_some() {
                return Err(PayerDataError::Inconsistent(format!("/{list}: a canonical URL is used twice (#{i})")));
            }
            if r.to_string().len() > MAX_FORM_BYTES {
                return Err(PayerDataError::Inconsistent(format!(
                    "/{list}: a resource exceeds {MAX_FORM_BYTES} bytes"
                )));
            }
        }
        let resolves = |canonical: &str| match canonicals.get(canonical_url(canonical)) {
            Some(version) => canonical_version(canonical).is_none_or(|v| *version == Some(v)),
            None => false,
        };
        for (i, form) in self.questionnaires.iter().enumerate() {
            let ids = link_ids(&form.resource["item"]);
            for (j, p) in form.prefill.iter().enumerate() {
                if !ids.contains(&p.link_id.as_str()) {
                    return Err(PayerDataError::Inconsistent(format!(
                        "/questionnaires/{i}/prefill/{j}: no item with this linkId"
                    )));
                }
            }
            for dep in dependencies(&form.resource) {
                if !resolves(&dep) {
                    return Err(PayerDataError::Inconsistent(format!(
                        "/questionnaires/{i}: it uses {dep}, which is not in valueSets or libraries"
                    )));
                }
            }
        }
        for (i, plan) in self.plans.iter().enumerate() {
            for (j, rule) in plan.policy.iter().enumerate() {
                if let Some(q) = &rule.questionnaire {
                    let known = self.questionnaires.iter().any(|f| f.url() == canonical_url(q));
                    if !known {
                        return Err(PayerDataError::Inconsistent(format!(
                            "/plans/{i}/policy/{j}: names a questionnaire that is not in /questionnaires"
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Largest form, ValueSet or Library stored (a DynamoDB item holds 400 KB).
pub const MAX_FORM_BYTES: usize = 300 * 1024;

/// A schema error message without the offending value (which may be PHI): jsonschema's own masking covers every
/// keyword's message (`"…" is longer than 60 characters` as much as `does not match`).
fn schema_message(e: &jsonschema::ValidationError<'_>) -> String {
    e.masked().to_string()
}

/// Where the current data set version is recorded.
fn current_key() -> Key {
    Key::new("PAYERDATA", "CURRENT")
}

fn member_key(version: u64, member_key: &str) -> Key {
    Key::new(format!("DATA#{version}#MEMBER#{member_key}"), "PROFILE")
}

fn plan_key(version: u64, plan_id: &str) -> Key {
    Key::new(format!("DATA#{version}#PLAN#{plan_id}"), "PLAN")
}

/// The partner record key.
pub fn partner_key(id: &PartnerId) -> Key {
    Key::new(format!("PARTNER#{}", id.as_str()), "PROFILE")
}

/// The index item naming the partner a CDS Hooks issuer belongs to (issuers are URLs: hashed into the key).
fn cds_issuer_key(issuer: &str) -> Key {
    Key::new(format!("CDSISSUER#{}", hex::encode(crate::vault::sha256(issuer.as_bytes()))), "PARTNER")
}

fn canonical_key(version: u64, url: &str) -> Key {
    Key::new(format!("DATA#{version}#CANONICAL#{}", hex::encode(crate::vault::sha256(url.as_bytes()))), "RESOURCE")
}

fn name_index(version: u64, last: &str, dob: &str) -> String {
    format!("DATA#{version}#NAME#{}#{dob}", normalize_name(last))
}

/// Whether a name as sent (when sent) is the name on file, compared as [`normalize_name`] does.
pub fn names_match(sent: Option<&str>, on_file: &str) -> bool {
    sent.is_none_or(|q| normalize_name(q) == normalize_name(on_file))
}

/// Upper case, letters and digits only: how names are compared.
pub fn normalize_name(name: &str) -> String {
    name.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_uppercase).collect()
}

/// What a member lookup found: the subscriber, and the dependent when the id belonged to one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The subscriber.
    pub subscriber: Member,
    /// Index into `subscriber.dependents` when the looked-up id is a dependent's own id.
    pub dependent: Option<usize>,
}

impl MemberRecord {
    /// The person the looked-up id belongs to: the dependent, or the subscriber.
    pub fn person(&self) -> &Person {
        match self.dependent.and_then(|d| self.subscriber.dependents.get(d)) {
            Some(d) => &d.person,
            None => &self.subscriber.person,
        }
    }

    /// The coverage that applies to that person: a dependent's own, else the subscriber's.
    pub fn coverage(&self) -> &[Coverage] {
        match self.dependent.and_then(|d| self.subscriber.dependents.get(d)).and_then(|d| d.coverage.as_ref()) {
            Some(own) => own.as_slice(),
            None => self.subscriber.coverage.as_slice(),
        }
    }

    /// The coverage active on `on` (CCYYMMDD), if any. Every channel (PA intake, CRD, DTR) picks the plan here.
    pub fn active_coverage(&self, on: &str) -> Option<&Coverage> {
        self.coverage().iter().find(|c| c.covers(on, on))
    }
}

/// The current data set's header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurrentDataSet {
    /// Version.
    pub version: u64,
    /// The payer.
    pub payer: Payer,
    /// The registered trading partners' ids: a partner record outside this list (one a later load removed) is no
    /// partner. Empty in headers written before the list existed (then every stored record counts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partners: Vec<PartnerId>,
    /// The CDS issuers registered with them (removed ones are deleted on load).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cds_issuers: Vec<String>,
}

/// Plans by (data set version, plan id).
type PlanCache = HashMap<(u64, String), Arc<Plan>>;

/// Member records of one data set version, by member key.
#[derive(Default)]
struct MemberCache {
    version: u64,
    records: HashMap<String, Arc<MemberRecord>>,
}

/// Most member records one instance keeps decoded: a few tens of MiB for a payer's busiest members; past it the
/// cache starts over (a member record is one store read and decode away).
const MEMBER_CACHE_MAX: usize = 50_000;

/// Partner records (or their absence) by id, with when they were read.
type PartnerCache = HashMap<PartnerId, (Instant, Option<TradingPartner>)>;

/// Reads and writes payer data in the state store. Cheap to clone; caches the current version briefly.
#[derive(Clone)]
pub struct PayerDataRepo {
    store: Arc<dyn StateStore>,
    cache: Arc<RwLock<Option<(Instant, CurrentDataSet)>>>,
    /// Plans never change within a data set version, so they are read once per instance.
    plans: Arc<RwLock<PlanCache>>,
    /// Members never change within a data set version either (a load writes a new version): every eligibility
    /// set, PAS submission and CRD call reads one, and decoding it is most of that read's cost.
    members: Arc<std::sync::RwLock<MemberCache>>,
    /// Partner records, read on every authenticated request: kept for the same ttl as the current version.
    partners: Arc<RwLock<PartnerCache>>,
    /// The admin a new deployment starts with, valid only until the first payer data is loaded.
    bootstrap_admin: Arc<std::sync::OnceLock<TradingPartner>>,
    ttl: Duration,
}

impl PayerDataRepo {
    /// A repository over `store`. The current version is cached for `ttl` (a reload is visible after it).
    pub fn new(store: Arc<dyn StateStore>, ttl: Duration) -> Self {
        PayerDataRepo {
            store,
            cache: Arc::new(RwLock::new(None)),
            plans: Arc::new(RwLock::new(HashMap::new())),
            members: Arc::new(std::sync::RwLock::new(MemberCache::default())),
            partners: Arc::new(RwLock::new(HashMap::new())),
            bootstrap_admin: Arc::new(std::sync::OnceLock::new()),
            ttl,
        }
    }

    /// Registers the bootstrap admin of a new deployment (every clone of the repository sees it): while no payer
    /// data has been loaded, [`PayerDataRepo::partner`] answers `admin` with this partner, so that the admin can get
    /// a token with its key and load the first payer data. Once any payer data is current, only the loaded
    /// partners count. Set once; later calls are ignored.
    pub fn set_bootstrap_admin(&self, jwks: crate::jose::Jwks) -> Result<(), PortError> {
        let partner = TradingPartner {
            id: PartnerId::parse("admin").map_err(|e| PortError::Invalid(e.to_string()))?,
            role: crate::domain::PartnerRole::Admin,
            name: "bootstrap admin".into(),
            npis: vec![],
            provider_ids: vec![],
            x12_sender_ids: vec![],
            scopes: vec!["admin".into()],
            jwks: None,
            client_jwks: Some(jwks),
            cds_issuers: vec![],
            payer_ids: vec![],
        };
        let _ = self.bootstrap_admin.set(partner);
        Ok(())
    }

    /// Writes a validated data set under a new version, then makes it current. Partners are written just before the
    /// switch (in its transaction when there are fewer than 90). A failure before the switch leaves the previous data
    /// set current, and a retry loads under a fresh version.
    pub async fn load(&self, data: &PayerData) -> Result<u64, PayerDataError> {
        let current = self.store.get(&current_key()).await?;
        let current_version = current.as_ref().and_then(|i| i.body["version"].as_u64()).unwrap_or(0);
        // Versions come from a counter, never reused: a load that failed half-way leaves items under its version,
        // and a retry must not collide with them.
        let mut version = self.store.increment(&Key::new("PAYERDATA", "VERSIONS")).await?;
        while version <= current_version {
            version = self.store.increment(&Key::new("PAYERDATA", "VERSIONS")).await?;
        }
        let mut items = Vec::new();
        for plan in &data.plans {
            items.push(Item::new(plan_key(version, &plan.id), to_json(plan)?));
        }
        for (i, m) in data.members.iter().enumerate() {
            let record = MemberRecord { subscriber: m.clone(), dependent: None };
            let key = m.member_id().to_ascii_uppercase();
            items.push(Item::new(member_key(version, &key), to_json(&record)?).with_gsi1(Key::new(
                name_index(version, &m.person.last_name, &m.person.date_of_birth),
                format!("{i:08}"),
            )));
            for (j, d) in m.dependents.iter().enumerate() {
                if let Some(own) = &d.person.member_id {
                    let record = MemberRecord { subscriber: m.clone(), dependent: Some(j) };
                    items.push(Item::new(member_key(version, &own.to_ascii_uppercase()), to_json(&record)?));
                }
            }
        }
        for form in &data.questionnaires {
            items.push(Item::new(canonical_key(version, form.url()), to_json(form)?));
        }
        for r in data.value_sets.iter().chain(&data.libraries) {
            let form = Form { resource: r.clone(), prefill: Vec::new() };
            items.push(Item::new(canonical_key(version, r["url"].as_str().unwrap_or_default()), to_json(&form)?));
        }
        // Data items go in chunks (DynamoDB transactions hold at most 100 writes); none is visible until the switch.
        for chunk in items.chunks(25) {
            self.store.transact(chunk.iter().cloned().map(WriteOp::PutNew).collect()).await?;
        }
        let mut final_ops = Vec::new();
        for p in &data.trading_partners {
            let mut records = vec![(partner_key(&p.id), to_json(p)?)];
            for iss in &p.cds_issuers {
                records.push((cds_issuer_key(iss), serde_json::json!({ "partner": p.id })));
            }
            for (key, body) in records {
                match self.store.get(&key).await? {
                    Some(existing) => final_ops
                        .push(WriteOp::Update { item: Item::new(key, body), expected_version: existing.version }),
                    None => final_ops.push(WriteOp::PutNew(Item::new(key, body))),
                }
            }
        }
        // Partners and CDS issuers the previous data set registered and this one does not are removed, so that an
        // offboarded partner's keys and scopes stop counting (its records are also ignored once the switch is made).
        let previous: Option<CurrentDataSet> =
            current.as_ref().and_then(|i| serde_json::from_value(i.body.clone()).ok());
        if let Some(prev) = &previous {
            for gone in prev.partners.iter().filter(|id| !data.trading_partners.iter().any(|p| &p.id == *id)) {
                if let Some(item) = self.store.get(&partner_key(gone)).await? {
                    final_ops.push(WriteOp::Delete { key: item.key, expected_version: item.version });
                }
            }
            let kept: Vec<&String> = data.trading_partners.iter().flat_map(|p| p.cds_issuers.iter()).collect();
            for gone in prev.cds_issuers.iter().filter(|iss| !kept.contains(iss)) {
                if let Some(item) = self.store.get(&cds_issuer_key(gone)).await? {
                    final_ops.push(WriteOp::Delete { key: item.key, expected_version: item.version });
                }
            }
        }
        // The switch goes last, so it commits in the last chunk, after every partner.
        let header = CurrentDataSet {
            version,
            payer: data.payer.clone(),
            partners: data.trading_partners.iter().map(|p| p.id.clone()).collect(),
            cds_issuers: data.trading_partners.iter().flat_map(|p| p.cds_issuers.iter().cloned()).collect(),
        };
        match current {
            Some(item) => final_ops.push(WriteOp::Update {
                item: Item::new(current_key(), to_json(&header)?),
                expected_version: item.version,
            }),
            None => final_ops.push(WriteOp::PutNew(Item::new(current_key(), to_json(&header)?))),
        }
        for chunk in final_ops.chunks(90) {
            self.store.transact(chunk.to_vec()).await?;
        }
        *self.cache.write().await = None;
        self.partners.write().await.clear();
        Ok(version)
    }

    /// The current data set (cached for the repository's ttl).
    pub async fn current(&self) -> Result<Option<CurrentDataSet>, PortError> {
        if let Some((at, ds)) = self.cache.read().await.as_ref() {
            if at.elapsed() < self.ttl {
                return Ok(Some(ds.clone()));
            }
        }
        let Some(item) = self.store.get(&current_key()).await? else { return Ok(None) };
        let ds: CurrentDataSet = from_json(item.body)?;
        *self.cache.write().await = Some((Instant::now(), ds.clone()));
        Ok(Some(ds))
    }

    /// A member by id (subscriber's or a dependent's own id), case-insensitive.
    pub async fn member(&self, version: u64, id: &MemberId) -> Result<Option<MemberRecord>, PortError> {
        let key = id.key();
        let cached = self
            .members
            .read()
            .ok()
            .and_then(|cache| (cache.version == version).then(|| cache.records.get(&key).cloned()).flatten());
        if let Some(record) = cached {
            return Ok(Some(MemberRecord::clone(&record)));
        }
        let Some(item) = self.store.get(&member_key(version, &key)).await? else { return Ok(None) };
        let record: MemberRecord = from_json(item.body)?;
        if let Ok(mut cache) = self.members.write() {
            // Only the newest version's members are kept; a full cache starts over.
            if version > cache.version || cache.records.len() >= MEMBER_CACHE_MAX {
                cache.records.clear();
                cache.version = cache.version.max(version);
            }
            if version == cache.version {
                cache.records.insert(key, Arc::new(record.clone()));
            }
        }
        Ok(Some(record))
    }

    /// Subscribers with this last name and date of birth.
    pub async fn subscribers_by_name(&self, version: u64, last: &str, dob: &str) -> Result<Vec<Member>, PortError> {
        let q = crate::ports::Query::prefix(name_index(version, last, dob), "", 50);
        let page = self.store.query_gsi1(&q).await?;
        page.items.into_iter().map(|i| from_json::<MemberRecord>(i.body).map(|r| r.subscriber)).collect()
    }

    /// A plan (cached per data set version).
    pub async fn plan(&self, version: u64, plan_id: &str) -> Result<Option<Arc<Plan>>, PortError> {
        let key = (version, plan_id.to_owned());
        if let Some(plan) = self.plans.read().await.get(&key) {
            return Ok(Some(plan.clone()));
        }
        let Some(item) = self.store.get(&plan_key(version, plan_id)).await? else { return Ok(None) };
        let plan: Arc<Plan> = Arc::new(from_json(item.body)?);
        let mut plans = self.plans.write().await;
        // Only the current version's plans are worth keeping.
        plans.retain(|(v, _), _| *v >= version);
        plans.insert(key, plan.clone());
        Ok(Some(plan))
    }

    /// A Questionnaire (with its pre-fill rules), ValueSet or Library of data set `version` by canonical
    /// (`url` or `url|version`; a version that is not the stored one finds nothing).
    pub async fn canonical(&self, version: u64, canonical: &str) -> Result<Option<Form>, PortError> {
        let Some(item) = self.store.get(&canonical_key(version, canonical_url(canonical))).await? else {
            return Ok(None);
        };
        let form: Form = from_json(item.body)?;
        let wanted = canonical_version(canonical);
        Ok(form.clone().resource["version"]
            .as_str()
            .map_or(wanted.is_none(), |v| wanted.is_none_or(|w| w == v))
            .then_some(form))
    }

    /// The partner a CDS Hooks issuer (`iss`) is registered to. The index may outlive a registration (a reload can
    /// drop an issuer), so the partner's current record must still name the issuer.
    pub async fn partner_by_cds_issuer(&self, issuer: &str) -> Result<Option<TradingPartner>, PortError> {
        let Some(item) = self.store.get(&cds_issuer_key(issuer)).await? else { return Ok(None) };
        let Some(id) = item.body["partner"].as_str().and_then(|s| PartnerId::parse(s).ok()) else { return Ok(None) };
        Ok(self.partner(&id).await?.filter(|p| p.cds_issuers.iter().any(|i| i == issuer)))
    }

    /// A trading partner (cached for the repository's ttl, unknown ids too).
    pub async fn partner(&self, id: &PartnerId) -> Result<Option<TradingPartner>, PortError> {
        if let Some((at, p)) = self.partners.read().await.get(id) {
            if at.elapsed() < self.ttl {
                return Ok(p.clone());
            }
        }
        let partner: Option<TradingPartner> = match self.store.get(&partner_key(id)).await? {
            // A record the current data set no longer lists is a removed partner's (a record left from before the
            // list existed). Loads delete removed partners' records themselves, so when the header cannot be read
            // the record stands: authentication keeps working while the payer data is unavailable (eligibility then
            // answers AAA 42, retry later).
            Some(_) if matches!(self.current().await, Ok(Some(c)) if !c.partners.is_empty() && !c.partners.contains(id)) => {
                None
            }
            Some(item) => Some(from_json(item.body)?),
            None => match self.bootstrap_admin.get() {
                // Not cached: it stops counting the moment payer data is loaded.
                Some(admin) if &admin.id == id && self.current().await?.is_none() => return Ok(Some(admin.clone())),
                _ => None,
            },
        };
        let mut partners = self.partners.write().await;
        // Bounded: tokens name registered partners, but a flood of unknown ids must not grow the map forever.
        if partners.len() >= 1024 {
            partners.clear();
        }
        partners.insert(id.clone(), (Instant::now(), partner.clone()));
        Ok(partner)
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<serde_json::Value, PortError> {
    serde_json::to_value(v).map_err(|e| PortError::Invalid(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, PortError> {
    serde_json::from_value(v).map_err(|e| PortError::undecodable("payer data record", &e))
}

/// Parses a money string (`"1500"`, `"12.5"`) into cents.
pub fn cents(s: &str) -> Option<i64> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() || frac.len() > 2 || !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let w: i64 = whole.parse().ok()?;
    let f: i64 = format!("{frac:0<2}").parse().ok()?;
    w.checked_mul(100)?.checked_add(f)
}

/// Formats cents as an X12 decimal (`1500`, `12.5`, `0`): no trailing zeros.
pub fn format_cents(c: i64) -> String {
    let whole = c / 100;
    let frac = c % 100;
    match frac {
        0 => whole.to_string(),
        f if f % 10 == 0 => format!("{whole}.{}", f / 10),
        f => format!("{whole}.{f:02}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn members_are_read_per_data_set_version_cached_or_not() {
        let demo = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/local-runner/demo/payer-data.json"))
            .expect("demo data");
        let mut data = PayerData::parse(&demo).expect("valid demo data");
        let repo = PayerDataRepo::new(Arc::new(crate::adapters::memory::MemoryStateStore::new()), Duration::ZERO);
        let first = repo.load(&data).await.expect("load");
        let id = MemberId::parse(data.members[0].member_id()).expect("member id");
        let before = data.members[0].person.last_name.clone();
        let read = |v| {
            let (repo, id) = (repo.clone(), id.clone());
            async move { repo.member(v, &id).await.expect("store").expect("member").subscriber.person.last_name }
        };
        assert_eq!(read(first).await, before);
        assert_eq!(read(first).await, before, "from the cache");
        data.members[0].person.last_name = "RENAMED".into();
        let second = repo.load(&data).await.expect("reload");
        assert_eq!(read(second).await, "RENAMED", "the new version's record, not the cached one");
        assert_eq!(read(first).await, before, "the old version still reads its own");
        assert_eq!(read(second).await, "RENAMED");
    }

    #[test]
    fn money() {
        assert_eq!(cents("1500"), Some(150_000));
        assert_eq!(cents("12.5"), Some(1250));
        assert_eq!(cents("0.05"), Some(5));
        assert_eq!(cents("1.234"), None);
        assert_eq!(format_cents(150_000), "1500");
        assert_eq!(format_cents(1250), "12.5");
        assert_eq!(format_cents(5), "0.05");
    }

    #[test]
    fn coverage_dates() {
        let c = Coverage { plan_id: "P".into(), begin: "20260101".into(), end: Some("20261231".into()) };
        assert!(c.covers("20260412", "20260412"));
        assert!(!c.covers("20251231", "20260101"));
        assert!(!c.covers("20261201", "20270101"));
    }
}
