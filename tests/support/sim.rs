//! `kuant exchange-sim` as a child process, for the tests that trade on it.
// Included by several test crates, each using part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A child process, killed when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kuant exchange-sim` on a free loopback port accepting the keys `key`/`secret` (written to
/// `dir/keys.yaml`, the file `kuant session --credentials` reads), three hours of synthetic
/// candles per second: the process and its base URL.
pub fn exchange_sim(dir: &Path, key: &str, secret: &str) -> (Killed, String) {
    let keys = dir.join("keys.yaml");
    std::fs::write(&keys, format!("apiKey: {key}\napiSecret: {secret}\n")).expect("keys");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kuant"))
        .args(["exchange-sim", "--listen", "127.0.0.1:0", "--speed", "10800", "--bars", "8000", "--keys"])
        .arg(&keys)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the simulator starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("a line").expect("text");
    // The rest is read too: a closed pipe would end the simulator at its next line.
    std::thread::spawn(move || lines.for_each(drop));
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {first:?}"))
        .to_owned();
    (Killed(child), url)
}

/// A fresh directory `kuant-<tag>-<pid>-<name>` under the temp dir.
pub fn fresh_dir(tag: &str, name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kuant-{tag}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// POSTs the JSON `body` to the simulator's admin `path` (e.g. `/_sim/faults`) at `url`; it must
/// answer 200.
pub fn admin(url: &str, path: &str, body: &str) {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connected");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("sent");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// A TradingSession manifest named `name` trading BTCUSDT on the simulator at `url`:
/// sma-crossover 3/8 on 1h candles with all of `budget` USDT, positions up to 95 %, wide loss
/// limits, at most 2 open orders; `live` (acknowledged) or paper, the key in Secret `secret`.
/// `extra` is appended after `spec.risk`'s fields (more of them, or, indented by two, more of
/// the spec).
pub fn session_yaml(name: &str, live: bool, url: &str, secret: &str, budget: u32, extra: &str) -> String {
    let mode = if live { "mode: live\n  liveTradingAcknowledged: true" } else { "mode: paper" };
    format!(
        "apiVersion: kuant.dev/v1alpha1
kind: TradingSession
metadata:
  name: {name}
spec:
  {mode}
  exchange:
    name: binance
    baseUrl: {url}
    credentialsSecretRef:
      name: {secret}
  symbols: [BTCUSDT]
  timeframe: 1h
  strategies:
    - name: sma-crossover
      params: {{fast: 3, slow: 8}}
      allocationPct: 100
  budget:
    quoteAsset: USDT
    amount: \"{budget}\"
  risk:
    maxPositionPct: 95
    maxDailyLossPct: 50
    maxDrawdownPct: 90
    maxOpenOrders: 2
    maxOrdersPerMinute: 100
{extra}"
    )
}
