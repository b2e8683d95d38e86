//! One pod's life on the node: its volumes and environment, its process (started again as its
//! restart policy says), its probes, the status a kubelet would report, and its end when it is
//! deleted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, ResourceExt};
use tokio::sync::watch;

use crate::probe::Prober;
use crate::spec::{self, Remap};
use crate::status::{self, State, Terminated, View};
use crate::volumes::{self, Problem};
use crate::{Node, now};

/// The service account's mount path, where kube clients look for their token and CA.
const SERVICE_ACCOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The kubelet keeps at most 4 KiB of a termination message.
const MESSAGE_LIMIT: usize = 4096;
/// How often a container that cannot start yet is tried again.
const RETRY: Duration = Duration::from_secs(2);

/// What runs: the program, its arguments and environment, with paths remapped.
struct Launch {
    program: PathBuf,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    workdir: PathBuf,
    ports: Vec<u16>,
}

/// The pod being run, and the status the node last reported for it.
struct Run {
    node: Arc<Node>,
    pods: Api<Pod>,
    pod: Pod,
    container: Container,
    dir: PathBuf,
    view: View,
}

impl Run {
    /// Writes the status; a pod that is gone is no error.
    async fn report(&mut self) {
        self.view.now = now();
        let body = serde_json::json!({ "status": status::pod_status(&self.view) });
        if let Err(e) =
            self.pods.patch_status(&self.pod.name_any(), &PatchParams::default(), &Patch::Merge(&body)).await
        {
            tracing::warn!(pod = %self.pod.name_any(), error = %e, "writing the pod's status");
        }
    }

    async fn waiting(&mut self, reason: &str, message: String, finished: bool) {
        let state = State::Waiting { reason: reason.into(), message };
        if self.view.state != state || self.view.finished != finished {
            self.view.state = state;
            self.view.finished = finished;
            self.view.ready = false;
            self.report().await;
        }
    }

    fn termination_log(&self) -> PathBuf {
        self.dir.join("termination-log")
    }

    fn log(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.container.name))
    }

    /// The data of a Secret (`secret`) or ConfigMap in the pod's namespace, as text; `None` when
    /// it does not exist.
    async fn data(&self, secret: bool, name: &str) -> Result<Option<BTreeMap<String, String>>, Problem> {
        let ns = self.pod.namespace().unwrap_or_default();
        let client = self.node.client.clone();
        let api_error = |source| Problem::Api { what: format!("reading {} {name}", kind(secret)), source };
        Ok(if secret {
            Api::<Secret>::namespaced(client, &ns).get_opt(name).await.map_err(api_error)?.map(|s| {
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, ByteString(v))| (k, String::from_utf8_lossy(&v).into_owned()))
                    .collect()
            })
        } else {
            Api::<ConfigMap>::namespaced(client, &ns)
                .get_opt(name)
                .await
                .map_err(api_error)?
                .map(|c| c.data.unwrap_or_default())
        })
    }

    /// Looks up one `valueFrom` key of a Secret or ConfigMap.
    async fn key(
        &self,
        secret: bool,
        name: &str,
        key: &str,
        optional: bool,
    ) -> Result<Option<String>, Problem> {
        match self.data(secret, name).await?.map(|d| d.get(key).cloned()) {
            Some(Some(value)) => Ok(Some(value)),
            _ if optional => Ok(None),
            Some(None) => Err(Problem::Config(format!("couldn't find key {key} in {} {name}", kind(secret)))),
            None => Err(Problem::Config(format!("{} \"{name}\" not found", kind(secret)))),
        }
    }

    /// The container's environment as the kubelet builds it, over the node's own variables.
    async fn environment(&self, remap: &Remap) -> Result<BTreeMap<String, String>, Problem> {
        let mut env = BTreeMap::new();
        for from in self.container.env_from.iter().flatten() {
            let prefix = from.prefix.clone().unwrap_or_default();
            let (secret, name, optional) = match (&from.secret_ref, &from.config_map_ref) {
                (Some(s), _) => (true, s.name.clone(), s.optional == Some(true)),
                (None, Some(c)) => (false, c.name.clone(), c.optional == Some(true)),
                (None, None) => continue,
            };
            let all = self.data(secret, &name).await?;
            match all {
                Some(all) => env.extend(all.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v))),
                None if optional => {}
                None => return Err(Problem::Config(format!("envFrom: \"{name}\" not found"))),
            }
        }
        for var in self.container.env.iter().flatten() {
            let value = match &var.value_from {
                None => Some(spec::expand(var.value.as_deref().unwrap_or_default(), &env)),
                Some(from) => {
                    if let Some(field) = &from.field_ref {
                        Some(spec::field(&self.pod, &field.field_path, crate::HOST_IP).ok_or_else(|| {
                            Problem::Config(format!(
                                "env {}: unsupported fieldRef {}",
                                var.name, field.field_path
                            ))
                        })?)
                    } else if let Some(s) = &from.secret_key_ref {
                        self.key(true, &s.name, &s.key, s.optional == Some(true)).await?
                    } else if let Some(c) = &from.config_map_key_ref {
                        self.key(false, &c.name, &c.key, c.optional == Some(true)).await?
                    } else {
                        // resourceFieldRef: the node sets no limits, so it gives none.
                        None
                    }
                }
            };
            if let Some(value) = value {
                env.insert(var.name.clone(), remap.value(&value));
            }
        }
        Ok(env)
    }

    /// Writes the kubeconfig the process's kube client reads: the API server on loopback, and
    /// the pod's own service-account token when it has one mounted (else no credentials).
    fn kubeconfig(&self, remap: &Remap) -> std::io::Result<PathBuf> {
        let account = remap.path(SERVICE_ACCOUNT_PATH);
        let ca = account
            .as_ref()
            .map(|d| d.join("ca.crt"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| self.node.ca_file.clone());
        let user = match account.map(|d| d.join("token")).filter(|p| p.exists()) {
            Some(token) => serde_json::json!({ "tokenFile": token }),
            None => serde_json::json!({}),
        };
        let config = serde_json::json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "pod",
            "clusters": [{"name": "cluster", "cluster": {"server": self.node.api_url, "certificate-authority": ca}}],
            "users": [{"name": "pod", "user": user}],
            "contexts": [{"name": "pod", "context": {"cluster": "cluster", "user": "pod", "namespace": self.pod.namespace()}}],
        });
        let path = self.dir.join("kubeconfig");
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap_or_default())?;
        Ok(path)
    }

    /// Everything the process needs, or why it cannot be made yet.
    async fn launch(&self) -> Result<Launch, (&'static str, String)> {
        let config = |p: Problem| ("CreateContainerConfigError", p.to_string());
        let image = self.container.image.clone().unwrap_or_default();
        let Some(binary) = self.node.images.binary(&image) else {
            return Err((
                "ErrImagePull",
                format!("the test node maps no binary to image {image:?} (kuant-test-node --image)"),
            ));
        };
        let remap = volumes::prepare(
            &self.node.client,
            &self.pod,
            &self.container,
            &self.dir,
            &self.termination_log(),
        )
        .await
        .map_err(config)?;
        let mut env = self.environment(&remap).await.map_err(config)?;
        let kubeconfig = self
            .kubeconfig(&remap)
            .map_err(|e| ("CreateContainerError", format!("writing the kubeconfig: {e}")))?;
        let home = self.dir.join("home");
        let tmp = remap.path("/tmp").unwrap_or_else(|| self.dir.join("tmp"));
        for dir in [&home, &tmp] {
            std::fs::create_dir_all(dir)
                .map_err(|e| ("CreateContainerError", format!("making {}: {e}", dir.display())))?;
        }
        let (host, port) = (self.node.api_host.clone(), self.node.api_port.to_string());
        let path = std::env::var("PATH").unwrap_or_default();
        for (key, value) in [
            ("KUBERNETES_SERVICE_HOST", host.clone()),
            ("KUBERNETES_SERVICE_PORT", port.clone()),
            ("KUBERNETES_PORT", format!("tcp://{host}:{port}")),
            ("HOME", home.display().to_string()),
            ("TMPDIR", tmp.display().to_string()),
            ("PATH", path),
            ("HOSTNAME", self.pod.name_any()),
        ] {
            env.entry(key.to_owned()).or_insert(value);
        }
        // The overrides for what a kubelet would mount: the kube client's credentials and
        // where the termination message goes.
        env.insert("KUBECONFIG".into(), kubeconfig.display().to_string());
        env.insert("KUANT_TERMINATION_LOG".into(), self.termination_log().display().to_string());

        let expand = |values: &Option<Vec<String>>| -> Vec<String> {
            values.iter().flatten().map(|v| remap.value(&spec::expand(v, &env))).collect()
        };
        let command = expand(&self.container.command);
        let mut args = expand(&self.container.args);
        if let Some((entrypoint, rest)) = command.split_first() {
            // The kuant image's entrypoint is its one binary; any other program is not in it.
            if Path::new(entrypoint).file_name() != binary.file_name() {
                return Err((
                    "CreateContainerError",
                    format!("the test node runs the image's binary only, not {entrypoint:?}"),
                ));
            }
            args = rest.iter().cloned().chain(args).collect();
        }
        let workdir = match self.container.working_dir.as_deref() {
            Some(w) => remap.path(w).unwrap_or_else(|| self.dir.join("root")),
            None => self.dir.join("root"),
        };
        std::fs::create_dir_all(&workdir)
            .map_err(|e| ("CreateContainerError", format!("making {}: {e}", workdir.display())))?;
        let ports = self
            .container
            .ports
            .iter()
            .flatten()
            .filter_map(|p| u16::try_from(p.container_port).ok())
            .collect();
        Ok(Launch { program: binary.to_path_buf(), args, env, workdir, ports })
    }

    /// The termination message the process left, or the end of its log when it failed without
    /// one and the policy says so.
    fn message(&self, code: i32) -> Option<String> {
        let read = |path: &Path| std::fs::read(path).ok().filter(|b| !b.is_empty());
        let tail = |bytes: Vec<u8>| {
            let start = bytes.len().saturating_sub(MESSAGE_LIMIT);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        };
        if let Some(message) = read(&self.termination_log()) {
            return Some(tail(message));
        }
        let fallback = self.container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
        if fallback && code != 0 {
            return read(&self.log()).map(|log| {
                let start = log.len().saturating_sub(2048);
                tail(log[start..].to_vec())
            });
        }
        None
    }
}

fn kind(secret: bool) -> &'static str {
    if secret { "secret" } else { "configmap" }
}

/// The process groups of the containers running now (their leaders' pids).
static GROUPS: std::sync::Mutex<std::collections::BTreeSet<u32>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Kills every container's process group at once: the node is stopping, and a pod's process
/// must never outlive it (a leftover would hold its ports and trade on for a session no node
/// runs any more).
pub fn kill_all() {
    let groups = GROUPS.lock().map(|g| g.clone()).unwrap_or_default();
    for pid in groups {
        signal(Some(pid), libc::SIGKILL);
    }
}

/// Sends `signal` to the process group the container's process leads.
fn signal(pid: Option<u32>, signal: i32) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) with a negative pid signals that process group; it touches no memory.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}

/// The first port among `ports` that something on this machine already listens on.
fn taken(ports: &[u16]) -> Option<u16> {
    ports.iter().copied().find(|p| std::net::TcpListener::bind(("0.0.0.0", *p)).is_err())
}

/// How one start of the process ended.
enum Ended {
    /// It exited (or a failed liveness probe killed it).
    Exited(Terminated),
    /// The pod is being deleted: the process was stopped.
    Stopped,
}

/// Runs the pod until it is deleted (`stop` turns true): then stops its process and removes the
/// pod for good, as a kubelet does.
pub async fn run(node: Arc<Node>, pod: Pod, mut stop: watch::Receiver<bool>) {
    let ns = pod.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(node.client.clone(), &ns);
    let uid = pod.uid().unwrap_or_default();
    let dir = node.work.join(format!("{ns}_{}_{}", pod.name_any(), &uid[..uid.len().min(8)]));
    let spec = pod.spec.clone().unwrap_or_default();
    let Some(container) = spec.containers.first().cloned() else { return };
    let start_time = now();
    let view = View {
        container: container.name.clone(),
        image: container.image.clone().unwrap_or_default(),
        state: State::Waiting { reason: "ContainerCreating".into(), message: String::new() },
        last: None,
        restart_count: 0,
        ready: false,
        finished: false,
        start_time,
        host_ip: crate::HOST_IP.into(),
        now: now(),
    };
    let mut run = Run { node, pods, pod, container, dir, view };
    if *stop.borrow() {
        // Deleted before it ran here: nothing to stop.
    } else if let Err(e) = std::fs::create_dir_all(&run.dir) {
        run.waiting("CreateContainerError", format!("making {}: {e}", run.dir.display()), false).await;
    } else if spec.containers.len() > 1 || spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
        let message = "the test node runs pods of one container and no init containers".to_owned();
        run.waiting("CreateContainerError", message, true).await;
    } else {
        tracing::info!(pod = %format!("{ns}/{}", run.pod.name_any()), "running");
        run.report().await;
        supervise(&mut run, &mut stop, spec.restart_policy.as_deref(), spec.termination_grace_period_seconds)
            .await;
    }
    // Wait for the deletion, then remove the pod for good.
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }),
        ..DeleteParams::default()
    };
    if let Err(e) = run.pods.delete(&run.pod.name_any(), &params).await {
        tracing::debug!(pod = %run.pod.name_any(), error = %e, "removing the pod");
    }
}

/// Starts the process and starts it again as the restart policy says, until it ends for good or
/// the pod is deleted.
async fn supervise(
    run: &mut Run,
    stop: &mut watch::Receiver<bool>,
    policy: Option<&str>,
    grace: Option<i64>,
) {
    let grace = Duration::from_secs(grace.unwrap_or(30).clamp(0, 30) as u64);
    loop {
        // What to run; a missing Secret or an unmapped image waits, as a kubelet would.
        let launch = loop {
            match run.launch().await {
                Ok(launch) => break launch,
                Err((reason, message)) => {
                    run.waiting(reason, message, false).await;
                    if wait_or_stop(stop, RETRY).await {
                        return;
                    }
                }
            }
        };
        let ended = match taken(&launch.ports) {
            Some(port) => Ended::Exited(Terminated {
                exit_code: 128,
                reason: "PortConflict".into(),
                message: Some(format!(
                    "port {port} is already in use on the test node: pods share this machine's network, so two pods cannot listen on one port"
                )),
                started_at: now(),
                finished_at: now(),
            }),
            None => once(run, launch, stop, grace).await,
        };
        let Ended::Exited(terminated) = ended else { return };
        let code = terminated.exit_code;
        let port_conflict = terminated.reason == "PortConflict";
        if port_conflict || !spec::restarts(policy, code) {
            run.view.state = State::Terminated(terminated);
            run.view.finished = true;
            run.view.ready = false;
            run.report().await;
            return;
        }
        let delay = spec::backoff(run.view.restart_count);
        run.view.last = Some(terminated);
        run.view.restart_count += 1;
        let message =
            format!("back-off {}s restarting failed container {}", delay.as_secs(), run.container.name);
        run.waiting("CrashLoopBackOff", message, false).await;
        if wait_or_stop(stop, delay).await {
            return;
        }
    }
}

/// Sleeps `delay`; true when the pod is deleted meanwhile.
async fn wait_or_stop(stop: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = stop.changed() => true,
    }
}

/// One start of the process, until it exits or the pod is deleted.
async fn once(run: &mut Run, launch: Launch, stop: &mut watch::Receiver<bool>, grace: Duration) -> Ended {
    if *stop.borrow() {
        return Ended::Stopped;
    }
    let _ = std::fs::remove_file(run.termination_log());
    let started_at = now();
    let log = std::fs::OpenOptions::new().create(true).append(true).open(run.log());
    let (stdout, stderr) = match log.and_then(|f| Ok((f.try_clone()?, f))) {
        Ok((a, b)) => (Stdio::from(a), Stdio::from(b)),
        Err(_) => (Stdio::null(), Stdio::null()),
    };
    let spawned = tokio::process::Command::new(&launch.program)
        .args(&launch.args)
        .env_clear()
        .envs(&launch.env)
        .current_dir(&launch.workdir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            return Ended::Exited(Terminated {
                exit_code: 128,
                reason: "StartError".into(),
                message: Some(format!("starting {}: {e}", launch.program.display())),
                started_at: started_at.clone(),
                finished_at: now(),
            });
        }
    };
    let pid = child.id();
    if let (Some(p), Ok(mut groups)) = (pid, GROUPS.lock()) {
        groups.insert(p);
    }
    // Out of the registry however this run ends.
    struct Registered(Option<u32>);
    impl Drop for Registered {
        fn drop(&mut self) {
            if let (Some(p), Ok(mut groups)) = (self.0, GROUPS.lock()) {
                groups.remove(&p);
            }
        }
    }
    let _registered = Registered(pid);
    let spec = run.container.clone();
    let mut readiness = spec.readiness_probe.as_ref().map(|p| Prober::new(&spec, p));
    let mut liveness = spec.liveness_probe.as_ref().map(|p| Prober::new(&spec, p));
    run.view.state = State::Running { started_at: started_at.clone() };
    run.view.ready = readiness.is_none();
    run.report().await;
    let mut killed_by_probe = false;
    let status = loop {
        let due = [readiness.as_ref().map(Prober::due), liveness.as_ref().map(Prober::due)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            status = child.wait() => break status,
            _ = stop.changed() => {
                signal(pid, libc::SIGTERM);
                if tokio::time::timeout(grace, child.wait()).await.is_err() {
                    signal(pid, libc::SIGKILL);
                    let _ = child.wait().await;
                }
                return Ended::Stopped;
            }
            _ = tokio::time::sleep_until(due) => {
                if let Some(probe) = readiness.as_mut()
                    && probe.tick().await
                {
                    run.view.ready = probe.passing == Some(true);
                    run.report().await;
                }
                if let Some(probe) = liveness.as_mut()
                    && probe.tick().await
                    && probe.passing == Some(false)
                {
                    tracing::info!(pod = %run.pod.name_any(), "liveness probe failed: restarting the container");
                    killed_by_probe = true;
                    signal(pid, libc::SIGKILL);
                }
            }
        }
    };
    let code = match status {
        Ok(s) => s.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            128 + s.signal().unwrap_or(9)
        }),
        Err(_) => 128,
    };
    // The rest of the group (children of the process) goes with it.
    signal(pid, libc::SIGKILL);
    let message =
        if killed_by_probe { Some("the liveness probe failed".to_owned()) } else { run.message(code) };
    Ended::Exited(Terminated {
        exit_code: code,
        reason: if code == 0 { "Completed" } else { "Error" }.into(),
        message,
        started_at,
        finished_at: now(),
    })
}
