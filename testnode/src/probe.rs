//! Readiness and liveness probes: HTTP GET and TCP on the process's port on loopback (pods share
//! the host's network), with the kubelet's timing rules.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// One probe and its running count of results.
#[derive(Debug)]
pub struct Prober {
    check: Check,
    period: Duration,
    timeout: Duration,
    failure_threshold: u32,
    success_threshold: u32,
    next: Instant,
    failures: u32,
    successes: u32,
    /// The probe's verdict so far: `None` until it first decides.
    pub passing: Option<bool>,
}

#[derive(Debug)]
enum Check {
    Http { port: u16, path: String },
    Tcp { port: u16 },
    Unsupported(String),
}

fn port(container: &Container, port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

impl Prober {
    /// A prober for `probe` of `container`, first due after its initial delay.
    pub fn new(container: &Container, probe: &Probe) -> Self {
        let seconds =
            |v: Option<i32>, default: u64| Duration::from_secs(v.map_or(default, |v| v.max(0) as u64));
        let check = if let Some(http) = &probe.http_get {
            match port(container, &http.port) {
                Some(p) => Check::Http { port: p, path: http.path.clone().unwrap_or_else(|| "/".into()) },
                None => Check::Unsupported(format!(
                    "the probe's port {:?} is not a port of the container",
                    http.port
                )),
            }
        } else if let Some(tcp) = &probe.tcp_socket {
            match port(container, &tcp.port) {
                Some(p) => Check::Tcp { port: p },
                None => Check::Unsupported(format!(
                    "the probe's port {:?} is not a port of the container",
                    tcp.port
                )),
            }
        } else {
            Check::Unsupported("the test node runs HTTP and TCP probes only".into())
        };
        Self {
            check,
            period: seconds(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: seconds(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            failure_threshold: probe.failure_threshold.map_or(3, |v| v.max(1) as u32),
            success_threshold: probe.success_threshold.map_or(1, |v| v.max(1) as u32),
            next: Instant::now() + seconds(probe.initial_delay_seconds, 0),
            failures: 0,
            successes: 0,
            passing: None,
        }
    }

    /// When the probe is next due.
    pub fn due(&self) -> Instant {
        self.next
    }

    /// Runs the probe if it is due, and returns whether its verdict changed.
    pub async fn tick(&mut self) -> bool {
        if Instant::now() < self.next {
            return false;
        }
        self.next = Instant::now() + self.period;
        let ok = match tokio::time::timeout(self.timeout, self.run()).await {
            Ok(Ok(())) => true,
            Ok(Err(reason)) => {
                tracing::debug!(%reason, "probe failed");
                false
            }
            Err(_) => false,
        };
        let before = self.passing;
        if ok {
            self.failures = 0;
            self.successes += 1;
            if self.successes >= self.success_threshold {
                self.passing = Some(true);
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            if self.failures >= self.failure_threshold {
                self.passing = Some(false);
            }
        }
        before != self.passing
    }

    async fn run(&self) -> Result<(), String> {
        match &self.check {
            Check::Tcp { port } => {
                TcpStream::connect(("127.0.0.1", *port)).await.map(drop).map_err(|e| e.to_string())
            }
            Check::Http { port, path } => {
                let mut stream = TcpStream::connect(("127.0.0.1", *port)).await.map_err(|e| e.to_string())?;
                let request = format!(
                    "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: kube-probe/1.36\r\nConnection: close\r\n\r\n"
                );
                stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
                let mut head = [0u8; 12];
                stream.read_exact(&mut head).await.map_err(|e| e.to_string())?;
                let code: u16 =
                    std::str::from_utf8(&head[9..12]).ok().and_then(|c| c.parse().ok()).unwrap_or(0);
                if (200..400).contains(&code) { Ok(()) } else { Err(format!("HTTP {code}")) }
            }
            Check::Unsupported(reason) => Err(reason.clone()),
        }
    }
}
