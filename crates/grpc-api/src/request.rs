//! `rendezvous.v1` requests into the service's typed commands: every field a command needs is
//! parsed here, at the edge, and a bad one is refused naming the field.

use std::collections::BTreeMap;

use rendezvous_domain::{
    Channel, CorrelationId, EventKey, ExecutionId, IdempotencyKey, NodeId, SourceName, Timestamp,
    WaitId,
};
use rendezvous_ports::WaitQuery;
use rendezvous_service::parse::{json, label, optional, required, source_name, tenant};
use rendezvous_service::{Delivery, Principal, RegisterWait, ServiceError, WaitLookup};

use crate::{convert, v1};

/// The largest `ListWaits` page.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// The `ListWaits` page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: u32 = 100;

/// A request message parsed into the service's command, every field checked and a bad one
/// refused naming it.
pub(crate) trait IntoCommand<T> {
    fn command(self) -> Result<T, ServiceError>;
}

impl IntoCommand<RegisterWait> for v1::RegisterWaitRequest {
    /// Every field but the caller's trace context, which travels as metadata.
    fn command(self) -> Result<RegisterWait, ServiceError> {
        let r = self;
        Ok(RegisterWait {
            tenant: tenant(&r.tenant_id)?,
            execution_id: required("execution_id", &r.execution_id, ExecutionId::parse)?,
            node_id: required("node_id", &r.node_id, NodeId::parse)?,
            idempotency_key: IdempotencyKey::parse(r.idempotency_key)
                .map_err(|e| ServiceError::invalid("idempotency_key", e.reason))?,
            workflow_id: label("workflow_id", r.workflow_id)?,
            correlation_id: optional("correlation_id", &r.correlation_id, CorrelationId::parse)?,
            input_variables: r.input_variables.into_iter().collect(),
            node_config_json: r.node_config_json,
            trace: None,
        })
    }
}

impl IntoCommand<Delivery> for v1::DeliverApiResponseRequest {
    fn command(self) -> Result<Delivery, ServiceError> {
        let r = self;
        let headers: BTreeMap<String, String> = r.headers.into_iter().collect();
        Ok(Delivery {
            tenant: tenant(&r.tenant_id)?,
            correlation_id: required("correlation_id", &r.correlation_id, CorrelationId::parse)?,
            execution_id: Some(required(
                "execution_id",
                &r.execution_id,
                ExecutionId::parse,
            )?),
            channel: Channel::Source(SourceName::api()),
            size: Delivery::api_size(&headers, &r.body),
            payload: Delivery::api_payload_checked(r.http_status, headers, &r.body)?,
            event_key: required("idempotency_key", &r.idempotency_key, EventKey::parse)?,
        })
    }
}

impl IntoCommand<Delivery> for v1::DeliverEventRequest {
    fn command(self) -> Result<Delivery, ServiceError> {
        let r = self;
        let source = source_name("source", &r.source)?;
        let payload = json("payload_json", r.payload_json.as_bytes())?;
        Ok(Delivery {
            tenant: tenant(&r.tenant_id)?,
            correlation_id: required("correlation_id", &r.correlation_id, CorrelationId::parse)?,
            execution_id: optional("execution_id", &r.execution_id, ExecutionId::parse)?,
            channel: Channel::Source(source),
            size: r.payload_json.len(),
            payload,
            event_key: required("event_key", &r.event_key, EventKey::parse)?,
        })
    }
}

/// A wait named by id or by correlation id, as `principal` may see it: by id, only among
/// the waits of its tenants (narrowed to `tenant_id` when given); by correlation id, within
/// the one tenant it acts for.
pub(crate) fn lookup(
    wait_id: Option<String>,
    correlation_id: Option<String>,
    tenant_id: &str,
    principal: &Principal,
) -> Result<WaitLookup, ServiceError> {
    match (wait_id, correlation_id) {
        (Some(wait_id), _) => Ok(WaitLookup::Id {
            wait_id: required("wait_id", &wait_id, |raw| WaitId::parse(&raw))?,
            tenants: principal.scope("tenant_id", tenant_id)?,
        }),
        (None, Some(correlation_id)) => Ok(WaitLookup::Correlation {
            tenant: principal.act_for("tenant_id", tenant_id)?,
            correlation_id: required("correlation_id", &correlation_id, CorrelationId::parse)?,
        }),
        (None, None) => Err(ServiceError::invalid(
            "key",
            "required: wait_id or correlation_id",
        )),
    }
}

/// The wait a `GetWait` names, as `principal` may see it.
pub(crate) fn get(
    r: v1::GetWaitRequest,
    principal: &Principal,
) -> Result<WaitLookup, ServiceError> {
    use v1::get_wait_request::Key;
    match r.key {
        Some(Key::WaitId(id)) => lookup(Some(id), None, &r.tenant_id, principal),
        Some(Key::CorrelationId(c)) => lookup(None, Some(c), &r.tenant_id, principal),
        None => lookup(None, None, &r.tenant_id, principal),
    }
}

/// A cancellation: the wait, as `principal` may see it, and the reason (empty: none).
pub(crate) fn cancel(
    r: v1::CancelWaitRequest,
    principal: &Principal,
) -> Result<(WaitLookup, Option<String>), ServiceError> {
    use v1::cancel_wait_request::Key;
    let lookup = match r.key {
        Some(Key::WaitId(id)) => lookup(Some(id), None, &r.tenant_id, principal),
        Some(Key::CorrelationId(c)) => lookup(None, Some(c), &r.tenant_id, principal),
        None => lookup(None, None, &r.tenant_id, principal),
    }?;
    Ok((lookup, (!r.reason.is_empty()).then_some(r.reason)))
}

/// The query of a `ListWaits`, within the tenants `principal` may see.
pub(crate) fn list(
    r: v1::ListWaitsRequest,
    principal: &Principal,
) -> Result<WaitQuery, ServiceError> {
    let statuses = r
        .statuses
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            v1::WaitStatus::try_from(*raw)
                .ok()
                .and_then(convert::from_status)
                .ok_or_else(|| {
                    ServiceError::invalid(
                        &format!("statuses[{i}]"),
                        format!("unknown status {raw}"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let after = match r.page_token.as_str() {
        "" => None,
        raw => Some(parse_page_token(raw)?),
    };
    Ok(WaitQuery {
        tenants: principal.scope("tenant_id", &r.tenant_id)?,
        statuses,
        execution_id: optional("execution_id", &r.execution_id, ExecutionId::parse)?,
        created_before: r.created_before.as_ref().map(convert::from_timestamp),
        limit: page_size(r.page_size)?,
        after,
    })
}

/// A listing's page size: 0 is [`DEFAULT_PAGE_SIZE`], over [`MAX_PAGE_SIZE`] is refused.
pub(crate) fn page_size(requested: u32) -> Result<u32, ServiceError> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n > MAX_PAGE_SIZE => Err(ServiceError::TooLarge {
            what: "page_size".into(),
            size: n as usize,
            limit: MAX_PAGE_SIZE as usize,
        }),
        n => Ok(n),
    }
}

/// The page token of a `ListWaits` page that ends at `next`.
pub(crate) fn page_token(next: (Timestamp, WaitId)) -> String {
    format!("{}:{}", next.0.as_millis(), next.1)
}

fn parse_page_token(raw: &str) -> Result<(Timestamp, WaitId), ServiceError> {
    let bad = || ServiceError::Invalid {
        field: "page_token".into(),
        reason: "not a token from a previous ListWaits response".into(),
    };
    let (millis, id) = raw.split_once(':').ok_or_else(bad)?;
    Ok((
        Timestamp::from_millis(millis.parse().map_err(|_| bad())?),
        WaitId::parse(id).map_err(|_| bad())?,
    ))
}

#[cfg(test)]
mod tests {
    use rendezvous_ports::TenantScope;

    use super::*;

    #[test]
    fn bad_fields_are_refused_by_name() {
        let e = IntoCommand::<RegisterWait>::command(v1::RegisterWaitRequest {
            execution_id: "e-1".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "node_id: required");
        let e = IntoCommand::<Delivery>::command(v1::DeliverEventRequest {
            correlation_id: "c-1".into(),
            source: "kafka".into(),
            payload_json: "{".into(),
            event_key: "k".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.to_string().starts_with("payload_json: not valid JSON"),
            "{e}"
        );
        let e = IntoCommand::<Delivery>::command(v1::DeliverApiResponseRequest {
            correlation_id: "c-1".into(),
            execution_id: "e-1".into(),
            http_status: 200,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "idempotency_key: required");
        let e = IntoCommand::<Delivery>::command(v1::DeliverApiResponseRequest {
            correlation_id: "c-1".into(),
            execution_id: "e-1".into(),
            idempotency_key: "k".into(),
            http_status: 200,
            body: format!("{}{}", "[".repeat(100), "]".repeat(100)).into_bytes(),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "body: nests deeper than the limit of 64 levels"
        );
        let admin = Principal::anonymous();
        let e = get(
            v1::GetWaitRequest {
                key: Some(v1::get_wait_request::Key::WaitId("not-a-uuid".into())),
                tenant_id: String::new(),
            },
            &admin,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("wait_id: "), "{e}");
        let e = get(v1::GetWaitRequest::default(), &admin).unwrap_err();
        assert_eq!(e.to_string(), "key: required: wait_id or correlation_id");
    }

    #[test]
    fn an_empty_tenant_is_the_credentials_own() {
        let admin = Principal::anonymous();
        let by_correlation = lookup(None, Some("c-1".into()), "", &admin).unwrap();
        assert!(matches!(
            by_correlation,
            WaitLookup::Correlation { tenant, .. } if tenant.as_str() == "default"
        ));
        let id = uuid::Uuid::new_v4().to_string();
        assert!(matches!(
            lookup(Some(id.clone()), None, "", &admin).unwrap(),
            WaitLookup::Id {
                tenants: TenantScope::All,
                ..
            }
        ));
        let acme = Principal {
            name: "engine-acme".into(),
            roles: [rendezvous_service::Role::Engine].into(),
            tenants: rendezvous_service::Tenants::parse(["acme"]).unwrap(),
        };
        let only_acme =
            TenantScope::one(rendezvous_domain::TenantId::parse("acme".to_owned()).unwrap());
        assert!(matches!(
            lookup(Some(id.clone()), None, "", &acme).unwrap(),
            WaitLookup::Id { tenants, .. } if tenants == only_acme
        ));
        assert!(matches!(
            lookup(Some(id), None, "other", &acme),
            Err(ServiceError::PermissionDenied(_))
        ));
    }
}
