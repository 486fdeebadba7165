from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PaymentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_STATUS_UNSPECIFIED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_CREATED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_PENDING: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_PROCESSING: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_PAID: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_FAILED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_CANCELED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_EXPIRED: _ClassVar[PaymentStatus]

class PaymentMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_METHOD_UNSPECIFIED: _ClassVar[PaymentMethod]
    PAYMENT_METHOD_HOSTED_CARD: _ClassVar[PaymentMethod]
    PAYMENT_METHOD_PAYMENT_LINK: _ClassVar[PaymentMethod]

class PaymentType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_TYPE_UNSPECIFIED: _ClassVar[PaymentType]
    PAYMENT_TYPE_ONE_TIME: _ClassVar[PaymentType]
    PAYMENT_TYPE_RECURRING: _ClassVar[PaymentType]

class ProviderType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROVIDER_TYPE_UNSPECIFIED: _ClassVar[ProviderType]
    PROVIDER_TYPE_STRIPE: _ClassVar[ProviderType]
    PROVIDER_TYPE_STELLAR: _ClassVar[ProviderType]
    PROVIDER_TYPE_VNPAY: _ClassVar[ProviderType]
    PROVIDER_TYPE_SANDBOX: _ClassVar[ProviderType]

class CallbackDeliveryStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALLBACK_DELIVERY_STATUS_UNSPECIFIED: _ClassVar[CallbackDeliveryStatus]
    CALLBACK_DELIVERY_STATUS_PENDING: _ClassVar[CallbackDeliveryStatus]
    CALLBACK_DELIVERY_STATUS_SUCCESS: _ClassVar[CallbackDeliveryStatus]
    CALLBACK_DELIVERY_STATUS_FAILED: _ClassVar[CallbackDeliveryStatus]
    CALLBACK_DELIVERY_STATUS_REQUEUED: _ClassVar[CallbackDeliveryStatus]

class RefundStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFUND_STATUS_UNSPECIFIED: _ClassVar[RefundStatus]
    REFUND_STATUS_PENDING: _ClassVar[RefundStatus]
    REFUND_STATUS_SUCCEEDED: _ClassVar[RefundStatus]
    REFUND_STATUS_FAILED: _ClassVar[RefundStatus]
    REFUND_STATUS_CANCELED: _ClassVar[RefundStatus]
PAYMENT_STATUS_UNSPECIFIED: PaymentStatus
PAYMENT_STATUS_CREATED: PaymentStatus
PAYMENT_STATUS_PENDING: PaymentStatus
PAYMENT_STATUS_PROCESSING: PaymentStatus
PAYMENT_STATUS_PAID: PaymentStatus
PAYMENT_STATUS_FAILED: PaymentStatus
PAYMENT_STATUS_CANCELED: PaymentStatus
PAYMENT_STATUS_EXPIRED: PaymentStatus
PAYMENT_METHOD_UNSPECIFIED: PaymentMethod
PAYMENT_METHOD_HOSTED_CARD: PaymentMethod
PAYMENT_METHOD_PAYMENT_LINK: PaymentMethod
PAYMENT_TYPE_UNSPECIFIED: PaymentType
PAYMENT_TYPE_ONE_TIME: PaymentType
PAYMENT_TYPE_RECURRING: PaymentType
PROVIDER_TYPE_UNSPECIFIED: ProviderType
PROVIDER_TYPE_STRIPE: ProviderType
PROVIDER_TYPE_STELLAR: ProviderType
PROVIDER_TYPE_VNPAY: ProviderType
PROVIDER_TYPE_SANDBOX: ProviderType
CALLBACK_DELIVERY_STATUS_UNSPECIFIED: CallbackDeliveryStatus
CALLBACK_DELIVERY_STATUS_PENDING: CallbackDeliveryStatus
CALLBACK_DELIVERY_STATUS_SUCCESS: CallbackDeliveryStatus
CALLBACK_DELIVERY_STATUS_FAILED: CallbackDeliveryStatus
CALLBACK_DELIVERY_STATUS_REQUEUED: CallbackDeliveryStatus
REFUND_STATUS_UNSPECIFIED: RefundStatus
REFUND_STATUS_PENDING: RefundStatus
REFUND_STATUS_SUCCEEDED: RefundStatus
REFUND_STATUS_FAILED: RefundStatus
REFUND_STATUS_CANCELED: RefundStatus

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: str
    def __init__(self, status: _Optional[str] = ...) -> None: ...

class Payment(_message.Message):
    __slots__ = ("id", "request_id", "caller_service", "resource_type", "resource_id", "customer_ref", "amount_cents", "currency", "status", "payment_method", "payment_type", "provider", "recurring_interval", "recurring_interval_count", "provider_payment_id", "provider_subscription_id", "checkout_url", "provider_callback_hash", "provider_callback_url", "status_callback_url", "refunded_cents", "refundable_cents", "metadata", "created_at", "updated_at", "cancel_reason", "failure_reason", "attention_required", "callback_delivery", "received_cents", "stellar_instructions")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CALLER_SERVICE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_REF_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_METHOD_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    RECURRING_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    RECURRING_INTERVAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKOUT_URL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_CALLBACK_HASH_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_CALLBACK_URL_FIELD_NUMBER: _ClassVar[int]
    STATUS_CALLBACK_URL_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_CENTS_FIELD_NUMBER: _ClassVar[int]
    REFUNDABLE_CENTS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REASON_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_DELIVERY_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_CENTS_FIELD_NUMBER: _ClassVar[int]
    STELLAR_INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    id: int
    request_id: str
    caller_service: str
    resource_type: str
    resource_id: str
    customer_ref: str
    amount_cents: int
    currency: str
    status: PaymentStatus
    payment_method: PaymentMethod
    payment_type: PaymentType
    provider: ProviderType
    recurring_interval: str
    recurring_interval_count: int
    provider_payment_id: str
    provider_subscription_id: str
    checkout_url: str
    provider_callback_hash: str
    provider_callback_url: str
    status_callback_url: str
    refunded_cents: int
    refundable_cents: int
    metadata: _containers.ScalarMap[str, str]
    created_at: str
    updated_at: str
    cancel_reason: str
    failure_reason: str
    attention_required: bool
    callback_delivery: CallbackDelivery
    received_cents: int
    stellar_instructions: StellarPaymentInstructions
    def __init__(self, id: _Optional[int] = ..., request_id: _Optional[str] = ..., caller_service: _Optional[str] = ..., resource_type: _Optional[str] = ..., resource_id: _Optional[str] = ..., customer_ref: _Optional[str] = ..., amount_cents: _Optional[int] = ..., currency: _Optional[str] = ..., status: _Optional[_Union[PaymentStatus, str]] = ..., payment_method: _Optional[_Union[PaymentMethod, str]] = ..., payment_type: _Optional[_Union[PaymentType, str]] = ..., provider: _Optional[_Union[ProviderType, str]] = ..., recurring_interval: _Optional[str] = ..., recurring_interval_count: _Optional[int] = ..., provider_payment_id: _Optional[str] = ..., provider_subscription_id: _Optional[str] = ..., checkout_url: _Optional[str] = ..., provider_callback_hash: _Optional[str] = ..., provider_callback_url: _Optional[str] = ..., status_callback_url: _Optional[str] = ..., refunded_cents: _Optional[int] = ..., refundable_cents: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ..., created_at: _Optional[str] = ..., updated_at: _Optional[str] = ..., cancel_reason: _Optional[str] = ..., failure_reason: _Optional[str] = ..., attention_required: _Optional[bool] = ..., callback_delivery: _Optional[_Union[CallbackDelivery, _Mapping]] = ..., received_cents: _Optional[int] = ..., stellar_instructions: _Optional[_Union[StellarPaymentInstructions, _Mapping]] = ...) -> None: ...

class StellarPaymentInstructions(_message.Message):
    __slots__ = ("destination", "asset_code", "asset_issuer", "amount", "memo", "memo_type")
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    ASSET_CODE_FIELD_NUMBER: _ClassVar[int]
    ASSET_ISSUER_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    MEMO_FIELD_NUMBER: _ClassVar[int]
    MEMO_TYPE_FIELD_NUMBER: _ClassVar[int]
    destination: str
    asset_code: str
    asset_issuer: str
    amount: str
    memo: str
    memo_type: str
    def __init__(self, destination: _Optional[str] = ..., asset_code: _Optional[str] = ..., asset_issuer: _Optional[str] = ..., amount: _Optional[str] = ..., memo: _Optional[str] = ..., memo_type: _Optional[str] = ...) -> None: ...

class CallbackDelivery(_message.Message):
    __slots__ = ("delivery_id", "status", "attempts", "next_attempt_at", "last_error", "last_status_code", "event_type")
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    delivery_id: str
    status: CallbackDeliveryStatus
    attempts: int
    next_attempt_at: str
    last_error: str
    last_status_code: int
    event_type: str
    def __init__(self, delivery_id: _Optional[str] = ..., status: _Optional[_Union[CallbackDeliveryStatus, str]] = ..., attempts: _Optional[int] = ..., next_attempt_at: _Optional[str] = ..., last_error: _Optional[str] = ..., last_status_code: _Optional[int] = ..., event_type: _Optional[str] = ...) -> None: ...

class CreatePaymentRequest(_message.Message):
    __slots__ = ("request_id", "caller_service", "resource_type", "resource_id", "customer_ref", "amount_cents", "currency", "payment_method", "payment_type", "provider", "recurring_interval", "recurring_interval_count", "status_callback_url", "success_url", "cancel_url", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CALLER_SERVICE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_REF_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_METHOD_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    RECURRING_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    RECURRING_INTERVAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    STATUS_CALLBACK_URL_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_URL_FIELD_NUMBER: _ClassVar[int]
    CANCEL_URL_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    caller_service: str
    resource_type: str
    resource_id: str
    customer_ref: str
    amount_cents: int
    currency: str
    payment_method: PaymentMethod
    payment_type: PaymentType
    provider: ProviderType
    recurring_interval: str
    recurring_interval_count: int
    status_callback_url: str
    success_url: str
    cancel_url: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, request_id: _Optional[str] = ..., caller_service: _Optional[str] = ..., resource_type: _Optional[str] = ..., resource_id: _Optional[str] = ..., customer_ref: _Optional[str] = ..., amount_cents: _Optional[int] = ..., currency: _Optional[str] = ..., payment_method: _Optional[_Union[PaymentMethod, str]] = ..., payment_type: _Optional[_Union[PaymentType, str]] = ..., provider: _Optional[_Union[ProviderType, str]] = ..., recurring_interval: _Optional[str] = ..., recurring_interval_count: _Optional[int] = ..., status_callback_url: _Optional[str] = ..., success_url: _Optional[str] = ..., cancel_url: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetPaymentRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class ListPaymentsRequest(_message.Message):
    __slots__ = ("request_id", "caller_service", "resource_type", "resource_id", "has_status", "status", "provider", "limit", "offset")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CALLER_SERVICE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    HAS_STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    caller_service: str
    resource_type: str
    resource_id: str
    has_status: bool
    status: PaymentStatus
    provider: ProviderType
    limit: int
    offset: int
    def __init__(self, request_id: _Optional[str] = ..., caller_service: _Optional[str] = ..., resource_type: _Optional[str] = ..., resource_id: _Optional[str] = ..., has_status: _Optional[bool] = ..., status: _Optional[_Union[PaymentStatus, str]] = ..., provider: _Optional[_Union[ProviderType, str]] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class CancelPaymentRequest(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: int
    reason: str
    def __init__(self, id: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class HandleProviderCallbackRequest(_message.Message):
    __slots__ = ("request_id", "provider", "callback_hash", "signature", "payload")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_HASH_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    provider: str
    callback_hash: str
    signature: str
    payload: str
    def __init__(self, request_id: _Optional[str] = ..., provider: _Optional[str] = ..., callback_hash: _Optional[str] = ..., signature: _Optional[str] = ..., payload: _Optional[str] = ...) -> None: ...

class PaymentEnvelopeResponse(_message.Message):
    __slots__ = ("payment", "routing_rule")
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    ROUTING_RULE_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    routing_rule: str
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ..., routing_rule: _Optional[str] = ...) -> None: ...

class ListPaymentsResponse(_message.Message):
    __slots__ = ("payments",)
    PAYMENTS_FIELD_NUMBER: _ClassVar[int]
    payments: _containers.RepeatedCompositeFieldContainer[Payment]
    def __init__(self, payments: _Optional[_Iterable[_Union[Payment, _Mapping]]] = ...) -> None: ...

class MessageResponse(_message.Message):
    __slots__ = ("message", "payment")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    message: str
    payment: Payment
    def __init__(self, message: _Optional[str] = ..., payment: _Optional[_Union[Payment, _Mapping]] = ...) -> None: ...

class ErrorResponse(_message.Message):
    __slots__ = ("error",)
    ERROR_FIELD_NUMBER: _ClassVar[int]
    error: str
    def __init__(self, error: _Optional[str] = ...) -> None: ...

class ListPaymentEventsRequest(_message.Message):
    __slots__ = ("id", "limit", "after_event_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    AFTER_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    limit: int
    after_event_id: int
    def __init__(self, id: _Optional[int] = ..., limit: _Optional[int] = ..., after_event_id: _Optional[int] = ...) -> None: ...

class PaymentEvent(_message.Message):
    __slots__ = ("id", "payment_id", "event_type", "old_status", "new_status", "provider_event_id", "needs_attention", "message", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    OLD_STATUS_FIELD_NUMBER: _ClassVar[int]
    NEW_STATUS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    NEEDS_ATTENTION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: int
    payment_id: int
    event_type: str
    old_status: PaymentStatus
    new_status: PaymentStatus
    provider_event_id: str
    needs_attention: bool
    message: str
    created_at: str
    def __init__(self, id: _Optional[int] = ..., payment_id: _Optional[int] = ..., event_type: _Optional[str] = ..., old_status: _Optional[_Union[PaymentStatus, str]] = ..., new_status: _Optional[_Union[PaymentStatus, str]] = ..., provider_event_id: _Optional[str] = ..., needs_attention: _Optional[bool] = ..., message: _Optional[str] = ..., created_at: _Optional[str] = ...) -> None: ...

class ListPaymentEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[PaymentEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[PaymentEvent, _Mapping]]] = ...) -> None: ...

class ReplayCallbackRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class RefundPaymentRequest(_message.Message):
    __slots__ = ("id", "request_id", "amount_cents", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: int
    request_id: str
    amount_cents: int
    reason: str
    def __init__(self, id: _Optional[int] = ..., request_id: _Optional[str] = ..., amount_cents: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class Refund(_message.Message):
    __slots__ = ("id", "payment_id", "request_id", "amount_cents", "status", "reason", "provider_refund_id", "failure_reason", "created_at", "updated_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_REFUND_ID_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: int
    payment_id: int
    request_id: str
    amount_cents: int
    status: RefundStatus
    reason: str
    provider_refund_id: str
    failure_reason: str
    created_at: str
    updated_at: str
    def __init__(self, id: _Optional[int] = ..., payment_id: _Optional[int] = ..., request_id: _Optional[str] = ..., amount_cents: _Optional[int] = ..., status: _Optional[_Union[RefundStatus, str]] = ..., reason: _Optional[str] = ..., provider_refund_id: _Optional[str] = ..., failure_reason: _Optional[str] = ..., created_at: _Optional[str] = ..., updated_at: _Optional[str] = ...) -> None: ...

class RefundPaymentResponse(_message.Message):
    __slots__ = ("payment", "refund")
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    REFUND_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    refund: Refund
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ..., refund: _Optional[_Union[Refund, _Mapping]] = ...) -> None: ...

class WatchPaymentRequest(_message.Message):
    __slots__ = ("id", "after_event_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    after_event_id: int
    def __init__(self, id: _Optional[int] = ..., after_event_id: _Optional[int] = ...) -> None: ...

class WatchPaymentsRequest(_message.Message):
    __slots__ = ("caller_service", "has_status", "status", "provider", "after_event_id")
    CALLER_SERVICE_FIELD_NUMBER: _ClassVar[int]
    HAS_STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    AFTER_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    caller_service: str
    has_status: bool
    status: PaymentStatus
    provider: ProviderType
    after_event_id: int
    def __init__(self, caller_service: _Optional[str] = ..., has_status: _Optional[bool] = ..., status: _Optional[_Union[PaymentStatus, str]] = ..., provider: _Optional[_Union[ProviderType, str]] = ..., after_event_id: _Optional[int] = ...) -> None: ...

class WatchUpdate(_message.Message):
    __slots__ = ("payment", "event", "final", "ended_reason", "after_event_id")
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    ENDED_REASON_FIELD_NUMBER: _ClassVar[int]
    AFTER_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    event: PaymentEvent
    final: bool
    ended_reason: str
    after_event_id: int
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ..., event: _Optional[_Union[PaymentEvent, _Mapping]] = ..., final: _Optional[bool] = ..., ended_reason: _Optional[str] = ..., after_event_id: _Optional[int] = ...) -> None: ...

class VerifyPaymentRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class VerifyPaymentResponse(_message.Message):
    __slots__ = ("payment", "provider_status", "changed", "old_status")
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_STATUS_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    OLD_STATUS_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    provider_status: str
    changed: bool
    old_status: PaymentStatus
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ..., provider_status: _Optional[str] = ..., changed: _Optional[bool] = ..., old_status: _Optional[_Union[PaymentStatus, str]] = ...) -> None: ...

class ListCallbackDeliveriesRequest(_message.Message):
    __slots__ = ("caller_service", "status", "since", "until", "limit", "before_id")
    CALLER_SERVICE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    BEFORE_ID_FIELD_NUMBER: _ClassVar[int]
    caller_service: str
    status: CallbackDeliveryStatus
    since: str
    until: str
    limit: int
    before_id: int
    def __init__(self, caller_service: _Optional[str] = ..., status: _Optional[_Union[CallbackDeliveryStatus, str]] = ..., since: _Optional[str] = ..., until: _Optional[str] = ..., limit: _Optional[int] = ..., before_id: _Optional[int] = ...) -> None: ...

class CallbackDeliveryRecord(_message.Message):
    __slots__ = ("id", "payment_id", "caller_service", "delivery", "created_at", "updated_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CALLER_SERVICE_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: int
    payment_id: int
    caller_service: str
    delivery: CallbackDelivery
    created_at: str
    updated_at: str
    def __init__(self, id: _Optional[int] = ..., payment_id: _Optional[int] = ..., caller_service: _Optional[str] = ..., delivery: _Optional[_Union[CallbackDelivery, _Mapping]] = ..., created_at: _Optional[str] = ..., updated_at: _Optional[str] = ...) -> None: ...

class ListCallbackDeliveriesResponse(_message.Message):
    __slots__ = ("deliveries",)
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    deliveries: _containers.RepeatedCompositeFieldContainer[CallbackDeliveryRecord]
    def __init__(self, deliveries: _Optional[_Iterable[_Union[CallbackDeliveryRecord, _Mapping]]] = ...) -> None: ...

class GetPaymentStatsRequest(_message.Message):
    __slots__ = ("caller_service", "customer_ref", "since", "until")
    CALLER_SERVICE_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_REF_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    caller_service: str
    customer_ref: str
    since: str
    until: str
    def __init__(self, caller_service: _Optional[str] = ..., customer_ref: _Optional[str] = ..., since: _Optional[str] = ..., until: _Optional[str] = ...) -> None: ...

class StatusStats(_message.Message):
    __slots__ = ("status", "currency", "count", "amount_cents", "refunded_cents")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_CENTS_FIELD_NUMBER: _ClassVar[int]
    status: PaymentStatus
    currency: str
    count: int
    amount_cents: int
    refunded_cents: int
    def __init__(self, status: _Optional[_Union[PaymentStatus, str]] = ..., currency: _Optional[str] = ..., count: _Optional[int] = ..., amount_cents: _Optional[int] = ..., refunded_cents: _Optional[int] = ...) -> None: ...

class GetPaymentStatsResponse(_message.Message):
    __slots__ = ("caller_service", "customer_ref", "since", "until", "by_status", "created", "paid", "conversion", "refunded_cents_by_currency")
    class RefundedCentsByCurrencyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    CALLER_SERVICE_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_REF_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    BY_STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    PAID_FIELD_NUMBER: _ClassVar[int]
    CONVERSION_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_CENTS_BY_CURRENCY_FIELD_NUMBER: _ClassVar[int]
    caller_service: str
    customer_ref: str
    since: str
    until: str
    by_status: _containers.RepeatedCompositeFieldContainer[StatusStats]
    created: int
    paid: int
    conversion: float
    refunded_cents_by_currency: _containers.ScalarMap[str, int]
    def __init__(self, caller_service: _Optional[str] = ..., customer_ref: _Optional[str] = ..., since: _Optional[str] = ..., until: _Optional[str] = ..., by_status: _Optional[_Iterable[_Union[StatusStats, _Mapping]]] = ..., created: _Optional[int] = ..., paid: _Optional[int] = ..., conversion: _Optional[float] = ..., refunded_cents_by_currency: _Optional[_Mapping[str, int]] = ...) -> None: ...

class GetSystemStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkerStatus(_message.Message):
    __slots__ = ("name", "last_success_at", "seconds_since_success", "backlog", "healthy", "problem")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_SUCCESS_AT_FIELD_NUMBER: _ClassVar[int]
    SECONDS_SINCE_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    name: str
    last_success_at: str
    seconds_since_success: float
    backlog: int
    healthy: bool
    problem: str
    def __init__(self, name: _Optional[str] = ..., last_success_at: _Optional[str] = ..., seconds_since_success: _Optional[float] = ..., backlog: _Optional[int] = ..., healthy: _Optional[bool] = ..., problem: _Optional[str] = ...) -> None: ...

class StellarCursorStatus(_message.Message):
    __slots__ = ("account", "paging_token", "cursor_ledger", "latest_ledger", "ledgers_behind", "seconds_behind", "problem")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    PAGING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CURSOR_LEDGER_FIELD_NUMBER: _ClassVar[int]
    LATEST_LEDGER_FIELD_NUMBER: _ClassVar[int]
    LEDGERS_BEHIND_FIELD_NUMBER: _ClassVar[int]
    SECONDS_BEHIND_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    account: str
    paging_token: str
    cursor_ledger: int
    latest_ledger: int
    ledgers_behind: int
    seconds_behind: float
    problem: str
    def __init__(self, account: _Optional[str] = ..., paging_token: _Optional[str] = ..., cursor_ledger: _Optional[int] = ..., latest_ledger: _Optional[int] = ..., ledgers_behind: _Optional[int] = ..., seconds_behind: _Optional[float] = ..., problem: _Optional[str] = ...) -> None: ...

class GetSystemStatusResponse(_message.Message):
    __slots__ = ("workers", "stellar_cursors", "dead_callbacks", "watchers")
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    STELLAR_CURSORS_FIELD_NUMBER: _ClassVar[int]
    DEAD_CALLBACKS_FIELD_NUMBER: _ClassVar[int]
    WATCHERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerStatus]
    stellar_cursors: _containers.RepeatedCompositeFieldContainer[StellarCursorStatus]
    dead_callbacks: int
    watchers: int
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerStatus, _Mapping]]] = ..., stellar_cursors: _Optional[_Iterable[_Union[StellarCursorStatus, _Mapping]]] = ..., dead_callbacks: _Optional[int] = ..., watchers: _Optional[int] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("id", "occurred_at", "actor_service", "actor_key_id", "action", "target_type", "target_id", "request_id", "detail")
    ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_SERVICE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_TYPE_FIELD_NUMBER: _ClassVar[int]
    TARGET_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    id: int
    occurred_at: str
    actor_service: str
    actor_key_id: str
    action: str
    target_type: str
    target_id: str
    request_id: str
    detail: str
    def __init__(self, id: _Optional[int] = ..., occurred_at: _Optional[str] = ..., actor_service: _Optional[str] = ..., actor_key_id: _Optional[str] = ..., action: _Optional[str] = ..., target_type: _Optional[str] = ..., target_id: _Optional[str] = ..., request_id: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class ListAuditEntriesRequest(_message.Message):
    __slots__ = ("action", "target_type", "target_id", "limit", "before_id")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_TYPE_FIELD_NUMBER: _ClassVar[int]
    TARGET_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    BEFORE_ID_FIELD_NUMBER: _ClassVar[int]
    action: str
    target_type: str
    target_id: str
    limit: int
    before_id: int
    def __init__(self, action: _Optional[str] = ..., target_type: _Optional[str] = ..., target_id: _Optional[str] = ..., limit: _Optional[int] = ..., before_id: _Optional[int] = ...) -> None: ...

class ListAuditEntriesResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ...) -> None: ...
