//! Writes a 271 transaction set (005010X279A1) for one inquiry and its answer.

use exchange_core::x12::ack::{ccyymmdd, hhmm, InterchangeWriter};
use exchange_core::x12::guide::x279a1::KIND_271;

use crate::inquiry::{Inquiry, PersonQuery};
use crate::matching::{Answer, BenefitLine, PersonAnswer, Rejection};

/// The company id this exchange puts in TRN03 of its own trace (a '9' followed by nine characters, as the guide's
/// TRN03 asks for a 10-character originator id).
pub const EXCHANGE_TRACE_ORIGINATOR: &str = "9EXCHANGE0";

/// Writes one 271 set into `iw` with control number `st02`.
pub fn write_271(iw: &mut InterchangeWriter, st02: &str, inquiry: &Inquiry, answer: &Answer, trace_id: &str) {
    let now = iw.envelope().now;
    iw.begin_set("271", st02, KIND_271.version);
    let w = iw.writer();
    w.segment("BHT", &["0022", "11", &inquiry.reference, &ccyymmdd(now), &hhmm(now)]);

    // 2000A / 2100A: the information source (the payer).
    w.segment("HL", &["1", "", "20", "1"]);
    let payer_name = w.clean(&answer.payer.0);
    let payer_id = w.clean(&answer.payer.1);
    w.segment("NM1", &["PR", "2", &payer_name, "", "", "", "", "PI", &payer_id]);
    if let Some(r) = answer.source_rejection {
        aaa(w, r);
        return iw.end_set(st02);
    }

    // 2000B / 2100B: the information receiver, echoed.
    w.segment("HL", &["2", "1", "21", "1"]);
    let r = &inquiry.receiver;
    let (last, first, id) = (w.clean(&r.last_or_org), w.clean(&r.first), w.clean(&r.id));
    w.segment("NM1", &[&r.entity, &r.entity_type, &last, &first, "", "", "", &r.id_qualifier, &id]);
    if let Some(rej) = answer.receiver_rejection {
        aaa(w, rej);
        return iw.end_set(st02);
    }

    // 2000C / 2100C: the subscriber.
    let Some(sub) = &answer.subscriber else { return iw.end_set(st02) };
    let has_dependent = answer.dependent.is_some();
    w.segment("HL", &["3", "2", "22", if has_dependent { "1" } else { "0" }]);
    traces(w, &inquiry.subscriber, trace_id);
    person(w, "IL", &inquiry.subscriber, sub);
    if sub.rejection.is_none() && !has_dependent {
        benefits(w, &sub.benefits);
    }

    // 2000D / 2100D: the dependent.
    if let (Some(dep), Some(dq)) = (&answer.dependent, &inquiry.dependent) {
        w.segment("HL", &["4", "3", "23", "0"]);
        traces(w, dq, trace_id);
        person(w, "03", dq, dep);
        if dep.rejection.is_none() {
            benefits(w, &dep.benefits);
        }
    }
    iw.end_set(st02);
}

fn aaa(w: &mut exchange_core::x12::X12Writer, r: Rejection) {
    w.segment("AAA", &[if r.valid_request { "Y" } else { "N" }, "", r.reason, r.follow_up]);
}

/// TRN: each of the inquiry's traces returned with TRN01=2, then the exchange's own trace (TRN01=1).
fn traces(w: &mut exchange_core::x12::X12Writer, q: &PersonQuery, trace_id: &str) {
    for t in q.traces.iter().take(2) {
        let (reference, originator) = (w.clean(&t.reference), w.clean(&t.originator));
        let supplemental = t.supplemental.as_deref().map(|s| w.clean(s)).unwrap_or_default();
        w.segment("TRN", &["2", &reference, &originator, &supplemental]);
    }
    if !q.traces.is_empty() {
        w.segment("TRN", &["1", trace_id, EXCHANGE_TRACE_ORIGINATOR]);
    }
}

fn person(w: &mut exchange_core::x12::X12Writer, entity: &str, q: &PersonQuery, a: &PersonAnswer) {
    // Found: the payer's record of the person. Not found: the request echoed, as the guide requires.
    let (last, first, middle, id, dob, gender) = match &a.person {
        Some(p) => (
            p.last_name.clone(),
            p.first_name.clone(),
            p.middle_name.clone().unwrap_or_default(),
            a.member_id.clone().unwrap_or_default(),
            Some(p.date_of_birth.clone()),
            Some(p.gender.clone()),
        ),
        None => (
            q.last.clone().unwrap_or_default(),
            q.first.clone().unwrap_or_default(),
            q.middle.clone().unwrap_or_default(),
            q.member_id.clone().unwrap_or_default(),
            q.date_of_birth.clone().filter(|d| exchange_core::x12::guide::is_date(d.as_bytes())),
            q.gender.clone(),
        ),
    };
    let (last, first, middle) = (w.clean(&last), w.clean(&first), w.clean(&middle));
    let id = if entity == "IL" { w.clean(&id) } else { String::new() };
    let qualifier = if id.is_empty() { "" } else { "MI" };
    w.segment("NM1", &[entity, "1", &last, &first, &middle, "", "", qualifier, &id]);
    if let Some((group, name)) = &a.group {
        let (g, n) = (w.clean(group), name.as_deref().map(|n| w.clean(n)).unwrap_or_default());
        w.segment("REF", &["6P", &g, &n]);
    }
    if let Some(addr) = a.person.as_ref().and_then(|p| p.address.as_ref()) {
        let l1 = w.clean(&addr.line1);
        let l2 = addr.line2.as_deref().map(|l| w.clean(l)).unwrap_or_default();
        w.segment("N3", &[&l1, &l2]);
        let city = w.clean(&addr.city);
        w.segment("N4", &[&city, addr.state.as_deref().unwrap_or(""), addr.postal_code.as_deref().unwrap_or("")]);
    }
    if let Some(r) = a.rejection {
        aaa(w, r);
    }
    if let Some(dob) = dob {
        let gender = gender.filter(|g| matches!(g.as_str(), "F" | "M" | "U")).unwrap_or_default();
        w.segment("DMG", &["D8", &dob, &gender]);
    }
    if entity == "03" {
        if let Some(rel) = &a.relationship {
            w.segment("INS", &["N", rel]);
        }
    }
    if let Some((begin, end)) = &a.plan_dates {
        w.segment("DTP", &["346", "D8", begin]);
        if let Some(end) = end {
            w.segment("DTP", &["347", "D8", end]);
        }
    }
}

fn benefits(w: &mut exchange_core::x12::X12Writer, lines: &[BenefitLine]) {
    for b in lines {
        let types = w.repeat(&b.service_types);
        let desc = b.plan_description.as_deref().map(|d| w.clean(d)).unwrap_or_default();
        let (qq, qv) = b.quantity.clone().unwrap_or_default();
        w.segment(
            "EB",
            &[
                b.code,
                b.coverage_level.as_deref().unwrap_or(""),
                &types,
                b.insurance_type.as_deref().unwrap_or(""),
                &desc,
                b.time_period.unwrap_or(""),
                b.amount.as_deref().unwrap_or(""),
                b.percent.as_deref().unwrap_or(""),
                &qq,
                &qv,
                b.authorization_required.unwrap_or(""),
                b.in_network.as_deref().unwrap_or(""),
            ],
        );
        if let Some((begin, end)) = &b.plan_dates {
            w.segment("DTP", &["346", "D8", begin]);
            if let Some(end) = end {
                w.segment("DTP", &["347", "D8", end]);
            }
        }
        if let Some(m) = &b.message {
            let m = w.clean(m);
            w.segment("MSG", &[m.as_str()]);
        }
        if let Some((npi, last, first)) = &b.provider {
            w.segment("LS", &["2120"]);
            let (l, f) = (w.clean(last), first.as_deref().map(|f| w.clean(f)).unwrap_or_default());
            w.segment("NM1", &["P3", "1", &l, &f, "", "", "", "XX", npi]);
            w.segment("LE", &["2120"]);
        }
    }
}
