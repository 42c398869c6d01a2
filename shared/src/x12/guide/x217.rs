//! 005010X217 (278 request for review and response) as guide tables: the UMO (2000A/2010A), requester
//! (2000B/2010B), subscriber (2000C/2010C), dependent (2000D/2010D), patient event (2000E/2010E) and service
//! (2000F/2010F) levels. The engine assigns every 2010E/2010F name segment to one loop per level (`2010E`, `2010F`).

use super::DataType::{An, Composite, DateByFormat, Dt, Id, Tm, R as Dec};
use super::Usage::{NotUsed as N, Required as R, Situational as S};
use super::{el, seg, LevelRule, LoopRule, SegmentRule, TransactionGuide};
use crate::x12::envelope::SetKind;

/// The 278 request this exchange answers.
pub const KIND_278: SetKind = SetKind { functional_id: "HI", set_id: "278", version: "005010X217" };

const YN: &[&str] = &["N", "Y"];
const FOLLOW_UP: &[&str] = &["C", "N", "P", "R", "S", "W", "X", "Y"];

/// BHT with the purpose codes of one direction: a request is `13` (request) or `01` (cancellation), a response
/// `11`. The purpose code is what tells a response sent to the request route from a request.
const fn bht_elements(purposes: &'static [&'static str]) -> [super::ElementRule; 6] {
    [
        el(1, 1005, R, Id, 4, 4, &["0007"]),
        el(2, 353, R, Id, 2, 2, purposes),
        el(3, 127, R, An, 1, 50, &[]),
        el(4, 373, R, Dt, 8, 8, &[]),
        el(5, 337, R, Tm, 4, 8, &[]),
        el(6, 640, S, Id, 2, 2, &["18", "19", "RU", "CH", "CT", "AR"]),
    ]
}
const BHT_REQUEST_ELEMENTS: [super::ElementRule; 6] = bht_elements(&["01", "13"]);
const BHT_RESPONSE_ELEMENTS: [super::ElementRule; 6] = bht_elements(&["11"]);
const BHT_REQUEST: SegmentRule = seg("BHT", R, 1, 6, &BHT_REQUEST_ELEMENTS);
const BHT_RESPONSE: SegmentRule = seg("BHT", R, 1, 6, &BHT_RESPONSE_ELEMENTS);

const HL: SegmentRule = seg(
    "HL",
    R,
    1,
    4,
    &[
        el(1, 628, R, An, 1, 12, &[]),
        el(2, 734, S, An, 1, 12, &[]),
        el(3, 735, R, Id, 1, 2, &["20", "21", "22", "23", "EV", "SS"]),
        el(4, 736, S, Id, 1, 1, &["0", "1"]),
    ],
);

const AAA: SegmentRule = seg(
    "AAA",
    S,
    9,
    4,
    &[
        el(1, 1073, R, Id, 1, 1, YN),
        el(2, 559, N, Id, 2, 2, &[]),
        el(3, 901, R, Id, 2, 2, &[]),
        el(4, 889, R, Id, 1, 1, FOLLOW_UP),
    ],
);

/// NM1 with the entity codes of one loop; NM108/NM109 situational (identification by id or by name).
macro_rules! nm1 {
    ($entities:expr, $qualifiers:expr) => {
        nm1!($entities, $qualifiers, R)
    };
    ($entities:expr, $qualifiers:expr, $usage:expr) => {
        seg(
            "NM1",
            $usage,
            1,
            12,
            &[
                el(1, 98, R, Id, 2, 3, $entities),
                el(2, 1065, R, Id, 1, 1, &["1", "2"]),
                el(3, 1035, S, An, 1, 60, &[]),
                el(4, 1036, S, An, 1, 35, &[]),
                el(5, 1037, S, An, 1, 25, &[]),
                el(6, 1038, N, An, 1, 10, &[]),
                el(7, 1039, S, An, 1, 10, &[]),
                el(8, 66, S, Id, 1, 2, $qualifiers),
                el(9, 67, S, An, 2, 80, &[]),
                el(10, 706, N, Id, 2, 2, &[]),
                el(11, 98, N, Id, 2, 3, &[]),
                el(12, 1035, N, An, 1, 60, &[]),
            ],
        )
    };
}

const PROVIDER_QUALIFIERS: &[&str] = &["24", "34", "46", "PI", "XV", "XX"];
const EVENT_PROVIDERS: &[&str] = &[
    "71", "72", "73", "77", "AAJ", "DD", "DK", "DN", "FA", "G3", "P3", "QB", "QV", "SJ", "45", "FS", "ND", "PW", "L5",
];

const NM1_UMO: SegmentRule = nm1!(&["X3"], &["24", "46", "NI", "PI", "XV", "XX"]);
const NM1_REQUESTER: SegmentRule = nm1!(&["1P", "FA"], PROVIDER_QUALIFIERS);
const NM1_SUBSCRIBER: SegmentRule = nm1!(&["IL"], &["MI"]);
const NM1_DEPENDENT: SegmentRule = nm1!(&["QC"], &["MI"]);
/// 2010E / 2010F (event and service providers) are situational: a level may name no provider of its own.
const NM1_EVENT: SegmentRule = nm1!(EVENT_PROVIDERS, PROVIDER_QUALIFIERS, S);

const REF: SegmentRule =
    seg("REF", S, 9, 3, &[el(1, 128, R, Id, 2, 3, &[]), el(2, 127, R, An, 1, 50, &[]), el(3, 352, S, An, 1, 80, &[])]);
const N3: SegmentRule = seg("N3", S, 1, 2, &[el(1, 166, R, An, 1, 55, &[]), el(2, 166, S, An, 1, 55, &[])]);
const N4: SegmentRule =
    seg("N4", S, 1, 7, &[el(1, 19, R, An, 2, 30, &[]), el(2, 156, S, Id, 2, 2, &[]), el(3, 116, S, Id, 3, 15, &[])]);
const PER: SegmentRule = seg("PER", S, 3, 8, &[el(1, 366, R, Id, 2, 2, &["IC"]), el(2, 93, S, An, 1, 60, &[])]);
const PRV: SegmentRule = seg(
    "PRV",
    S,
    1,
    3,
    &[el(1, 1221, R, Id, 1, 3, &[]), el(2, 128, S, Id, 2, 3, &["PXC"]), el(3, 127, S, An, 1, 50, &[])],
);
const DMG: SegmentRule = seg(
    "DMG",
    S,
    1,
    3,
    &[
        el(1, 1250, R, Id, 2, 3, &["D8"]),
        el(2, 1251, R, DateByFormat, 1, 35, &[]),
        el(3, 1068, S, Id, 1, 1, &["F", "M", "U"]),
    ],
);
const INS: SegmentRule = seg("INS", S, 1, 17, &[el(1, 1073, R, Id, 1, 1, &["N", "Y"]), el(2, 1069, R, Id, 2, 2, &[])]);
/// TRN with the trace types of one direction: a request carries its own traces (`1`); a response echoes them as
/// referenced traces (`2`) and may add its own (`1`).
const fn trn_elements(types: &'static [&'static str]) -> [super::ElementRule; 4] {
    [
        el(1, 481, R, Id, 1, 2, types),
        el(2, 127, R, An, 1, 50, &[]),
        el(3, 509, R, An, 10, 10, &[]),
        el(4, 127, S, An, 1, 50, &[]),
    ]
}
const TRN_REQUEST_ELEMENTS: [super::ElementRule; 4] = trn_elements(&["1"]);
const TRN_RESPONSE_ELEMENTS: [super::ElementRule; 4] = trn_elements(&["1", "2"]);
const TRN_REQUEST: SegmentRule = seg("TRN", S, 3, 4, &TRN_REQUEST_ELEMENTS);
const TRN_RESPONSE: SegmentRule = seg("TRN", S, 3, 4, &TRN_RESPONSE_ELEMENTS);
/// UM01 request category (AR admission review, HS health services review, SC specialty care review, IN individual),
/// UM02 certification type (I initial, 1 appeal, 2 appeal, 3 cancel, 4 extension, S revised).
const UM: SegmentRule = um(R);
/// At the service level (2000F) UM is situational: the event's UM applies when absent.
const UM_SERVICE: SegmentRule = um(S);

const UM_ELEMENTS: &[super::ElementRule] = &[
    el(1, 1525, R, Id, 1, 2, &["AR", "HS", "SC", "IN"]),
    el(2, 1322, R, Id, 1, 1, &["1", "2", "3", "4", "I", "S"]),
    el(3, 1365, S, Id, 1, 2, &[]),
    el(4, 0, S, Composite, 1, 8, &[]),
    el(5, 0, S, Composite, 1, 20, &[]),
    el(6, 1338, S, Id, 1, 2, &["01", "02", "03", "04", "05"]),
    el(7, 1213, N, Id, 1, 2, &[]),
    el(8, 923, N, Id, 1, 2, &[]),
    el(9, 1363, S, Id, 1, 1, &["Y", "N"]),
    el(10, 1352, N, Id, 1, 1, &[]),
];

const fn um(usage: super::Usage) -> SegmentRule {
    seg("UM", usage, 1, 10, UM_ELEMENTS)
}
/// HCR01 action: A1 certified in total, A2 certified partial, A3 not certified, A4 pended, A6 modified,
/// C contact payer, CT cancelled, NA no action required.
const HCR: SegmentRule = seg(
    "HCR",
    S,
    1,
    4,
    &[
        el(1, 306, R, Id, 1, 2, &["A1", "A2", "A3", "A4", "A6", "C", "CT", "NA"]),
        el(2, 127, S, An, 1, 50, &[]),
        el(3, 1535, S, Id, 1, 2, &[]),
        el(4, 1073, S, Id, 1, 1, YN),
    ],
);
const DTP: SegmentRule = seg(
    "DTP",
    S,
    3,
    3,
    &[
        el(
            1,
            374,
            R,
            Id,
            3,
            3,
            &["435", "439", "472", "484", "096", "ABC", "AAH", "431", "454", "471", "607", "036", "102", "306"],
        ),
        el(2, 1250, R, Id, 2, 3, &["D8", "RD8"]),
        el(3, 1251, R, DateByFormat, 1, 35, &[]),
    ],
);
const HI: SegmentRule = seg("HI", S, 1, 12, &[el(1, 0, R, Composite, 1, 40, &[])]);
const HSD: SegmentRule = seg("HSD", S, 1, 8, &[el(1, 673, S, Id, 2, 2, &[]), el(2, 380, S, Dec, 1, 15, &[])]);
const CRC: SegmentRule = seg("CRC", S, 9, 7, &[el(1, 1136, R, Id, 2, 2, &[]), el(2, 1073, R, Id, 1, 1, YN)]);
const CL1: SegmentRule = seg("CL1", S, 1, 4, &[el(1, 1315, S, Id, 1, 1, &[])]);
const CR6: SegmentRule = seg("CR6", S, 1, 21, &[el(1, 923, R, Id, 1, 1, &[])]);
const PWK: SegmentRule = seg("PWK", S, 10, 8, &[el(1, 755, R, Id, 2, 2, &[]), el(2, 756, R, Id, 1, 2, &[])]);
const MSG: SegmentRule = seg("MSG", S, 1, 1, &[el(1, 933, R, An, 1, 264, &[])]);
const CR_ANY: [SegmentRule; 4] =
    [seg("CR1", S, 1, 10, &[]), seg("CR2", S, 1, 12, &[]), seg("CR5", S, 1, 18, &[]), seg("CR7", S, 1, 3, &[])];
const SV1: SegmentRule = seg(
    "SV1",
    S,
    1,
    21,
    &[el(1, 0, R, Composite, 1, 48, &[]), el(2, 782, S, Dec, 1, 18, &[]), el(4, 380, S, Dec, 1, 15, &[])],
);
const SV2: SegmentRule = seg("SV2", S, 1, 10, &[el(1, 234, S, An, 1, 48, &[]), el(2, 0, S, Composite, 1, 48, &[])]);
const SV3: SegmentRule = seg("SV3", S, 1, 11, &[el(1, 0, R, Composite, 1, 48, &[])]);
const TOO: SegmentRule = seg("TOO", S, 1, 3, &[el(1, 1270, R, Id, 1, 3, &["JP"]), el(2, 1271, R, An, 1, 30, &[])]);

const NO_DETAIL: Option<LoopRule> = None;

/// The hierarchy of the 278, with the segments of the patient event (2000E) and service (2000F) levels, which
/// differ between request and response.
const fn levels(event: &'static [SegmentRule], service: &'static [SegmentRule]) -> [LevelRule; 6] {
    [
        LevelRule {
            level_code: "20",
            hl_loop: LoopRule { id: "2000A", segments: &[HL, AAA] },
            name_loop: LoopRule { id: "2010A", segments: &[NM1_UMO, PER, AAA] },
            detail_loop: NO_DETAIL,
            bracket_loop: None,
            required: true,
            max_name_loops: 1,
        },
        LevelRule {
            level_code: "21",
            hl_loop: LoopRule { id: "2000B", segments: &[HL] },
            name_loop: LoopRule { id: "2010B", segments: &[NM1_REQUESTER, REF, N3, N4, PER, AAA, PRV] },
            detail_loop: NO_DETAIL,
            bracket_loop: None,
            required: true,
            max_name_loops: 1,
        },
        LevelRule {
            level_code: "22",
            hl_loop: LoopRule { id: "2000C", segments: &[HL] },
            name_loop: LoopRule { id: "2010C", segments: &[NM1_SUBSCRIBER, REF, N3, N4, AAA, DMG, INS] },
            detail_loop: NO_DETAIL,
            bracket_loop: None,
            required: true,
            max_name_loops: 1,
        },
        LevelRule {
            level_code: "23",
            hl_loop: LoopRule { id: "2000D", segments: &[HL] },
            name_loop: LoopRule { id: "2010D", segments: &[NM1_DEPENDENT, REF, N3, N4, AAA, DMG, INS] },
            detail_loop: NO_DETAIL,
            bracket_loop: None,
            required: false,
            max_name_loops: 1,
        },
        LevelRule {
            level_code: "EV",
            hl_loop: LoopRule { id: "2000E", segments: event },
            name_loop: LoopRule { id: "2010E", segments: &[NM1_EVENT, REF, N3, N4, PER, AAA, PRV] },
            detail_loop: NO_DETAIL,
            bracket_loop: None,
            required: true,
            max_name_loops: 12,
        },
        LevelRule {
            level_code: "SS",
            hl_loop: LoopRule { id: "2000F", segments: service },
            name_loop: LoopRule { id: "2010F", segments: &[NM1_EVENT, REF, N3, N4, PER, AAA, PRV] },
            detail_loop: NO_DETAIL,
            bracket_loop: None,
            required: false,
            max_name_loops: 12,
        },
    ]
}

const REQUEST_LEVELS: [LevelRule; 6] = levels(
    &[HL, TRN_REQUEST, AAA, UM, REF, DTP, HI, HSD, CRC, CL1, CR_ANY[0], CR_ANY[1], CR_ANY[2], CR6, CR_ANY[3], PWK, MSG],
    &[HL, TRN_REQUEST, AAA, UM_SERVICE, REF, DTP, SV1, SV2, SV3, TOO, HSD, PWK, MSG],
);

const RESPONSE_LEVELS: [LevelRule; 6] = levels(
    &[
        HL,
        TRN_RESPONSE,
        AAA,
        UM,
        HCR,
        REF,
        DTP,
        HI,
        HSD,
        CRC,
        CL1,
        CR_ANY[0],
        CR_ANY[1],
        CR_ANY[2],
        CR6,
        CR_ANY[3],
        PWK,
        MSG,
    ],
    &[HL, TRN_RESPONSE, AAA, UM_SERVICE, HCR, REF, DTP, SV1, SV2, SV3, TOO, HSD, PWK, MSG],
);

/// The 278 request for review (what the exchange accepts): BHT02 `13` or `01`, its own traces, no review outcome
/// (HCR is the payer's): a response sent to the request route fails this guide and creates nothing.
pub const GUIDE_278_REQUEST: TransactionGuide = TransactionGuide {
    set_id: "278",
    header: LoopRule { id: "HEADER", segments: &[BHT_REQUEST] },
    levels: &REQUEST_LEVELS,
};

/// The 278 response (what the exchange answers): BHT02 `11`, the request's traces referenced, HCR with the outcome.
pub const GUIDE_278_RESPONSE: TransactionGuide = TransactionGuide {
    set_id: "278",
    header: LoopRule { id: "HEADER", segments: &[BHT_RESPONSE] },
    levels: &RESPONSE_LEVELS,
};
