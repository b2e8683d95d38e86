//! Binance API keys and request signatures: HMAC-SHA256 (hex) and Ed25519 (base64, Binance's
//! recommended kind) over the request's query string.
//!
//! Credentials come from a file (the session's Secret mounted in its pod, or `--credentials FILE`
//! on a laptop), never from the environment. Neither the secret nor the private key can be
//! printed: `Debug` shows the key's first characters only, and no error quotes the file.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use ring::signature::Ed25519KeyPair;

/// An API key and what signs its requests.
pub struct Credentials {
    api_key: String,
    signer: Signer,
}

enum Signer {
    Hmac(ring::hmac::Key),
    Ed25519(Ed25519KeyPair),
}

/// Credentials that could not be read. The messages never quote the file's content.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The file could not be read.
    #[error("reading the credentials file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not what it must be.
    #[error("the credentials file {path}: {problem}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, without its content.
        problem: &'static str,
    },
}

impl Credentials {
    /// An HMAC-SHA256 key pair: the API key and its secret.
    pub fn hmac(api_key: impl Into<String>, secret: &str) -> Self {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        Self { api_key: api_key.into(), signer: Signer::Hmac(key) }
    }

    /// An Ed25519 API key and its private key in PEM (PKCS#8, `-----BEGIN PRIVATE KEY-----`, as
    /// `openssl genpkey -algorithm ed25519` writes it).
    pub fn ed25519(api_key: impl Into<String>, private_key_pem: &str) -> Result<Self, &'static str> {
        let body: String = private_key_pem
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("-----"))
            .collect();
        if !private_key_pem.contains("-----BEGIN PRIVATE KEY-----") {
            return Err("privateKey is not a PEM private key (-----BEGIN PRIVATE KEY-----)");
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| "privateKey's PEM body is not base64")?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|_| "privateKey is not an Ed25519 private key in PKCS#8")?;
        Ok(Self { api_key: api_key.into(), signer: Signer::Ed25519(pair) })
    }

    /// Credentials from a YAML file: `apiKey` with either `apiSecret` (HMAC) or `privateKey`
    /// (Ed25519, PEM). The same file `kuant exchange-sim --keys` reads.
    pub fn from_file(path: &Path) -> Result<Self, CredentialsError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| CredentialsError::Read { path: shown.clone(), source })?;
        Self::from_yaml(&text).map_err(|problem| CredentialsError::Invalid { path: shown, problem })
    }

    /// Credentials from the YAML text of a credentials file.
    pub fn from_yaml(text: &str) -> Result<Self, &'static str> {
        // Read as a plain mapping: a typed parse's errors may quote the values.
        let value: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|_| "not YAML (a mapping with apiKey and apiSecret)")?;
        let field = |name: &str| value.get(name).and_then(serde_yaml::Value::as_str).map(str::trim);
        let api_key = field("apiKey").filter(|k| !k.is_empty()).ok_or("apiKey (a string) is missing")?;
        match (field("apiSecret"), field("privateKey")) {
            (Some(secret), None) if !secret.is_empty() => Ok(Self::hmac(api_key, secret)),
            (None, Some(pem)) => Self::ed25519(api_key, pem),
            (Some(_), Some(_)) => Err("set either apiSecret (HMAC) or privateKey (Ed25519), not both"),
            _ => Err("apiSecret (HMAC) or privateKey (Ed25519 PEM) is missing"),
        }
    }

    /// The API key, sent in the `X-MBX-APIKEY` header.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// Whether the key is an Ed25519 key (the WebSocket API's session logon needs one).
    pub fn is_ed25519(&self) -> bool {
        matches!(self.signer, Signer::Ed25519(_))
    }

    /// The signature of `payload` (the query string, or the WebSocket API's sorted params):
    /// lowercase hex for HMAC, base64 for Ed25519.
    pub fn sign(&self, payload: &str) -> String {
        match &self.signer {
            Signer::Hmac(key) => hex(ring::hmac::sign(key, payload.as_bytes()).as_ref()),
            Signer::Ed25519(pair) => {
                base64::engine::general_purpose::STANDARD.encode(pair.sign(payload.as_bytes()).as_ref())
            }
        }
    }

    /// Whether `signature` is this key's signature of `payload` (the simulator checks requests
    /// with it). HMAC only compares in constant time; Ed25519 verifies with the public key.
    pub fn verify(&self, payload: &str, signature: &str) -> bool {
        match &self.signer {
            Signer::Hmac(key) => {
                let Some(tag) = unhex(signature) else { return false };
                ring::hmac::verify(key, payload.as_bytes(), &tag).is_ok()
            }
            Signer::Ed25519(pair) => {
                use ring::signature::KeyPair as _;
                let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(signature) else {
                    return false;
                };
                let public = ring::signature::UnparsedPublicKey::new(
                    &ring::signature::ED25519,
                    pair.public_key().as_ref(),
                );
                public.verify(payload.as_bytes(), &sig).is_ok()
            }
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: String = self.api_key.chars().take(4).collect();
        let kind = if self.is_ed25519() { "ed25519" } else { "hmac" };
        write!(f, "Credentials {{ api_key: \"{shown}…\", kind: {kind} }}")
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// A request's parameters as Binance signs them: `key=value` pairs, percent-encoded, joined with
/// `&`, in the order given (REST), with `signature` appended last.
pub fn query(params: &[(&str, &str)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        out.append_pair(k, v);
    }
    out.finish()
}

/// `params` signed: the query string with `signature=…` appended (percent-encoded: an Ed25519
/// signature is base64).
pub fn signed_query(credentials: &Credentials, params: &[(&str, &str)]) -> String {
    let payload = query(params);
    let signature = credentials.sign(&payload);
    let tail = form_urlencoded::Serializer::new(String::new()).append_pair("signature", &signature).finish();
    if payload.is_empty() { tail } else { format!("{payload}&{tail}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The HMAC example of Binance's spot API documentation ("SIGNED endpoint examples for POST
    // /api/v3/order"): its published key, secret, query and signature.
    const DOC_KEY: &str = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A";
    const DOC_SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
    const DOC_SIGNATURE: &str = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71";

    // A throwaway Ed25519 key (`openssl genpkey -algorithm ed25519`) and its signature of the
    // message below by `openssl pkeyutl -sign -rawin`: an independent implementation's answer.
    const TEST_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAHGgk+LkgCCbu6iUH86BQynBLAn24nUQlnNVdW0hq3g\n-----END PRIVATE KEY-----\n";
    const ED_MESSAGE: &str = "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=1&price=0.2&timestamp=1668481559918&recvWindow=5000";
    const ED_SIGNATURE: &str =
        "6uqE5zp7uGqkOl0rxLJYr++gzovjCN7aeqI/EN+3fM9JQM41BwJCsPrhvUnqEgdiaRSMR8R9l80rRauIOi7IDQ==";

    fn ltcbtc() -> Vec<(&'static str, &'static str)> {
        vec![
            ("symbol", "LTCBTC"),
            ("side", "BUY"),
            ("type", "LIMIT"),
            ("timeInForce", "GTC"),
            ("quantity", "1"),
            ("price", "0.1"),
            ("recvWindow", "5000"),
            ("timestamp", "1499827319559"),
        ]
    }

    #[test]
    fn hmac_signs_binances_documented_example() {
        let credentials = Credentials::hmac(DOC_KEY, DOC_SECRET);
        let payload = query(&ltcbtc());
        assert_eq!(
            payload,
            "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
        );
        assert_eq!(credentials.sign(&payload), DOC_SIGNATURE);
        assert!(signed_query(&credentials, &ltcbtc()).ends_with(&format!("&signature={DOC_SIGNATURE}")));
        assert!(credentials.verify(&payload, DOC_SIGNATURE));
        assert!(!credentials.verify(&payload.replace("0.1", "0.2"), DOC_SIGNATURE));
        assert!(!credentials.verify(&payload, "zz"));
    }

    #[test]
    fn ed25519_signs_as_openssl_does() {
        let credentials = Credentials::ed25519("test-key", TEST_PEM).expect("a key");
        assert!(credentials.is_ed25519());
        assert_eq!(credentials.sign(ED_MESSAGE), ED_SIGNATURE);
        assert!(credentials.verify(ED_MESSAGE, ED_SIGNATURE));
        assert!(!credentials.verify("other", ED_SIGNATURE));
        // The base64 signature is percent-encoded in the query.
        let params = [("symbol", "BTCUSDT")];
        let signed = signed_query(&credentials, &params);
        let signature = credentials.sign("symbol=BTCUSDT");
        let encoded =
            form_urlencoded::Serializer::new(String::new()).append_pair("signature", &signature).finish();
        assert_eq!(signed, format!("symbol=BTCUSDT&{encoded}"));
    }

    #[test]
    fn credentials_files_are_read_and_never_shown() {
        let hmac =
            Credentials::from_yaml(&format!("apiKey: {DOC_KEY}\napiSecret: {DOC_SECRET}\n")).expect("hmac");
        assert_eq!(hmac.api_key(), DOC_KEY);
        let shown = format!("{hmac:?}");
        assert!(!shown.contains(DOC_SECRET) && !shown.contains(DOC_KEY), "{shown}");
        let pem = TEST_PEM.replace('\n', "\n  ");
        let ed = Credentials::from_yaml(&format!("apiKey: k\nprivateKey: |\n  {pem}")).expect("ed25519");
        assert!(ed.is_ed25519());

        for (text, problem) in [
            ("apiSecret: s3cr3t-value", "apiKey (a string) is missing"),
            ("apiKey: k", "apiSecret (HMAC) or privateKey (Ed25519 PEM) is missing"),
            (
                "apiKey: k\napiSecret: s3cr3t-value\nprivateKey: x",
                "set either apiSecret (HMAC) or privateKey (Ed25519), not both",
            ),
            (
                "apiKey: k\nprivateKey: s3cr3t-value",
                "privateKey is not a PEM private key (-----BEGIN PRIVATE KEY-----)",
            ),
            ("[s3cr3t-value", "not YAML (a mapping with apiKey and apiSecret)"),
        ] {
            let error = Credentials::from_yaml(text).expect_err(text);
            assert_eq!(error, problem);
        }
        let missing =
            Credentials::from_file(Path::new("/nonexistent/kuant-credentials.yaml")).expect_err("missing");
        assert!(missing.to_string().starts_with("reading the credentials file /nonexistent/"), "{missing}");
    }
}
