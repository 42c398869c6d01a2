//! What a provider asks: the eligibility inquiry, read from a validated 270 transaction set (or built from JSON).

use exchange_core::x12::guide::Located;

/// A trace number (TRN): echoed in the 271 with TRN01=2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// TRN02 reference.
    pub reference: String,
    /// TRN03 originating company id.
    pub originator: String,
    /// TRN04 supplemental id.
    pub supplemental: Option<String>,
}

/// The information receiver (2100B): the provider asking.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Receiver {
    /// NM101 entity identifier.
    pub entity: String,
    /// NM102 entity type (1 person, 2 organisation).
    pub entity_type: String,
    /// NM103 last or organisation name.
    pub last_or_org: String,
    /// NM104 first name.
    pub first: String,
    /// NM108 id qualifier (XX = NPI).
    pub id_qualifier: String,
    /// NM109 id.
    pub id: String,
}

/// A person as the provider describes them (2100C or 2100D). PHI: never logged.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct PersonQuery {
    /// NM109 member id.
    pub member_id: Option<String>,
    /// NM103.
    pub last: Option<String>,
    /// NM104.
    pub first: Option<String>,
    /// NM105.
    pub middle: Option<String>,
    /// DMG02 as sent.
    pub date_of_birth: Option<String>,
    /// DMG03.
    pub gender: Option<String>,
    /// TRN segments of this level.
    pub traces: Vec<Trace>,
    /// Service type codes asked for at this level (EQ01); empty means 30.
    pub service_types: Vec<String>,
    /// Date of service (DTP*291): `(from, to)` CCYYMMDD.
    pub date_of_service: Option<(String, String)>,
}

impl std::fmt::Debug for PersonQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PersonQuery(<redacted>)")
    }
}

/// One eligibility inquiry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inquiry {
    /// BHT03 reference identification (echoed in the 271 BHT03).
    pub reference: String,
    /// 2100A NM103 payer name as sent.
    pub payer_name: String,
    /// 2100A NM108.
    pub payer_id_qualifier: String,
    /// 2100A NM109.
    pub payer_id: String,
    /// 2100B.
    pub receiver: Receiver,
    /// 2000C/2100C/2110C.
    pub subscriber: PersonQuery,
    /// 2000D/2100D/2110D, when the patient is a dependent.
    pub dependent: Option<PersonQuery>,
}

fn text(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// Reads one inquiry from a 270 set's located segments. Assumes the guide layer accepted the set.
pub fn from_270(located: &[Located<'_>]) -> Inquiry {
    let mut inq = Inquiry::default();
    for l in located {
        let s = &l.segment;
        match (l.loop_id, s.id_str()) {
            ("HEADER", "BHT") => inq.reference = s.text(3).to_owned(),
            ("2100A", "NM1") => {
                inq.payer_name = s.text(3).to_owned();
                inq.payer_id_qualifier = s.text(8).to_owned();
                inq.payer_id = s.text(9).to_owned();
            }
            ("2100B", "NM1") => {
                inq.receiver = Receiver {
                    entity: s.text(1).to_owned(),
                    entity_type: s.text(2).to_owned(),
                    last_or_org: s.text(3).to_owned(),
                    first: s.text(4).to_owned(),
                    id_qualifier: s.text(8).to_owned(),
                    id: s.text(9).to_owned(),
                }
            }
            (loop_id, id) => {
                let person = match loop_id.as_bytes().last() {
                    Some(b'C') if loop_id.starts_with('2') => &mut inq.subscriber,
                    Some(b'D') if loop_id.starts_with('2') => inq.dependent.get_or_insert_with(PersonQuery::default),
                    _ => continue,
                };
                read_person_segment(person, id, s);
            }
        }
    }
    inq
}

fn read_person_segment(p: &mut PersonQuery, id: &str, s: &exchange_core::x12::Segment<'_>) {
    match id {
        "TRN" => p.traces.push(Trace {
            reference: s.text(2).to_owned(),
            originator: s.text(3).to_owned(),
            supplemental: text(s.text(4)),
        }),
        "NM1" => {
            p.last = text(s.text(3));
            p.first = text(s.text(4));
            p.middle = text(s.text(5));
            p.member_id = text(s.text(9));
        }
        "DMG" => {
            p.date_of_birth = text(s.text(2));
            p.gender = text(s.text(3));
        }
        "EQ" => {
            for code in s.repetitions(1) {
                if let Ok(c) = std::str::from_utf8(code) {
                    if !c.is_empty() && !p.service_types.iter().any(|x| x == c) {
                        p.service_types.push(c.to_owned());
                    }
                }
            }
        }
        "DTP" if s.text(1) == "291" => {
            let v = s.text(3);
            p.date_of_service = match s.text(2) {
                "RD8" => v.split_once('-').map(|(a, b)| (a.to_owned(), b.to_owned())),
                _ => Some((v.to_owned(), v.to_owned())),
            };
        }
        _ => {}
    }
}
