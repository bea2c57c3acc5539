//! Who may do what: an authenticated [`Principal`] holds roles and acts for a set of tenants.
//! Adapters authenticate the caller and ask the principal, before a use case runs, whether it
//! may take a role and which tenant a request acts for. The tenant comes from the credential; a
//! request's `tenant_id` may narrow it to one of the credential's tenants, never widen it.

use std::collections::BTreeSet;
use std::fmt;

use rendezvous_domain::TenantId;
use rendezvous_ports::TenantScope;

use crate::ServiceError;
use crate::parse;

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// A workflow engine: registers waits, receives resumes, reads and cancels waits.
    Engine,
    /// A callback gateway: delivers API responses and events.
    Gateway,
    /// An operator: everything, in every tenant it is given (usually all).
    Admin,
}

impl Role {
    /// Every role, in order.
    pub const ALL: [Role; 3] = [Role::Engine, Role::Gateway, Role::Admin];

    /// The role's name in configuration and token claims.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Engine => "engine",
            Role::Gateway => "gateway",
            Role::Admin => "admin",
        }
    }

    /// The role with that name.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tenants a principal acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tenants {
    /// Every tenant (`*` in configuration and claims).
    Any,
    /// These tenants only (possibly none: such a principal can do nothing tenant-bound).
    Only(BTreeSet<TenantId>),
}

impl Tenants {
    /// Whether `tenant` is one of them.
    pub fn contains(&self, tenant: &TenantId) -> bool {
        match self {
            Tenants::Any => true,
            Tenants::Only(set) => set.contains(tenant),
        }
    }

    /// Reads tenant names as written in configuration or a token claim: `*` means every
    /// tenant; an empty name is the default tenant.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Tenants, String> {
        let mut set = BTreeSet::new();
        for name in names {
            if name == "*" {
                return Ok(Tenants::Any);
            }
            set.insert(parse::tenant(name).map_err(|e| format!("tenant {name:?}: {e}"))?);
        }
        Ok(Tenants::Only(set))
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who it is (an API key's name, a token's subject, a certificate's SAN), for logs.
    pub name: String,
    /// What it may do.
    pub roles: BTreeSet<Role>,
    /// For whom.
    pub tenants: Tenants,
}

impl Principal {
    /// The caller of a server without authentication (loopback only, unless explicitly
    /// allowed): an admin of every tenant, which is what every caller was before.
    pub fn anonymous() -> Self {
        Principal {
            name: "anonymous".into(),
            roles: BTreeSet::from([Role::Admin]),
            tenants: Tenants::Any,
        }
    }

    /// Whether it holds `role` (an admin holds every role).
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role) || self.roles.contains(&Role::Admin)
    }

    /// Allows `rpc`, which needs `role`, or refuses it with PERMISSION_DENIED.
    pub fn require(&self, role: Role, rpc: &str) -> Result<(), ServiceError> {
        if self.has(role) {
            Ok(())
        } else {
            Err(ServiceError::PermissionDenied(format!(
                "{rpc} needs the {role} role; {} holds {}",
                self.name,
                self.role_names()
            )))
        }
    }

    fn role_names(&self) -> String {
        if self.roles.is_empty() {
            "none".into()
        } else {
            let names: Vec<&str> = self.roles.iter().map(|r| r.as_str()).collect();
            names.join(", ")
        }
    }

    /// The one tenant a request that writes (registers, delivers) acts for. `requested` is
    /// the request's `tenant_id`: empty takes the credential's only tenant (the default tenant
    /// for a credential of every tenant); a named tenant must be one of the credential's.
    pub fn act_for(&self, field: &str, requested: &str) -> Result<TenantId, ServiceError> {
        match (requested, &self.tenants) {
            ("", Tenants::Any) => Ok(TenantId::default_tenant()),
            ("", Tenants::Only(set)) => match set.len() {
                1 => Ok(set.iter().next().expect("one tenant").clone()),
                0 => Err(self.no_tenants()),
                n => Err(ServiceError::invalid(
                    field,
                    format!(
                        "required: the credential of {} acts for {n} tenants; name one",
                        self.name
                    ),
                )),
            },
            (raw, _) => {
                let tenant = parse::tenant(raw).map_err(|e| rename(e, field))?;
                if self.tenants.contains(&tenant) {
                    Ok(tenant)
                } else {
                    Err(self.not_yours(&tenant))
                }
            }
        }
    }

    /// The tenants a read (get, list, a resume stream) may see. `requested` empty: all of the
    /// credential's tenants; a named tenant must be one of them.
    pub fn scope(&self, field: &str, requested: &str) -> Result<TenantScope, ServiceError> {
        match (requested, &self.tenants) {
            ("", Tenants::Any) => Ok(TenantScope::All),
            ("", Tenants::Only(set)) if set.is_empty() => Err(self.no_tenants()),
            ("", Tenants::Only(set)) => Ok(TenantScope::Only(set.clone())),
            (raw, _) => {
                let tenant = parse::tenant(raw).map_err(|e| rename(e, field))?;
                if self.tenants.contains(&tenant) {
                    Ok(TenantScope::one(tenant))
                } else {
                    Err(self.not_yours(&tenant))
                }
            }
        }
    }

    fn not_yours(&self, tenant: &TenantId) -> ServiceError {
        ServiceError::PermissionDenied(format!("{} may not act for tenant {tenant}", self.name))
    }

    fn no_tenants(&self) -> ServiceError {
        ServiceError::PermissionDenied(format!("{} acts for no tenant", self.name))
    }
}

/// The same error about the field as the caller named it.
fn rename(error: ServiceError, field: &str) -> ServiceError {
    match error {
        ServiceError::Invalid { reason, .. } => ServiceError::invalid(field, reason),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(roles: &[Role], tenants: &[&str]) -> Principal {
        Principal {
            name: "p".into(),
            roles: roles.iter().copied().collect(),
            tenants: Tenants::parse(tenants.iter().copied()).unwrap(),
        }
    }

    fn t(name: &str) -> TenantId {
        TenantId::parse(name.to_owned()).unwrap()
    }

    #[test]
    fn roles_are_required_and_admin_holds_them_all() {
        let engine = principal(&[Role::Engine], &["a"]);
        assert!(engine.require(Role::Engine, "RegisterWait").is_ok());
        let e = engine.require(Role::Gateway, "DeliverEvent").unwrap_err();
        assert!(matches!(e, ServiceError::PermissionDenied(_)));
        assert!(
            e.to_string()
                .contains("DeliverEvent needs the gateway role"),
            "{e}"
        );
        let admin = principal(&[Role::Admin], &["*"]);
        for role in Role::ALL {
            assert!(admin.require(role, "x").is_ok());
        }
        assert_eq!(Role::parse("gateway"), Some(Role::Gateway));
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn the_tenant_comes_from_the_credential_and_may_only_be_narrowed() {
        let one = principal(&[Role::Engine], &["a"]);
        assert_eq!(one.act_for("tenant_id", "").unwrap(), t("a"));
        assert_eq!(one.act_for("tenant_id", "a").unwrap(), t("a"));
        let e = one.act_for("tenant_id", "b").unwrap_err();
        assert!(matches!(e, ServiceError::PermissionDenied(_)), "{e}");
        assert_eq!(
            one.scope("tenant_id", "").unwrap(),
            TenantScope::one(t("a"))
        );
        assert!(matches!(
            one.scope("tenant_id", "b"),
            Err(ServiceError::PermissionDenied(_))
        ));

        let two = principal(&[Role::Engine], &["a", "b"]);
        let e = two.act_for("tenant_id", "").unwrap_err();
        assert!(e.to_string().starts_with("tenant_id: required"), "{e}");
        assert_eq!(two.act_for("tenant_id", "b").unwrap(), t("b"));
        assert_eq!(
            two.scope("tenant_id", "").unwrap(),
            TenantScope::Only(BTreeSet::from([t("a"), t("b")]))
        );

        let any = principal(&[Role::Admin], &["*"]);
        assert_eq!(
            any.act_for("tenant_id", "").unwrap(),
            TenantId::default_tenant()
        );
        assert_eq!(any.scope("tenant_id", "").unwrap(), TenantScope::All);
        assert_eq!(
            any.scope("tenant_id", "z").unwrap(),
            TenantScope::one(t("z"))
        );

        let none = principal(&[Role::Engine], &[]);
        assert!(matches!(
            none.act_for("tenant_id", ""),
            Err(ServiceError::PermissionDenied(_))
        ));
        assert!(matches!(
            none.scope("tenant_id", ""),
            Err(ServiceError::PermissionDenied(_))
        ));
    }

    #[test]
    fn a_malformed_tenant_is_invalid_naming_the_field() {
        let one = principal(&[Role::Engine], &["a"]);
        let e = one.act_for("subscribe.tenant_id", "bad\u{7}").unwrap_err();
        assert!(e.to_string().starts_with("subscribe.tenant_id: "), "{e}");
        assert!(Tenants::parse(["ok", "bad\u{7}"]).is_err());
    }
}
