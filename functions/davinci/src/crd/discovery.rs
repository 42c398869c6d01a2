//! `GET /cds-services`: the CRD services, one per hook, with the prefetch templates they read (Coverage with its
//! payor Organization, the orders a dispatch or an encounter names) and the CRD extensions: the version served and
//! the configuration options a client may set per call.

use serde_json::{json, Value};

use super::request::{Hook, HOOKS};

/// The CRD version the services implement.
pub const CRD_VERSION: &str = "2.2";

fn prefetch(hook: Hook) -> Value {
    let mut p = json!({
        "patient": "Patient/{{context.patientId}}",
        "coverage": "Coverage?patient={{context.patientId}}&status=active&_include=Coverage:payor",
    });
    match hook {
        Hook::OrderDispatch => {
            p["serviceRequests"] = json!("ServiceRequest?_id={{context.dispatchedOrders.ofType(ServiceRequest).id}}");
            p["deviceRequests"] = json!("DeviceRequest?_id={{context.dispatchedOrders.ofType(DeviceRequest).id}}");
            p["medicationRequests"] =
                json!("MedicationRequest?_id={{context.dispatchedOrders.ofType(MedicationRequest).id}}");
        }
        Hook::EncounterStart | Hook::EncounterDischarge => {
            p["encounter"] = json!("Encounter/{{context.encounterId}}");
        }
        _ => {}
    }
    p
}

fn description(hook: Hook) -> &'static str {
    match hook {
        Hook::OrderSign => "Coverage, prior-authorization and documentation requirements for orders being signed",
        Hook::OrderSelect => "Coverage, prior-authorization and documentation requirements for orders being chosen",
        Hook::OrderDispatch => "Coverage and prior-authorization requirements for orders sent to a performer",
        Hook::AppointmentBook => "Coverage and prior-authorization requirements for appointments being booked",
        Hook::EncounterStart => "Coverage and prior-authorization requirements for an admission",
        Hook::EncounterDischarge => "Coverage and prior-authorization requirements at discharge",
    }
}

/// The discovery document.
pub fn services(payer_name: &str) -> Value {
    let services: Vec<Value> = HOOKS
        .iter()
        .map(|&hook| {
            json!({
                "hook": hook.name(),
                "id": hook.service_id(),
                "title": format!("{payer_name} coverage requirements ({})", hook.name()),
                "description": description(hook),
                "prefetch": prefetch(hook),
                "extension": {
                    "davinci-crd.version": [CRD_VERSION],
                    "davinci-crd.configuration-options": [
                        {
                            "code": "coverage-info", "type": "boolean", "name": "Coverage Information",
                            "description": "Whether the service is covered, needs prior authorization, and what documentation it needs (coverage-information extension on each order)",
                            "default": true
                        },
                        {
                            "code": "max-cards", "type": "integer", "name": "Maximum cards",
                            "description": "The most cards returned; coverage cards come first",
                            "default": 10
                        }
                    ]
                }
            })
        })
        .collect();
    json!({ "services": services })
}
