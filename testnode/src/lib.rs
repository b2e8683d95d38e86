//! A test-only Kubernetes node for kuant's end-to-end suite. It registers a Node, and runs each
//! pod the scheduler binds to it as a local process of the binary its image maps to (the kuant
//! image maps to the freshly built `kuant`), reporting the pod's status as a kubelet would.
//!
//! What a kubelet would mount, it remaps: volumes become directories under the pod's own
//! directory (absolute paths in `args` and `env` are rewritten to them); the kube client gets
//! `KUBECONFIG` pointing at a kubeconfig with the pod's own service-account token (from the
//! TokenRequest API), and `KUANT_TERMINATION_LOG` says where the termination message goes.
//! Pods share this machine's network: a pod whose port is taken fails with `PortConflict`.

pub mod node;
pub mod pod;
pub mod probe;
pub mod spec;
pub mod status;
pub mod volumes;

use std::path::PathBuf;

use kube::Client;

/// The node's address, and every pod's.
pub const HOST_IP: &str = "127.0.0.1";

/// Why the node cannot run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("{what}: {source}")]
    Api {
        /// What the call was for.
        what: &'static str,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    fn api(what: &'static str) -> impl FnOnce(kube::Error) -> Self {
        move |source| Self::Api { what, source }
    }
}

/// What every pod's run shares.
pub struct Node {
    /// The node's client (its own credentials, never handed to a pod).
    pub client: Client,
    /// Which binary each image runs.
    pub images: spec::Images,
    /// Where pods get their directories.
    pub work: PathBuf,
    /// The API server's URL, host and port, as pods reach it.
    pub api_url: String,
    /// The API server's host.
    pub api_host: String,
    /// The API server's port.
    pub api_port: u16,
    /// The CA that signed the API server's certificate (a PEM file).
    pub ca_file: PathBuf,
}

/// The time now, to the second, as the API's timestamps have it.
pub fn now() -> String {
    let t = jiff::Timestamp::now();
    t.round(jiff::Unit::Second).unwrap_or(t).to_string()
}
