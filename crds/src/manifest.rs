//! Reading a manifest the way the API server would: YAML → apiVersion/kind → defaults →
//! schema (types, bounds, unknown fields) → CEL rules → the Rust type. Every problem names its
//! field, so a broken manifest is refused with the same words locally and in a cluster.

use std::fmt;

use kube::core::cel::Validator;
use kube::{CustomResourceExt, Resource};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::common::OBJECT_NAME_PATTERN;
pub use crate::schema_check::Problem;

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    /// Where the manifest came from (a file name, `stdin`).
    pub source_name: String,
    /// Every problem found, each naming its field.
    pub problems: Vec<Problem>,
}

impl ManifestError {
    fn one(source_name: &str, path: &str, message: impl Into<String>) -> Self {
        Self { source_name: source_name.to_owned(), problems: vec![Problem::new(path, message)] }
    }
}

impl fmt::Display for ManifestError {
    /// One line: `file: field: problem; field: problem`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.source_name)?;
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            if p.path.is_empty() {
                f.write_str(&p.message)?;
            } else {
                write!(f, "{}: {}", p.path, p.message)?;
            }
        }
        Ok(())
    }
}

/// Reads one manifest of kind `K` from YAML (or JSON) text, checking it as the API server would,
/// and returns it with the schema defaults applied.
pub fn parse<K>(text: &str, source_name: &str) -> Result<K, ManifestError>
where
    K: Resource<DynamicType = ()> + CustomResourceExt + DeserializeOwned,
{
    let value = read_yaml(text, source_name)?;
    let value = check_value::<K>(value, source_name)?;
    let mut track = serde_path_to_error::Track::new();
    let deserializer = serde_path_to_error::Deserializer::new(&value, &mut track);
    K::deserialize(deserializer).map_err(|e| {
        let path = track.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ManifestError::one(source_name, &path, e.to_string())
    })
}

/// Checks an already-parsed object of kind `K` (apiVersion, kind, name, schema, CEL) and returns
/// it with the schema defaults applied.
pub fn check_value<K>(value: Value, source_name: &str) -> Result<Value, ManifestError>
where
    K: Resource<DynamicType = ()> + CustomResourceExt,
{
    let err = |problems| ManifestError { source_name: source_name.to_owned(), problems };
    let Some(object) = value.as_object() else {
        return Err(ManifestError::one(
            source_name,
            "",
            "expected a YAML mapping with apiVersion, kind, metadata and spec",
        ));
    };
    let (api_version, kind) = (K::api_version(&()), K::kind(&()));
    let mut problems = Vec::new();
    match object.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v == api_version => {}
        Some(v) => problems
            .push(Problem::new("apiVersion", format!("Unsupported value: {v:?}: expected {api_version:?}"))),
        None => {
            problems.push(Problem::new("apiVersion", format!("Required value: expected {api_version:?}")))
        }
    }
    match object.get("kind").and_then(Value::as_str) {
        Some(k) if k == kind => {}
        Some(k) => {
            problems.push(Problem::new("kind", format!("Unsupported value: {k:?}: expected {kind:?}")))
        }
        None => problems.push(Problem::new("kind", format!("Required value: expected {kind:?}"))),
    }
    if !problems.is_empty() {
        return Err(err(problems));
    }
    check_metadata(object.get("metadata"), &mut problems);

    let schema = openapi_schema::<K>().map_err(|e| ManifestError::one(source_name, "", e))?;
    let defaulted = kube::core::cel::apply_defaults(&schema, &value);
    // The API server checks apiVersion, kind and metadata itself; the CRD schema covers the rest.
    let mut body = defaulted.clone();
    if let Some(body) = body.as_object_mut() {
        for key in ["apiVersion", "kind", "metadata"] {
            body.remove(key);
        }
    }
    crate::schema_check::check(&schema, &body, "", &mut problems);
    if !problems.is_empty() {
        return Err(err(problems));
    }
    // CEL rules assume a well-typed object, so they run only once the structure is right.
    if let Err(errors) = Validator::new().validate(&schema, &defaulted, None) {
        let problems = errors.into_vec().into_iter().map(|e| Problem::new(e.field_path, e.message)).collect();
        return Err(err(problems));
    }
    Ok(defaulted)
}

/// The `openAPIV3Schema` of `K`'s CRD as JSON.
pub fn openapi_schema<K: CustomResourceExt>() -> Result<Value, String> {
    let crd = K::crd();
    let schema = crd
        .spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .ok_or_else(|| format!("the {} CRD has no openAPIV3Schema", crd.spec.names.kind))?;
    serde_json::to_value(schema)
        .map_err(|e| format!("cannot serialize the {} schema: {e}", crd.spec.names.kind))
}

fn read_yaml(text: &str, source_name: &str) -> Result<Value, ManifestError> {
    if text.trim().is_empty() {
        return Err(ManifestError::one(source_name, "", "the manifest is empty"));
    }
    match serde_yaml::from_str::<Value>(text) {
        Ok(Value::Null) => Err(ManifestError::one(source_name, "", "the manifest is empty")),
        Ok(value) => Ok(value),
        Err(e) if e.to_string().contains("more than one document") => Err(ManifestError::one(
            source_name,
            "",
            "expected one YAML document, found several (split them into one file each)",
        )),
        Err(e) => Err(ManifestError::one(source_name, "", format!("not valid YAML: {e}"))),
    }
}

fn check_metadata(metadata: Option<&Value>, problems: &mut Vec<Problem>) {
    let Some(metadata) = metadata.and_then(Value::as_object) else {
        problems.push(Problem::new("metadata.name", "Required value: name is required"));
        return;
    };
    let name_re = regex::Regex::new(OBJECT_NAME_PATTERN).ok();
    for key in ["name", "namespace"] {
        match metadata.get(key) {
            None if key == "namespace" => {}
            None => problems.push(Problem::new("metadata.name", "Required value: name is required")),
            Some(Value::String(s)) if s.len() <= 253 && name_re.as_ref().is_some_and(|re| re.is_match(s)) => {}
            Some(v) => problems.push(Problem::new(
                format!("metadata.{key}"),
                format!(
                    "Invalid value: {v}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                ),
            )),
        }
    }
}
