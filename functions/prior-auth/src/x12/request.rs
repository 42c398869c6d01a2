//! What a 278 request set asks, read from its located segments (the guide layer accepted the set first).

use exchange_core::domain::prior_auth::{CaseItem, Requester, Subscriber, Trace, Urgency};
use exchange_core::x12::guide::Located;
use exchange_core::x12::Segment;

use crate::intake::Request;

/// A 278 request set.
#[derive(Debug, Clone, Default)]
pub struct Request278 {
    /// BHT03: echoed in the response.
    pub reference: String,
    /// 2010A NM1 as sent: (NM102, NM103, NM108, NM109).
    pub umo: (String, String, String, String),
    /// 2010B.
    pub requester: Requester,
    /// 2010B NM102 (1 person, 2 organisation).
    pub requester_type: String,
    /// 2010C.
    pub subscriber: Subscriber,
    /// 2000E TRN*1 (TRN02, TRN03).
    pub trace: Option<Trace>,
    /// 2000E UM01..UM04 and UM06.
    pub um: [String; 5],
    /// 2000E REF*BB / REF*NT: the earlier request this one revises, cancels or asks about.
    pub references: Vec<String>,
    /// Diagnoses (HI).
    pub diagnoses: Vec<String>,
    /// Services: 2000F lines, or the 2000E event itself when there are none.
    pub items: Vec<CaseItem>,
}

impl Request278 {
    /// UM02 certification type.
    pub fn certification_type(&self) -> &str {
        &self.um[1]
    }

    /// The channel-neutral request.
    pub fn to_request(&self) -> Request {
        let urgency = if matches!(self.um[4].as_str(), "03" | "U") { Urgency::Expedited } else { Urgency::Standard };
        Request {
            payer_ids: vec![self.umo.3.clone()],
            payer_name: self.umo.1.clone(),
            subscriber: self.subscriber.clone(),
            requester: self.requester.clone(),
            trace: self.trace.clone(),
            request_category: self.um[0].clone(),
            certification_type: self.um[1].clone(),
            diagnoses: self.diagnoses.clone(),
            urgency,
            items: self.items.clone(),
            supplied_documentation: Vec::new(),
            fhir: None,
        }
    }
}

fn text(s: &Segment<'_>, n: usize) -> String {
    s.text(n).trim().to_owned()
}

fn component(s: &Segment<'_>, n: usize, c: usize) -> String {
    String::from_utf8_lossy(s.component(n, c)).trim().to_owned()
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn dates(s: &Segment<'_>) -> (Option<String>, Option<String>) {
    let v = text(s, 3);
    match v.split_once('-') {
        Some((a, b)) => (opt(a.to_owned()), opt(b.to_owned())),
        None => (opt(v), None),
    }
}

/// The policy code system of a 278 product/service qualifier (SV101-1 and friends).
fn code_system(qualifier: &str) -> String {
    match qualifier {
        // HCPCS includes CPT (HCPCS Level I).
        "HC" => "HCPCS".into(),
        "NU" => "NUBC".into(),
        "AD" => "ADA".into(),
        "IV" => "HIEC".into(),
        other => other.to_owned(),
    }
}

/// Reads a 278 request set.
pub fn from_278(located: &[Located<'_>]) -> Request278 {
    let mut r = Request278::default();
    let mut event_dates: (Option<String>, Option<String>) = (None, None);
    let mut current: Option<CaseItem> = None;
    let mut next_sequence = 1u32;
    let flush = |current: &mut Option<CaseItem>, items: &mut Vec<CaseItem>| {
        if let Some(item) = current.take() {
            items.push(item);
        }
    };
    for l in located {
        let s = &l.segment;
        match (l.loop_id, s.id_str()) {
            ("HEADER", "BHT") => r.reference = text(s, 3),
            ("2010A", "NM1") => r.umo = (text(s, 2), text(s, 3), text(s, 8), text(s, 9)),
            ("2010B", "NM1") => {
                r.requester_type = text(s, 2);
                r.requester = Requester {
                    id_qualifier: text(s, 8),
                    id: text(s, 9),
                    name: text(s, 3),
                    first_name: opt(text(s, 4)),
                };
            }
            ("2010C", "NM1") => {
                r.subscriber.member_id = text(s, 9);
                r.subscriber.last_name = text(s, 3);
                r.subscriber.first_name = opt(text(s, 4));
            }
            ("2010C", "DMG") => {
                r.subscriber.date_of_birth = opt(text(s, 2));
                r.subscriber.gender = opt(text(s, 3));
            }
            ("2000E", "TRN") if text(s, 1) == "1" => {
                r.trace = Some(Trace { value: text(s, 2), originator: text(s, 3) })
            }
            ("2000E", "UM") => r.um = [text(s, 1), text(s, 2), text(s, 3), text(s, 4), text(s, 6)],
            ("2000E", "REF") if matches!(s.text(1), "BB" | "NT") => r.references.push(text(s, 2)),
            ("2000E", "DTP") if matches!(s.text(1), "472" | "435" | "AAH") => event_dates = dates(s),
            ("2000E", "HI") => {
                for n in 1..=12 {
                    let code = component(s, n, 2);
                    if !code.is_empty() {
                        r.diagnoses.push(code);
                    }
                }
            }
            ("2000F", "HL") => {
                flush(&mut current, &mut r.items);
                current = Some(CaseItem {
                    sequence: next_sequence,
                    code_system: "X12-1365".into(),
                    code: String::new(),
                    quantity: None,
                    service_from: None,
                    service_to: None,
                    decision: None,
                    certified_period: None,
                    trace: None,
                    decided_at: None,
                    extended_review: false,
                });
                next_sequence += 1;
            }
            ("2000F", id) => {
                let Some(item) = current.as_mut() else { continue };
                match id {
                    "TRN" => item.trace = opt(text(s, 2)),
                    "UM" if item.code.is_empty() => item.code = text(s, 3),
                    "DTP" if s.text(1) == "472" => (item.service_from, item.service_to) = dates(s),
                    "SV1" => {
                        item.code_system = code_system(&component(s, 1, 1));
                        item.code = component(s, 1, 2);
                        item.quantity = opt(text(s, 4));
                    }
                    "SV3" => {
                        item.code_system = code_system(&component(s, 1, 1));
                        item.code = component(s, 1, 2);
                        item.quantity = opt(text(s, 6));
                    }
                    "SV2" => {
                        item.code_system = code_system(&component(s, 2, 1));
                        item.code = component(s, 2, 2);
                        item.quantity = opt(text(s, 5));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    flush(&mut current, &mut r.items);
    if r.items.is_empty() {
        // No service lines: the event itself is what is requested, by its service type (UM03).
        r.items.push(CaseItem {
            sequence: 1,
            code_system: "X12-1365".into(),
            code: if r.um[2].is_empty() { "1".into() } else { r.um[2].clone() },
            quantity: None,
            service_from: event_dates.0.clone(),
            service_to: event_dates.1.clone(),
            decision: None,
            certified_period: None,
            trace: None,
            decided_at: None,
            extended_review: false,
        });
    }
    for item in &mut r.items {
        if item.code.is_empty() {
            item.code = if r.um[2].is_empty() { "1".into() } else { r.um[2].clone() };
        }
        if item.service_from.is_none() {
            (item.service_from, item.service_to) = event_dates.clone();
        }
    }
    r
}
