//! A mocked Kubernetes API server for tests: a test states the requests its code must make, in
//! order (method, path, a check of the query and JSON body), and the answer of each, as the API
//! server would give it. [`play`] fails the test on a request out of order, and the test fails
//! when one is never made.

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

/// The test's side of the mocked connection.
pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
/// A check of a request's query string and JSON body (`null` when it has none).
pub type Check = Box<dyn FnOnce(&str, &Value) + Send>;

/// A request the code must make next, and its answer.
pub struct Expect {
    /// Its method.
    pub method: Method,
    /// Its path, without the query.
    pub path: String,
    /// A check of its query and body.
    pub check: Check,
    /// The answer: a status and a body; a `null` body answers with the request's own body (as
    /// a create or an apply echoes the object).
    pub answer: (StatusCode, Value),
}

/// Expects `method path`, answering `answer`.
pub fn expect(method: Method, path: impl Into<String>, answer: (StatusCode, Value)) -> Expect {
    Expect { method, path: path.into(), check: Box::new(|_, _| {}), answer }
}

impl Expect {
    /// Also checks the request's query and body.
    pub fn checking(mut self, check: impl FnOnce(&str, &Value) + Send + 'static) -> Self {
        self.check = Box::new(check);
        self
    }
}

/// 200 with `value`.
pub fn ok(value: impl serde::Serialize) -> (StatusCode, Value) {
    (StatusCode::OK, serde_json::to_value(value).expect("an answer that encodes as JSON"))
}

/// The API server's `Status` failure `reason` with HTTP `code`.
pub fn status(code: u16, reason: &str, message: &str) -> (StatusCode, Value) {
    (
        StatusCode::from_u16(code).expect("an HTTP status"),
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
               "code": code, "message": message}),
    )
}

/// 404 for `kind` `name`.
pub fn not_found(kind: &str, name: &str) -> (StatusCode, Value) {
    status(404, "NotFound", &format!("{kind} \"{name}\" not found"))
}

/// A client whose requests go to the returned handle, `namespace` its default.
pub fn client(namespace: &str) -> (kube::Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, namespace), handle)
}

/// Answers the requests on `handle` as `script` says, in order; panics on one out of order or
/// when the code stops before the script's end.
pub async fn play(mut handle: Handle, script: Vec<Expect>) {
    for step in script {
        let (request, respond) = handle.next_request().await.expect("the code made no further request");
        let (parts, body) = request.into_parts();
        let body = body.collect_bytes().await.expect("a request body");
        let body: Value =
            if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).expect("a JSON body") };
        assert_eq!((&parts.method, parts.uri.path()), (&step.method, step.path.as_str()), "request order");
        (step.check)(parts.uri.query().unwrap_or_default(), &body);
        let (code, answer) = step.answer;
        let answer = if answer.is_null() { body } else { answer };
        let response = Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&answer).expect("JSON")))
            .expect("a response");
        respond.send_response(response);
    }
}
