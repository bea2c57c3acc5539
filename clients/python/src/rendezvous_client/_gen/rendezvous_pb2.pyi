import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WaitStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WAIT_STATUS_UNSPECIFIED: _ClassVar[WaitStatus]
    WAIT_STATUS_WAITING_FOR_EVENTS: _ClassVar[WaitStatus]
    WAIT_STATUS_WAITING_FOR_API: _ClassVar[WaitStatus]
    WAIT_STATUS_WAITING_FOR_KAFKA: _ClassVar[WaitStatus]
    WAIT_STATUS_COMPLETED: _ClassVar[WaitStatus]
    WAIT_STATUS_TIMED_OUT: _ClassVar[WaitStatus]
    WAIT_STATUS_CANCELLED: _ClassVar[WaitStatus]
    WAIT_STATUS_FAILED: _ClassVar[WaitStatus]

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_COMPLETED: _ClassVar[Outcome]
    OUTCOME_PARTIAL: _ClassVar[Outcome]
    OUTCOME_TIMED_OUT: _ClassVar[Outcome]
    OUTCOME_CANCELLED: _ClassVar[Outcome]
    OUTCOME_FAILED: _ClassVar[Outcome]

class DeliveryResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELIVERY_RESULT_UNSPECIFIED: _ClassVar[DeliveryResult]
    DELIVERY_RESULT_ACCEPTED: _ClassVar[DeliveryResult]
    DELIVERY_RESULT_COMPLETED: _ClassVar[DeliveryResult]
    DELIVERY_RESULT_BUFFERED: _ClassVar[DeliveryResult]
    DELIVERY_RESULT_DUPLICATE: _ClassVar[DeliveryResult]
    DELIVERY_RESULT_FILTERED_OUT: _ClassVar[DeliveryResult]
    DELIVERY_RESULT_NO_MATCHING_SOURCE: _ClassVar[DeliveryResult]
    DELIVERY_RESULT_ALREADY_SATISFIED: _ClassVar[DeliveryResult]
    DELIVERY_RESULT_LATE: _ClassVar[DeliveryResult]

class ReplayOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPLAY_OUTCOME_UNSPECIFIED: _ClassVar[ReplayOutcome]
    REPLAY_OUTCOME_APPLIED: _ClassVar[ReplayOutcome]
    REPLAY_OUTCOME_BUFFERED: _ClassVar[ReplayOutcome]
    REPLAY_OUTCOME_DUPLICATE: _ClassVar[ReplayOutcome]
    REPLAY_OUTCOME_REFUSED: _ClassVar[ReplayOutcome]
    REPLAY_OUTCOME_NOT_REPLAYABLE: _ClassVar[ReplayOutcome]
    REPLAY_OUTCOME_NOT_FOUND: _ClassVar[ReplayOutcome]
WAIT_STATUS_UNSPECIFIED: WaitStatus
WAIT_STATUS_WAITING_FOR_EVENTS: WaitStatus
WAIT_STATUS_WAITING_FOR_API: WaitStatus
WAIT_STATUS_WAITING_FOR_KAFKA: WaitStatus
WAIT_STATUS_COMPLETED: WaitStatus
WAIT_STATUS_TIMED_OUT: WaitStatus
WAIT_STATUS_CANCELLED: WaitStatus
WAIT_STATUS_FAILED: WaitStatus
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_COMPLETED: Outcome
OUTCOME_PARTIAL: Outcome
OUTCOME_TIMED_OUT: Outcome
OUTCOME_CANCELLED: Outcome
OUTCOME_FAILED: Outcome
DELIVERY_RESULT_UNSPECIFIED: DeliveryResult
DELIVERY_RESULT_ACCEPTED: DeliveryResult
DELIVERY_RESULT_COMPLETED: DeliveryResult
DELIVERY_RESULT_BUFFERED: DeliveryResult
DELIVERY_RESULT_DUPLICATE: DeliveryResult
DELIVERY_RESULT_FILTERED_OUT: DeliveryResult
DELIVERY_RESULT_NO_MATCHING_SOURCE: DeliveryResult
DELIVERY_RESULT_ALREADY_SATISFIED: DeliveryResult
DELIVERY_RESULT_LATE: DeliveryResult
REPLAY_OUTCOME_UNSPECIFIED: ReplayOutcome
REPLAY_OUTCOME_APPLIED: ReplayOutcome
REPLAY_OUTCOME_BUFFERED: ReplayOutcome
REPLAY_OUTCOME_DUPLICATE: ReplayOutcome
REPLAY_OUTCOME_REFUSED: ReplayOutcome
REPLAY_OUTCOME_NOT_REPLAYABLE: ReplayOutcome
REPLAY_OUTCOME_NOT_FOUND: ReplayOutcome

class RegisterWaitRequest(_message.Message):
    __slots__ = ("execution_id", "node_id", "node_config_json", "input_variables", "idempotency_key", "tenant_id", "workflow_id", "correlation_id")
    class InputVariablesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    INPUT_VARIABLES_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    node_id: str
    node_config_json: str
    input_variables: _containers.ScalarMap[str, str]
    idempotency_key: str
    tenant_id: str
    workflow_id: str
    correlation_id: str
    def __init__(self, execution_id: _Optional[str] = ..., node_id: _Optional[str] = ..., node_config_json: _Optional[str] = ..., input_variables: _Optional[_Mapping[str, str]] = ..., idempotency_key: _Optional[str] = ..., tenant_id: _Optional[str] = ..., workflow_id: _Optional[str] = ..., correlation_id: _Optional[str] = ...) -> None: ...

class RegisterWaitResponse(_message.Message):
    __slots__ = ("wait_id", "correlation_id", "status", "created", "deadline")
    WAIT_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    wait_id: str
    correlation_id: str
    status: WaitStatus
    created: bool
    deadline: _timestamp_pb2.Timestamp
    def __init__(self, wait_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., status: _Optional[_Union[WaitStatus, str]] = ..., created: _Optional[bool] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SourceEvent(_message.Message):
    __slots__ = ("source", "event_key", "payload_json", "received_at")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_KEY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    source: str
    event_key: str
    payload_json: str
    received_at: _timestamp_pb2.Timestamp
    def __init__(self, source: _Optional[str] = ..., event_key: _Optional[str] = ..., payload_json: _Optional[str] = ..., received_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ResumeStreamRequest(_message.Message):
    __slots__ = ("subscribe", "ack")
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    subscribe: Subscribe
    ack: Ack
    def __init__(self, subscribe: _Optional[_Union[Subscribe, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ...) -> None: ...

class Subscribe(_message.Message):
    __slots__ = ("tenant_id", "max_in_flight")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    max_in_flight: int
    def __init__(self, tenant_id: _Optional[str] = ..., max_in_flight: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("resume_id",)
    RESUME_ID_FIELD_NUMBER: _ClassVar[int]
    resume_id: str
    def __init__(self, resume_id: _Optional[str] = ...) -> None: ...

class ResumeStreamResponse(_message.Message):
    __slots__ = ("resume",)
    RESUME_FIELD_NUMBER: _ClassVar[int]
    resume: Resume
    def __init__(self, resume: _Optional[_Union[Resume, _Mapping]] = ...) -> None: ...

class Resume(_message.Message):
    __slots__ = ("resume_id", "wait_id", "correlation_id", "execution_id", "node_id", "tenant_id", "outcome", "events", "missing_sources", "reason", "registered_at", "decided_at", "delivery_attempt", "traceparent", "tracestate")
    RESUME_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    MISSING_SOURCES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    TRACESTATE_FIELD_NUMBER: _ClassVar[int]
    resume_id: str
    wait_id: str
    correlation_id: str
    execution_id: str
    node_id: str
    tenant_id: str
    outcome: Outcome
    events: _containers.RepeatedCompositeFieldContainer[SourceEvent]
    missing_sources: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    registered_at: _timestamp_pb2.Timestamp
    decided_at: _timestamp_pb2.Timestamp
    delivery_attempt: int
    traceparent: str
    tracestate: str
    def __init__(self, resume_id: _Optional[str] = ..., wait_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., execution_id: _Optional[str] = ..., node_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., events: _Optional[_Iterable[_Union[SourceEvent, _Mapping]]] = ..., missing_sources: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ..., registered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., decided_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delivery_attempt: _Optional[int] = ..., traceparent: _Optional[str] = ..., tracestate: _Optional[str] = ...) -> None: ...

class DeliverApiResponseRequest(_message.Message):
    __slots__ = ("correlation_id", "execution_id", "http_status", "headers", "body", "idempotency_key", "tenant_id")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    correlation_id: str
    execution_id: str
    http_status: int
    headers: _containers.ScalarMap[str, str]
    body: bytes
    idempotency_key: str
    tenant_id: str
    def __init__(self, correlation_id: _Optional[str] = ..., execution_id: _Optional[str] = ..., http_status: _Optional[int] = ..., headers: _Optional[_Mapping[str, str]] = ..., body: _Optional[bytes] = ..., idempotency_key: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class DeliverEventRequest(_message.Message):
    __slots__ = ("correlation_id", "execution_id", "source", "payload_json", "event_key", "tenant_id")
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    EVENT_KEY_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    correlation_id: str
    execution_id: str
    source: str
    payload_json: str
    event_key: str
    tenant_id: str
    def __init__(self, correlation_id: _Optional[str] = ..., execution_id: _Optional[str] = ..., source: _Optional[str] = ..., payload_json: _Optional[str] = ..., event_key: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class DeliverApiResponseResponse(_message.Message):
    __slots__ = ("result", "wait_id", "status", "detail")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    WAIT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    result: DeliveryResult
    wait_id: str
    status: WaitStatus
    detail: str
    def __init__(self, result: _Optional[_Union[DeliveryResult, str]] = ..., wait_id: _Optional[str] = ..., status: _Optional[_Union[WaitStatus, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class DeliverEventResponse(_message.Message):
    __slots__ = ("result", "wait_id", "status", "detail")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    WAIT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    result: DeliveryResult
    wait_id: str
    status: WaitStatus
    detail: str
    def __init__(self, result: _Optional[_Union[DeliveryResult, str]] = ..., wait_id: _Optional[str] = ..., status: _Optional[_Union[WaitStatus, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class GetWaitRequest(_message.Message):
    __slots__ = ("wait_id", "correlation_id", "tenant_id")
    WAIT_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    wait_id: str
    correlation_id: str
    tenant_id: str
    def __init__(self, wait_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class GetWaitResponse(_message.Message):
    __slots__ = ("wait",)
    WAIT_FIELD_NUMBER: _ClassVar[int]
    wait: Wait
    def __init__(self, wait: _Optional[_Union[Wait, _Mapping]] = ...) -> None: ...

class Wait(_message.Message):
    __slots__ = ("wait_id", "tenant_id", "correlation_id", "execution_id", "node_id", "workflow_id", "status", "condition", "sources", "received", "waiting_for", "missing", "ignored", "ignored_total", "created_at", "deadline", "outcome", "decided_at", "reason", "version")
    WAIT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    WAITING_FOR_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    IGNORED_FIELD_NUMBER: _ClassVar[int]
    IGNORED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    wait_id: str
    tenant_id: str
    correlation_id: str
    execution_id: str
    node_id: str
    workflow_id: str
    status: WaitStatus
    condition: str
    sources: _containers.RepeatedScalarFieldContainer[str]
    received: _containers.RepeatedCompositeFieldContainer[SourceEvent]
    waiting_for: _containers.RepeatedScalarFieldContainer[str]
    missing: _containers.RepeatedScalarFieldContainer[str]
    ignored: _containers.RepeatedCompositeFieldContainer[IgnoredEvent]
    ignored_total: int
    created_at: _timestamp_pb2.Timestamp
    deadline: _timestamp_pb2.Timestamp
    outcome: Outcome
    decided_at: _timestamp_pb2.Timestamp
    reason: str
    version: int
    def __init__(self, wait_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., execution_id: _Optional[str] = ..., node_id: _Optional[str] = ..., workflow_id: _Optional[str] = ..., status: _Optional[_Union[WaitStatus, str]] = ..., condition: _Optional[str] = ..., sources: _Optional[_Iterable[str]] = ..., received: _Optional[_Iterable[_Union[SourceEvent, _Mapping]]] = ..., waiting_for: _Optional[_Iterable[str]] = ..., missing: _Optional[_Iterable[str]] = ..., ignored: _Optional[_Iterable[_Union[IgnoredEvent, _Mapping]]] = ..., ignored_total: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., decided_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class IgnoredEvent(_message.Message):
    __slots__ = ("event_key", "at", "kind", "detail")
    EVENT_KEY_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    event_key: str
    at: _timestamp_pb2.Timestamp
    kind: str
    detail: str
    def __init__(self, event_key: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class ListWaitsRequest(_message.Message):
    __slots__ = ("tenant_id", "statuses", "execution_id", "created_before", "page_size", "page_token")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    statuses: _containers.RepeatedScalarFieldContainer[WaitStatus]
    execution_id: str
    created_before: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, tenant_id: _Optional[str] = ..., statuses: _Optional[_Iterable[_Union[WaitStatus, str]]] = ..., execution_id: _Optional[str] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListWaitsResponse(_message.Message):
    __slots__ = ("waits", "next_page_token")
    WAITS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    waits: _containers.RepeatedCompositeFieldContainer[Wait]
    next_page_token: str
    def __init__(self, waits: _Optional[_Iterable[_Union[Wait, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelWaitRequest(_message.Message):
    __slots__ = ("wait_id", "correlation_id", "tenant_id", "reason")
    WAIT_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    wait_id: str
    correlation_id: str
    tenant_id: str
    reason: str
    def __init__(self, wait_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelWaitResponse(_message.Message):
    __slots__ = ("wait", "already_decided")
    WAIT_FIELD_NUMBER: _ClassVar[int]
    ALREADY_DECIDED_FIELD_NUMBER: _ClassVar[int]
    wait: Wait
    already_decided: bool
    def __init__(self, wait: _Optional[_Union[Wait, _Mapping]] = ..., already_decided: _Optional[bool] = ...) -> None: ...

class ListQuarantinedRequest(_message.Message):
    __slots__ = ("page_size",)
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    def __init__(self, page_size: _Optional[int] = ...) -> None: ...

class QuarantinedEvent(_message.Message):
    __slots__ = ("origin", "event_key", "correlation_id", "payload", "reason", "quarantined_at", "id", "replays", "replayable")
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    EVENT_KEY_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_AT_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    REPLAYS_FIELD_NUMBER: _ClassVar[int]
    REPLAYABLE_FIELD_NUMBER: _ClassVar[int]
    origin: str
    event_key: str
    correlation_id: str
    payload: str
    reason: str
    quarantined_at: _timestamp_pb2.Timestamp
    id: int
    replays: int
    replayable: bool
    def __init__(self, origin: _Optional[str] = ..., event_key: _Optional[str] = ..., correlation_id: _Optional[str] = ..., payload: _Optional[str] = ..., reason: _Optional[str] = ..., quarantined_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., id: _Optional[int] = ..., replays: _Optional[int] = ..., replayable: _Optional[bool] = ...) -> None: ...

class ListQuarantinedResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[QuarantinedEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[QuarantinedEvent, _Mapping]]] = ...) -> None: ...

class ReplayQuarantinedRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class ReplayResult(_message.Message):
    __slots__ = ("id", "outcome", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: int
    outcome: ReplayOutcome
    reason: str
    def __init__(self, id: _Optional[int] = ..., outcome: _Optional[_Union[ReplayOutcome, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class ReplayQuarantinedResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ReplayResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ReplayResult, _Mapping]]] = ...) -> None: ...

class ListBufferedRequest(_message.Message):
    __slots__ = ("tenant_id", "page_size")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    page_size: int
    def __init__(self, tenant_id: _Optional[str] = ..., page_size: _Optional[int] = ...) -> None: ...

class BufferedEvent(_message.Message):
    __slots__ = ("tenant_id", "correlation_id", "event_key", "channel", "received_at", "expires_at")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_KEY_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    correlation_id: str
    event_key: str
    channel: str
    received_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, tenant_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., event_key: _Optional[str] = ..., channel: _Optional[str] = ..., received_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListBufferedResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[BufferedEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[BufferedEvent, _Mapping]]] = ...) -> None: ...

class RedeliverResumeRequest(_message.Message):
    __slots__ = ("wait_id",)
    WAIT_ID_FIELD_NUMBER: _ClassVar[int]
    wait_id: str
    def __init__(self, wait_id: _Optional[str] = ...) -> None: ...

class RedeliverResumeResponse(_message.Message):
    __slots__ = ("resume_id", "was_acked")
    RESUME_ID_FIELD_NUMBER: _ClassVar[int]
    WAS_ACKED_FIELD_NUMBER: _ClassVar[int]
    resume_id: str
    was_acked: bool
    def __init__(self, resume_id: _Optional[str] = ..., was_acked: _Optional[bool] = ...) -> None: ...
