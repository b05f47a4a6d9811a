//! Auth tokens: what `Authenticate` hands out and every later request carries.
//!
//! Both kinds are JWTs with etcd's claims (`username`, `revision`, `exp`), so a token is
//! checked by its signature and its claims alone, on any member, with no table of issued
//! tokens to keep or lose:
//!
//! - **simple** (`--auth-token simple`, the default) is signed with HS256 by a 32-byte key
//!   that the cluster keeps in its replicated auth store (drawn by the member that proposed
//!   `AuthEnable`). It lives `--auth-token-ttl` seconds. etcd's simple tokens are random
//!   strings held in one member's memory, so another member, or the same one after a
//!   restart, refuses them (etcd #9629, #13134); Cairn's are accepted by every member of the
//!   cluster, through restarts and membership changes.
//! - **jwt** (`--auth-token jwt,pub-key=…,priv-key=…,sign-method=…,ttl=…`) is signed with the
//!   operator's key, as etcd's.
//!
//! The `revision` claim is the user's own revision ([`super::User::revision`]: when it was
//! added or its password last changed), not the whole auth store's as in etcd. So a change to
//! another user, a role or a permission leaves a token valid (etcd invalidates every token,
//! #13300), while a changed password or a deleted user invalidates that user's tokens: the
//! claim no longer matches. Permissions are read at each request, never from the token.
//!
//! This is the member-local side of auth: it reads the clock (expiry) and holds keys. Nothing
//! here runs in apply; what a verified token yields, a [`Caller`], travels with the request.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{AuthError, AuthStore, Caller};

/// etcd's default lifetime of a JWT (`ttl=` in `--auth-token jwt,…`).
pub const DEFAULT_JWT_TTL: Duration = Duration::from_secs(300);

/// Most verified tokens remembered (their signatures need not be checked again); when full,
/// the memory starts over.
const VERIFIED_CAPACITY: usize = 4096;

/// A token's claims, named as etcd names them.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    /// Expiry, in seconds since the Unix epoch.
    exp: u64,
}

/// How this member signs and checks tokens, from `--auth-token` and `--auth-token-ttl`.
#[derive(Clone)]
pub enum TokenConfig {
    Simple {
        ttl: Duration,
    },
    Jwt {
        algorithm: Algorithm,
        /// `None` for a member given only the public key: it checks tokens but issues none.
        signing: Option<EncodingKey>,
        verifying: DecodingKey,
        ttl: Duration,
    },
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenConfig::Simple { ttl } => write!(f, "simple (ttl {ttl:?})"),
            TokenConfig::Jwt { algorithm, ttl, .. } => write!(f, "jwt {algorithm:?} (ttl {ttl:?})"),
        }
    }
}

impl TokenConfig {
    /// Parses etcd's `--auth-token` value: `simple`, or `jwt` followed by comma-separated
    /// `pub-key=FILE`, `priv-key=FILE`, `sign-method=ALG` and `ttl=DURATION` options. Key files
    /// are read here. HS* methods use the `priv-key` file's bytes as the secret; RS*, PS* and
    /// ES* read PEM keys, and need at least one of the two.
    pub fn parse(spec: &str, simple_ttl: Duration) -> Result<TokenConfig, String> {
        let mut parts = spec.split(',');
        match parts.next().unwrap_or_default() {
            "simple" if spec == "simple" => Ok(TokenConfig::Simple { ttl: simple_ttl }),
            "jwt" => Self::parse_jwt(parts),
            other => Err(format!(
                "unknown token type {other:?} in --auth-token (want simple or jwt,…)"
            )),
        }
    }

    fn parse_jwt<'a>(options: impl Iterator<Item = &'a str>) -> Result<TokenConfig, String> {
        let (mut public, mut private, mut method, mut ttl) = (None, None, None, DEFAULT_JWT_TTL);
        for option in options {
            let (name, value) = option
                .split_once('=')
                .ok_or_else(|| format!("--auth-token option {option:?} is not name=value"))?;
            match name {
                "pub-key" => public = Some(read_key(value)?),
                "priv-key" => private = Some(read_key(value)?),
                "sign-method" => method = Some(value.to_string()),
                "ttl" => {
                    ttl = value
                        .parse::<crate::config::GoDuration>()
                        .map_err(|e| format!("--auth-token ttl {value:?}: {e}"))?
                        .0
                }
                _ => return Err(format!("unknown --auth-token option {name:?}")),
            }
        }
        let method = method.ok_or("--auth-token jwt needs sign-method=…")?;
        let algorithm: Algorithm = method
            .parse()
            .ok()
            .filter(|a| !matches!(a, Algorithm::EdDSA))
            .ok_or_else(|| format!("unsupported sign-method {method:?} in --auth-token"))?;
        let bad_key = |which: &str, e: jsonwebtoken::errors::Error| {
            format!("--auth-token {which} is not a {method} key: {e}")
        };
        let (signing, verifying) = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let secret = private.ok_or("--auth-token jwt with HS* needs priv-key=…")?;
                (
                    Some(EncodingKey::from_secret(&secret).map_err(|e| bad_key("priv-key", e))?),
                    DecodingKey::from_secret(&secret).map_err(|e| bad_key("priv-key", e))?,
                )
            }
            _ => {
                let rsa = !matches!(algorithm, Algorithm::ES256 | Algorithm::ES384);
                let signing = match &private {
                    Some(pem) if rsa => Some(EncodingKey::from_rsa_pem(pem)),
                    Some(pem) => Some(EncodingKey::from_ec_pem(pem)),
                    None => None,
                }
                .transpose()
                .map_err(|e| bad_key("priv-key", e))?;
                let verifying = match &public {
                    Some(pem) if rsa => DecodingKey::from_rsa_pem(pem),
                    Some(pem) => DecodingKey::from_ec_pem(pem),
                    None => return Err("--auth-token jwt needs pub-key=…".into()),
                }
                .map_err(|e| bad_key("pub-key", e))?;
                (signing, verifying)
            }
        };
        Ok(TokenConfig::Jwt {
            algorithm,
            signing,
            verifying,
            ttl,
        })
    }
}

fn read_key(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading --auth-token key {path}: {e}"))
}

/// Issues and checks this member's tokens.
#[derive(Clone, Debug)]
pub struct Tokens {
    config: TokenConfig,
    /// Tokens whose signature was checked, and their claims: a client sends the same token
    /// with every request, and an RS256 signature costs tens of microseconds to check. The
    /// expiry and the user's revision are still checked on every use.
    verified: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Claims>>>,
}

impl Tokens {
    pub fn new(config: TokenConfig) -> Tokens {
        Tokens {
            config,
            verified: std::sync::Arc::default(),
        }
    }

    /// A token for `user` (whose password was just checked), valid until its TTL passes.
    pub fn issue(&self, store: &AuthStore, user: &super::User) -> Result<String, AuthError> {
        let (algorithm, key, ttl) = match &self.config {
            TokenConfig::Simple { ttl } => (
                Algorithm::HS256,
                EncodingKey::from_secret(&store.token_key).map_err(|_| AuthError::AuthFailed)?,
                *ttl,
            ),
            TokenConfig::Jwt {
                algorithm,
                signing: Some(key),
                ttl,
                ..
            } => (*algorithm, key.clone(), *ttl),
            // A verify-only member (etcd refuses the same way).
            TokenConfig::Jwt { signing: None, .. } => return Err(AuthError::AuthFailed),
        };
        let claims = Claims {
            username: user.name.clone(),
            revision: user.revision,
            exp: unix_now().saturating_add(ttl.as_secs().max(1)),
        };
        jsonwebtoken::encode(&Header::new(algorithm), &claims, &key)
            .map_err(|_| AuthError::AuthFailed)
    }

    /// The caller a token names, checked against `store`: signed by this cluster's key with
    /// the configured method (never `none`, never another method), not expired, and naming
    /// a user whose credentials have not changed since. Anything else is etcd's `invalid
    /// auth token`.
    pub fn verify(&self, store: &AuthStore, token: &str) -> Result<Caller, AuthError> {
        let remembered = self
            .verified
            .lock()
            .expect("verified tokens lock poisoned")
            .get(token)
            .cloned();
        let claims = match remembered {
            Some(claims) if claims.exp > unix_now() => claims,
            _ => self.check_signature(store, token)?,
        };
        match store.users.get(&claims.username) {
            Some(user) if user.revision == claims.revision => Ok(Caller::Token {
                user: claims.username,
                revision: claims.revision,
            }),
            _ => Err(AuthError::InvalidAuthToken),
        }
    }

    /// The claims of a token whose signature and expiry check out (then remembered).
    fn check_signature(&self, store: &AuthStore, token: &str) -> Result<Claims, AuthError> {
        let (algorithm, key) = match &self.config {
            TokenConfig::Simple { .. } => (
                Algorithm::HS256,
                DecodingKey::from_secret(&store.token_key)
                    .map_err(|_| AuthError::InvalidAuthToken)?,
            ),
            TokenConfig::Jwt {
                algorithm,
                verifying,
                ..
            } => (*algorithm, verifying.clone()),
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = 0;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|_| AuthError::InvalidAuthToken)?
            .claims;
        let mut verified = self.verified.lock().expect("verified tokens lock poisoned");
        if verified.len() >= VERIFIED_CAPACITY {
            verified.clear();
        }
        verified.insert(token.to_owned(), claims.clone());
        Ok(claims)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::User;

    fn store() -> AuthStore {
        let mut store = AuthStore {
            enabled: true,
            token_key: [7; 32],
            ..AuthStore::default()
        };
        store.users.insert(
            "alice".into(),
            User {
                name: "alice".into(),
                password_hash: String::new(),
                roles: vec![],
                no_password: false,
                revision: 3,
            },
        );
        store
    }

    fn simple() -> Tokens {
        Tokens::new(TokenConfig::Simple {
            ttl: Duration::from_secs(60),
        })
    }

    #[test]
    fn a_simple_token_names_its_user_while_the_user_is_unchanged() {
        // Proves a token verifies against the same store, and stops verifying once the user's
        // revision moves (password changed) or the user is gone.
        let mut store = store();
        let tokens = simple();
        let user = store.users["alice"].clone();
        let token = tokens.issue(&store, &user).expect("issue");
        assert_eq!(
            tokens.verify(&store, &token),
            Ok(Caller::Token {
                user: "alice".into(),
                revision: 3
            })
        );
        store.users.get_mut("alice").expect("alice").revision = 4;
        assert_eq!(
            tokens.verify(&store, &token),
            Err(AuthError::InvalidAuthToken)
        );
        store.users.clear();
        assert_eq!(
            tokens.verify(&store, &token),
            Err(AuthError::InvalidAuthToken)
        );
    }

    #[test]
    fn tokens_of_another_key_or_kind_or_none_are_refused() {
        // Proves a token signed with another cluster's key, an unsigned (`alg: none`) token,
        // an etcd-style simple token and garbage are all `invalid auth token`.
        let store = store();
        let tokens = simple();
        let other = AuthStore {
            token_key: [8; 32],
            ..store.clone()
        };
        let foreign = tokens.issue(&other, &store.users["alice"]).expect("issue");
        // {"alg":"none","typ":"JWT"} . {"username":"alice","revision":3,"exp":9999999999} .
        let unsigned = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.\
                        eyJ1c2VybmFtZSI6ImFsaWNlIiwicmV2aXNpb24iOjMsImV4cCI6OTk5OTk5OTk5OX0.";
        for bad in [
            foreign.as_str(),
            unsigned,
            "nNqmHrafGDdBUtZT.16",
            "",
            "a.b.c",
        ] {
            assert_eq!(
                tokens.verify(&store, bad),
                Err(AuthError::InvalidAuthToken),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_expired_token_is_refused() {
        // Proves expiry is checked with no leeway: a token whose `exp` has passed fails.
        let store = store();
        let claims = Claims {
            username: "alice".into(),
            revision: 3,
            exp: unix_now() - 1,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&store.token_key).expect("key"),
        )
        .expect("encode");
        assert_eq!(
            simple().verify(&store, &token),
            Err(AuthError::InvalidAuthToken)
        );
    }

    #[test]
    fn jwt_options_are_parsed_as_etcd_spells_them() {
        // Proves the option syntax: HS256 with a key file round-trips a token; missing or
        // unknown options are refused with a message naming them.
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"an operator's shared secret").expect("write");
        let spec = format!(
            "jwt,priv-key={},sign-method=HS256,ttl=10m",
            secret.display()
        );
        let config = TokenConfig::parse(&spec, Duration::from_secs(300)).expect("parse");
        let tokens = Tokens::new(config);
        let store = store();
        let token = tokens.issue(&store, &store.users["alice"]).expect("issue");
        assert!(tokens.verify(&store, &token).is_ok());
        for (bad, says) in [
            ("jwt,sign-method=HS256", "priv-key"),
            ("jwt,priv-key=/nonexistent", "/nonexistent"),
            ("jwt,pub-key=x=y,bogus=1", "reading"),
            ("magic", "unknown token type"),
            ("simple,ttl=5", "unknown token type"),
        ] {
            let err = TokenConfig::parse(bad, Duration::from_secs(1)).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
        let err = TokenConfig::parse(
            &format!("jwt,priv-key={},sign-method=XS1", secret.display()),
            Duration::from_secs(1),
        )
        .expect_err("bad method");
        assert!(err.contains("unsupported sign-method"), "{err}");
    }
}
