//! Credentials made in the test: a certificate authority with server and client certificates
//! (rcgen), signing keys and the JWTs they sign (jsonwebtoken), API keys, and gRPC channels
//! that present them — so the security tests run real TLS handshakes and real token checks.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A directory of files for one test, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A fresh directory under the system's temp dir.
    pub fn new(name: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("rdv-{name}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    /// Writes `text` to `name` in it.
    pub fn write(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.0.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A certificate and its private key, in PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    /// The certificate.
    pub cert: String,
    /// Its private key (PKCS#8).
    pub key: String,
}

/// A certificate authority made in the test.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, in PEM (what clients and servers trust).
    pub cert: String,
}

impl Authority {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self) -> Result<Pem> {
        self.sign(CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])?)
    }

    /// A client certificate whose one subject alternative name is the URI `san`.
    pub fn client(&self, san: &str) -> Result<Pem> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![SanType::URI(san.try_into()?)];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Result<Pem> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// A token issuer made in the test: its key pair and what it puts in tokens.
pub struct TokenIssuer {
    alg: Algorithm,
    key: EncodingKey,
    /// The public key, in PEM (what the server is configured with).
    pub public_pem: String,
    /// Its `kid`, in the header of every token it signs.
    pub kid: String,
}

/// The issuer and audience the test tokens carry.
pub const ISSUER: &str = "https://idp.test";
/// See [`ISSUER`].
pub const AUDIENCE: &str = "rendezvous";

impl TokenIssuer {
    /// An ES256 (P-256) issuer.
    pub fn es256() -> Result<Self> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        Ok(Self {
            alg: Algorithm::ES256,
            key: EncodingKey::from_ec_pem(key.serialize_pem().as_bytes())?,
            public_pem: key.public_key_pem(),
            kid: "es-1".into(),
        })
    }

    /// An EdDSA (Ed25519) issuer.
    pub fn ed25519() -> Result<Self> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        Ok(Self {
            alg: Algorithm::EdDSA,
            key: EncodingKey::from_ed_pem(key.serialize_pem().as_bytes())?,
            public_pem: key.public_key_pem(),
            kid: "ed-1".into(),
        })
    }

    /// A token for `sub` with `roles` and `tenants`, expiring `expires_in` from now (negative:
    /// already expired), for [`ISSUER`] and [`AUDIENCE`].
    pub fn token(&self, sub: &str, roles: &[&str], tenants: &[&str], expires_in: i64) -> String {
        self.token_with(sub, roles, tenants, expires_in, ISSUER, AUDIENCE)
    }

    /// A token with any issuer and audience.
    pub fn token_with(
        &self,
        sub: &str,
        roles: &[&str],
        tenants: &[&str],
        expires_in: i64,
        iss: &str,
        aud: &str,
    ) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs() as i64;
        let claims = serde_json::json!({
            "sub": sub, "iss": iss, "aud": aud, "iat": now, "exp": now + expires_in,
            "roles": roles, "tenants": tenants,
        });
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).expect("signing a test token")
    }
}

/// A new random API key and the SHA-256 the configuration stores.
pub fn api_key() -> (String, String) {
    let key = format!("rdv_{}", uuid::Uuid::new_v4().simple());
    let sha = rendezvous_grpc_api::auth::api_key_sha256(&key);
    (key, sha)
}

/// A TLS channel to `port` on 127.0.0.1 that trusts `ca` (PEM), presenting `client` if given.
pub async fn tls_channel(port: u16, ca: &str, client: Option<&Pem>) -> Result<Channel> {
    Ok(tls_endpoint(port, ca, client)?.connect().await?)
}

/// The endpoint of [`tls_channel`], not yet connected.
pub fn tls_endpoint(port: u16, ca: &str, client: Option<&Pem>) -> Result<Endpoint> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(client) = client {
        tls = tls.identity(Identity::from_pem(&client.cert, &client.key));
    }
    Ok(Endpoint::from_shared(format!("https://127.0.0.1:{port}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5)))
}

/// Writes `pem` as `<name>.crt` and `<name>.key` under `dir`.
pub fn write_pem(dir: &Scratch, name: &str, pem: &Pem) -> Result<(PathBuf, PathBuf)> {
    Ok((
        dir.write(&format!("{name}.crt"), &pem.cert)?,
        dir.write(&format!("{name}.key"), &pem.key)?,
    ))
}

/// Client credentials for instances started with [`SecureDeployment`]: the CA to trust and
/// the client certificates of the engine and of the callback gateway.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    /// The CA certificate (PEM).
    pub ca: String,
    /// The engine's client certificate: role `engine`, every tenant.
    pub engine: Pem,
    /// The gateway's client certificate: role `gateway`, every tenant.
    pub gateway: Pem,
    /// A bearer token (API key) of an engine of every tenant.
    pub engine_key: String,
    /// A bearer token (API key) of a gateway of every tenant.
    pub gateway_key: String,
    /// A bearer JWT (ES256, valid for a day) of an engine of every tenant.
    pub engine_token: String,
}

/// What instances need to run with TLS, required client certificates and API keys: the
/// environment (a config file with the credentials and the TLS files, written under a
/// directory) and the clients' side of it.
pub struct SecureDeployment {
    /// `RENDEZVOUS_CONFIG` and the TLS settings, for each instance's environment.
    pub env: Vec<(String, String)>,
    /// What clients present.
    pub credentials: ClientCredentials,
}

impl SecureDeployment {
    /// Writes the CA, the server certificate and `auth.toml` under `dir`. With
    /// `client_certificates` the server requires one on every connection.
    pub fn create(dir: &std::path::Path, client_certificates: bool) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let ca = Authority::new("rendezvous test CA")?;
        let server = ca.server()?;
        let write = |name: &str, text: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, text)?;
            Ok(path)
        };
        let cert = write("server.crt", &server.cert)?;
        let key = write("server.key", &server.key)?;
        let client_ca = write("clients-ca.crt", &ca.cert)?;
        let (engine_key, engine_sha) = api_key();
        let (gateway_key, gateway_sha) = api_key();
        let issuer = TokenIssuer::es256()?;
        let engine_token = issuer.token("engine", &["engine"], &["*"], 86_400);
        let public_key = issuer.public_pem.trim();
        let config = format!(
            r#"# Written by the test harness: who may call the instances.
[[auth.api_keys]]
name = "engine"
sha256 = "{engine_sha}"
roles = ["engine"]
tenants = ["*"]

[[auth.api_keys]]
name = "gateway"
sha256 = "{gateway_sha}"
roles = ["gateway"]
tenants = ["*"]

[[auth.certificates]]
san = "spiffe://rendezvous.test/engine"
roles = ["engine"]
tenants = ["*"]

[[auth.certificates]]
san = "spiffe://rendezvous.test/gateway"
roles = ["gateway"]
tenants = ["*"]

[auth.jwt]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
public_keys = ['''
{public_key}
''']
"#
        );
        let config = write("auth.toml", &config)?;
        let path = |p: &PathBuf| p.display().to_string();
        let mut env = vec![
            ("RENDEZVOUS_CONFIG".to_owned(), path(&config)),
            ("RENDEZVOUS__SERVER__TLS__CERT_FILE".to_owned(), path(&cert)),
            ("RENDEZVOUS__SERVER__TLS__KEY_FILE".to_owned(), path(&key)),
            (
                "RENDEZVOUS__SERVER__TLS__CLIENT_CA_FILE".to_owned(),
                path(&client_ca),
            ),
        ];
        if client_certificates {
            env.push((
                "RENDEZVOUS__SERVER__TLS__CLIENT_CERTIFICATES".to_owned(),
                "required".to_owned(),
            ));
        }
        Ok(Self {
            env,
            credentials: ClientCredentials {
                engine: ca.client("spiffe://rendezvous.test/engine")?,
                gateway: ca.client("spiffe://rendezvous.test/gateway")?,
                ca: ca.cert,
                engine_key,
                gateway_key,
                engine_token,
            },
        })
    }
}
