//! Authentication: who is calling, from the request's credential. A bearer token in
//! `authorization` (a JWT verified against configured public keys, or a static API key looked
//! up by its SHA-256), else the client certificate of a mutual-TLS connection (its subject
//! alternative names, mapped to a principal by configuration). The answer is a
//! [`Principal`]: its roles and tenants; `server.rs` asks it before each use case runs.
//!
//! A server configured with no credential at all is open: every caller is
//! [`Principal::anonymous`] (the application allows that only on loopback unless told
//! otherwise). Once anything is configured, a call without a valid credential is
//! UNAUTHENTICATED.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rendezvous_service::{Principal, Role, Tenants};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tonic::Status;
use tonic::metadata::MetadataMap;

/// What a credential grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Its roles.
    pub roles: BTreeSet<Role>,
    /// Its tenants.
    pub tenants: Tenants,
}

/// A static API key: the SHA-256 of the key (never the key itself) and what it grants.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// Its name, for logs and errors.
    pub name: String,
    /// SHA-256 of the key.
    pub sha256: [u8; 32],
    /// What it grants.
    pub grant: Grant,
}

/// A client certificate, by one of its subject alternative names (a DNS name or a URI such as
/// a SPIFFE id), and what it grants.
#[derive(Debug, Clone)]
pub struct CertificateRule {
    /// The SAN, exactly.
    pub san: String,
    /// What it grants.
    pub grant: Grant,
}

/// Bearer JWTs: the keys that may sign them and how their claims map to a principal.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// The verification keys.
    pub keys: Vec<JwtKey>,
    /// The required `iss`.
    pub issuer: String,
    /// The required `aud` (one of the token's audiences).
    pub audience: String,
    /// Dotted path of the claim holding the roles (an array of strings, or one string of
    /// space-separated names). Names that are not roles are ignored.
    pub roles_claim: String,
    /// Dotted path of the claim holding the tenants (`*`: every tenant).
    pub tenants_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
}

/// One JWT verification key.
#[derive(Clone)]
pub struct JwtKey {
    /// Its `kid`, when known: a token naming a `kid` is checked with that key only.
    pub kid: Option<String>,
    family: Family,
    key: DecodingKey,
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

/// The asymmetric key families accepted. Shared secrets (HS*) and `none` never are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    Ec,
    Ed,
}

fn family(alg: Algorithm) -> Option<Family> {
    use Algorithm as A;
    match alg {
        A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512 => Some(Family::Rsa),
        A::ES256 | A::ES384 => Some(Family::Ec),
        A::EdDSA => Some(Family::Ed),
        A::HS256 | A::HS384 | A::HS512 => None,
    }
}

impl JwtKey {
    /// A public key in PEM (RSA, EC P-256/P-384 or Ed25519).
    pub fn from_pem(pem: &[u8]) -> Result<Vec<JwtKey>, String> {
        let key = |family, key| JwtKey {
            kid: None,
            family,
            key,
        };
        if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
            return Ok(vec![key(Family::Rsa, k)]);
        }
        if let Ok(k) = DecodingKey::from_ec_pem(pem) {
            return Ok(vec![key(Family::Ec, k)]);
        }
        if let Ok(k) = DecodingKey::from_ed_pem(pem) {
            return Ok(vec![key(Family::Ed, k)]);
        }
        Err("not an RSA, EC or Ed25519 public key in PEM".into())
    }

    /// The asymmetric keys of a JWKS document (RFC 7517). Symmetric keys are refused.
    pub fn from_jwks(document: &str) -> Result<Vec<JwtKey>, String> {
        let set: JwkSet =
            serde_json::from_str(document).map_err(|e| format!("not a JWKS document: {e}"))?;
        set.keys
            .iter()
            .enumerate()
            .map(|(i, jwk)| {
                let family = match &jwk.algorithm {
                    AlgorithmParameters::RSA(_) => Family::Rsa,
                    AlgorithmParameters::EllipticCurve(_) => Family::Ec,
                    AlgorithmParameters::OctetKeyPair(_) => Family::Ed,
                    AlgorithmParameters::OctetKey(_) => {
                        return Err(format!(
                            "keys[{i}]: symmetric keys are not accepted; use RSA, EC or Ed25519"
                        ));
                    }
                };
                let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("keys[{i}]: {e}"))?;
                Ok(JwtKey {
                    kid: jwk.common.key_id.clone(),
                    family,
                    key,
                })
            })
            .collect()
    }
}

/// What the server accepts as a credential.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Static API keys.
    pub api_keys: Vec<ApiKey>,
    /// Client certificates (needs a TLS server that asks for them).
    pub certificates: Vec<CertificateRule>,
    /// Bearer JWTs.
    pub jwt: Option<JwtConfig>,
}

impl AuthConfig {
    /// Whether no credential is configured: the server is then open.
    pub fn is_empty(&self) -> bool {
        self.api_keys.is_empty() && self.certificates.is_empty() && self.jwt.is_none()
    }
}

/// The subject alternative names of a verified client certificate, which the server puts in
/// each request's extensions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// DNS names and URIs, as written in the certificate.
    pub sans: Vec<String>,
}

impl PeerIdentity {
    /// The names of a DER certificate (the leaf of the verified chain).
    pub fn from_der(der: &[u8]) -> Result<PeerIdentity, String> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| format!("unreadable certificate: {e}"))?;
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(n) | GeneralName::URI(n) => sans.push((*n).to_owned()),
                    _ => {}
                }
            }
        }
        Ok(PeerIdentity { sans })
    }
}

/// Turns a request's credential into a [`Principal`].
#[derive(Debug, Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    open: bool,
    api_keys: HashMap<[u8; 32], (String, Grant)>,
    certificates: HashMap<String, Grant>,
    jwt: Option<JwtConfig>,
}

/// A JWT has three base64url parts.
fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

impl Authenticator {
    /// A server without authentication: every caller is [`Principal::anonymous`].
    pub fn open() -> Self {
        Self::new(AuthConfig::default())
    }

    /// The authenticator of `config` (open when it configures nothing).
    pub fn new(config: AuthConfig) -> Self {
        let open = config.is_empty();
        Self {
            inner: Arc::new(Inner {
                open,
                api_keys: config
                    .api_keys
                    .into_iter()
                    .map(|k| (k.sha256, (k.name, k.grant)))
                    .collect(),
                certificates: config
                    .certificates
                    .into_iter()
                    .map(|c| (c.san, c.grant))
                    .collect(),
                jwt: config.jwt,
            }),
        }
    }

    /// Whether every caller is let in without a credential.
    pub fn is_open(&self) -> bool {
        self.inner.open
    }

    /// The principal behind a request: its `authorization` metadata, else the client
    /// certificate its connection presented (`peer`). UNAUTHENTICATED when there is no
    /// credential or it is not valid; the message says which, never why a key did not match.
    pub fn authenticate(
        &self,
        metadata: &MetadataMap,
        peer: Option<&PeerIdentity>,
    ) -> Result<Principal, Status> {
        if self.inner.open {
            return Ok(Principal::anonymous());
        }
        if let Some(value) = metadata.get("authorization") {
            let value = value
                .to_str()
                .map_err(|_| unauthenticated("the authorization header is not text"))?;
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .ok_or_else(|| unauthenticated("the authorization header is not `Bearer <token>`"))?
                .trim();
            return self.bearer(token);
        }
        if let Some(peer) = peer {
            return peer
                .sans
                .iter()
                .find_map(|san| {
                    self.inner
                        .certificates
                        .get(san)
                        .map(|grant| principal(san.clone(), grant.clone()))
                })
                .ok_or_else(|| {
                    unauthenticated(&format!(
                        "the client certificate ({}) is not mapped to a principal",
                        peer.sans.join(", ")
                    ))
                });
        }
        Err(unauthenticated(
            "no credential: send `authorization: Bearer <token>` or a client certificate",
        ))
    }

    fn bearer(&self, token: &str) -> Result<Principal, Status> {
        if let Some(jwt) = self.inner.jwt.as_ref().filter(|_| looks_like_jwt(token)) {
            return verify_jwt(jwt, token)
                .map_err(|why| unauthenticated(&format!("the bearer token was refused: {why}")));
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.inner
            .api_keys
            .get(&digest)
            .map(|(name, grant)| principal(name.clone(), grant.clone()))
            .ok_or_else(|| unauthenticated("the bearer token is not a known API key"))
    }
}

fn principal(name: String, grant: Grant) -> Principal {
    Principal {
        name,
        roles: grant.roles,
        tenants: grant.tenants,
    }
}

fn unauthenticated(message: &str) -> Status {
    Status::unauthenticated(message.to_owned())
}

/// The SHA-256 of an API key, in lowercase hex: what the configuration stores.
pub fn api_key_sha256(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn verify_jwt(config: &JwtConfig, token: &str) -> Result<Principal, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let alg_family =
        family(header.alg).ok_or_else(|| format!("algorithm {:?} is not accepted", header.alg))?;
    let candidates: Vec<&JwtKey> = config
        .keys
        .iter()
        .filter(|k| k.family == alg_family)
        .filter(|k| match (&header.kid, &k.kid) {
            (Some(wanted), Some(kid)) => wanted == kid,
            _ => true,
        })
        .collect();
    if candidates.is_empty() {
        return Err(match &header.kid {
            Some(kid) => format!("no {:?} key with kid {kid:?}", header.alg),
            None => format!("no key for algorithm {:?}", header.alg),
        });
    }
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[&config.issuer]);
    validation.set_audience(&[&config.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = config.leeway.as_secs();
    validation.validate_nbf = true;
    let mut last = String::new();
    for key in candidates {
        match jsonwebtoken::decode::<Value>(token, &key.key, &validation) {
            Ok(data) => return claims(config, &data.claims),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// The principal a verified token's claims describe.
fn claims(config: &JwtConfig, claims: &Value) -> Result<Principal, String> {
    let name = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or("the sub claim is not a string")?
        .to_owned();
    let roles = names(claims, &config.roles_claim)?
        .iter()
        .filter_map(|n| Role::parse(n))
        .collect();
    let tenant_names = names(claims, &config.tenants_claim)?;
    let tenants = Tenants::parse(tenant_names.iter().map(String::as_str))
        .map_err(|e| format!("claim {}: {e}", config.tenants_claim))?;
    Ok(Principal {
        name,
        roles,
        tenants,
    })
}

/// The strings at a dotted claim path: an array of strings, or one space-separated string.
/// A missing claim is empty.
fn names(claims: &Value, path: &str) -> Result<Vec<String>, String> {
    let mut at = claims;
    for part in path.split('.') {
        match at.get(part) {
            Some(v) => at = v,
            None => return Ok(Vec::new()),
        }
    }
    match at {
        Value::String(s) => Ok(s.split_whitespace().map(str::to_owned).collect()),
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("claim {path} holds a non-string"))
            })
            .collect(),
        _ => Err(format!("claim {path} is neither a string nor an array")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_map_to_roles_and_tenants() {
        let config = JwtConfig {
            keys: Vec::new(),
            issuer: "i".into(),
            audience: "a".into(),
            roles_claim: "realm_access.roles".into(),
            tenants_claim: "tenants".into(),
            leeway: Duration::ZERO,
        };
        let p = claims(
            &config,
            &serde_json::json!({
                "sub": "svc-1",
                "realm_access": {"roles": ["engine", "offline_access"]},
                "tenants": "acme beta"
            }),
        )
        .unwrap();
        assert_eq!(p.name, "svc-1");
        assert_eq!(p.roles, BTreeSet::from([Role::Engine]));
        assert!(matches!(&p.tenants, Tenants::Only(s) if s.len() == 2));
        let none = claims(&config, &serde_json::json!({"sub": "x"})).unwrap();
        assert!(none.roles.is_empty());
        assert_eq!(none.tenants, Tenants::Only(BTreeSet::new()));
        assert!(claims(&config, &serde_json::json!({"sub": "x", "tenants": 3})).is_err());
    }

    #[test]
    fn api_keys_are_found_by_their_hash_only() {
        let key = "rdv_secret";
        let mut sha = [0u8; 32];
        sha.copy_from_slice(&Sha256::digest(key.as_bytes()));
        let auth = Authenticator::new(AuthConfig {
            api_keys: vec![ApiKey {
                name: "engine-a".into(),
                sha256: sha,
                grant: Grant {
                    roles: BTreeSet::from([Role::Engine]),
                    tenants: Tenants::Any,
                },
            }],
            ..Default::default()
        });
        assert!(!auth.is_open());
        let mut md = MetadataMap::new();
        md.insert("authorization", format!("Bearer {key}").parse().unwrap());
        assert_eq!(auth.authenticate(&md, None).unwrap().name, "engine-a");
        md.insert("authorization", "Bearer rdv_other".parse().unwrap());
        let e = auth.authenticate(&md, None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let e = auth.authenticate(&MetadataMap::new(), None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert_eq!(api_key_sha256(key).len(), 64);
    }

    #[test]
    fn an_open_server_lets_everyone_in_as_an_admin() {
        let p = Authenticator::open()
            .authenticate(&MetadataMap::new(), None)
            .unwrap();
        assert!(p.has(Role::Admin));
    }

    #[test]
    fn symmetric_keys_are_refused() {
        let e = JwtKey::from_jwks(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).unwrap_err();
        assert!(e.contains("symmetric"), "{e}");
    }
}
