//! Discovery documents: `GET /fhir/metadata`, the CapabilityStatement of everything the exchange serves over FHIR
//! (PAS, CDex, DTR), and `GET /.well-known/smart-configuration`, how partners get tokens (SMART Backend Services).
//! Both open, as discovery documents are.

use serde_json::{json, Value};

/// The FHIR version served.
pub const FHIR_VERSION: &str = "4.0.1";

/// The CapabilityStatement; `base` is the public base URL.
pub fn capability_statement(base: &str, payer_name: &str, date: &str) -> Value {
    let op = |name: &str, definition: &str| json!({ "name": name, "definition": definition });
    json!({
        "resourceType": "CapabilityStatement",
        "id": "payer-provider-exchange",
        "text": { "status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Payer-provider exchange: Da Vinci PAS, CDex, DTR and CRD for the payer.</p></div>" },
        "url": format!("{base}/fhir/metadata"),
        "name": "PayerProviderExchange",
        "title": format!("{payer_name} payer-provider exchange"),
        "status": "active",
        "date": date,
        "publisher": payer_name,
        "kind": "instance",
        "instantiates": [
            "http://hl7.org/fhir/us/davinci-pas/CapabilityStatement/intermediary",
            "http://hl7.org/fhir/us/davinci-cdex/CapabilityStatement/data-consumer",
            "http://hl7.org/fhir/us/davinci-dtr/CapabilityStatement/dtr-payer-service"
        ],
        "software": { "name": "payer-provider-exchange", "version": env!("CARGO_PKG_VERSION") },
        "implementation": { "description": "Payer-provider exchange", "url": format!("{base}/fhir") },
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json"],
        "rest": [{
            "mode": "server",
            "security": {
                "cors": false,
                "service": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR" }] }],
                "description": "Bearer tokens from the exchange's token endpoint (SMART Backend Services; see /.well-known/smart-configuration). CRD requests carry the CDS client's own JWT."
            },
            "resource": [
                {
                    "type": "Claim",
                    "operation": [
                        op("submit", "http://hl7.org/fhir/us/davinci-pas/OperationDefinition/Claim-submit"),
                        op("inquire", "http://hl7.org/fhir/us/davinci-pas/OperationDefinition/Claim-inquiry")
                    ]
                },
                {
                    "type": "Subscription",
                    "interaction": [{ "code": "create" }, { "code": "read" }, { "code": "update" }, { "code": "delete" }, { "code": "search-type" }]
                },
                {
                    "type": "Task",
                    "interaction": [{ "code": "create" }, { "code": "read" }, { "code": "search-type" }],
                    "searchParam": [{ "name": "status", "type": "token" }]
                },
                {
                    "type": "DocumentReference",
                    "interaction": [{ "code": "search-type" }],
                    "searchParam": [
                        { "name": "identifier", "type": "token" },
                        { "name": "patient", "type": "reference" },
                        { "name": "related", "type": "reference" },
                        { "name": "date", "type": "date" }
                    ]
                },
                {
                    "type": "Questionnaire",
                    "operation": [
                        op("questionnaire-package", "http://hl7.org/fhir/us/davinci-dtr/OperationDefinition/questionnaire-package"),
                        op("next-question", "http://hl7.org/fhir/uv/sdc/OperationDefinition/Questionnaire-next-question"),
                        op("log-questionnaire-errors", "http://hl7.org/fhir/us/davinci-dtr/OperationDefinition/log-questionnaire-errors")
                    ]
                }
            ],
            "operation": [
                op("submit-attachment", "http://hl7.org/fhir/us/davinci-cdex/OperationDefinition/submit-attachment")
            ]
        }]
    })
}

/// The SMART configuration: the token endpoint and what it accepts.
pub fn smart_configuration(base: &str) -> Value {
    json!({
        "issuer": base,
        "token_endpoint": format!("{base}/auth/token"),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES384", "RS384"],
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": ["eligibility", "prior-auth", "attachments", "dtr", "reviewer", "admin"],
        "capabilities": ["client-confidential-asymmetric"]
    })
}
