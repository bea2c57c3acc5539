//! `[auth]` (who may call, and as whom) and `[server.tls]` (the gRPC server's certificate and
//! the client certificates it verifies). Each builds what the server runs with: an
//! [`Authenticator`] and a rustls `ServerConfig`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rendezvous_grpc_api::auth::{
    ApiKey, AuthConfig, Authenticator, CertificateRule, Grant, JwtConfig, JwtKey,
};
use rendezvous_grpc_api::webhook::{WebhookSecret, Webhooks};
use rendezvous_service::{Role, Tenants};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use super::SecretEntry;
use super::duration;

/// `[auth]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Allow listening on a non-loopback address without authentication or without TLS.
    /// Off: such a configuration refuses to start.
    pub allow_insecure: bool,
    /// Static API keys, by the SHA-256 of the key (`rendezvous api-key` makes one).
    pub api_keys: Vec<ApiKeyEntry>,
    /// Client certificates (mutual TLS, `server.tls.client_ca_file`), by subject alternative
    /// name.
    pub certificates: Vec<CertificateEntry>,
    /// Bearer JWTs.
    pub jwt: JwtSection,
    /// Signing secrets of HTTP callbacks (Standard Webhooks), one per sender.
    pub webhooks: Vec<WebhookEntry>,
    /// How far a signed callback's `webhook-timestamp` may be from the server's clock: older
    /// ones are refused as replays.
    #[serde(with = "duration::positive")]
    pub webhook_tolerance: Duration,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            allow_insecure: false,
            api_keys: Vec::new(),
            certificates: Vec::new(),
            jwt: JwtSection::default(),
            webhooks: Vec::new(),
            webhook_tolerance: Duration::from_secs(300),
        }
    }
}

/// One `[[auth.webhooks]]` entry: the secret one sender signs its HTTP callbacks with. Its
/// callbacks act as a gateway for its tenants.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEntry {
    /// Its name, for logs and errors.
    pub name: String,
    /// Where the secret (`whsec_` and base64) is read from at start-up: `{ file = "…" }` or
    /// `{ env = "…" }`; never written here.
    pub secret: SecretEntry,
    /// The tenants its callbacks act for; `"*"`: every tenant.
    pub tenants: Vec<String>,
}

/// One `[[auth.api_keys]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// Its name, for logs and errors.
    pub name: String,
    /// The SHA-256 of the key, 64 hex digits. The key itself is never written down here.
    pub sha256: String,
    /// `engine`, `gateway`, `admin`.
    pub roles: Vec<String>,
    /// The tenants it acts for; `"*"`: every tenant; `""`: the default tenant.
    pub tenants: Vec<String>,
}

/// One `[[auth.certificates]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateEntry {
    /// A subject alternative name of the client certificate (DNS name or URI), exactly.
    pub san: String,
    /// `engine`, `gateway`, `admin`.
    pub roles: Vec<String>,
    /// The tenants it acts for; `"*"`: every tenant.
    pub tenants: Vec<String>,
}

/// `[auth.jwt]`: on when a key is configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtSection {
    /// A JWKS document (RFC 7517) of the issuer's public keys. Empty: none.
    pub jwks_file: PathBuf,
    /// PEM public keys (RSA, EC, Ed25519), one per file.
    pub public_key_files: Vec<PathBuf>,
    /// PEM public keys written inline.
    pub public_keys: Vec<String>,
    /// The required `iss`.
    pub issuer: String,
    /// The required `aud`.
    pub audience: String,
    /// Dotted path of the claim listing the roles.
    pub roles_claim: String,
    /// Dotted path of the claim listing the tenants.
    pub tenants_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(with = "duration")]
    pub leeway: Duration,
}

impl Default for JwtSection {
    fn default() -> Self {
        Self {
            jwks_file: PathBuf::new(),
            public_key_files: Vec::new(),
            public_keys: Vec::new(),
            issuer: String::new(),
            audience: String::new(),
            roles_claim: "roles".into(),
            tenants_claim: "tenants".into(),
            leeway: Duration::from_secs(30),
        }
    }
}

impl JwtSection {
    fn enabled(&self) -> bool {
        !self.jwks_file.as_os_str().is_empty()
            || !self.public_key_files.is_empty()
            || !self.public_keys.is_empty()
    }

    fn config(&self) -> Result<JwtConfig> {
        if self.issuer.is_empty() || self.audience.is_empty() {
            bail!("auth.jwt: issuer and audience are required when a key is configured");
        }
        let mut keys = Vec::new();
        if !self.jwks_file.as_os_str().is_empty() {
            let text = read(&self.jwks_file, "auth.jwt.jwks_file")?;
            keys.extend(JwtKey::from_jwks(&text).map_err(|e| {
                anyhow::anyhow!("auth.jwt.jwks_file {}: {e}", self.jwks_file.display())
            })?);
        }
        for (i, path) in self.public_key_files.iter().enumerate() {
            let text = read(path, &format!("auth.jwt.public_key_files[{i}]"))?;
            keys.extend(JwtKey::from_pem(text.as_bytes()).map_err(|e| {
                anyhow::anyhow!("auth.jwt.public_key_files[{i}] {}: {e}", path.display())
            })?);
        }
        for (i, pem) in self.public_keys.iter().enumerate() {
            keys.extend(
                JwtKey::from_pem(pem.as_bytes())
                    .map_err(|e| anyhow::anyhow!("auth.jwt.public_keys[{i}]: {e}"))?,
            );
        }
        if keys.is_empty() {
            bail!("auth.jwt: the configured key sources hold no key");
        }
        Ok(JwtConfig {
            keys,
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            roles_claim: self.roles_claim.clone(),
            tenants_claim: self.tenants_claim.clone(),
            leeway: self.leeway,
        })
    }
}

fn read(path: &Path, setting: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{setting}: reading {}", path.display()))
}

fn grant(setting: &str, roles: &[String], tenants: &[String]) -> Result<Grant> {
    let roles = roles
        .iter()
        .map(|name| {
            Role::parse(name).ok_or_else(|| {
                anyhow::anyhow!("{setting}.roles: unknown role {name:?} (engine, gateway, admin)")
            })
        })
        .collect::<Result<BTreeSet<_>>>()?;
    if roles.is_empty() {
        bail!("{setting}.roles: at least one of engine, gateway, admin");
    }
    Ok(Grant {
        roles,
        tenants: tenants_of(setting, tenants)?,
    })
}

/// The tenants of a credential's setting: at least one (`*`: every tenant).
fn tenants_of(setting: &str, names: &[String]) -> Result<Tenants> {
    let tenants = Tenants::parse(names.iter().map(String::as_str))
        .map_err(|e| anyhow::anyhow!("{setting}.tenants: {e}"))?;
    if tenants == Tenants::Only(BTreeSet::new()) {
        bail!("{setting}.tenants: at least one tenant (\"*\": every tenant)");
    }
    Ok(tenants)
}

fn sha256(setting: &str, hex: &str) -> Result<[u8; 32]> {
    let bad = || anyhow::anyhow!("{setting}.sha256: not 64 hex digits (the SHA-256 of the key)");
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

impl AuthSection {
    /// Whether any credential is configured (otherwise every caller is let in as an admin).
    pub fn configured(&self) -> bool {
        !self.api_keys.is_empty() || !self.certificates.is_empty() || self.jwt.enabled()
    }

    /// The authenticator the server runs with; reads the key files.
    pub fn authenticator(&self) -> Result<Authenticator> {
        let mut config = AuthConfig::default();
        let mut names = BTreeSet::new();
        for (i, key) in self.api_keys.iter().enumerate() {
            let setting = format!("auth.api_keys[{i}]");
            if key.name.is_empty() || !names.insert(key.name.as_str()) {
                bail!("{setting}.name: required and unique");
            }
            config.api_keys.push(ApiKey {
                name: key.name.clone(),
                sha256: sha256(&setting, &key.sha256)?,
                grant: grant(&setting, &key.roles, &key.tenants)?,
            });
        }
        for (i, cert) in self.certificates.iter().enumerate() {
            let setting = format!("auth.certificates[{i}]");
            if cert.san.is_empty() {
                bail!("{setting}.san: required");
            }
            config.certificates.push(CertificateRule {
                san: cert.san.clone(),
                grant: grant(&setting, &cert.roles, &cert.tenants)?,
            });
        }
        if self.jwt.enabled() {
            config.jwt = Some(self.jwt.config()?);
        }
        Ok(Authenticator::new(config))
    }

    /// The webhook secrets HTTP callbacks are verified with; reads each secret.
    pub fn webhooks(&self) -> Result<Webhooks> {
        let mut names = BTreeSet::new();
        let mut secrets = Vec::new();
        for (i, entry) in self.webhooks.iter().enumerate() {
            let setting = format!("auth.webhooks[{i}]");
            if entry.name.is_empty() || !names.insert(entry.name.as_str()) {
                bail!("{setting}.name: required and unique");
            }
            let tenants = tenants_of(&setting, &entry.tenants)?;
            let value = entry
                .secret
                .read_now()
                .map_err(|e| anyhow::anyhow!("{setting}.secret: {e}"))?;
            secrets.push(
                WebhookSecret::parse(&entry.name, &value, tenants)
                    .map_err(|e| anyhow::anyhow!("{setting}.secret: {e}"))?,
            );
        }
        Ok(Webhooks::new(secrets, self.webhook_tolerance))
    }
}

/// Whether client certificates must be presented when `client_ca_file` is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientCertificates {
    /// Verified when presented; callers may use a bearer token instead.
    #[default]
    Optional,
    /// Every connection must present one.
    Required,
}

/// `[server.tls]`: on when `cert_file` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// The server's certificate chain (PEM). Empty: plaintext.
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// CA certificates (PEM) that client certificates are verified against. Empty: none
    /// asked for.
    pub client_ca_file: PathBuf,
    /// `optional` or `required`.
    pub client_certificates: ClientCertificates,
}

impl TlsSection {
    /// Whether the server speaks TLS.
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty()
    }

    /// The rustls configuration of the server (ALPN h2), or `None` for plaintext.
    pub fn server_config(&self) -> Result<Option<Arc<rustls::ServerConfig>>> {
        if !self.enabled() {
            if !self.key_file.as_os_str().is_empty() || !self.client_ca_file.as_os_str().is_empty()
            {
                bail!("server.tls: cert_file is required with key_file or client_ca_file");
            }
            return Ok(None);
        }
        let certs = certificates(&self.cert_file, "server.tls.cert_file")?;
        if self.key_file.as_os_str().is_empty() {
            bail!("server.tls.key_file: required with cert_file");
        }
        let key = PrivateKeyDer::from_pem_file(&self.key_file)
            .map_err(|e| anyhow::anyhow!("server.tls.key_file {}: {e}", self.key_file.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("server.tls: protocol versions")?;
        let builder = if self.client_ca_file.as_os_str().is_empty() {
            builder.with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(&self.client_ca_file, "server.tls.client_ca_file")? {
                roots
                    .add(cert)
                    .map_err(|e| anyhow::anyhow!("server.tls.client_ca_file: {e}"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = match self.client_certificates {
                ClientCertificates::Optional => verifier.allow_unauthenticated(),
                ClientCertificates::Required => verifier,
            }
            .build()
            .map_err(|e| anyhow::anyhow!("server.tls.client_ca_file: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| {
            anyhow::anyhow!("server.tls: the key does not fit the certificate: {e}")
        })?;
        // gRPC needs HTTP/2; the HTTP callbacks also take HTTP/1.1.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(Arc::new(config)))
    }
}

/// The certificates of a PEM file; at least one.
fn certificates(path: &Path, setting: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{setting} {}: {e}", path.display()))?;
    if certs.is_empty() {
        bail!("{setting} {}: no certificate", path.display());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use crate::cli::Command;
    use crate::config::tests::error;

    fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Command> {
        Config::load(
            args,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn off_loopback_without_authentication_or_tls_refuses_to_start() {
        let err = error(&["--listen", "0.0.0.0:50151"], &[]);
        assert!(
            err.contains("server.listen: 0.0.0.0:50151 is not a loopback address and no authentication is configured"),
            "{err}"
        );
        // Arrays of tables come from the file.
        let dir = std::env::temp_dir().join(format!("rdv-auth-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            format!(
                "[[auth.api_keys]]\nname = \"e\"\nsha256 = \"{}\"\nroles = [\"engine\"]\ntenants = [\"a\"]\n",
                "ab".repeat(32)
            ),
        )
        .unwrap();
        let file = file.to_str().unwrap();
        let err = error(&["--config", file, "--listen", "0.0.0.0:50151"], &[]);
        assert!(err.contains("TLS is off"), "{err}");
        // Loopback needs nothing; the explicit escape hatch allows the rest.
        assert!(load(&["--config", file], &[]).is_ok());
        assert!(
            load(
                &["--listen", "0.0.0.0:50151"],
                &[("RENDEZVOUS__AUTH__ALLOW_INSECURE", "true")]
            )
            .is_ok()
        );
    }

    #[test]
    fn bad_credentials_are_refused_naming_the_entry() {
        let entry = |sha: &str, roles: &[&str], tenants: &[&str]| ApiKeyEntry {
            name: "k".into(),
            sha256: sha.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            tenants: tenants.iter().map(|t| t.to_string()).collect(),
        };
        let good = "ab".repeat(32);
        let cases = [
            (
                entry("abc", &["engine"], &["a"]),
                "auth.api_keys[0].sha256: not 64 hex digits",
            ),
            (
                entry(&good, &["root"], &["a"]),
                "auth.api_keys[0].roles: unknown role \"root\"",
            ),
            (
                entry(&good, &[], &["a"]),
                "auth.api_keys[0].roles: at least one",
            ),
            (
                entry(&good, &["engine"], &[]),
                "auth.api_keys[0].tenants: at least one",
            ),
            (
                entry(&good, &["engine"], &["bad\u{7}"]),
                "auth.api_keys[0].tenants: tenant",
            ),
        ];
        for (entry, words) in cases {
            let section = AuthSection {
                api_keys: vec![entry],
                ..AuthSection::default()
            };
            let err = format!("{:#}", section.authenticator().unwrap_err());
            assert!(err.contains(words), "{err}");
        }
        let jwt = AuthSection {
            jwt: JwtSection {
                public_keys: vec!["not a key".into()],
                issuer: "i".into(),
                audience: "a".into(),
                ..JwtSection::default()
            },
            ..AuthSection::default()
        };
        let err = format!("{:#}", jwt.authenticator().unwrap_err());
        assert!(err.contains("auth.jwt.public_keys[0]"), "{err}");
        let no_issuer = AuthSection {
            jwt: JwtSection {
                public_keys: vec!["x".into()],
                ..JwtSection::default()
            },
            ..AuthSection::default()
        };
        let err = format!("{:#}", no_issuer.authenticator().unwrap_err());
        assert!(err.contains("issuer and audience are required"), "{err}");
        let tls = TlsSection {
            cert_file: "/nonexistent/server.crt".into(),
            key_file: "/nonexistent/server.key".into(),
            ..TlsSection::default()
        };
        let err = format!("{:#}", tls.server_config().unwrap_err());
        assert!(
            err.contains("server.tls.cert_file /nonexistent/server.crt"),
            "{err}"
        );
    }

    #[test]
    fn api_key_prints_a_fresh_key_and_its_hash() {
        let Command::Print(text) = load(&["api-key"], &[]).unwrap() else {
            panic!("api-key prints");
        };
        let key = text
            .lines()
            .next()
            .unwrap()
            .strip_prefix("key:    ")
            .unwrap();
        assert!(key.starts_with("rdv_") && key.len() > 60, "{text}");
        assert!(text.contains(&rendezvous_grpc_api::auth::api_key_sha256(key)));
        let Command::Print(text) =
            load(&["api-key", "--from-env", "K"], &[("K", "rdv_x")]).unwrap()
        else {
            panic!("api-key prints");
        };
        assert!(
            text.contains(&rendezvous_grpc_api::auth::api_key_sha256("rdv_x")),
            "{text}"
        );
        let err = error(&["api-key", "--from-env", "MISSING"], &[]);
        assert!(err.contains("MISSING is not set"), "{err}");
    }
}
