//! Which tenants a read may see: the scope a caller's credential gives `ListWaits`, `GetWait`
//! and resume streams.

use std::collections::BTreeSet;

use rendezvous_domain::TenantId;

/// Every tenant's rows, or those of a set of tenants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TenantScope {
    /// Every tenant.
    #[default]
    All,
    /// Only these tenants (none: nothing is in scope).
    Only(BTreeSet<TenantId>),
}

impl TenantScope {
    /// One tenant.
    pub fn one(tenant: TenantId) -> Self {
        TenantScope::Only(BTreeSet::from([tenant]))
    }

    /// Whether a row of `tenant` is in scope.
    pub fn contains(&self, tenant: &TenantId) -> bool {
        match self {
            TenantScope::All => true,
            TenantScope::Only(set) => set.contains(tenant),
        }
    }

    /// The tenants to filter by; `None`: no filter.
    pub fn tenants(&self) -> Option<&BTreeSet<TenantId>> {
        match self {
            TenantScope::All => None,
            TenantScope::Only(set) => Some(set),
        }
    }
}

/// `all`, or the tenants separated by commas (as logs show it).
impl std::fmt::Display for TenantScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TenantScope::All => f.write_str("all"),
            TenantScope::Only(set) => {
                for (i, tenant) in set.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{tenant}")?;
                }
                Ok(())
            }
        }
    }
}

impl From<Option<TenantId>> for TenantScope {
    /// `None`: every tenant.
    fn from(tenant: Option<TenantId>) -> Self {
        tenant.map_or(TenantScope::All, TenantScope::one)
    }
}
