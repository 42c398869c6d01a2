//! CMS-0057-F public prior-authorization metrics for a period, as JSON or CSV (`GET /metrics/prior-auth?from=
//! 2026-01-01&to=2026-12-31&format=csv`). Counted per item (service), over requests received in the period:
//! items that needed prior authorization; for standard requests the percent approved, denied and approved after
//! extended review (more information asked for after receipt); for expedited requests the percent approved and denied; average and median
//! hours from receipt to decision for each. Items still pending or cancelled count as needing authorization but
//! not in the percentages.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use exchange_core::domain::prior_auth::{Decision, PaCase, Urgency};
use exchange_core::domain::PartnerRole;
use exchange_core::http::{answer_response, CallerContext, Problem, ProblemQuery};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime};

use crate::intake::POLICY;
use crate::PriorAuth;

/// Figures for one urgency.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    /// Items that needed prior authorization.
    pub items_requiring_authorization: usize,
    /// Items with a final decision.
    pub decided: usize,
    /// Percent approved (certified in total or modified).
    pub percent_approved: f64,
    /// Percent denied.
    pub percent_denied: f64,
    /// Percent approved after an extended review (more information was asked for after receipt).
    pub percent_approved_after_extended_review: f64,
    /// Average hours from receipt to decision.
    pub average_decision_hours: f64,
    /// Median hours from receipt to decision.
    pub median_decision_hours: f64,
}

/// The metrics for a period.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    /// Payer.
    pub payer: String,
    /// First day (inclusive).
    pub from: String,
    /// Last day (inclusive).
    pub to: String,
    /// Items that needed prior authorization (both urgencies).
    pub items_requiring_authorization: usize,
    /// Standard requests.
    pub standard: Figures,
    /// Expedited requests.
    pub expedited: Figures,
}

fn percent(n: usize, d: usize) -> f64 {
    if d == 0 {
        0.0
    } else {
        ((n as f64) * 10000.0 / d as f64).round() / 100.0
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Whether an item needed prior authorization: anything but the policy certifying it on receipt.
fn needed_authorization(case: &PaCase, sequence: u32) -> bool {
    let first = case.history.iter().find(|h| h.item == Some(sequence));
    !matches!(first, Some(h) if h.by == POLICY && h.action == "A1")
}

/// Computes the figures over `cases`.
pub fn compute(payer: &str, from: Date, to: Date, cases: &[PaCase]) -> Metrics {
    let mut standard = Figures::default();
    let mut expedited = Figures::default();
    let mut hours: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut counts = [[0usize; 3]; 2]; // approved, denied, approved after extended review
    for case in cases {
        let Ok(received) = OffsetDateTime::parse(&case.received, &Rfc3339) else { continue };
        if received.date() < from || received.date() > to {
            continue;
        }
        let u = usize::from(case.urgency == Urgency::Expedited);
        let figures = if u == 1 { &mut expedited } else { &mut standard };
        for item in &case.items {
            if !needed_authorization(case, item.sequence) {
                continue;
            }
            figures.items_requiring_authorization += 1;
            let Some(decided_at) = item.decided_at.as_deref().and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
            else {
                continue;
            };
            match &item.decision {
                Some(Decision::Certified | Decision::Modified { .. }) => {
                    counts[u][0] += 1;
                    if item.extended_review {
                        counts[u][2] += 1;
                    }
                }
                Some(Decision::NotCertified { .. }) => counts[u][1] += 1,
                _ => continue,
            }
            figures.decided += 1;
            hours[u].push((decided_at - received).as_seconds_f64() / 3600.0);
        }
    }
    for (u, figures) in [&mut standard, &mut expedited].into_iter().enumerate() {
        figures.percent_approved = percent(counts[u][0], figures.decided);
        figures.percent_denied = percent(counts[u][1], figures.decided);
        figures.percent_approved_after_extended_review = percent(counts[u][2], figures.decided);
        let h = &mut hours[u];
        if !h.is_empty() {
            h.sort_by(f64::total_cmp);
            figures.average_decision_hours = round2(h.iter().sum::<f64>() / h.len() as f64);
            let mid = h.len() / 2;
            figures.median_decision_hours = round2(if h.len() % 2 == 0 { (h[mid - 1] + h[mid]) / 2.0 } else { h[mid] });
        }
    }
    Metrics {
        payer: payer.to_owned(),
        from: from.to_string(),
        to: to.to_string(),
        items_requiring_authorization: standard.items_requiring_authorization + expedited.items_requiring_authorization,
        standard,
        expedited,
    }
}

/// The metrics as CSV: one row per urgency.
pub fn to_csv(m: &Metrics) -> String {
    let mut out = String::from(
        "payer,from,to,request_type,items_requiring_authorization,decided,percent_approved,percent_denied,percent_approved_after_extended_review,average_decision_hours,median_decision_hours\n",
    );
    for (name, f) in [("standard", &m.standard), ("expedited", &m.expedited)] {
        out.push_str(&format!(
            "{},{},{},{name},{},{},{},{},{},{},{}\n",
            m.payer,
            m.from,
            m.to,
            f.items_requiring_authorization,
            f.decided,
            f.percent_approved,
            f.percent_denied,
            f.percent_approved_after_extended_review,
            f.average_decision_hours,
            f.median_decision_hours
        ));
    }
    out
}

/// Query of `GET /metrics/prior-auth`.
#[derive(Debug, Deserialize)]
pub struct MetricsQuery {
    /// First day, `YYYY-MM-DD`.
    pub from: String,
    /// Last day, `YYYY-MM-DD`.
    pub to: String,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

fn date(s: &str, field: &str) -> Result<Date, Problem> {
    Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
        .map_err(|_| Problem::bad_request(format!("{field} must be a date like 2026-01-31")))
}

/// Months `YYYY-MM` from `from` to `to`.
fn months(from: Date, to: Date) -> Vec<String> {
    let mut out = Vec::new();
    let (mut y, mut m) = (from.year(), u8::from(from.month()));
    while (y, m) <= (to.year(), u8::from(to.month())) {
        out.push(format!("{y:04}-{m:02}"));
        (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    }
    out
}

/// `GET /metrics/prior-auth`: payer or admin tokens.
pub async fn get_metrics(
    State(pa): State<Arc<PriorAuth>>,
    ctx: CallerContext,
    ProblemQuery(q): ProblemQuery<MetricsQuery>,
) -> Result<Response, Problem> {
    let acts_for_payer = match pa.core.repo().current().await {
        Ok(Some(d)) => ctx.partner.acts_for(&d.payer),
        Ok(None) => false,
        Err(e) => return Err(Problem::from_port(&ctx.request_id, &e)),
    };
    if !(acts_for_payer || ctx.caller.role == PartnerRole::Admin) {
        return Err(Problem::forbidden("metrics are for the payer's and admin tokens"));
    }
    let (from, to) = (date(&q.from, "from")?, date(&q.to, "to")?);
    if to < from || (to - from).whole_days() > 366 {
        return Err(Problem::bad_request("the period must run forwards and span at most 366 days"));
    }
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(Problem::bad_request("format must be json or csv")),
    };
    let unavailable = |e: exchange_core::ports::PortError| Problem::from_port(&ctx.request_id, &e);
    let payer = pa.core.repo().current().await.map_err(unavailable)?.ok_or_else(Problem::unavailable)?.payer.id;
    let mut cases = Vec::new();
    for month in months(from, to) {
        cases.extend(pa.cases.received_in_month(&payer, &month).await.map_err(unavailable)?);
    }
    let m = compute(&payer, from, to, &cases);
    Ok(if csv {
        answer_response(StatusCode::OK, "text/csv; charset=utf-8", to_csv(&m).into_bytes(), false)
    } else {
        Json(m).into_response()
    })
}
