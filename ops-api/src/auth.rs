//! Bearer tokens with roles. A token file has one `TOKEN ROLE` per line (`#` starts a comment);
//! a token may be given as `sha256:HEX` so that the file need not hold it. Only SHA-256 hashes
//! are kept in memory, a request's token is hashed and looked up, and no token ever reaches a
//! log or a response.
//!
//! Roles are ordered: `viewer` reads, `trader` also creates backtests, `admin` also touches live
//! trading.

use std::collections::HashMap;
use std::fmt;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads.
    Viewer,
    /// Reads, and creates backtests.
    Trader,
    /// Everything, live trading included.
    Admin,
}

impl Role {
    /// Its name in token files and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Trader => "trader",
            Self::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "viewer" => Some(Self::Viewer),
            "trader" => Some(Self::Trader),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a token file is refused. Messages name lines, never tokens.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenFileError {
    /// A line that is not `TOKEN ROLE`.
    #[error("line {line}: expected `TOKEN ROLE` (or `sha256:HEX ROLE`)")]
    Malformed {
        /// 1-based.
        line: usize,
    },
    /// An unknown role.
    #[error("line {line}: unknown role {role:?}: use viewer, trader or admin")]
    UnknownRole {
        /// 1-based.
        line: usize,
        /// What was written.
        role: String,
    },
    /// A `sha256:` token that is not 64 hex digits.
    #[error("line {line}: a sha256: token needs 64 hex digits")]
    BadHash {
        /// 1-based.
        line: usize,
    },
    /// A token shorter than 16 characters.
    #[error("line {line}: a token needs at least 16 characters")]
    TooShort {
        /// 1-based.
        line: usize,
    },
    /// The same token twice.
    #[error("line {line}: this token is already listed")]
    Duplicate {
        /// 1-based.
        line: usize,
    },
    /// No token at all.
    #[error("the token file lists no token")]
    Empty,
}

/// Who may call: the hashes of the known tokens and their roles, or nobody-checks (local use
/// on a loopback address).
#[derive(Clone, Debug)]
pub enum Tokens {
    /// Every request acts as `admin`: only for a server bound to a loopback address.
    Open,
    /// Requests need one of these tokens.
    Required(HashMap<[u8; 32], Role>),
}

fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A token file line giving `token` the role `role`, with the token kept only as its hash.
pub fn hashed_line(token: &str, role: Role) -> String {
    format!("sha256:{} {}", hex::encode(sha256(token)), role.as_str())
}

/// A fresh random token: 32 bytes from the operating system's CSPRNG, as 64 hex digits.
pub fn fresh_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

impl Tokens {
    /// Parses a token file.
    pub fn parse(text: &str) -> Result<Self, TokenFileError> {
        let mut tokens = HashMap::new();
        for (n, raw) in text.lines().enumerate() {
            let line = n + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let mut fields = content.split_whitespace();
            let (Some(token), Some(role), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err(TokenFileError::Malformed { line });
            };
            let role = Role::parse(role)
                .ok_or_else(|| TokenFileError::UnknownRole { line, role: role.to_owned() })?;
            let hash = match token.strip_prefix("sha256:") {
                Some(hex_digits) => {
                    let bytes = hex::decode(hex_digits).map_err(|_| TokenFileError::BadHash { line })?;
                    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| TokenFileError::BadHash { line })?
                }
                None if token.len() < 16 => return Err(TokenFileError::TooShort { line }),
                None => sha256(token),
            };
            if tokens.insert(hash, role).is_some() {
                return Err(TokenFileError::Duplicate { line });
            }
        }
        if tokens.is_empty() {
            return Err(TokenFileError::Empty);
        }
        Ok(Self::Required(tokens))
    }

    /// The role of the request's `Authorization: Bearer` token.
    pub fn role_of(&self, authorization: Option<&str>) -> Result<Role, ApiError> {
        let Self::Required(known) = self else { return Ok(Role::Admin) };
        let Some(value) = authorization else {
            return Err(ApiError::unauthorized("this API needs a token: send `Authorization: Bearer TOKEN`"));
        };
        let Some(token) = value.strip_prefix("Bearer ").map(str::trim).filter(|t| !t.is_empty()) else {
            return Err(ApiError::unauthorized("the Authorization header must be `Bearer TOKEN`"));
        };
        known.get(&sha256(token)).copied().ok_or_else(|| ApiError::unauthorized("unknown token"))
    }
}

/// What a route needs, for [`require`].
#[derive(Clone)]
pub struct Needs {
    /// The tokens.
    pub tokens: std::sync::Arc<Tokens>,
    /// The least role.
    pub role: Role,
}

/// Middleware: lets a request through when its token's role is at least `needs.role`.
pub async fn require(State(needs): State<Needs>, request: Request, next: Next) -> Result<Response, ApiError> {
    let header = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let role = needs.tokens.role_of(header)?;
    if role < needs.role {
        return Err(ApiError::forbidden(format!(
            "this needs the {} role; the token has {}",
            needs.role, role
        )));
    }
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_token_is_random_and_its_hashed_line_grants_its_role() {
        let (a, b) = (fresh_token().expect("urandom"), fresh_token().expect("urandom"));
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        let line = hashed_line(&a, Role::Admin);
        assert!(!line.contains(&a), "the line keeps only the hash");
        let tokens = Tokens::parse(&line).expect("a valid token file");
        assert_eq!(tokens.role_of(Some(&format!("Bearer {a}"))).ok(), Some(Role::Admin));
        assert!(tokens.role_of(Some(&format!("Bearer {b}"))).is_err());
    }

    #[test]
    fn token_files_give_roles_keep_only_hashes_and_name_lines_not_tokens() {
        let hashed = hex::encode(sha256("a-very-secret-admin-token"));
        let file = format!(
            "# who may call\nviewer-token-0123456 viewer\ntrader-token-0123456 trader # the desk\nsha256:{hashed} admin\n"
        );
        let tokens = Tokens::parse(&file).expect("valid");
        assert_eq!(tokens.role_of(Some("Bearer viewer-token-0123456")), Ok(Role::Viewer));
        assert_eq!(tokens.role_of(Some("Bearer trader-token-0123456")), Ok(Role::Trader));
        assert_eq!(tokens.role_of(Some("Bearer a-very-secret-admin-token")), Ok(Role::Admin));
        assert_eq!(
            tokens.role_of(Some("Bearer nope-nope-nope-nope")).map_err(|e| e.code),
            Err("unauthorized")
        );
        assert_eq!(tokens.role_of(None).map_err(|e| e.code), Err("unauthorized"));
        assert_eq!(tokens.role_of(Some("Basic abc")).map_err(|e| e.code), Err("unauthorized"));
        assert!(!format!("{tokens:?}").contains("viewer-token"), "only hashes are kept");

        let bad = |text: &str| Tokens::parse(text).expect_err("refused");
        assert_eq!(
            bad("secret-token-0123456 root"),
            TokenFileError::UnknownRole { line: 1, role: "root".into() }
        );
        assert_eq!(bad("\nshort viewer"), TokenFileError::TooShort { line: 2 });
        assert_eq!(bad("sha256:abc viewer"), TokenFileError::BadHash { line: 1 });
        assert_eq!(bad("onlyonefield-0123456"), TokenFileError::Malformed { line: 1 });
        assert_eq!(
            bad("a-token-0123456789 viewer\na-token-0123456789 admin"),
            TokenFileError::Duplicate { line: 2 }
        );
        assert_eq!(bad("# nothing\n"), TokenFileError::Empty);
        let message = bad("secret-token-0123456 root").to_string();
        assert!(!message.contains("secret-token"), "{message}");
        assert_eq!(Tokens::Open.role_of(None), Ok(Role::Admin));
    }
}
