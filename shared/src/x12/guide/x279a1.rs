//! 005010X279A1 (270 inquiry and 271 response) as guide tables.
//!
//! Usage, repeat limits and code lists follow the implementation guide's segment and element tables for the loops
//! this exchange reads and writes. Code lists are those the guide narrows; elements whose external code sets are
//! large (service type codes, AAA reasons) carry the guide's lists for that loop.

use super::DataType::{An, Composite, DateByFormat, Dt, Id, Tm, N0, R as Dec};
use super::Usage::{NotUsed as N, Required as R, Situational as S};
use super::{el, rep, seg, ElementRule, LevelRule, LoopRule, SegmentRule, TransactionGuide};
use crate::x12::envelope::SetKind;

/// The 270 this exchange answers.
pub const KIND_270: SetKind = SetKind { functional_id: "HS", set_id: "270", version: "005010X279A1" };
/// The 271 it sends.
pub const KIND_271: SetKind = SetKind { functional_id: "HB", set_id: "271", version: "005010X279A1" };

/// Service type codes (data element 1365) as the guide lists them.
pub const SERVICE_TYPE_CODES: &[&str] = &[
    "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16", "17", "18", "19", "20",
    "21", "22", "23", "24", "25", "26", "27", "28", "30", "32", "33", "34", "35", "36", "37", "38", "39", "40", "41",
    "42", "43", "44", "45", "46", "47", "48", "49", "50", "51", "52", "53", "54", "55", "56", "57", "58", "59", "60",
    "61", "62", "63", "64", "65", "66", "67", "68", "69", "70", "71", "72", "73", "74", "75", "76", "77", "78", "79",
    "80", "81", "82", "83", "84", "85", "86", "87", "88", "89", "90", "91", "92", "93", "94", "95", "96", "97", "98",
    "99", "A0", "A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8", "A9", "AA", "AB", "AC", "AD", "AE", "AF", "AG", "AH",
    "AI", "AJ", "AK", "AL", "AM", "AN", "AO", "AQ", "AR", "B1", "B2", "B3", "BA", "BB", "BC", "BD", "BE", "BF", "BG",
    "BH", "BI", "BJ", "BK", "BL", "BM", "BN", "BP", "BQ", "BR", "BS", "BT", "BU", "BV", "BW", "BX", "BY", "BZ", "C1",
    "CA", "CB", "CC", "CD", "CE", "CF", "CG", "CH", "CI", "CJ", "CK", "CL", "CM", "CN", "CO", "CP", "CQ", "DG", "DM",
    "DS", "GF", "GN", "GY", "IC", "MH", "NI", "ON", "PT", "PU", "RN", "RT", "TC", "TN", "UC",
];

const YN: &[&str] = &["N", "Y"];
const FOLLOW_UP: &[&str] = &["C", "N", "P", "R", "S", "W", "X", "Y"];

/// AAA03 reject reasons allowed at the information source level (2000A, 2100A).
pub const AAA_SOURCE: &[&str] = &["04", "41", "42", "79", "80", "T4"];
/// AAA03 reject reasons allowed at 2100B.
pub const AAA_RECEIVER: &[&str] = &["15", "41", "43", "44", "45", "46", "47", "48", "50", "51", "79", "97", "T4"];
/// AAA03 reject reasons allowed at 2100C.
pub const AAA_SUBSCRIBER: &[&str] = &[
    "15", "35", "42", "43", "45", "47", "48", "49", "51", "52", "56", "57", "58", "60", "61", "62", "63", "69", "70",
    "71", "72", "73", "74", "75", "76", "78",
];
/// AAA03 reject reasons allowed at 2100D.
pub const AAA_DEPENDENT: &[&str] = &[
    "15", "35", "42", "43", "45", "47", "48", "49", "51", "52", "56", "57", "58", "60", "61", "62", "63", "64", "65",
    "66", "67", "68", "71", "77",
];
/// AAA03 reject reasons allowed at 2110C/2110D.
pub const AAA_BENEFIT: &[&str] = &[
    "15", "52", "53", "54", "55", "56", "57", "60", "61", "62", "63", "69", "70", "98", "AA", "AE", "AF", "AG", "AO",
    "CI", "E8", "IA", "MA",
];

const fn aaa_rule(elements: &'static [ElementRule]) -> SegmentRule {
    seg("AAA", S, 9, 4, elements)
}

macro_rules! aaa_elements {
    ($codes:expr) => {
        &[
            el(1, 1073, R, Id, 1, 1, YN),
            el(2, 559, N, Id, 2, 2, &[]),
            el(3, 901, R, Id, 2, 2, $codes),
            el(4, 889, R, Id, 1, 1, FOLLOW_UP),
        ]
    };
}

const AAA_2000A: SegmentRule = aaa_rule(aaa_elements!(AAA_SOURCE));
const AAA_2100B: SegmentRule = aaa_rule(aaa_elements!(AAA_RECEIVER));
const AAA_2100C: SegmentRule = aaa_rule(aaa_elements!(AAA_SUBSCRIBER));
const AAA_2100D: SegmentRule = aaa_rule(aaa_elements!(AAA_DEPENDENT));
const AAA_2110: SegmentRule = aaa_rule(aaa_elements!(AAA_BENEFIT));

const BHT_270: SegmentRule = seg(
    "BHT",
    R,
    1,
    6,
    &[
        el(1, 1005, R, Id, 4, 4, &["0022"]),
        el(2, 353, R, Id, 2, 2, &["01", "13"]),
        el(3, 127, S, An, 1, 50, &[]),
        el(4, 373, R, Dt, 8, 8, &[]),
        el(5, 337, R, Tm, 4, 8, &[]),
        el(6, 640, S, Id, 2, 2, &["RT"]),
    ],
);

const BHT_271: SegmentRule = seg(
    "BHT",
    R,
    1,
    5,
    &[
        el(1, 1005, R, Id, 4, 4, &["0022"]),
        el(2, 353, R, Id, 2, 2, &["06", "11"]),
        el(3, 127, S, An, 1, 50, &[]),
        el(4, 373, R, Dt, 8, 8, &[]),
        el(5, 337, R, Tm, 4, 8, &[]),
    ],
);

const HL: SegmentRule = seg(
    "HL",
    R,
    1,
    4,
    &[
        el(1, 628, R, An, 1, 12, &[]),
        el(2, 734, S, An, 1, 12, &[]),
        el(3, 735, R, Id, 1, 2, &["20", "21", "22", "23"]),
        el(4, 736, S, Id, 1, 1, &["0", "1"]),
    ],
);

const TRN_270: SegmentRule = seg(
    "TRN",
    S,
    2,
    4,
    &[
        el(1, 481, R, Id, 1, 2, &["1"]),
        el(2, 127, R, An, 1, 50, &[]),
        el(3, 509, R, An, 10, 10, &[]),
        el(4, 127, S, An, 1, 50, &[]),
    ],
);

const TRN_271: SegmentRule = seg(
    "TRN",
    S,
    3,
    4,
    &[
        el(1, 481, R, Id, 1, 2, &["1", "2"]),
        el(2, 127, R, An, 1, 50, &[]),
        el(3, 509, R, An, 10, 10, &[]),
        el(4, 127, S, An, 1, 50, &[]),
    ],
);

/// An NM1 rule: entity codes, entity types, usage of the id pair (NM108/NM109) and its qualifiers, usage of NM110.
macro_rules! nm1 {
    ($entities:expr, $types:expr, $id_usage:expr, $qualifiers:expr, $nm110:expr) => {
        seg(
            "NM1",
            R,
            1,
            12,
            &[
                el(1, 98, R, Id, 2, 3, $entities),
                el(2, 1065, R, Id, 1, 1, $types),
                el(3, 1035, S, An, 1, 60, &[]),
                el(4, 1036, S, An, 1, 35, &[]),
                el(5, 1037, S, An, 1, 25, &[]),
                el(6, 1038, N, An, 1, 10, &[]),
                el(7, 1039, S, An, 1, 10, &[]),
                el(8, 66, $id_usage, Id, 1, 2, $qualifiers),
                el(9, 67, $id_usage, An, 2, 80, &[]),
                el(10, 706, $nm110, Id, 2, 2, &[]),
                el(11, 98, N, Id, 2, 3, &[]),
                el(12, 1035, N, An, 1, 60, &[]),
            ],
        )
    };
}

const PERSON_OR_ORG: &[&str] = &["1", "2"];
const NM1_SOURCE: SegmentRule = nm1!(SOURCE_ENTITIES, PERSON_OR_ORG, R, SOURCE_QUALIFIERS, N);
const NM1_RECEIVER: SegmentRule = nm1!(RECEIVER_ENTITIES, PERSON_OR_ORG, R, RECEIVER_QUALIFIERS, N);
const NM1_SUBSCRIBER: SegmentRule = nm1!(&["IL"], PERSON_OR_ORG, S, &["II", "MI"], N);
const NM1_DEPENDENT: SegmentRule = nm1!(&["03"], &["1"], N, &[], N);
const NM1_BENEFIT: SegmentRule = nm1!(
    BENEFIT_ENTITIES,
    PERSON_OR_ORG,
    S,
    &["24", "34", "46", "FA", "FI", "MI", "NI", "PI", "PP", "SV", "XV", "XX"],
    S
);

const SOURCE_ENTITIES: &[&str] = &["2B", "36", "GP", "P5", "PR"];
const SOURCE_QUALIFIERS: &[&str] = &["24", "46", "FI", "NI", "PI", "XV", "XX"];
const RECEIVER_ENTITIES: &[&str] = &["1P", "2B", "36", "80", "FA", "GP", "P5", "PR"];
const RECEIVER_QUALIFIERS: &[&str] = &["24", "34", "46", "FI", "PI", "PP", "SV", "XV", "XX"];
const BENEFIT_ENTITIES: &[&str] = &[
    "13", "1I", "1P", "2B", "36", "73", "FA", "GP", "GW", "I3", "IL", "LR", "OC", "P3", "P4", "P5", "PR", "PRP", "SEP",
    "TTP", "VER", "VN", "VY", "X3", "Y2",
];

const REF_ANY: SegmentRule =
    seg("REF", S, 9, 3, &[el(1, 128, R, Id, 2, 3, &[]), el(2, 127, R, An, 1, 50, &[]), el(3, 352, S, An, 1, 80, &[])]);
const N3: SegmentRule = seg("N3", S, 1, 2, &[el(1, 166, R, An, 1, 55, &[]), el(2, 166, S, An, 1, 55, &[])]);
const N4: SegmentRule = seg(
    "N4",
    S,
    1,
    7,
    &[
        el(1, 19, R, An, 2, 30, &[]),
        el(2, 156, S, Id, 2, 2, &[]),
        el(3, 116, S, Id, 3, 15, &[]),
        el(4, 26, S, Id, 2, 3, &[]),
        el(7, 1715, S, Id, 1, 3, &[]),
    ],
);
const PRV: SegmentRule = seg(
    "PRV",
    S,
    1,
    3,
    &[el(1, 1221, R, Id, 1, 3, &[]), el(2, 128, S, Id, 2, 3, &["PXC"]), el(3, 127, S, An, 1, 50, &[])],
);
const PER: SegmentRule = seg("PER", S, 3, 8, &[el(1, 366, R, Id, 2, 2, &["IC"]), el(2, 93, S, An, 1, 60, &[])]);
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
const INS_270_SUB: SegmentRule = seg(
    "INS",
    S,
    1,
    17,
    &[el(1, 1073, R, Id, 1, 1, &["Y"]), el(2, 1069, R, Id, 2, 2, &["18"]), el(17, 1470, S, N0, 1, 9, &[])],
);
const INS_271_SUB: SegmentRule = seg(
    "INS",
    S,
    1,
    17,
    &[
        el(1, 1073, R, Id, 1, 1, &["Y"]),
        el(2, 1069, R, Id, 2, 2, &["18"]),
        el(3, 875, S, Id, 3, 3, &["001"]),
        el(4, 1203, S, Id, 2, 3, &["25"]),
        el(17, 1470, S, N0, 1, 9, &[]),
    ],
);
const RELATIONSHIPS: &[&str] = &["01", "19", "20", "21", "39", "40", "53", "G8"];
const INS_DEP: SegmentRule = seg(
    "INS",
    S,
    1,
    17,
    &[
        el(1, 1073, R, Id, 1, 1, &["N"]),
        el(2, 1069, R, Id, 2, 2, RELATIONSHIPS),
        el(3, 875, S, Id, 3, 3, &["001"]),
        el(4, 1203, S, Id, 2, 3, &["25"]),
        el(17, 1470, S, N0, 1, 9, &[]),
    ],
);
const HI: SegmentRule = seg("HI", S, 1, 8, &[el(1, 0, R, Composite, 1, 30, &[])]);
const DTP_270_NAME: SegmentRule = seg(
    "DTP",
    S,
    2,
    3,
    &[
        el(1, 374, R, Id, 3, 3, &["291"]),
        el(2, 1250, R, Id, 2, 3, &["D8", "RD8"]),
        el(3, 1251, R, DateByFormat, 1, 35, &[]),
    ],
);
const DTP_271_NAME: SegmentRule = seg(
    "DTP",
    S,
    9,
    3,
    &[
        el(
            1,
            374,
            R,
            Id,
            3,
            3,
            &[
                "102", "152", "291", "307", "318", "340", "341", "342", "343", "346", "347", "356", "357", "382",
                "435", "442", "458", "539", "540", "636", "771",
            ],
        ),
        el(2, 1250, R, Id, 2, 3, &["D8", "RD8"]),
        el(3, 1251, R, DateByFormat, 1, 35, &[]),
    ],
);
const DTP_271_BENEFIT: SegmentRule = seg(
    "DTP",
    S,
    20,
    3,
    &[
        el(
            1,
            374,
            R,
            Id,
            3,
            3,
            &[
                "193", "194", "198", "290", "292", "295", "304", "307", "318", "346", "347", "348", "349", "356",
                "357", "435", "472", "636", "771",
            ],
        ),
        el(2, 1250, R, Id, 2, 3, &["D8", "RD8"]),
        el(3, 1251, R, DateByFormat, 1, 35, &[]),
    ],
);
const EQ: SegmentRule = seg(
    "EQ",
    S,
    1,
    5,
    &[
        rep(1, 1365, S, Id, 1, 2, SERVICE_TYPE_CODES),
        el(2, 0, S, Composite, 1, 48, &[]),
        el(3, 1207, S, Id, 3, 3, &["FAM", "IND"]),
        el(4, 1336, N, Id, 1, 3, &[]),
        el(5, 0, S, Composite, 1, 8, &[]),
    ],
);
const AMT_270: SegmentRule =
    seg("AMT", S, 2, 2, &[el(1, 522, R, Id, 1, 3, &["R", "PB"]), el(2, 782, R, Dec, 1, 18, &[])]);
const III_270: SegmentRule = seg("III", S, 1, 2, &[el(1, 1270, R, Id, 1, 3, &["ZZ"]), el(2, 1271, R, An, 1, 30, &[])]);
const DTP_2110_270: SegmentRule = seg(
    "DTP",
    S,
    1,
    3,
    &[
        el(1, 374, R, Id, 3, 3, &["291"]),
        el(2, 1250, R, Id, 2, 3, &["D8", "RD8"]),
        el(3, 1251, R, DateByFormat, 1, 35, &[]),
    ],
);
const EB: SegmentRule = seg(
    "EB",
    R,
    1,
    14,
    &[
        el(
            1,
            1390,
            R,
            Id,
            1,
            2,
            &[
                "1", "2", "3", "4", "5", "6", "7", "8", "A", "B", "C", "CB", "D", "E", "F", "G", "H", "I", "J", "K",
                "L", "M", "MC", "N", "O", "P", "Q", "R", "S", "T", "U", "V", "W", "X", "Y",
            ],
        ),
        el(2, 1207, S, Id, 3, 3, &["CHD", "DEP", "ECH", "EMP", "ESP", "FAM", "IND", "SPC", "SPO"]),
        rep(3, 1365, S, Id, 1, 2, SERVICE_TYPE_CODES),
        el(4, 1336, S, Id, 1, 3, &[]),
        el(5, 1204, S, An, 1, 50, &[]),
        el(
            6,
            615,
            S,
            Id,
            1,
            2,
            &[
                "6", "7", "13", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31", "32", "33", "34",
                "35", "36",
            ],
        ),
        el(7, 782, S, Dec, 1, 18, &[]),
        el(8, 954, S, Dec, 1, 10, &[]),
        el(
            9,
            673,
            S,
            Id,
            2,
            2,
            &["99", "CA", "CE", "D3", "DB", "DY", "HS", "LA", "LE", "M2", "MN", "P6", "QA", "S7", "S8", "VS", "YY"],
        ),
        el(10, 380, S, Dec, 1, 15, &[]),
        el(11, 1073, S, Id, 1, 1, &["N", "U", "Y"]),
        el(12, 1073, S, Id, 1, 1, &["N", "U", "W", "Y"]),
        el(13, 0, S, Composite, 1, 48, &[]),
        el(14, 0, S, Composite, 1, 8, &[]),
    ],
);
const HSD: SegmentRule = seg("HSD", S, 9, 8, &[el(1, 673, S, Id, 2, 2, &[]), el(2, 380, S, Dec, 1, 15, &[])]);
const MSG: SegmentRule = seg("MSG", S, 10, 1, &[el(1, 933, R, An, 1, 264, &[])]);
const LS: SegmentRule = seg("LS", S, 1, 1, &[el(1, 447, R, An, 1, 4, &["2120"])]);
const LE: SegmentRule = seg("LE", S, 1, 1, &[el(1, 447, R, An, 1, 4, &["2120"])]);
const III_271: SegmentRule =
    seg("III", S, 10, 2, &[el(1, 1270, R, Id, 1, 3, &["ZZ", "GR", "NI"]), el(2, 1271, R, An, 1, 30, &[])]);

/// The 270 guide.
pub const GUIDE_270: TransactionGuide = TransactionGuide {
    set_id: "270",
    header: LoopRule { id: "HEADER", segments: &[BHT_270] },
    levels: &[
        LevelRule {
            level_code: "20",
            hl_loop: LoopRule { id: "2000A", segments: &[HL] },
            name_loop: LoopRule { id: "2100A", segments: &[NM1_SOURCE] },
            detail_loop: None,
            bracket_loop: None,
            required: true,
            max_name_loops: 1,
        },
        LevelRule {
            level_code: "21",
            hl_loop: LoopRule { id: "2000B", segments: &[HL] },
            name_loop: LoopRule { id: "2100B", segments: &[NM1_RECEIVER, REF_ANY, N3, N4, PRV] },
            detail_loop: None,
            bracket_loop: None,
            required: true,
            max_name_loops: 1,
        },
        LevelRule {
            level_code: "22",
            hl_loop: LoopRule { id: "2000C", segments: &[HL, TRN_270] },
            name_loop: LoopRule {
                id: "2100C",
                segments: &[NM1_SUBSCRIBER, REF_ANY, N3, N4, PRV, DMG, INS_270_SUB, HI, DTP_270_NAME],
            },
            detail_loop: Some(LoopRule { id: "2110C", segments: &[EQ, AMT_270, III_270, REF_ANY, DTP_2110_270] }),
            bracket_loop: None,
            required: true,
            max_name_loops: 1,
        },
        LevelRule {
            level_code: "23",
            hl_loop: LoopRule { id: "2000D", segments: &[HL, TRN_270] },
            name_loop: LoopRule {
                id: "2100D",
                segments: &[NM1_DEPENDENT, REF_ANY, N3, N4, PRV, DMG, INS_DEP, HI, DTP_270_NAME],
            },
            detail_loop: Some(LoopRule { id: "2110D", segments: &[EQ, III_270, REF_ANY, DTP_2110_270] }),
            bracket_loop: None,
            required: false,
            max_name_loops: 1,
        },
    ],
};

const BENEFIT_NAME_LOOP: LoopRule = LoopRule { id: "2120", segments: &[NM1_BENEFIT, N3, N4, PER, PRV] };

/// The 271 guide.
pub const GUIDE_271: TransactionGuide = TransactionGuide {
    set_id: "271",
    header: LoopRule { id: "HEADER", segments: &[BHT_271] },
    levels: &[
        LevelRule {
            level_code: "20",
            hl_loop: LoopRule { id: "2000A", segments: &[HL, AAA_2000A] },
            name_loop: LoopRule { id: "2100A", segments: &[NM1_SOURCE, PER, AAA_2000A] },
            detail_loop: None,
            bracket_loop: None,
            required: true,
            max_name_loops: 1,
        },
        LevelRule {
            level_code: "21",
            hl_loop: LoopRule { id: "2000B", segments: &[HL] },
            name_loop: LoopRule { id: "2100B", segments: &[NM1_RECEIVER, REF_ANY, N3, N4, AAA_2100B, PRV] },
            detail_loop: None,
            bracket_loop: None,
            required: false,
            max_name_loops: 1,
        },
        LevelRule {
            level_code: "22",
            hl_loop: LoopRule { id: "2000C", segments: &[HL, TRN_271] },
            name_loop: LoopRule {
                id: "2100C",
                segments: &[NM1_SUBSCRIBER, REF_ANY, N3, N4, AAA_2100C, PRV, DMG, INS_271_SUB, HI, DTP_271_NAME],
            },
            detail_loop: Some(LoopRule {
                id: "2110C",
                segments: &[EB, HSD, REF_ANY, DTP_271_BENEFIT, AAA_2110, MSG, III_271, LS, LE],
            }),
            bracket_loop: Some(LoopRule { id: "2120C", segments: BENEFIT_NAME_LOOP.segments }),
            required: false,
            max_name_loops: 1,
        },
        LevelRule {
            level_code: "23",
            hl_loop: LoopRule { id: "2000D", segments: &[HL, TRN_271] },
            name_loop: LoopRule {
                id: "2100D",
                segments: &[NM1_DEPENDENT, REF_ANY, N3, N4, AAA_2100D, PRV, DMG, INS_DEP, HI, DTP_271_NAME],
            },
            detail_loop: Some(LoopRule {
                id: "2110D",
                segments: &[EB, HSD, REF_ANY, DTP_271_BENEFIT, AAA_2110, MSG, III_271, LS, LE],
            }),
            bracket_loop: Some(LoopRule { id: "2120D", segments: BENEFIT_NAME_LOOP.segments }),
            required: false,
            max_name_loops: 1,
        },
    ],
};
