//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): a callback over HTTP is
//! signed with a shared secret as `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "{webhook-id}.{webhook-timestamp}.{body}">` (several space-separated signatures while a
//! secret rotates), and refused when its timestamp is outside the tolerance, so a captured
//! request cannot be replayed later; within the window, its `webhook-id` is the delivery's
//! idempotency key, so a replay is a duplicate.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rendezvous_service::Tenants;
use sha2::{Digest, Sha256};

/// The headers of a signed callback.
pub const ID_HEADER: &str = "webhook-id";
/// Unix seconds when the sender signed it.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// `v1,<base64>` signatures, space-separated.
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// A signing secret shared with one sender, and the tenants its callbacks may act for.
#[derive(Clone)]
pub struct WebhookSecret {
    /// Its name, for logs and errors.
    pub name: String,
    key: Vec<u8>,
    /// The tenants its callbacks act for.
    pub tenants: Tenants,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSecret")
            .field("name", &self.name)
            .field("tenants", &self.tenants)
            .finish_non_exhaustive()
    }
}

impl WebhookSecret {
    /// A secret in the Standard Webhooks form, `whsec_` and the base64 of 24 to 64 random
    /// bytes. The error says what is wrong, never the secret.
    pub fn parse(name: &str, secret: &str, tenants: Tenants) -> Result<Self, String> {
        let encoded = secret
            .trim()
            .strip_prefix("whsec_")
            .ok_or("a webhook secret starts with whsec_ followed by base64")?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| "the part after whsec_ is not base64".to_owned())?;
        if !(24..=64).contains(&key.len()) {
            return Err(format!(
                "a webhook secret holds 24 to 64 bytes, this one {}",
                key.len()
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            key,
            tenants,
        })
    }

    /// `v1,<base64 signature>` of a message, as a sender computes it.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.mac(id, timestamp, body)))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
        let mut message = Vec::with_capacity(id.len() + 24 + body.len());
        message.extend_from_slice(id.as_bytes());
        message.extend_from_slice(format!(".{timestamp}.").as_bytes());
        message.extend_from_slice(body);
        hmac_sha256(&self.key, &message)
    }
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Equal in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a signed callback was refused (the message never says which secret nearly matched).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A header is missing or malformed.
    #[error("{0}")]
    Malformed(String),
    /// The timestamp is too old or too far ahead: a replay, or a sender's clock far off.
    #[error(
        "webhook-timestamp is {skew} s from the server's clock, outside the tolerance of {tolerance} s (a replayed or delayed callback)"
    )]
    Stale {
        /// Seconds between the timestamp and now.
        skew: i64,
        /// The tolerance, in seconds.
        tolerance: u64,
    },
    /// No signature matches any configured secret.
    #[error("webhook-signature: no signature matches a configured secret")]
    BadSignature,
}

/// The configured signing secrets and how far a timestamp may be from now.
#[derive(Debug, Clone, Default)]
pub struct Webhooks {
    secrets: Vec<WebhookSecret>,
    tolerance: Duration,
}

impl Webhooks {
    /// Verifies with `secrets`, allowing timestamps `tolerance` away from now.
    pub fn new(secrets: Vec<WebhookSecret>, tolerance: Duration) -> Self {
        Self { secrets, tolerance }
    }

    /// Whether any secret is configured.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The secret that signed `body` with these header values, at `now` (unix seconds).
    pub fn verify(
        &self,
        id: Option<&str>,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<&WebhookSecret, Refused> {
        let missing = |h: &str| Refused::Malformed(format!("{h}: required on a signed callback"));
        let id = id
            .filter(|v| !v.is_empty())
            .ok_or_else(|| missing(ID_HEADER))?;
        let timestamp = timestamp.ok_or_else(|| missing(TIMESTAMP_HEADER))?;
        let signature = signature.ok_or_else(|| missing(SIGNATURE_HEADER))?;
        let timestamp: i64 = timestamp.trim().parse().map_err(|_| {
            Refused::Malformed(format!(
                "{TIMESTAMP_HEADER}: expected unix seconds, found {timestamp:?}"
            ))
        })?;
        let skew = now.saturating_sub(timestamp);
        if skew.unsigned_abs() > self.tolerance.as_secs() {
            return Err(Refused::Stale {
                skew,
                tolerance: self.tolerance.as_secs(),
            });
        }
        let offered: Vec<Vec<u8>> = signature
            .split_whitespace()
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|b64| STANDARD.decode(b64).ok())
            .collect();
        if offered.is_empty() {
            return Err(Refused::Malformed(format!(
                "{SIGNATURE_HEADER}: expected space-separated `v1,<base64>` signatures"
            )));
        }
        self.secrets
            .iter()
            .find(|secret| {
                let mac = secret.mac(id, timestamp, body);
                offered.iter().any(|o| constant_time_eq(o, &mac))
            })
            .ok_or(Refused::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's example.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn webhooks() -> Webhooks {
        let secret = WebhookSecret::parse("partner", SECRET, Tenants::Any).unwrap();
        Webhooks::new(vec![secret], Duration::from_secs(300))
    }

    fn verify(signature: &str, body: &[u8], now: i64) -> Result<String, Refused> {
        webhooks()
            .verify(
                Some(ID),
                Some(&TIMESTAMP.to_string()),
                Some(signature),
                body,
                now,
            )
            .map(|s| s.name.clone())
    }

    #[test]
    fn the_specifications_example_verifies_and_signs_alike() {
        assert_eq!(verify(SIGNATURE, BODY, TIMESTAMP), Ok("partner".into()));
        let secret = WebhookSecret::parse("partner", SECRET, Tenants::Any).unwrap();
        assert_eq!(secret.sign(ID, TIMESTAMP, BODY), SIGNATURE);
        // One of several signatures (a sender rotating its secret).
        let rotating = format!("v1,b3RoZXI= {SIGNATURE}");
        assert!(verify(&rotating, BODY, TIMESTAMP).is_ok());
    }

    #[test]
    fn a_changed_body_id_or_signature_is_refused() {
        assert_eq!(
            verify(SIGNATURE, br#"{"test": 2432232315}"#, TIMESTAMP),
            Err(Refused::BadSignature)
        );
        let tampered = SIGNATURE.replace("g0hM", "g0hN");
        assert_eq!(
            verify(&tampered, BODY, TIMESTAMP),
            Err(Refused::BadSignature)
        );
        let webhooks = webhooks();
        let other_id = webhooks.verify(
            Some("msg_other"),
            Some(&TIMESTAMP.to_string()),
            Some(SIGNATURE),
            BODY,
            TIMESTAMP,
        );
        assert_eq!(other_id.map(|s| s.name.clone()), Err(Refused::BadSignature));
        assert!(matches!(
            verify("v2,abc", BODY, TIMESTAMP),
            Err(Refused::Malformed(m)) if m.contains("v1,<base64>")
        ));
    }

    #[test]
    fn a_timestamp_outside_the_tolerance_is_a_replay() {
        assert!(verify(SIGNATURE, BODY, TIMESTAMP + 300).is_ok());
        assert_eq!(
            verify(SIGNATURE, BODY, TIMESTAMP + 301),
            Err(Refused::Stale {
                skew: 301,
                tolerance: 300
            })
        );
        assert!(matches!(
            verify(SIGNATURE, BODY, TIMESTAMP - 301),
            Err(Refused::Stale { skew: -301, .. })
        ));
    }

    #[test]
    fn missing_headers_and_bad_secrets_are_named() {
        let w = webhooks();
        let refused = w.verify(None, Some("1"), Some(SIGNATURE), BODY, 1);
        assert!(matches!(refused, Err(Refused::Malformed(m)) if m.starts_with("webhook-id")));
        let refused = w.verify(Some(ID), Some("soon"), Some(SIGNATURE), BODY, 1);
        assert!(matches!(refused, Err(Refused::Malformed(m)) if m.contains("unix seconds")));
        assert!(WebhookSecret::parse("x", "MfKQ9r8G", Tenants::Any).is_err());
        assert!(WebhookSecret::parse("x", "whsec_%%%", Tenants::Any).is_err());
        let short = WebhookSecret::parse("x", "whsec_c2hvcnQ=", Tenants::Any).unwrap_err();
        assert!(short.contains("24 to 64 bytes"), "{short}");
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
