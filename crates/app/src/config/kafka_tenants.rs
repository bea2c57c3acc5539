//! Kafka by tenant, the `[kafka]` settings that say which topics each tenant's waits may name
//! and whose records each topic carries: `kafka.allow_any_topic`, the per-topic tables
//! `[kafka.topic."name"]` and the per-tenant patterns `[kafka.tenant_topics]`. Built, with
//! `kafka.topics`, into the service's [`TopicPolicy`] (registration refuses the other topics,
//! the ingress consumes only the allowed ones and takes a record's tenant from its topic).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rendezvous_domain::TenantId;
use rendezvous_service::{TopicPattern, TopicPolicy, TopicTenancy, check_topic_name};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::KafkaSection;

/// `kafka.allow_any_topic`: whether waits may name topics no setting configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnyTopic {
    /// `false`: only configured topics.
    Never,
    /// `"embedded"`: any topic while the brokers are the in-process mock cluster (empty
    /// `kafka.brokers`, the zero-setup default: only local clients write to it); only
    /// configured topics with real brokers.
    Embedded,
    /// `true`: any topic, its records' tenant taken from the header (the behaviour before
    /// topics were configured).
    Always,
}

impl AnyTopic {
    /// Whether any topic is allowed, given whether the brokers are the embedded mock cluster.
    pub fn allows(self, embedded: bool) -> bool {
        match self {
            Self::Never => false,
            Self::Embedded => embedded,
            Self::Always => true,
        }
    }
}

impl Serialize for AnyTopic {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Never => serializer.serialize_bool(false),
            Self::Always => serializer.serialize_bool(true),
            Self::Embedded => serializer.serialize_str("embedded"),
        }
    }
}

impl<'de> Deserialize<'de> for AnyTopic {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Choice;
        impl Visitor<'_> for Choice {
            type Value = AnyTopic;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false or \"embedded\"")
            }

            fn visit_bool<E: de::Error>(self, value: bool) -> Result<AnyTopic, E> {
                Ok(if value {
                    AnyTopic::Always
                } else {
                    AnyTopic::Never
                })
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<AnyTopic, E> {
                match value {
                    "true" => Ok(AnyTopic::Always),
                    "false" => Ok(AnyTopic::Never),
                    "embedded" => Ok(AnyTopic::Embedded),
                    other => Err(E::custom(format!(
                        "expected true, false or \"embedded\", found {other:?}"
                    ))),
                }
            }
        }
        deserializer.deserialize_any(Choice)
    }
}

/// A topic name given in configuration, checked by Kafka's rules.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicName(String);

impl TopicName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TopicName {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, String> {
        check_topic_name(&raw)?;
        Ok(Self(raw))
    }
}

impl From<TopicName> for String {
    fn from(name: TopicName) -> String {
        name.0
    }
}

/// A topic pattern given in configuration (`*` for any run of characters).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicPatternSetting(TopicPattern);

impl TryFrom<String> for TopicPatternSetting {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, String> {
        TopicPattern::parse(&raw).map(Self)
    }
}

impl From<TopicPatternSetting> for String {
    fn from(pattern: TopicPatternSetting) -> String {
        pattern.0.as_str().to_owned()
    }
}

/// `[kafka.topic."name"]`: whose records one topic carries.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicSection {
    /// The tenant the topic's records belong to; its waits may name the topic.
    pub tenant: TenantId,
    /// Whether a record's `kafka.tenant_header` may name another tenant (a topic shared by
    /// tenants whose producers are trusted).
    pub tenant_from_header: bool,
    /// With `tenant_from_header`: the tenants the header may name besides `tenant` (their
    /// waits may name the topic too). Empty: any tenant.
    pub header_tenants: Vec<TenantId>,
}

impl Default for TopicSection {
    fn default() -> Self {
        Self {
            tenant: TenantId::default_tenant(),
            tenant_from_header: false,
            header_tenants: Vec::new(),
        }
    }
}

/// `[kafka.topic]`: the per-topic tables, each topic name checked, and `header_tenants` only
/// where the header is honoured.
pub(super) fn topic_tables<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<TopicName, TopicSection>, D::Error> {
    let tables = BTreeMap::<TopicName, TopicSection>::deserialize(deserializer)?;
    for (name, table) in &tables {
        if !table.tenant_from_header && !table.header_tenants.is_empty() {
            return Err(de::Error::custom(format!(
                "{:?}: header_tenants is only read with tenant_from_header = true",
                name.as_str()
            )));
        }
    }
    Ok(tables)
}

/// A list, or a comma-separated string (as an environment variable gives it).
#[derive(Deserialize)]
#[serde(untagged)]
enum ListOrText {
    List(Vec<String>),
    Text(String),
}

/// `[kafka.tenant_topics]`: per tenant, topic patterns; each a list, or a comma-separated
/// string (`RENDEZVOUS__KAFKA__TENANT_TOPICS__ACME=acme.*`, the tenant lowercased).
pub(super) fn tenant_topics<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<TenantId, Vec<TopicPatternSetting>>, D::Error> {
    let raw = BTreeMap::<TenantId, ListOrText>::deserialize(deserializer)?;
    raw.into_iter()
        .map(|(tenant, patterns)| {
            let patterns = match patterns {
                ListOrText::List(list) => list,
                ListOrText::Text(text) => text
                    .split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect(),
            };
            let patterns = patterns
                .into_iter()
                .map(TopicPatternSetting::try_from)
                .collect::<Result<Vec<_>, String>>()
                .map_err(|e| de::Error::custom(format!("{:?}: {e}", tenant.as_str())))?;
            Ok((tenant, patterns))
        })
        .collect()
}

impl KafkaSection {
    /// The service's topic policy: `kafka.topics` (records of the default tenant unless a
    /// table says otherwise), the `[kafka.topic."name"]` tables, the `[kafka.tenant_topics]`
    /// patterns, and `allow_any_topic` (`embedded`: the brokers are the in-process mock
    /// cluster).
    pub fn topic_policy(&self, embedded: bool) -> TopicPolicy {
        let listed = self
            .topics
            .iter()
            .map(|t| (t.clone(), TopicTenancy::of(TenantId::default_tenant())));
        let tables = self.topic.iter().map(|(name, table)| {
            let tenancy = TopicTenancy {
                tenant: table.tenant.clone(),
                tenant_from_header: table.tenant_from_header,
                header_tenants: table
                    .header_tenants
                    .iter()
                    .cloned()
                    .collect::<BTreeSet<_>>(),
            };
            (name.as_str().to_owned(), tenancy)
        });
        TopicPolicy {
            // A table wins over the bare listing of the same topic.
            topics: listed.chain(tables).collect(),
            tenant_topics: self
                .tenant_topics
                .iter()
                .map(|(tenant, patterns)| {
                    (
                        tenant.clone(),
                        patterns.iter().map(|p| p.0.clone()).collect(),
                    )
                })
                .collect(),
            allow_any_topic: self.allow_any_topic.allows(embedded),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::Config;

    fn tenant(name: &str) -> TenantId {
        TenantId::parse(name).unwrap()
    }

    fn file(name: &str, text: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("rdv-kafka-tenants-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn read(text: &str, env: &[(&str, &str)]) -> anyhow::Result<Config> {
        let path = file(&format!("{:x}", fxhash(text)), text);
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::read(Some(&path), env)
    }

    /// A file name per text, so tests running at once do not share a file.
    fn fxhash(text: &str) -> u64 {
        text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
    }

    fn error(text: &str, env: &[(&str, &str)]) -> String {
        format!("{:#}", read(text, env).unwrap_err())
    }

    #[test]
    fn by_default_only_configured_topics_with_real_brokers() {
        let config = Config::default();
        assert_eq!(config.kafka.allow_any_topic, AnyTopic::Embedded);
        let real = config.kafka.topic_policy(false);
        assert!(!real.allow_any_topic && real.topics.is_empty());
        assert!(
            real.may_name(&TenantId::default_tenant(), "external-service.events")
                .is_err()
        );
        let embedded = config.kafka.topic_policy(true);
        assert!(
            embedded.allow_any_topic,
            "the zero-setup default (in-process broker) runs the seed scenarios as they are"
        );
    }

    #[test]
    fn topics_tables_and_patterns_make_the_policy() {
        let config = read(
            r#"
[kafka]
topics = ["external-service.events", "orders.events"]
allow_any_topic = false

[kafka.topic."orders.events"]
tenant = "acme"

[kafka.topic.shared]
tenant_from_header = true
header_tenants = ["acme", "globex"]

[kafka.tenant_topics]
acme = ["acme.*", "acme-audit"]
"#,
            &[],
        )
        .unwrap();
        let policy = config.kafka.topic_policy(true);
        assert!(!policy.allow_any_topic, "false is false even when embedded");
        assert_eq!(
            policy.topics["external-service.events"],
            TopicTenancy::of(TenantId::default_tenant())
        );
        assert_eq!(
            policy.topics["orders.events"],
            TopicTenancy::of(tenant("acme")),
            "the table wins over the listing"
        );
        assert_eq!(
            policy.topics["shared"],
            TopicTenancy {
                tenant: TenantId::default_tenant(),
                tenant_from_header: true,
                header_tenants: [tenant("acme"), tenant("globex")].into(),
            }
        );
        let patterns: Vec<&str> = policy.tenant_topics[&tenant("acme")]
            .iter()
            .map(TopicPattern::as_str)
            .collect();
        assert_eq!(patterns, ["acme.*", "acme-audit"]);
        assert!(policy.may_name(&tenant("acme"), "acme.invoices").is_ok());
        assert!(policy.may_name(&tenant("acme"), "payroll").is_err());
        // Only kafka.topics are always consumed; the tables say whose records a topic carries.
        assert_eq!(
            config.kafka.ingress_config(false).topics,
            ["external-service.events", "orders.events"]
        );
    }

    #[test]
    fn from_the_environment() {
        let config = read(
            "",
            &[
                ("RENDEZVOUS__KAFKA__ALLOW_ANY_TOPIC", "true"),
                (
                    "RENDEZVOUS__KAFKA__TENANT_TOPICS__ACME",
                    "acme.*, acme-audit",
                ),
            ],
        )
        .unwrap();
        assert_eq!(config.kafka.allow_any_topic, AnyTopic::Always);
        let policy = config.kafka.topic_policy(false);
        assert!(policy.allow_any_topic);
        assert_eq!(policy.tenant_topics[&tenant("acme")].len(), 2);
        let closed = read("", &[("RENDEZVOUS__KAFKA__ALLOW_ANY_TOPIC", "false")]).unwrap();
        assert_eq!(closed.kafka.allow_any_topic, AnyTopic::Never);
        assert!(!closed.kafka.topic_policy(true).allow_any_topic);
    }

    #[test]
    fn bad_settings_are_refused_naming_them() {
        let e = error("[kafka]\nallow_any_topic = \"sometimes\"\n", &[]);
        assert!(
            e.contains("expected true, false or \"embedded\", found \"sometimes\"")
                && e.contains("kafka.allow_any_topic"),
            "{e}"
        );
        let e = error("[kafka.topic.\"bad topic\"]\ntenant = \"acme\"\n", &[]);
        assert!(
            e.contains("\"bad topic\" may contain only ascii letters") && e.contains("kafka.topic"),
            "{e}"
        );
        let e = error("[kafka.topic.orders]\ntenant = \"\"\n", &[]);
        assert!(e.contains("tenant id: must not be empty"), "{e}");
        let e = error("[kafka.topic.orders]\nteant = \"acme\"\n", &[]);
        assert!(e.contains("unknown field `teant`"), "{e}");
        let e = error("[kafka.topic.orders]\nheader_tenants = [\"acme\"]\n", &[]);
        assert!(
            e.contains("\"orders\": header_tenants is only read with tenant_from_header = true"),
            "{e}"
        );
        let e = error("[kafka.tenant_topics]\nacme = [\"acme orders\"]\n", &[]);
        assert!(
            e.contains("\"acme\": \"acme orders\" may contain only ascii letters")
                && e.contains("kafka.tenant_topics"),
            "{e}"
        );
    }
}
