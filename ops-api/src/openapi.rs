//! `/openapi.json`: an OpenAPI 3.1 document built from [`crate::routes::endpoints`], the table
//! the router is built from. Schemas come from the Rust types the handlers serialize (schemars),
//! the Backtest body from the CRD's own schema; so the document cannot drift from the code.

use std::sync::OnceLock;

use axum::body::Bytes;
use axum::response::Response;
use schemars::generate::{Contract, SchemaSettings};
use serde_json::{Map, Value, json};

use crate::cache::json_bytes;
use crate::error::ErrorBody;
use crate::live::Wire;
use crate::routes::{Access, Answer, Endpoint, endpoints};

/// The document for `endpoints`.
pub fn document(endpoints: &[Endpoint]) -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    settings.meta_schema = None;
    settings.contract = Contract::Serialize;
    let mut generator = settings.into_generator();
    let error = generator.subschema_for::<ErrorBody<'static>>().to_value();
    let message = generator.subschema_for::<Wire<'static>>().to_value();
    let error_content = json!({"application/json": {"schema": error}});

    let mut paths = Map::new();
    for e in endpoints {
        let mut parameters: Vec<Value> = e
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        parameters.extend(e.query.iter().map(|q| {
            let mut p = json!({"name": q.name, "in": "query", "required": q.required,
                               "description": q.description, "schema": {"type": q.kind}});
            if !q.example.is_empty() {
                p["example"] = json!(q.example);
            }
            p
        }));
        let mut responses = Map::new();
        match e.answer {
            Answer::Json(status, schema) => {
                let schema = schema(&mut generator).to_value();
                responses.insert(
                    status.to_string(),
                    json!({"description": "OK", "content": {"application/json": {"schema": schema}}}),
                );
            }
            Answer::Object(status, what) => {
                responses.insert(
                    status.to_string(),
                    json!({"description": what, "content": {"application/json": {"schema": {"type": "object"}}}}),
                );
            }
            Answer::Text(what) => {
                responses.insert(
                    "200".into(),
                    json!({"description": what, "content": {"text/plain": {"schema": {"type": "string"}}}}),
                );
            }
            Answer::Socket => {
                responses.insert(
                    "101".into(),
                    json!({"description": "A WebSocket: authenticate with an Authorization header or a first \
                        message {\"type\": \"auth\", \"token\": \"…\"}; then every message is a LiveMessage \
                        (x-message). Closes with 4401 (no or a wrong token), 4403 (role), 4001 (too slow).",
                        "x-message": message.clone()}),
                );
            }
        }
        if e.access != Access::Public {
            responses.insert("4XX".into(), json!({"description": "Refused; `details` names the fields at fault.", "content": error_content.clone()}));
            responses.insert("5XX".into(), json!({"description": "The store or the API server failed.", "content": error_content.clone()}));
        }
        let mut operation = json!({
            "operationId": operation_id(e),
            "summary": e.summary,
            "parameters": parameters,
            "responses": responses,
        });
        match e.access {
            Access::Public => operation["security"] = json!([]),
            Access::Token(role) | Access::Socket(role) => {
                operation["x-kuant-role"] = json!(role.as_str());
                operation["description"] = json!(format!("Needs a `{role}` token or above."));
            }
        }
        if let Some(body) = e.body {
            let schema = body(&mut generator).to_value();
            operation["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": schema}}});
        }
        let item = paths.entry(e.path).or_insert_with(|| json!({}));
        item[e.method.as_str().to_ascii_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "kuant ops API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Backtests, trading sessions, market data, agent events and LLM costs of kuant. \
                Lists take `limit` and `cursor` and answer `{\"items\": [...], \"next_cursor\": ...}`; \
                unknown query parameters are refused.",
        },
        "paths": paths,
        "components": {
            "schemas": generator.take_definitions(true),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "A token from the server's token file; its role (viewer, trader, admin) decides what it may do."}},
        },
        "security": [{"bearer": []}],
    })
}

fn operation_id(e: &Endpoint) -> String {
    let mut id = e.method.as_str().to_ascii_lowercase();
    for part in e.path.split('/').filter(|p| !p.is_empty() && *p != "api" && *p != "v1") {
        let part = part.trim_start_matches('{').trim_end_matches('}');
        let mut chars = part.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_');
        if let Some(first) = chars.next() {
            id.push(first.to_ascii_uppercase());
            id.extend(chars);
        }
    }
    id
}

/// `GET /openapi.json`.
pub async fn serve() -> Response {
    static DOCUMENT: OnceLock<Bytes> = OnceLock::new();
    let bytes = DOCUMENT.get_or_init(|| Bytes::from(document(&endpoints()).to_string()));
    json_bytes(bytes.clone())
}
