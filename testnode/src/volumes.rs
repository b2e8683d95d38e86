//! A pod's volumes as directories under the pod's own directory: emptyDir, ConfigMap, Secret,
//! downward API, and projected volumes, whose service-account token comes from the TokenRequest
//! API bound to the pod (so the pod's process acts with its own ServiceAccount's rights).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount, Volume,
};
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};

use crate::spec::{self, Remap};

/// Why the pod's volumes cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// Something the spec names is missing or not supported; the container cannot be created
    /// (`CreateContainerConfigError`) until that changes.
    #[error("{0}")]
    Config(String),
    /// The API server did not answer.
    #[error("{what}: {source}")]
    Api {
        /// What the call was for.
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
}

/// Files to write into one volume directory: relative path → content.
type Files = BTreeMap<String, Vec<u8>>;

/// Picks `items` out of a map of keys (all keys without items), as ConfigMap and Secret volumes do.
fn select(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    what: &str,
) -> Result<Files, Problem> {
    match items {
        None => Ok(data),
        Some(items) => items
            .iter()
            .map(|item| match data.get(&item.key) {
                Some(value) => Ok((item.path.clone(), value.clone())),
                None => Err(Problem::Config(format!("{what} has no key {:?}", item.key))),
            })
            .collect(),
    }
}

async fn config_map(
    client: &Client,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, Problem> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|source| Problem::Api { what: format!("reading ConfigMap {name}"), source })?;
    match cm {
        Some(cm) => {
            Ok(Some(cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect()))
        }
        None if optional => Ok(None),
        None => Err(Problem::Config(format!("configmap \"{name}\" not found"))),
    }
}

async fn secret(
    client: &Client,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, Problem> {
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|source| Problem::Api { what: format!("reading Secret {name}"), source })?;
    match secret {
        Some(s) => {
            Ok(Some(s.data.unwrap_or_default().into_iter().map(|(k, ByteString(v))| (k, v)).collect()))
        }
        None if optional => Ok(None),
        None => Err(Problem::Config(format!("secret \"{name}\" not found"))),
    }
}

fn downward(pod: &Pod, items: &[DownwardAPIVolumeFile]) -> Result<Files, Problem> {
    items
        .iter()
        .map(|item| {
            let field = item.field_ref.as_ref().map(|f| f.field_path.as_str()).unwrap_or_default();
            spec::field(pod, field, crate::HOST_IP)
                .map(|value| (item.path.clone(), value.into_bytes()))
                .ok_or_else(|| {
                    Problem::Config(format!("the test node cannot give the downward API field {field:?}"))
                })
        })
        .collect()
}

/// A token for the pod's ServiceAccount, bound to the pod, from the TokenRequest API.
async fn token(
    client: &Client,
    pod: &Pod,
    audience: Option<String>,
    seconds: Option<i64>,
) -> Result<Vec<u8>, Problem> {
    let ns = pod.namespace().unwrap_or_default();
    let account =
        pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.into_iter().collect(),
            expiration_seconds: Some(seconds.unwrap_or(3607)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let answer = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .map_err(|source| Problem::Api {
            what: format!("requesting a token for ServiceAccount {account}"),
            source,
        })?;
    answer.status.map(|s| s.token.into_bytes()).ok_or_else(|| {
        Problem::Config(format!("the API server issued no token for ServiceAccount {account}"))
    })
}

/// The files of one volume, or `None` for an emptyDir.
async fn contents(client: &Client, pod: &Pod, volume: &Volume) -> Result<Option<Files>, Problem> {
    let ns = pod.namespace().unwrap_or_default();
    if volume.empty_dir.is_some() {
        return Ok(None);
    }
    if let Some(source) = &volume.config_map {
        let what = format!("configmap \"{}\"", source.name);
        let data = config_map(client, &ns, &source.name, source.optional == Some(true)).await?;
        return Ok(Some(
            data.map(|d| select(d, source.items.as_ref(), &what)).transpose()?.unwrap_or_default(),
        ));
    }
    if let Some(source) = &volume.secret {
        let name = source.secret_name.clone().unwrap_or_default();
        let data = secret(client, &ns, &name, source.optional == Some(true)).await?;
        let what = format!("secret \"{name}\"");
        return Ok(Some(
            data.map(|d| select(d, source.items.as_ref(), &what)).transpose()?.unwrap_or_default(),
        ));
    }
    if let Some(source) = &volume.downward_api {
        return downward(pod, source.items.as_deref().unwrap_or_default()).map(Some);
    }
    if let Some(projected) = &volume.projected {
        let mut files = Files::new();
        for source in projected.sources.iter().flatten() {
            if let Some(t) = &source.service_account_token {
                files.insert(
                    t.path.clone(),
                    token(client, pod, t.audience.clone(), t.expiration_seconds).await?,
                );
            }
            if let Some(c) = &source.config_map {
                let what = format!("configmap \"{}\"", c.name);
                if let Some(d) = config_map(client, &ns, &c.name, c.optional == Some(true)).await? {
                    files.extend(select(d, c.items.as_ref(), &what)?);
                }
            }
            if let Some(s) = &source.secret {
                let what = format!("secret \"{}\"", s.name);
                if let Some(d) = secret(client, &ns, &s.name, s.optional == Some(true)).await? {
                    files.extend(select(d, s.items.as_ref(), &what)?);
                }
            }
            if let Some(d) = &source.downward_api {
                files.extend(downward(pod, d.items.as_deref().unwrap_or_default())?);
            }
        }
        return Ok(Some(files));
    }
    Err(Problem::Config(format!(
        "volume {:?}: the test node supports emptyDir, configMap, secret, downwardAPI and projected volumes only",
        volume.name
    )))
}

fn write(dir: &Path, files: &Files) -> Result<(), Problem> {
    let io = |path: &Path, e: std::io::Error| Problem::Config(format!("writing {}: {e}", path.display()));
    for (relative, content) in files {
        if relative.starts_with('/') || relative.split('/').any(|part| part == "..") {
            return Err(Problem::Config(format!("volume item path {relative:?} leaves its volume")));
        }
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        std::fs::write(&path, content).map_err(|e| io(&path, e))?;
    }
    Ok(())
}

/// Makes every volume of the pod under `pod_dir/volumes/` and returns where the container's
/// mounts land. The termination message path (default `/dev/termination-log`) maps to
/// `termination_log`.
pub async fn prepare(
    client: &Client,
    pod: &Pod,
    container: &Container,
    pod_dir: &Path,
    termination_log: &Path,
) -> Result<Remap, Problem> {
    let mut hosts = BTreeMap::new();
    for volume in pod.spec.as_ref().and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
        let dir = pod_dir.join("volumes").join(&volume.name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Problem::Config(format!("making {}: {e}", dir.display())))?;
        if let Some(files) = contents(client, pod, volume).await? {
            write(&dir, &files)?;
        }
        hosts.insert(volume.name.clone(), dir);
    }
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let host = hosts
            .get(&mount.name)
            .ok_or_else(|| Problem::Config(format!("volumeMount {:?} names no volume", mount.name)))?;
        let host: PathBuf = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => host.join(sub),
            None => host.clone(),
        };
        mounts.push((mount.mount_path.clone(), host));
    }
    let message_path =
        container.termination_message_path.clone().unwrap_or_else(|| "/dev/termination-log".into());
    mounts.push((message_path, termination_log.to_path_buf()));
    Ok(Remap::new(mounts))
}
