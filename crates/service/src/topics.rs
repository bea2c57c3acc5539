//! Kafka by tenant: which topics a tenant's waits may name, and whose records each topic
//! carries. A record's tenant comes from its topic's configuration, not from a header anyone
//! producing to the topic can set; a header is honoured only on a topic configured to honour
//! it, and only for the tenants listed there. Registration refuses a wait naming a topic its
//! tenant may not use, and the Kafka ingress subscribes only to topics some tenant may use.
//! Pure: the policy is built from configuration and asked questions.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rendezvous_domain::TenantId;
use rendezvous_domain::spec::MAX_TOPIC_LEN;

use crate::WaitService;

/// A topic name, or a pattern of names where `*` stands for any run of characters
/// (`acme.*` matches `acme.orders` and `acme.orders.v2`). Otherwise Kafka's rules for topic
/// names: ASCII letters, digits, `.`, `_` and `-`, at most [`MAX_TOPIC_LEN`] characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPattern(String);

impl TopicPattern {
    /// Validates a pattern; the error says what is wrong with it.
    pub fn parse(raw: &str) -> Result<Self, String> {
        check_name(raw, true)?;
        Ok(Self(raw.to_owned()))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `topic` matches: literally, with each `*` matching any run of characters.
    pub fn matches(&self, topic: &str) -> bool {
        glob(self.0.as_bytes(), topic.as_bytes())
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a topic name by Kafka's rules (what the node config accepts in `topic`).
pub fn check_topic_name(raw: &str) -> Result<(), String> {
    check_name(raw, false)
}

fn check_name(raw: &str, pattern: bool) -> Result<(), String> {
    if raw.is_empty() {
        return Err("a topic name must not be empty".into());
    }
    if raw.len() > MAX_TOPIC_LEN {
        return Err(format!("{raw:?} is longer than {MAX_TOPIC_LEN} characters"));
    }
    if raw == "." || raw == ".." {
        return Err("a topic name cannot be \".\" or \"..\"".into());
    }
    let allowed = |c: char| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') || (pattern && c == '*')
    };
    if !raw.chars().all(allowed) {
        let what = if pattern {
            "may contain only ascii letters, digits, '.', '_', '-' and '*' (any characters)"
        } else {
            "may contain only ascii letters, digits, '.', '_' and '-'"
        };
        return Err(format!("{raw:?} {what}"));
    }
    Ok(())
}

/// `*` matches any run of bytes; everything else itself. Iterative with one backtrack point,
/// so linear in practice and never recursive.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Whose records one topic carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTenancy {
    /// The tenant the topic's records belong to (when no honoured header names another).
    pub tenant: TenantId,
    /// Whether a record's tenant header may name its tenant (a topic shared by tenants whose
    /// producers are trusted).
    pub tenant_from_header: bool,
    /// With `tenant_from_header`: the tenants a header may name besides `tenant`. Empty: any
    /// tenant.
    pub header_tenants: BTreeSet<TenantId>,
}

impl TopicTenancy {
    /// A topic whose records all belong to `tenant`; headers are not honoured.
    pub fn of(tenant: TenantId) -> Self {
        Self {
            tenant,
            tenant_from_header: false,
            header_tenants: BTreeSet::new(),
        }
    }

    /// Whether a record of this topic may belong to `tenant`.
    fn may_carry(&self, tenant: &TenantId) -> bool {
        *tenant == self.tenant
            || (self.tenant_from_header
                && (self.header_tenants.is_empty() || self.header_tenants.contains(tenant)))
    }
}

/// Which topics each tenant's waits may name, and whose records each topic carries.
///
/// A topic is resolved in this order: a topic configured one by one (`topics`: `kafka.topics`
/// and the `[kafka.topic."name"]` tables); else the `tenant_topics` patterns, whose matching
/// topics carry the records of the pattern's tenant (a topic matched by the patterns of
/// several tenants is refused as ambiguous); else, with `allow_any_topic`, any topic, whose
/// records take their tenant from the header (the behaviour before topics were configured);
/// else the topic is not allowed at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPolicy {
    /// Topics configured one by one.
    pub topics: BTreeMap<String, TopicTenancy>,
    /// Per tenant, the patterns of further topics its waits may name (their records belong to
    /// that tenant).
    pub tenant_topics: BTreeMap<TenantId, Vec<TopicPattern>>,
    /// Any other topic may be named by any tenant's waits, its records' tenant taken from the
    /// header (else the default tenant).
    pub allow_any_topic: bool,
}

impl Default for TopicPolicy {
    /// Open, as before topics were configured: the library default, so a service built
    /// without a policy behaves as it always did. The binary's default (`[kafka]`) is closed.
    fn default() -> Self {
        Self::allow_any()
    }
}

impl TopicPolicy {
    /// Any topic, records' tenant from the header: the behaviour before topics were
    /// configured.
    pub fn allow_any() -> Self {
        Self {
            topics: BTreeMap::new(),
            tenant_topics: BTreeMap::new(),
            allow_any_topic: true,
        }
    }

    /// Only the topics listed, each carrying the records of its tenant.
    pub fn only(topics: impl IntoIterator<Item = (String, TopicTenancy)>) -> Self {
        Self {
            topics: topics.into_iter().collect(),
            tenant_topics: BTreeMap::new(),
            allow_any_topic: false,
        }
    }

    /// Whose records `topic` carries; `Err` (for logs and quarantine reasons, naming the
    /// settings) when no configuration allows the topic.
    pub fn tenancy(&self, topic: &str) -> Result<Cow<'_, TopicTenancy>, String> {
        if let Some(configured) = self.topics.get(topic) {
            return Ok(Cow::Borrowed(configured));
        }
        let owners: Vec<&TenantId> = self
            .tenant_topics
            .iter()
            .filter(|(_, patterns)| patterns.iter().any(|p| p.matches(topic)))
            .map(|(tenant, _)| tenant)
            .collect();
        match owners.as_slice() {
            [owner] => Ok(Cow::Owned(TopicTenancy::of((*owner).clone()))),
            [] if self.allow_any_topic => Ok(Cow::Owned(TopicTenancy {
                tenant: TenantId::default_tenant(),
                tenant_from_header: true,
                header_tenants: BTreeSet::new(),
            })),
            [] => Err(format!(
                "topic {topic:?} is not configured (kafka.topics, [kafka.topic.{topic:?}] or kafka.tenant_topics)"
            )),
            several => Err(format!(
                "topic {topic:?} matches the kafka.tenant_topics patterns of several tenants ({}); give it a [kafka.topic.{topic:?}] table",
                several
                    .iter()
                    .map(|t| format!("{:?}", t.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// Whether the Kafka ingress may subscribe to `topic`: some configuration allows it.
    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.tenancy(topic).is_ok()
    }

    /// Whether a wait of `tenant` may name `topic`. `Err` says why not, in words fit for the
    /// registrant: it never names another tenant.
    pub fn may_name(&self, tenant: &TenantId, topic: &str) -> Result<(), String> {
        let tenancy = self.tenancy(topic).map_err(|_| {
            format!(
                "topic {topic:?} is not allowed for tenant {:?}: it is not configured for it (kafka.topics, [kafka.topic.{topic:?}] or kafka.tenant_topics)",
                tenant.as_str()
            )
        })?;
        if tenancy.may_carry(tenant) {
            Ok(())
        } else {
            Err(format!(
                "topic {topic:?} is not allowed for tenant {:?}: its records belong to another tenant, so they could never match this wait",
                tenant.as_str()
            ))
        }
    }

    /// The tenant of a record of `topic` whose header `header` holds `value` (`None` or empty:
    /// absent). The topic's tenant, unless the topic honours the header and the header names
    /// a tenant it may carry. `Err` is the reason to quarantine the record: the topic is not
    /// allowed, or the header names a tenant the topic may not carry.
    pub fn record_tenant(
        &self,
        topic: &str,
        header: &str,
        value: Option<&str>,
    ) -> Result<TenantId, String> {
        let tenancy = self.tenancy(topic)?;
        let Some(named) = value.filter(|v| !v.is_empty()) else {
            return Ok(tenancy.tenant.clone());
        };
        let named = TenantId::parse(named)
            .map_err(|e| format!("header {header:?} of a record of topic {topic:?}: {e}"))?;
        if tenancy.may_carry(&named) {
            return Ok(named);
        }
        let why = if tenancy.tenant_from_header {
            format!(
                "which is not among the tenants that topic's header may name (kafka.topic.{topic:?}.header_tenants)"
            )
        } else {
            format!(
                "but the records of topic {topic:?} belong to tenant {:?} (kafka.topic.{topic:?}.tenant_from_header is off)",
                tenancy.tenant.as_str()
            )
        };
        Err(format!(
            "header {header:?} names tenant {:?}, {why}",
            named.as_str()
        ))
    }
}

impl<S, G, C> WaitService<S, G, C> {
    /// Which Kafka topics each tenant's waits may name, and whose records each carries.
    pub fn topic_policy(&self) -> &TopicPolicy {
        &self.config.topics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> TenantId {
        TenantId::parse(name).unwrap()
    }

    fn policy() -> TopicPolicy {
        let mut policy = TopicPolicy::only([
            ("orders".to_owned(), TopicTenancy::of(tenant("acme"))),
            (
                "shared".to_owned(),
                TopicTenancy {
                    tenant: TenantId::default_tenant(),
                    tenant_from_header: true,
                    header_tenants: [tenant("acme"), tenant("globex")].into(),
                },
            ),
            (
                "open".to_owned(),
                TopicTenancy {
                    tenant_from_header: true,
                    ..TopicTenancy::of(TenantId::default_tenant())
                },
            ),
        ]);
        policy
            .tenant_topics
            .insert(tenant("acme"), vec![TopicPattern::parse("acme.*").unwrap()]);
        policy.tenant_topics.insert(
            tenant("globex"),
            vec![
                TopicPattern::parse("globex-events").unwrap(),
                TopicPattern::parse("*.both").unwrap(),
            ],
        );
        policy
            .tenant_topics
            .get_mut(&tenant("acme"))
            .unwrap()
            .push(TopicPattern::parse("*.both").unwrap());
        policy
    }

    #[test]
    fn patterns_match_with_stars() {
        let p = |raw: &str| TopicPattern::parse(raw).unwrap();
        assert!(p("acme.*").matches("acme.orders"));
        assert!(p("acme.*").matches("acme."));
        assert!(!p("acme.*").matches("acme"));
        assert!(!p("acme.*").matches("xacme.orders"));
        assert!(p("*").matches("anything"));
        assert!(p("a*b*c").matches("a-b-b-c"));
        assert!(!p("a*b*c").matches("a-c-b"));
        assert!(p("exact").matches("exact"));
        assert!(!p("exact").matches("exact2"));
        assert!(p("**x").matches("x"));
    }

    #[test]
    fn bad_patterns_and_names_say_why() {
        assert_eq!(
            TopicPattern::parse("").unwrap_err(),
            "a topic name must not be empty"
        );
        assert!(
            TopicPattern::parse("a b")
                .unwrap_err()
                .contains("may contain only ascii letters")
        );
        assert!(check_topic_name("a*").unwrap_err().contains("\"a*\""));
        assert!(
            check_topic_name(&"x".repeat(MAX_TOPIC_LEN + 1))
                .unwrap_err()
                .contains("longer than 249")
        );
        assert!(check_topic_name("..").is_err());
    }

    #[test]
    fn a_tenant_names_only_topics_that_carry_its_records() {
        let p = policy();
        assert_eq!(p.may_name(&tenant("acme"), "orders"), Ok(()));
        let refused = p.may_name(&tenant("globex"), "orders").unwrap_err();
        assert_eq!(
            refused,
            "topic \"orders\" is not allowed for tenant \"globex\": its records belong to another tenant, so they could never match this wait"
        );
        assert!(!refused.contains("acme"), "never names another tenant");
        assert_eq!(p.may_name(&tenant("acme"), "acme.invoices"), Ok(()));
        assert!(p.may_name(&tenant("globex"), "acme.invoices").is_err());
        assert!(
            p.may_name(&TenantId::default_tenant(), "elsewhere")
                .unwrap_err()
                .contains("not configured for it")
        );
        // A header-honouring topic: its own tenant and the listed ones.
        for t in ["default", "acme", "globex"] {
            assert_eq!(p.may_name(&tenant(t), "shared"), Ok(()), "{t}");
        }
        assert!(p.may_name(&tenant("initech"), "shared").is_err());
        assert_eq!(p.may_name(&tenant("initech"), "open"), Ok(()));
        // Matched by two tenants' patterns: nobody's.
        assert!(p.may_name(&tenant("acme"), "x.both").is_err());
        assert!(!p.may_subscribe("x.both"));
        assert!(
            p.tenancy("x.both")
                .unwrap_err()
                .contains("patterns of several tenants (\"acme\", \"globex\")")
        );
        assert!(p.may_subscribe("orders") && p.may_subscribe("acme.x"));
        assert!(!p.may_subscribe("elsewhere"));
    }

    #[test]
    fn a_records_tenant_comes_from_its_topic() {
        let p = policy();
        let h = "tenant_id";
        assert_eq!(p.record_tenant("orders", h, None), Ok(tenant("acme")));
        assert_eq!(p.record_tenant("orders", h, Some("")), Ok(tenant("acme")));
        assert_eq!(
            p.record_tenant("orders", h, Some("acme")),
            Ok(tenant("acme"))
        );
        assert_eq!(
            p.record_tenant("orders", h, Some("globex")).unwrap_err(),
            "header \"tenant_id\" names tenant \"globex\", but the records of topic \"orders\" belong to tenant \"acme\" (kafka.topic.\"orders\".tenant_from_header is off)"
        );
        assert_eq!(
            p.record_tenant("acme.x", h, None),
            Ok(tenant("acme")),
            "a pattern's topics carry its tenant's records"
        );
        assert_eq!(
            p.record_tenant("shared", h, Some("globex")),
            Ok(tenant("globex"))
        );
        assert_eq!(
            p.record_tenant("shared", h, None),
            Ok(TenantId::default_tenant())
        );
        assert_eq!(
            p.record_tenant("shared", h, Some("initech")).unwrap_err(),
            "header \"tenant_id\" names tenant \"initech\", which is not among the tenants that topic's header may name (kafka.topic.\"shared\".header_tenants)"
        );
        assert_eq!(
            p.record_tenant("open", h, Some("initech")),
            Ok(tenant("initech"))
        );
        assert!(
            p.record_tenant("open", h, Some(" padded"))
                .unwrap_err()
                .starts_with("header \"tenant_id\" of a record of topic \"open\": tenant id:")
        );
        assert!(
            p.record_tenant("elsewhere", h, None)
                .unwrap_err()
                .contains("is not configured")
        );
    }

    #[test]
    fn allowing_any_topic_is_the_old_behaviour() {
        let p = TopicPolicy::default();
        assert!(p.allow_any_topic);
        assert_eq!(p.may_name(&tenant("acme"), "anything"), Ok(()));
        assert_eq!(
            p.record_tenant("anything", "tenant_id", Some("acme")),
            Ok(tenant("acme"))
        );
        assert_eq!(
            p.record_tenant("anything", "tenant_id", None),
            Ok(TenantId::default_tenant())
        );
        let closed = TopicPolicy::only([]);
        assert!(closed.may_name(&tenant("acme"), "anything").is_err());
        assert!(!closed.may_subscribe("anything"));
    }
}
