//! The 278 response: the request's parties echoed (2010A/B/C), then the patient event (2000E) and its services
//! (2000F) each with HCR (HCR01 action, HCR02 authorization number, HCR03 reason), REF*NT (our administrative
//! reference, which later 278s and PAS updates can quote), DTP*AAH for the certified period and PWK when
//! documentation is requested. A request that cannot be decided gets AAA at the loop at fault and stops there.

use exchange_core::domain::prior_auth::{CaseItem, Decision, PaCase};
use exchange_core::x12::ack::{ccyymmdd, hhmm, InterchangeWriter};
use time::OffsetDateTime;

use super::request::Request278;
use crate::intake::{Party, Rejection};

/// The 005010X217 version string.
pub const X217: &str = "005010X217";

fn hcr(w: &mut exchange_core::x12::X12Writer, decision: Option<&Decision>, authorization: Option<&str>) {
    let decision = decision.cloned().unwrap_or(Decision::Pended { documentation: vec![] });
    let code = decision.action_code();
    let auth = match &decision {
        Decision::Certified | Decision::Modified { .. } => authorization.unwrap_or(""),
        _ => "",
    };
    let reason = match &decision {
        Decision::NotCertified { reasons } | Decision::Modified { reasons, .. } => {
            reasons.first().map(String::as_str).unwrap_or("")
        }
        _ => "",
    };
    w.segment("HCR", &[code, auth, reason]);
}

fn certified_dtp(w: &mut exchange_core::x12::X12Writer, item: &CaseItem) {
    if let Some((from, to)) = &item.certified_period {
        if from == to {
            w.segment("DTP", &["AAH", "D8", from]);
        } else {
            w.segment("DTP", &["AAH", "RD8", &format!("{from}-{to}")]);
        }
    }
}

fn pwk(w: &mut exchange_core::x12::X12Writer, item: &CaseItem) {
    if let Some(Decision::Pended { documentation }) = &item.decision {
        if !documentation.is_empty() {
            // OZ: support data for the request, EL: send electronically (a 275 or a CDex attachment).
            w.segment("PWK", &["OZ", "EL"]);
        }
    }
}

/// Writes 2000A–2010C; returns whether a rejection stopped the response there (its level then has no child: HL04
/// is 0).
fn parties(w: &mut exchange_core::x12::X12Writer, req: &Request278, rejection: Option<&Rejection>) -> bool {
    let stops_at = |party: Party| rejection.is_some_and(|r| r.party == party);
    let child = |party: Party| if stops_at(party) { "0" } else { "1" };
    let aaa = |w: &mut exchange_core::x12::X12Writer, party: Party| match rejection.filter(|r| r.party == party) {
        Some(r) => {
            w.segment("AAA", &[if r.valid_request() { "Y" } else { "N" }, "", r.code, r.follow_up]);
            true
        }
        None => false,
    };
    let (umo_type, umo_name, umo_qual, umo_id) = &req.umo;
    w.segment("HL", &["1", "", "20", child(Party::Payer)]);
    let name = w.clean(umo_name);
    w.segment("NM1", &["X3", umo_type, &name, "", "", "", "", umo_qual, umo_id]);
    if aaa(w, Party::Payer) {
        return true;
    }
    w.segment("HL", &["2", "1", "21", child(Party::Requester)]);
    let r = &req.requester;
    let (last, first) = (w.clean(&r.name), w.clean(r.first_name.as_deref().unwrap_or("")));
    w.segment("NM1", &["1P", &req.requester_type, &last, &first, "", "", "", &r.id_qualifier, &r.id]);
    if aaa(w, Party::Requester) {
        return true;
    }
    w.segment("HL", &["3", "2", "22", child(Party::Subscriber)]);
    let s = &req.subscriber;
    let (last, first) = (w.clean(&s.last_name), w.clean(s.first_name.as_deref().unwrap_or("")));
    w.segment("NM1", &["IL", "1", &last, &first, "", "", "", "MI", &s.member_id]);
    if aaa(w, Party::Subscriber) {
        return true;
    }
    if let Some(r) = rejection.filter(|r| r.party == Party::Event) {
        // The event itself is refused (e.g. the earlier request it quotes is unknown): 2000E with its AAA.
        w.segment("HL", &["4", "3", "EV", "0"]);
        if let Some(t) = req.trace.as_ref().filter(|t| is_company_id(&t.originator)) {
            w.segment("TRN", &["2", &t.value, &t.originator]);
        }
        w.segment("AAA", &["N", "", r.code, r.follow_up]);
        return true;
    }
    false
}

/// Writes one 278 response set for `req` answered by `case` (or stopped by `rejection`).
pub fn write_278(
    iw: &mut InterchangeWriter,
    st02: &str,
    req: &Request278,
    case: Option<&PaCase>,
    rejection: Option<&Rejection>,
    now: OffsetDateTime,
) {
    iw.begin_set("278", st02, X217);
    let w = iw.writer();
    w.segment("BHT", &["0007", "11", &w.clean(&req.reference), &ccyymmdd(now), &hhmm(now)]);
    let stopped = parties(w, req, rejection);
    if let (false, Some(case)) = (stopped, case) {
        // Service lines (2000F) when the case has several items or any coded service; otherwise the event is the item.
        let services = case.items.len() > 1 || case.items.iter().any(|i| i.code_system != "X12-1365");
        w.segment("HL", &["4", "3", "EV", if services { "1" } else { "0" }]);
        // The request's own trace, referenced: a status inquiry or revision is matched by its trace, not by the
        // original request's (which is the case's). TRN03 is a 10-character company id; a PAS identifier system
        // (a URL) has none to echo.
        if let Some(t) = req.trace.as_ref().filter(|t| is_company_id(&t.originator)) {
            w.segment("TRN", &["2", &t.value, &t.originator]);
        }
        let originator = case.trace.as_ref().map(|t| t.originator.as_str()).filter(|o| is_company_id(o));
        let um = &req.um;
        w.segment("UM", &[um[0].as_str(), um[1].as_str(), um[2].as_str(), um[3].as_str()]);
        // The event-level decision: the items' decision when they agree, otherwise pended (A4) with per-service
        // decisions below; without service lines the single item is the event.
        let event_decision = if services { summary(case) } else { case.items.first().and_then(|i| i.decision.clone()) };
        hcr(w, event_decision.as_ref(), case.authorization_number.as_deref());
        w.segment("REF", &["NT", &case.id]);
        if !services {
            if let Some(item) = case.items.first() {
                certified_dtp(w, item);
                pwk(w, item);
            }
        }
        if services {
            for (i, item) in case.items.iter().enumerate() {
                let hl = (5 + i).to_string();
                w.segment("HL", &[hl.as_str(), "4", "SS", "0"]);
                if let (Some(t), Some(o)) = (&item.trace, originator) {
                    w.segment("TRN", &["2", t, o]);
                }
                w.segment("UM", &[um[0].as_str(), um[1].as_str()]);
                hcr(w, item.decision.as_ref(), case.authorization_number.as_deref());
                certified_dtp(w, item);
                service_line(w, item);
                pwk(w, item);
            }
        }
    }
    iw.end_set(st02);
}

fn is_company_id(s: &str) -> bool {
    s.len() == 10 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// SV1 for HCPCS/CPT services. (Institutional revenue codes and dental services are not echoed: SV1 cannot carry
/// them, and the services keep their HL, TRN, HCR and dates.)
fn service_line(w: &mut exchange_core::x12::X12Writer, item: &CaseItem) {
    if !matches!(item.code_system.as_str(), "HCPCS" | "CPT") {
        return;
    }
    let code = w.composite(&["HC", item.code.as_str()]);
    let quantity = item.quantity.clone().unwrap_or_default();
    if quantity.is_empty() {
        w.segment("SV1", &[code.as_str()]);
    } else {
        w.segment("SV1", &[code.as_str(), "", "UN", quantity.as_str()]);
    }
}

/// One decision for the whole event: pended (A4) while any service waits; the services' common action when they
/// agree; otherwise modified (A6: certified in part), with the details per service.
fn summary(case: &PaCase) -> Option<Decision> {
    let first = case.items.first()?.decision.clone()?;
    if case.items.iter().any(|i| i.decision.as_ref().is_none_or(Decision::is_pending)) {
        Some(Decision::Pended { documentation: vec![] })
    } else if case.items.iter().all(|i| i.decision.as_ref().map(Decision::action_code) == Some(first.action_code())) {
        Some(first)
    } else {
        Some(Decision::Modified { quantity: None, reasons: vec![] })
    }
}
