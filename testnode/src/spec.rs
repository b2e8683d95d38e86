//! Pure translations from a pod's spec to what the node runs: which binary an image maps to,
//! where a container's absolute paths land on this machine, `$(VAR)` references, field
//! references, restart decisions and their backoff. No IO here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

/// Images the node can "pull": each repository (any tag or digest) maps to a local binary.
#[derive(Debug, Clone, Default)]
pub struct Images(Vec<(String, PathBuf)>);

impl Images {
    /// Parses `REPOSITORY=PATH` pairs, as given on the command line.
    pub fn parse(pairs: &[String]) -> Result<Self, String> {
        pairs
            .iter()
            .map(|pair| match pair.split_once('=') {
                Some((repo, path)) if !repo.is_empty() && !path.is_empty() => {
                    Ok((repository(repo).to_owned(), PathBuf::from(path)))
                }
                _ => Err(format!("--image takes REPOSITORY=PATH, not {pair:?}")),
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// The binary that runs `image`, if the node maps its repository.
    pub fn binary(&self, image: &str) -> Option<&Path> {
        let repo = repository(image);
        self.0.iter().find(|(r, _)| r == repo).map(|(_, p)| p.as_path())
    }
}

/// An image reference without its digest and tag: `ghcr.io/a/b:1.0@sha256:…` → `ghcr.io/a/b`.
fn repository(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(name, _)| name);
    match image.rfind(':') {
        // A colon after the last slash starts the tag; one before it is a registry's port.
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    }
}

/// Where a container's absolute paths land: each volume mount's path maps to a directory under
/// the pod's own directory, since the pod's process shares this machine's file system.
#[derive(Debug, Clone, Default)]
pub struct Remap(Vec<(String, PathBuf)>);

impl Remap {
    /// A remap of `(mountPath, host directory)` pairs.
    pub fn new(mut mounts: Vec<(String, PathBuf)>) -> Self {
        for (path, _) in &mut mounts {
            while path.len() > 1 && path.ends_with('/') {
                path.pop();
            }
        }
        // The longest mount path wins, as the innermost mount would in a container.
        mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        Self(mounts)
    }

    /// Where `path` (absolute, in the container) is on this machine, when a mount holds it.
    pub fn path(&self, path: &str) -> Option<PathBuf> {
        self.0.iter().find_map(|(mount, host)| {
            let rest = path.strip_prefix(mount.as_str())?;
            if rest.is_empty() {
                Some(host.clone())
            } else {
                rest.strip_prefix('/').map(|rest| host.join(rest))
            }
        })
    }

    /// An argument or environment value with a mounted path in it remapped: the whole value
    /// (`/var/lib/kuant/kuant.db`) or the value of a `--flag=/path` pair.
    pub fn value(&self, value: &str) -> String {
        if let Some(host) = self.path(value) {
            return host.display().to_string();
        }
        if let Some((flag, path)) = value.split_once('=')
            && let Some(host) = self.path(path)
        {
            return format!("{flag}={}", host.display());
        }
        value.to_owned()
    }
}

/// Expands `$(NAME)` references to earlier variables, as the kubelet does in `command`, `args`
/// and `env` values: `$$(NAME)` is a literal `$(NAME)`, and an unknown name stays as written.
pub fn expand(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(close) = tail.strip_prefix("$(").and_then(|t| t.find(')')) {
            let name = &tail[2..2 + close];
            match env.get(name) {
                Some(value) => out.push_str(value),
                None => out.push_str(&tail[..close + 3]),
            }
            rest = &tail[close + 3..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The value of a `fieldRef` (the fields the downward API offers), or `None` for one it lacks.
pub fn field(pod: &Pod, path: &str, host_ip: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    if let Some(key) = path.strip_prefix("metadata.labels['").and_then(|k| k.strip_suffix("']")) {
        return meta.labels.as_ref()?.get(key).cloned();
    }
    if let Some(key) = path.strip_prefix("metadata.annotations['").and_then(|k| k.strip_suffix("']")) {
        return meta.annotations.as_ref()?.get(key).cloned();
    }
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec?.node_name.clone(),
        "spec.serviceAccountName" => spec?.service_account_name.clone(),
        "status.podIP" | "status.hostIP" => Some(host_ip.to_owned()),
        "status.podIPs" | "status.hostIPs" => Some(host_ip.to_owned()),
        _ => None,
    }
}

/// Whether a container that exited with `code` starts again under the pod's `restartPolicy`.
pub fn restarts(policy: Option<&str>, code: i32) -> bool {
    match policy.unwrap_or("Always") {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

/// How long to wait before the `restarts`-th restart: doubling from 1 s up to 20 s (a kubelet
/// starts at 10 s and caps at 5 min; tests cannot wait that long).
pub fn backoff(restarts: u32) -> Duration {
    Duration::from_secs(1u64 << restarts.min(5)).min(Duration::from_secs(20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_maps_by_repository_whatever_its_tag_or_digest() {
        let images = Images::parse(&["ghcr.io/kuant-dev/kuant=/bin/kuant".into()]).expect("parsed");
        for image in [
            "ghcr.io/kuant-dev/kuant",
            "ghcr.io/kuant-dev/kuant:0.1.0",
            "ghcr.io/kuant-dev/kuant:e2e@sha256:ab",
        ] {
            assert_eq!(images.binary(image), Some(Path::new("/bin/kuant")), "{image}");
        }
        assert_eq!(images.binary("ghcr.io/kuant-dev/other:1"), None);
        let with_port = Images::parse(&["localhost:5000/kuant=/k".into()]).expect("parsed");
        assert_eq!(with_port.binary("localhost:5000/kuant:dev"), Some(Path::new("/k")));
        assert!(Images::parse(&["no-equals".into()]).is_err());
    }

    #[test]
    fn mounted_paths_are_remapped_by_the_innermost_mount_and_others_are_left_alone() {
        let remap = Remap::new(vec![
            ("/var/lib/kuant".into(), "/pods/p/volumes/data".into()),
            ("/var/lib/kuant/cache/".into(), "/pods/p/volumes/cache".into()),
            ("/tmp".into(), "/pods/p/volumes/tmp".into()),
        ]);
        assert_eq!(remap.value("/var/lib/kuant/kuant.db"), "/pods/p/volumes/data/kuant.db");
        assert_eq!(remap.value("/var/lib/kuant/cache/x"), "/pods/p/volumes/cache/x");
        assert_eq!(remap.value("/tmp"), "/pods/p/volumes/tmp");
        assert_eq!(remap.value("--store=/var/lib/kuant/a.db"), "--store=/pods/p/volumes/data/a.db");
        assert_eq!(remap.value("/tmpfoo"), "/tmpfoo", "a prefix that is not a path component");
        assert_eq!(remap.value("0.0.0.0:8080"), "0.0.0.0:8080");
        assert_eq!(remap.value("key=value"), "key=value");
    }

    #[test]
    fn variable_references_expand_like_the_kubelets() {
        let env = BTreeMap::from([("A".to_owned(), "1".to_owned()), ("B".to_owned(), "two".to_owned())]);
        assert_eq!(expand("$(A)-$(B)", &env), "1-two");
        assert_eq!(expand("$$(A) $(C) $ x $(", &env), "$(A) $(C) $ x $(");
        assert_eq!(expand("plain", &env), "plain");
    }

    #[test]
    fn field_references_read_the_pod() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "kuant"}},
            "spec": {"nodeName": "n", "serviceAccountName": "sa", "containers": []}
        }))
        .expect("pod");
        assert_eq!(field(&pod, "metadata.name", "127.0.0.1").as_deref(), Some("p"));
        assert_eq!(field(&pod, "metadata.namespace", "127.0.0.1").as_deref(), Some("ns"));
        assert_eq!(field(&pod, "metadata.labels['app']", "127.0.0.1").as_deref(), Some("kuant"));
        assert_eq!(field(&pod, "spec.serviceAccountName", "127.0.0.1").as_deref(), Some("sa"));
        assert_eq!(field(&pod, "status.podIP", "127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(field(&pod, "spec.unknown", "127.0.0.1"), None);
    }

    #[test]
    fn restart_policy_and_backoff() {
        assert!(restarts(None, 0));
        assert!(restarts(Some("Always"), 0));
        assert!(restarts(Some("OnFailure"), 1));
        assert!(!restarts(Some("OnFailure"), 0));
        assert!(!restarts(Some("Never"), 1));
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(20));
    }
}
