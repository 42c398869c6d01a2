//! SDC `Questionnaire/$next-question` for DTR adaptive forms: the client sends its QuestionnaireResponse with the
//! adaptive Questionnaire contained; the service adds the next question of the payer's standard form (derivedFrom)
//! whose `enableWhen` the answers so far satisfy, one at a time, and marks the response completed when none is
//! left. The payer's form stays the one source: the adaptive path asks exactly what the standard form would.

use exchange_core::domain::forms::canonical_url;
use exchange_core::fhir::FhirError;
use exchange_core::ports::PortError;
use serde_json::{json, Value};

use crate::Davinci;

/// The adaptive Questionnaire profile.
pub const ADAPTIVE_QUESTIONNAIRE: &str =
    "http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/dtr-questionnaire-adapt";
/// SDC's adaptive flag.
pub const QUESTIONNAIRE_ADAPTIVE: &str =
    "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-questionnaireAdaptive";

/// Reads the QuestionnaireResponse (a Parameters `questionnaire-response`, or the resource itself).
pub fn parse(body: &[u8]) -> Result<Value, FhirError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| FhirError::invalid("structure", "the body is not JSON", None))?;
    let qr = if v["resourceType"] == "Parameters" {
        v["parameter"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "questionnaire-response" || p["name"] == "questionnaire-response-in")
            .map(|p| p["resource"].clone())
            .unwrap_or(Value::Null)
    } else {
        v
    };
    if qr["resourceType"] != "QuestionnaireResponse" {
        return Err(FhirError::invalid(
            "required",
            "send the QuestionnaireResponse (parameter questionnaire-response) with its adaptive Questionnaire contained",
            Some("Parameters.parameter.where(name='questionnaire-response')"),
        ));
    }
    Ok(qr)
}

/// Adds the next question to the response's contained adaptive Questionnaire (or completes it).
pub async fn next_question(dv: &Davinci, mut qr: Value, request_id: &str) -> Result<Value, FhirError> {
    let port = |e: PortError| FhirError::from_port(request_id, &e);
    let local = qr["questionnaire"].as_str().and_then(|q| q.strip_prefix('#')).map(str::to_owned).ok_or_else(|| {
        FhirError::invalid(
            "required",
            "questionnaire must point at the contained adaptive Questionnaire (#id)",
            Some("QuestionnaireResponse.questionnaire"),
        )
    })?;
    let contained = qr["contained"].as_array_mut().ok_or_else(|| {
        FhirError::invalid(
            "required",
            "the adaptive Questionnaire must be contained",
            Some("QuestionnaireResponse.contained"),
        )
    })?;
    let Some(adaptive) =
        contained.iter_mut().find(|r| r["resourceType"] == "Questionnaire" && r["id"] == local.as_str())
    else {
        return Err(FhirError::invalid(
            "required",
            "no contained Questionnaire has that id",
            Some("QuestionnaireResponse.contained"),
        ));
    };
    let Some(base) = adaptive["derivedFrom"][0].as_str().map(str::to_owned) else {
        return Err(FhirError::invalid(
            "required",
            "the adaptive Questionnaire must name its form (derivedFrom)",
            Some("Questionnaire.derivedFrom"),
        ));
    };
    let data = dv.core.repo().current().await.map_err(port)?.ok_or(FhirError::Unavailable)?;
    let form = dv.core.repo().canonical(data.version, &base).await.map_err(port)?;
    let Some(form) = form.filter(|f| f.resource["resourceType"] == "Questionnaire") else {
        return Err(FhirError::NotFound(format!(
            "no questionnaire {} is published by this payer",
            canonical_url(&base)
        )));
    };

    // Shape the adaptive Questionnaire as the profile wants it (first call: an empty one).
    let title = form.resource["title"].as_str().unwrap_or("Questionnaire").to_owned();
    if adaptive["title"].is_null() {
        adaptive["title"] = json!(title);
    }
    if adaptive["text"].is_null() {
        adaptive["text"] = json!({"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>{}</p></div>", escape(&title))});
    }
    if adaptive["status"].is_null() {
        adaptive["status"] = json!("active");
    }
    let has_flag =
        adaptive["extension"].as_array().is_some_and(|e| e.iter().any(|x| x["url"] == QUESTIONNAIRE_ADAPTIVE));
    if !has_flag {
        let list = adaptive["extension"].as_array().cloned().unwrap_or_default();
        let mut list = list;
        list.push(json!({ "url": QUESTIONNAIRE_ADAPTIVE, "valueBoolean": true }));
        adaptive["extension"] = json!(list);
    }
    let profiles = adaptive["meta"]["profile"].as_array().cloned().unwrap_or_default();
    if !profiles.iter().any(|p| p == ADAPTIVE_QUESTIONNAIRE) {
        let mut profiles = profiles;
        profiles.push(json!(ADAPTIVE_QUESTIONNAIRE));
        adaptive["meta"]["profile"] = json!(profiles);
    }

    let asked: Vec<String> = adaptive["item"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["linkId"].as_str().map(str::to_owned))
        .collect();
    let answers = qr["item"].clone();
    let next = form.resource["item"].as_array().into_iter().flatten().find(|item| {
        let id = item["linkId"].as_str().unwrap_or_default();
        !asked.iter().any(|a| a == id) && item["type"] != "display" && enabled(item, &answers)
    });
    // Re-borrow: the contained Questionnaire again, to append.
    let adaptive = qr["contained"].as_array_mut().and_then(|c| c.iter_mut().find(|r| r["id"] == local.as_str()));
    match (next, adaptive) {
        (Some(item), Some(adaptive)) => {
            let mut item = item.clone();
            if let Some(obj) = item.as_object_mut() {
                // Adaptive forms carry no conditions: the service decided this question applies.
                obj.remove("enableWhen");
                obj.remove("enableBehavior");
            }
            let mut items = adaptive["item"].as_array().cloned().unwrap_or_default();
            items.push(item);
            adaptive["item"] = json!(items);
            qr["status"] = json!("in-progress");
        }
        _ => qr["status"] = json!("completed"),
    }
    Ok(qr)
}

/// Whether an item's `enableWhen` holds for the answers so far (no condition: enabled). `enableBehavior` `any`
/// or `all` (default all).
fn enabled(item: &Value, answers: &Value) -> bool {
    let Some(conditions) = item["enableWhen"].as_array().filter(|c| !c.is_empty()) else { return true };
    let results = conditions.iter().map(|c| condition_holds(c, answers));
    if item["enableBehavior"] == "any" {
        results.into_iter().any(|b| b)
    } else {
        results.into_iter().all(|b| b)
    }
}

fn condition_holds(condition: &Value, answers: &Value) -> bool {
    let question = condition["question"].as_str().unwrap_or_default();
    let given = answers_to(answers, question);
    let operator = condition["operator"].as_str().unwrap_or("=");
    if operator == "exists" {
        return condition["answerBoolean"].as_bool().unwrap_or(true) != given.is_empty();
    }
    let expected = condition.as_object().and_then(|o| {
        o.iter()
            .find(|(k, _)| k.starts_with("answer"))
            .map(|(k, v)| (k.trim_start_matches("answer").to_owned(), v.clone()))
    });
    let Some((kind, expected)) = expected else { return false };
    let matches = given.iter().any(|a| {
        let value = &a[format!("value{kind}")];
        match kind.as_str() {
            "Coding" => value["code"] == expected["code"] && value["system"] == expected["system"],
            _ => *value == expected,
        }
    });
    match operator {
        "=" => matches,
        "!=" => !given.is_empty() && !matches,
        _ => false,
    }
}

fn answers_to<'a>(items: &'a Value, link_id: &str) -> Vec<&'a Value> {
    let mut out = Vec::new();
    for item in items.as_array().into_iter().flatten() {
        if item["linkId"] == link_id {
            out.extend(item["answer"].as_array().into_iter().flatten());
        }
        out.extend(answers_to(&item["item"], link_id));
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enable_when_follows_the_answers() {
        let item =
            json!({"linkId": "weeks", "enableWhen": [{"question": "tried", "operator": "=", "answerBoolean": true}]});
        let yes = json!([{"linkId": "tried", "answer": [{"valueBoolean": true}]}]);
        let no = json!([{"linkId": "tried", "answer": [{"valueBoolean": false}]}]);
        assert!(enabled(&item, &yes));
        assert!(!enabled(&item, &no));
        assert!(!enabled(&item, &json!([])));
        let exists = json!({"enableWhen": [{"question": "tried", "operator": "exists", "answerBoolean": true}]});
        assert!(enabled(&exists, &no));
        assert!(enabled(&json!({"linkId": "free"}), &json!([])));
    }
}
