//! Who the inquiry is about and what they are covered for: member matching per the 005010X279A1 search options,
//! and the benefit lines the answer carries. Every rejection is an AAA with the code the guide allows at its loop.

use exchange_core::domain::payer_data::{
    cents, format_cents, names_match, BenefitKind, Coverage, CurrentDataSet, Member, PayerDataRepo, Person, Plan,
    TimePeriod,
};
use std::sync::Arc;

use exchange_core::domain::{MemberId, Npi, TradingPartner};
use exchange_core::ports::PortError;
use exchange_core::x12::guide::is_date;
use time::{Date, Duration};

use crate::inquiry::{Inquiry, PersonQuery};

/// An AAA request validation: AAA01 valid-request indicator, AAA03 reason, AAA04 follow-up action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// AAA01: `Y` the request was valid but could not be answered, `N` it was not valid.
    pub valid_request: bool,
    /// AAA03 reject reason code.
    pub reason: &'static str,
    /// AAA04 follow-up action code.
    pub follow_up: &'static str,
}

impl Rejection {
    const fn invalid(reason: &'static str) -> Self {
        Rejection { valid_request: false, reason, follow_up: "C" }
    }

    /// AAA 42 unable to respond now (a dependency failed): the request was valid, resubmission allowed.
    pub const UNAVAILABLE: Rejection = Rejection { valid_request: true, reason: "42", follow_up: "R" };

    /// The reason's description (for JSON answers).
    pub fn description(&self) -> &'static str {
        match self.reason {
            "15" => "Required application data missing",
            "41" => "Authorization/Access Restrictions",
            "42" => "Unable to Respond at Current Time",
            "43" => "Invalid/Missing Provider Identification",
            "58" => "Invalid/Missing Date-of-Birth",
            "60" => "Date of Birth Follows Date(s) of Service",
            "62" => "Date of Service Not Within Allowable Inquiry Period",
            "63" => "Date of Service in Future",
            "67" => "Patient Not Found",
            "71" => "Patient Birth Date Does Not Match That for the Patient on the Database",
            "72" => "Invalid/Missing Subscriber/Insured ID",
            "73" => "Invalid/Missing Subscriber/Insured Name",
            "75" => "Subscriber/Insured Not Found",
            "76" => "Duplicate Subscriber/Insured ID Number",
            "77" => "Subscriber Found, Patient Not Found",
            "79" => "Invalid Participant Identification",
            _ => "Request rejected",
        }
    }
}

/// One benefit line of the answer (an EB segment and what hangs off it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BenefitLine {
    /// EB01.
    pub code: &'static str,
    /// EB02.
    pub coverage_level: Option<String>,
    /// EB03.
    pub service_types: Vec<String>,
    /// EB04.
    pub insurance_type: Option<String>,
    /// EB05.
    pub plan_description: Option<String>,
    /// EB06.
    pub time_period: Option<&'static str>,
    /// EB07.
    pub amount: Option<String>,
    /// EB08.
    pub percent: Option<String>,
    /// EB09/EB10.
    pub quantity: Option<(String, String)>,
    /// EB11.
    pub authorization_required: Option<&'static str>,
    /// EB12.
    pub in_network: Option<String>,
    /// DTP*346 / DTP*347 plan begin / end on this line, CCYYMMDD.
    pub plan_dates: Option<(String, Option<String>)>,
    /// MSG01.
    pub message: Option<String>,
    /// 2120 primary care provider (NPI, last, first).
    pub provider: Option<(String, String, Option<String>)>,
}

/// Who the answer is about at one level, and what they have.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PersonAnswer {
    /// The person as the payer has them (None when not found: the query is echoed instead).
    pub person: Option<Person>,
    /// The member id to return in NM109.
    pub member_id: Option<String>,
    /// INS02 relationship (dependents).
    pub relationship: Option<String>,
    /// Group number and name (REF*6P).
    pub group: Option<(String, Option<String>)>,
    /// AAA rejections at the name loop.
    pub rejection: Option<Rejection>,
    /// Plan dates (DTP*346 begin, DTP*347 end) at the name loop.
    pub plan_dates: Option<(String, Option<String>)>,
    /// Benefit lines (2110).
    pub benefits: Vec<BenefitLine>,
}

/// The whole answer to one inquiry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Answer {
    /// Payer name and id from the data set (the inquiry's, when the data set is unavailable).
    pub payer: (String, String),
    /// AAA at 2100A.
    pub source_rejection: Option<Rejection>,
    /// AAA at 2100B.
    pub receiver_rejection: Option<Rejection>,
    /// 2000C answer (absent when the request stopped at 2100A/B).
    pub subscriber: Option<PersonAnswer>,
    /// 2000D answer.
    pub dependent: Option<PersonAnswer>,
}

impl Answer {
    /// The member ids of the people the answer is about (found on file), for the audit record.
    pub fn member_ids(&self) -> impl Iterator<Item = &str> {
        [&self.subscriber, &self.dependent]
            .into_iter()
            .flatten()
            .filter(|p| p.person.is_some())
            .filter_map(|p| p.member_id.as_deref())
    }

    /// The first rejection anywhere in the answer (for recording the outcome).
    pub fn first_rejection(&self) -> Option<Rejection> {
        self.source_rejection
            .or(self.receiver_rejection)
            .or(self.subscriber.as_ref().and_then(|s| s.rejection))
            .or(self.dependent.as_ref().and_then(|d| d.rejection))
    }
}

/// Parses CCYYMMDD.
fn date(s: &str) -> Option<Date> {
    if !is_date(s.as_bytes()) {
        return None;
    }
    let y: i32 = s[0..4].parse().ok()?;
    let m: u8 = s[4..6].parse().ok()?;
    let d: u8 = s[6..8].parse().ok()?;
    Date::from_calendar_date(y, time::Month::try_from(m).ok()?, d).ok()
}

fn ccyymmdd(d: Date) -> String {
    format!("{:04}{:02}{:02}", d.year(), u8::from(d.month()), d.day())
}

/// Answers an inquiry from the payer data. Store failures become AAA 42 (unable to respond now).
pub async fn answer(
    inquiry: &Inquiry,
    data: Option<&CurrentDataSet>,
    repo: &PayerDataRepo,
    caller: &TradingPartner,
    today: Date,
) -> Answer {
    let Some(data) = data else {
        return Answer {
            payer: (inquiry.payer_name.clone(), inquiry.payer_id.clone()),
            source_rejection: Some(Rejection::UNAVAILABLE),
            ..Answer::default()
        };
    };
    let mut ans = Answer { payer: (data.payer.name.clone(), data.payer.id.clone()), ..Answer::default() };
    if !data.payer.answers_to(&inquiry.payer_id) {
        ans.source_rejection = Some(Rejection::invalid("79"));
        return ans;
    }
    if let Some(r) = check_receiver(inquiry, caller) {
        ans.receiver_rejection = Some(r);
        return ans;
    }
    match answer_people(inquiry, data.version, repo, today).await {
        Ok((sub, dep)) => {
            ans.subscriber = Some(sub);
            ans.dependent = dep;
        }
        Err(_) => {
            ans.subscriber = Some(PersonAnswer { rejection: Some(Rejection::UNAVAILABLE), ..PersonAnswer::default() });
        }
    }
    ans
}

/// 2100B: the provider must be identified, and be one the calling partner may submit for.
fn check_receiver(inquiry: &Inquiry, caller: &TradingPartner) -> Option<Rejection> {
    let r = &inquiry.receiver;
    if r.id.is_empty() {
        return Some(Rejection::invalid("43"));
    }
    if r.id_qualifier == "XX" && Npi::parse(&r.id).is_err() {
        return Some(Rejection::invalid("43"));
    }
    if !caller.may_submit_for(&r.id) {
        return Some(Rejection { valid_request: false, reason: "41", follow_up: "N" });
    }
    None
}

/// The date (range) the inquiry is about: DTP*291 at the patient's level, else today. Rejections per the guide:
/// more than 24 months back, or beyond the end of the current month.
fn service_dates(q: &PersonQuery, today: Date) -> Result<(Date, Date), Rejection> {
    let Some((from, to)) = &q.date_of_service else { return Ok((today, today)) };
    let (Some(from), Some(to)) = (date(from), date(to)) else { return Err(Rejection::invalid("57")) };
    let earliest = today - Duration::days(730);
    let month_end = today.replace_day(today.month().length(today.year())).unwrap_or(today);
    if from < earliest {
        return Err(Rejection::invalid("62"));
    }
    if to > month_end {
        return Err(Rejection::invalid("63"));
    }
    Ok((from, to))
}

async fn answer_people(
    inquiry: &Inquiry,
    version: u64,
    repo: &PayerDataRepo,
    today: Date,
) -> Result<(PersonAnswer, Option<PersonAnswer>), PortError> {
    let q = &inquiry.subscriber;
    let reject =
        |r: &'static str| Ok((PersonAnswer { rejection: Some(Rejection::invalid(r)), ..Default::default() }, None));

    // Date of birth, when sent, must be a real date.
    if q.date_of_birth.as_deref().is_some_and(|d| date(d).is_none()) {
        return reject("58");
    }
    let found = match &q.member_id {
        Some(raw) => {
            let Ok(id) = MemberId::parse(raw) else { return reject("72") };
            match repo.member(version, &id).await? {
                Some(rec) => Some(rec),
                None if q.last.is_some() && q.first.is_some() && q.date_of_birth.is_some() => None,
                None => return reject("72"),
            }
        }
        None => None,
    };
    let (subscriber, dependent_index) = match found {
        Some(rec) => (rec.subscriber, rec.dependent),
        None => {
            // Name + date of birth search (no id, or an id that matched nobody).
            let (Some(last), Some(first)) = (&q.last, &q.first) else { return reject("73") };
            let Some(dob) = &q.date_of_birth else { return reject("58") };
            let candidates: Vec<Member> = repo
                .subscribers_by_name(version, last, dob)
                .await?
                .into_iter()
                .filter(|m| names_match(Some(first), &m.person.first_name))
                .collect();
            match candidates.len() {
                0 => return reject("75"),
                1 => (candidates.into_iter().next().ok_or_else(|| PortError::Invalid("empty".into()))?, None),
                _ => return reject("76"),
            }
        }
    };
    // The patient at 2000C: the subscriber, or a dependent found by their own unique id.
    let patient: &Person = match dependent_index.and_then(|j| subscriber.dependents.get(j)) {
        Some(d) => &d.person,
        None => &subscriber.person,
    };
    if q.member_id.is_some() {
        // When the subscriber is the patient, the id must come with a date of birth or a name (X279A1 search
        // options); when a 2000D follows, the id only locates the subscriber.
        if inquiry.dependent.is_none() && q.date_of_birth.is_none() && q.last.is_none() {
            return reject("15");
        }
        if q.date_of_birth.as_deref().is_some_and(|d| d != patient.date_of_birth) {
            return reject("71");
        }
        if !names_match(q.last.as_deref(), &patient.last_name) {
            return reject("73");
        }
    }
    let plans = load_plans(repo, version, &subscriber).await?;
    let own_coverage = dependent_index.and_then(|j| subscriber.dependents.get(j)).and_then(|d| d.coverage.clone());
    let coverage = own_coverage.as_deref().unwrap_or(&subscriber.coverage);

    let mut sub_answer = PersonAnswer {
        person: Some(patient.clone()),
        member_id: Some(patient.member_id.clone().unwrap_or_else(|| subscriber.member_id().to_owned())),
        ..PersonAnswer::default()
    };
    let Some(dq) = &inquiry.dependent else {
        // The subscriber (or a uniquely identified dependent) is the patient.
        match service_dates(q, today) {
            Err(r) => sub_answer.rejection = Some(r),
            Ok(dates) => {
                if date(&patient.date_of_birth).is_some_and(|b| b > dates.1) {
                    sub_answer.rejection = Some(Rejection::invalid("60"));
                } else {
                    fill_benefits(&mut sub_answer, coverage, &plans, &subscriber, q, dates);
                }
            }
        }
        return Ok((sub_answer, None));
    };

    // 2000D: find the dependent among the subscriber's.
    let mut dep_answer = PersonAnswer::default();
    if dq.date_of_birth.as_deref().is_some_and(|d| date(d).is_none()) {
        dep_answer.rejection = Some(Rejection::invalid("58"));
        return Ok((sub_answer, Some(dep_answer)));
    }
    let by_name: Vec<_> = subscriber
        .dependents
        .iter()
        .filter(|d| {
            names_match(dq.first.as_deref(), &d.person.first_name)
                && names_match(dq.last.as_deref(), &d.person.last_name)
        })
        .collect();
    let matched: Vec<_> =
        by_name.iter().filter(|d| dq.date_of_birth.as_deref().is_none_or(|b| b == d.person.date_of_birth)).collect();
    let dependent = match (by_name.len(), matched.len()) {
        (0, _) => {
            dep_answer.rejection = Some(Rejection::invalid("67"));
            return Ok((sub_answer, Some(dep_answer)));
        }
        (_, 0) => {
            dep_answer.rejection = Some(Rejection::invalid("71"));
            return Ok((sub_answer, Some(dep_answer)));
        }
        (_, 1) => matched[0],
        _ => {
            dep_answer.rejection = Some(Rejection::invalid("68"));
            return Ok((sub_answer, Some(dep_answer)));
        }
    };
    dep_answer.person = Some(dependent.person.clone());
    dep_answer.relationship = Some(dependent.relationship.clone());
    let dep_coverage = dependent.coverage.as_deref().unwrap_or(&subscriber.coverage);
    match service_dates(dq, today) {
        Err(r) => dep_answer.rejection = Some(r),
        Ok(dates) => fill_benefits(&mut dep_answer, dep_coverage, &plans, &subscriber, dq, dates),
    }
    // When the patient is a dependent, the subscriber level carries identification only.
    Ok((sub_answer, Some(dep_answer)))
}

async fn load_plans(repo: &PayerDataRepo, version: u64, m: &Member) -> Result<Vec<Arc<Plan>>, PortError> {
    let mut ids: Vec<&str> = m.coverage.iter().map(|c| c.plan_id.as_str()).collect();
    for d in &m.dependents {
        ids.extend(d.coverage.iter().flatten().map(|c| c.plan_id.as_str()));
    }
    ids.sort_unstable();
    ids.dedup();
    let mut plans = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(p) = repo.plan(version, id).await? {
            plans.push(p);
        }
    }
    Ok(plans)
}

/// Service types the guide requires in an answer to EQ*30 (X279A1 section 1.4.7), when the plan covers them.
const PLAN_SUMMARY_TYPES: &[&str] = &["1", "33", "35", "47", "86", "88", "98", "AL", "MH", "UC"];

fn fill_benefits(
    out: &mut PersonAnswer,
    coverage: &[Coverage],
    plans: &[Arc<Plan>],
    subscriber: &Member,
    q: &PersonQuery,
    (from, to): (Date, Date),
) {
    let (f, t) = (ccyymmdd(from), ccyymmdd(to));
    let active = coverage.iter().find(|c| c.covers(&f, &t));
    let Some(cov) = active.or_else(|| coverage.iter().max_by(|a, b| a.begin.cmp(&b.begin))) else {
        out.benefits.push(BenefitLine { code: "6", service_types: vec!["30".into()], ..Default::default() });
        return;
    };
    let Some(plan) = plans.iter().find(|p| p.id == cov.plan_id) else {
        out.rejection = Some(Rejection::UNAVAILABLE);
        return;
    };
    if let Some(g) = &plan.group_number {
        out.group = Some((g.clone(), plan.group_name.clone()));
    }
    out.plan_dates = Some((cov.begin.clone(), cov.end.clone()));
    if active.is_none() {
        // Terminated (or not yet started): inactive, with the plan dates, and nothing else.
        out.benefits.push(BenefitLine {
            code: "6",
            service_types: vec!["30".into()],
            insurance_type: Some(plan.insurance_type.clone()),
            plan_description: Some(plan.name.clone()),
            ..Default::default()
        });
        return;
    }
    let asked: Vec<String> = if q.service_types.is_empty() { vec!["30".to_owned()] } else { q.service_types.clone() };
    for code in &asked {
        let specific: Vec<_> = plan.benefits.iter().filter(|b| b.service_types.iter().any(|s| s == code)).collect();
        let summary = code == "30" || specific.is_empty();
        // A specific code the plan says nothing about is answered as a plan summary, as the guide directs.
        let head_types: Vec<String> = if summary {
            let mut v = vec!["30".to_owned()];
            v.extend(
                PLAN_SUMMARY_TYPES
                    .iter()
                    .filter(|t| {
                        plan.benefits
                            .iter()
                            .any(|b| b.kind != BenefitKind::NonCovered && b.service_types.iter().any(|s| s == *t))
                    })
                    .map(|t| (*t).to_owned()),
            );
            v
        } else {
            vec![code.clone()]
        };
        if !summary && specific.iter().all(|b| b.kind == BenefitKind::NonCovered) {
            for b in &specific {
                out.benefits.push(line_from(b, plan));
            }
            continue;
        }
        out.benefits.push(BenefitLine {
            code: "1",
            service_types: head_types,
            insurance_type: Some(plan.insurance_type.clone()),
            plan_description: Some(plan.name.clone()),
            ..Default::default()
        });
        let lines: Vec<_> = if summary { plan.benefits.iter().collect() } else { specific };
        for b in lines.into_iter().filter(|b| b.kind != BenefitKind::ActiveCoverage) {
            out.benefits.push(line_from(b, plan));
            if let Some(remaining) = remaining_line(b, plan, subscriber) {
                out.benefits.push(remaining);
            }
        }
    }
    if let Some(pcp) = &subscriber.primary_care_provider {
        out.benefits.push(BenefitLine {
            code: "L",
            provider: Some((pcp.npi.clone(), pcp.last_name.clone(), pcp.first_name.clone())),
            ..Default::default()
        });
    }
}

fn line_from(b: &exchange_core::domain::payer_data::Benefit, plan: &Plan) -> BenefitLine {
    BenefitLine {
        code: b.kind.eb01(),
        coverage_level: b.coverage_level.clone(),
        service_types: b.service_types.clone(),
        insurance_type: Some(plan.insurance_type.clone()),
        plan_description: None,
        time_period: b.time_period.map(TimePeriod::eb06),
        amount: b.amount.as_deref().and_then(cents).map(format_cents),
        percent: b.percent.clone(),
        quantity: b.quantity.as_ref().map(|q| (q.qualifier.clone(), q.value.clone())),
        authorization_required: b.authorization_required.map(|r| if r { "Y" } else { "N" }),
        in_network: b.in_network.clone(),
        plan_dates: None,
        message: b.message.clone(),
        provider: None,
    }
}

/// The "remaining" line (EB06=29) for a deductible or out-of-pocket maximum, from the member's accumulators.
fn remaining_line(b: &exchange_core::domain::payer_data::Benefit, plan: &Plan, m: &Member) -> Option<BenefitLine> {
    if !matches!(b.kind, BenefitKind::Deductible | BenefitKind::OutOfPocket) {
        return None;
    }
    let total = cents(b.amount.as_deref()?)?;
    let met = m
        .accumulators
        .iter()
        .find(|a| a.kind == b.kind && a.coverage_level == b.coverage_level && a.in_network == b.in_network)
        .and_then(|a| cents(&a.met))
        .unwrap_or(0);
    let mut line = line_from(b, plan);
    line.time_period = Some("29");
    line.amount = Some(format_cents((total - met).max(0)));
    line.message = None;
    Some(line)
}
