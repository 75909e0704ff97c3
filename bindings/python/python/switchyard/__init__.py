"""Switchyard: produce and consume *logical* Kafka topics, routed by the Switchyard config service.

The config service says which Kafka cluster and physical topic each logical topic means today,
and with which client properties and quotas. This package (a binding of the Rust SDK) watches
that configuration and hot-swaps it: a topic moved to another cluster, or a changed property,
takes effect in the running process without losing, duplicating or reordering records.

Example::

    import switchyard

    with switchyard.Switchyard.connect("http://127.0.0.1:7070", "checkout") as sy:
        with sy.producer() as producer:
            d = producer.send("orders", b'{"total": 42}', key="order-1")
            print(d.cluster, d.physical_topic, d.partition, d.offset)

See ``Producer`` (``send`` / ``produce`` + ``poll`` / ``flush`` / ``send_async``) and ``Consumer``
(``poll`` / ``commit`` / ``recv_async``). Errors are ``SwitchyardError`` subclasses, one per error
kind of the SDK.
"""

from ._errors import (
    CacheError,
    ClosedError,
    ConfigServiceError,
    InternalError,
    InvalidArgumentError,
    KafkaError,
    NoConfigError,
    QuotaExceededError,
    SwitchyardError,
    TimeoutError,
    UnknownTopicError,
)
from ._switchyard import (
    Consumer,
    Delivery,
    Message,
    Producer,
    Record,
    Switchyard,
    __version__,
)

__all__ = [
    "Switchyard",
    "Producer",
    "Consumer",
    "Delivery",
    "Message",
    "Record",
    "SwitchyardError",
    "InvalidArgumentError",
    "UnknownTopicError",
    "NoConfigError",
    "ConfigServiceError",
    "CacheError",
    "KafkaError",
    "TimeoutError",
    "ClosedError",
    "QuotaExceededError",
    "InternalError",
    "__version__",
]
