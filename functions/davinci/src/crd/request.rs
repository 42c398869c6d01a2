//! A CDS Hooks request to one of the CRD services, checked: the hook the service answers, the context fields that
//! hook requires, `fhirAuthorization` only with a `fhirServer` (cds-r-1), prefetch as an object, and the CRD
//! configuration the client chose (`davinci-crd.configuration`). Refusals name the element, never its value.

use exchange_core::fhir::FhirError;
use serde_json::{Map, Value};

/// The hooks the CRD services answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Orders about to be signed.
    OrderSign,
    /// Orders being chosen.
    OrderSelect,
    /// Signed orders sent to a performer.
    OrderDispatch,
    /// Appointments being booked.
    AppointmentBook,
    /// An encounter starting (admission).
    EncounterStart,
    /// An encounter ending (discharge).
    EncounterDischarge,
}

/// Every hook, in discovery order.
pub const HOOKS: [Hook; 6] = [
    Hook::OrderSign,
    Hook::OrderSelect,
    Hook::OrderDispatch,
    Hook::AppointmentBook,
    Hook::EncounterStart,
    Hook::EncounterDischarge,
];

impl Hook {
    /// The hook's name (`order-sign`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Hook::OrderSign => "order-sign",
            Hook::OrderSelect => "order-select",
            Hook::OrderDispatch => "order-dispatch",
            Hook::AppointmentBook => "appointment-book",
            Hook::EncounterStart => "encounter-start",
            Hook::EncounterDischarge => "encounter-discharge",
        }
    }

    /// The service id in discovery (`order-sign-crd`, ...).
    pub fn service_id(self) -> &'static str {
        match self {
            Hook::OrderSign => "order-sign-crd",
            Hook::OrderSelect => "order-select-crd",
            Hook::OrderDispatch => "order-dispatch-crd",
            Hook::AppointmentBook => "appointment-book-crd",
            Hook::EncounterStart => "encounter-start-crd",
            Hook::EncounterDischarge => "encounter-discharge-crd",
        }
    }

    /// The hook a service id names.
    pub fn for_service(id: &str) -> Option<Hook> {
        HOOKS.into_iter().find(|h| h.service_id() == id)
    }

    /// Context fields the hook requires, with whether each is a string (`true`) or structured.
    fn required_context(self) -> &'static [(&'static str, Kind)] {
        match self {
            Hook::OrderSign => &[("userId", Kind::Text), ("patientId", Kind::Text), ("draftOrders", Kind::Bundle)],
            Hook::OrderSelect => &[
                ("userId", Kind::Text),
                ("patientId", Kind::Text),
                ("selections", Kind::List),
                ("draftOrders", Kind::Bundle),
            ],
            Hook::OrderDispatch => {
                &[("patientId", Kind::Text), ("dispatchedOrders", Kind::List), ("performer", Kind::Text)]
            }
            Hook::AppointmentBook => {
                &[("userId", Kind::Text), ("patientId", Kind::Text), ("appointments", Kind::Bundle)]
            }
            Hook::EncounterStart | Hook::EncounterDischarge => {
                &[("userId", Kind::Text), ("patientId", Kind::Text), ("encounterId", Kind::Text)]
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    List,
    Bundle,
}

/// The FHIR access the client lent the service (`fhirAuthorization`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirAuthorization {
    /// Bearer token for the EHR's FHIR server.
    pub access_token: String,
}

/// The CRD configuration options the client chose (discovery's `davinci-crd.configuration-options`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Configuration {
    /// `coverage-info`: return coverage-information system actions.
    pub coverage_info: bool,
    /// `max-cards`.
    pub max_cards: usize,
}

impl Default for Configuration {
    fn default() -> Self {
        Configuration { coverage_info: true, max_cards: 10 }
    }
}

/// A checked hook request.
#[derive(Debug, Clone)]
pub struct HookRequest {
    /// The hook.
    pub hook: Hook,
    /// The client's id for this invocation.
    pub hook_instance: String,
    /// The EHR's FHIR base URL.
    pub fhir_server: Option<String>,
    /// Access to it.
    pub fhir_authorization: Option<FhirAuthorization>,
    /// The hook context.
    pub context: Map<String, Value>,
    /// Prefetched data by key (`null` values dropped: CDS Hooks sends `null` for what it could not fetch).
    pub prefetch: Map<String, Value>,
    /// The configuration.
    pub configuration: Configuration,
}

fn invalid(diagnostics: impl Into<String>, expression: &str) -> FhirError {
    FhirError::invalid("invalid", diagnostics, Some(expression))
}

/// Parses and checks a request body for the service of `hook`.
pub fn parse(hook: Hook, body: &[u8]) -> Result<HookRequest, FhirError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|_| FhirError::invalid("structure", "the body is not JSON", None))?;
    let Value::Object(mut request) = value else {
        return Err(FhirError::invalid("structure", "a CDS Hooks request is a JSON object", None));
    };
    match request.get("hook").and_then(Value::as_str) {
        Some(h) if h == hook.name() => {}
        Some(_) => {
            return Err(invalid(format!("this service answers the {} hook", hook.name()), "hook"));
        }
        None => return Err(FhirError::invalid("required", "hook is required", Some("hook"))),
    }
    let hook_instance = match request.get("hookInstance").and_then(Value::as_str) {
        Some(id) if !id.is_empty() && id.len() <= 128 => id.to_owned(),
        _ => return Err(FhirError::invalid("required", "hookInstance (a UUID) is required", Some("hookInstance"))),
    };
    let fhir_server = match request.get("fhirServer") {
        None | Some(Value::Null) => None,
        Some(Value::String(url)) if url.starts_with("http://") || url.starts_with("https://") => {
            Some(url.trim_end_matches('/').to_owned())
        }
        Some(_) => return Err(invalid("fhirServer must be an absolute http(s) URL", "fhirServer")),
    };
    let fhir_authorization = match request.get("fhirAuthorization") {
        None | Some(Value::Null) => None,
        Some(auth) => {
            let Some(token) = auth.get("access_token").and_then(Value::as_str).filter(|t| !t.is_empty()) else {
                return Err(invalid("fhirAuthorization needs access_token", "fhirAuthorization.access_token"));
            };
            if fhir_server.is_none() {
                return Err(invalid("fhirAuthorization is given without fhirServer (cds-r-1)", "fhirServer"));
            }
            Some(FhirAuthorization { access_token: token.to_owned() })
        }
    };
    let Some(Value::Object(context)) = request.remove("context") else {
        return Err(FhirError::invalid("required", "context is required", Some("context")));
    };
    for (field, kind) in hook.required_context() {
        let ok = match (kind, context.get(*field)) {
            (Kind::Text, Some(Value::String(s))) => !s.is_empty(),
            (Kind::List, Some(Value::Array(_))) => true,
            (Kind::Bundle, Some(b)) => b["resourceType"] == "Bundle" && b["entry"].is_array(),
            _ => false,
        };
        if !ok {
            let what = match kind {
                Kind::Text => "a string",
                Kind::List => "an array",
                Kind::Bundle => "a Bundle with entries",
            };
            return Err(FhirError::invalid(
                "required",
                format!("the {} context requires {field} ({what})", hook.name()),
                Some(&format!("context.{field}")),
            ));
        }
    }
    let prefetch = match request.remove("prefetch") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.into_iter().filter(|(_, v)| !v.is_null()).collect(),
        Some(_) => return Err(invalid("prefetch must be an object", "prefetch")),
    };
    let configuration = configuration(request.get("extension"))?;
    Ok(HookRequest { hook, hook_instance, fhir_server, fhir_authorization, context, prefetch, configuration })
}

fn configuration(extension: Option<&Value>) -> Result<Configuration, FhirError> {
    let mut config = Configuration::default();
    let Some(chosen) = extension.and_then(|e| e.get("davinci-crd.configuration")) else { return Ok(config) };
    let Value::Object(chosen) = chosen else {
        return Err(invalid("davinci-crd.configuration must be an object", "extension.davinci-crd.configuration"));
    };
    for (code, value) in chosen {
        match (code.as_str(), value) {
            ("coverage-info", Value::Bool(b)) => config.coverage_info = *b,
            ("max-cards", Value::Number(n)) => {
                config.max_cards = n.as_u64().and_then(|n| usize::try_from(n).ok()).unwrap_or(usize::MAX)
            }
            ("coverage-info" | "max-cards", _) => {
                return Err(invalid(
                    format!("configuration option {code} has the wrong type"),
                    "extension.davinci-crd.configuration",
                ))
            }
            // Options this service does not act on (cost, claim, ...) are accepted and ignored, as CRD allows.
            _ => {}
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sign_request() -> Value {
        json!({
            "hook": "order-sign", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": {"userId": "Practitioner/1", "patientId": "p1",
                        "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": []}},
            "extension": {"davinci-crd.configuration": {"coverage-info": false, "max-cards": 2, "cost": true}}
        })
    }

    #[test]
    fn a_valid_request_and_its_configuration() {
        let r = parse(Hook::OrderSign, sign_request().to_string().as_bytes()).expect("valid");
        assert_eq!(r.configuration, Configuration { coverage_info: false, max_cards: 2 });
        assert!(r.prefetch.is_empty());
    }

    #[test]
    fn refusals_name_the_element() {
        let expr = |v: Value, hook: Hook| match parse(hook, v.to_string().as_bytes()) {
            Err(FhirError::Invalid(issues)) => issues[0].expression.clone().unwrap_or_default(),
            other => panic!("expected 400, got {other:?}"),
        };
        assert_eq!(expr(sign_request(), Hook::OrderSelect), "hook");
        let mut r = sign_request();
        r["context"].as_object_mut().expect("ctx").remove("draftOrders");
        assert_eq!(expr(r, Hook::OrderSign), "context.draftOrders");
        let mut r = sign_request();
        r["fhirAuthorization"] = json!({"access_token": "t", "token_type": "Bearer"});
        assert_eq!(expr(r, Hook::OrderSign), "fhirServer");
        let mut r = sign_request();
        r.as_object_mut().expect("obj").remove("hookInstance");
        assert_eq!(expr(r, Hook::OrderSign), "hookInstance");
        let mut r = sign_request();
        r["extension"]["davinci-crd.configuration"]["max-cards"] = json!("many");
        assert_eq!(expr(r, Hook::OrderSign), "extension.davinci-crd.configuration");
        assert!(matches!(parse(Hook::OrderSign, b"[1]"), Err(FhirError::Invalid(_))));
        assert!(matches!(parse(Hook::OrderSign, b"not json"), Err(FhirError::Invalid(_))));
    }
}
