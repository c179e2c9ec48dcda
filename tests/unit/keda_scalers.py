"""What each KEDA scaler the chart uses reads from a trigger, from KEDA's Go code.

Taken from pkg/scalers/<name>_scaler.go (and redis_scaler.go for Redis'
connection, scaler.go's GetFromAuthOrMeta) at v2.16.1 and v2.20.2, keeping
what both read: the metadata keys (a `xFromEnv` key names a variable of the
scale target's container), which are required, which are parsed as Go
integers (strconv.ParseInt, or an int field of the typed config: "2.5" and
"1e+06" are refused) or floats, and the TriggerAuthentication parameters.
tests/unit/test_chart_keda.py checks every rendered trigger against it, and
the chart's README shows it (`python -m tests.unit.keda_scalers` prints the
table).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The oldest and newest KEDA whose code and CRDs the table and tests follow.
TESTED_KEDA = ("v2.16.1", "v2.20.2")


@dataclass(frozen=True)
class Scaler:
    engine: str
    counts: str
    reads: frozenset[str]
    #: Each set: one of its keys (metadata, `FromEnv` form or auth parameter) must be given.
    required: tuple[frozenset[str], ...]
    auth: frozenset[str]
    integers: frozenset[str] = frozenset()
    numbers: frozenset[str] = frozenset()
    booleans: frozenset[str] = frozenset()
    enums: dict[str, frozenset[str]] = field(default_factory=dict)
    #: key -> keys that change what it measures when sent with it.
    excludes: dict[str, frozenset[str]] = field(default_factory=dict)


def _set(*names: str) -> frozenset[str]:
    return frozenset(names)


SCALERS: dict[str, Scaler] = {
    "redis-streams": Scaler(
        engine="redis",
        counts="XLEN of the stream (no `consumerGroup`: with one, `streamLength` becomes XPENDING); the engine "
               "deletes settled entries, so it counts waiting, running and handed-back ones",
        reads=_set("address", "addresses", "host", "hosts", "port", "ports", "addressFromEnv", "hostFromEnv",
                   "portFromEnv", "username", "usernameFromEnv", "passwordFromEnv", "sentinelUsername",
                   "sentinelPassword", "sentinelMaster", "stream", "consumerGroup", "pendingEntriesCount",
                   "streamLength", "lagCount", "activationLagCount", "databaseIndex", "enableTLS", "unsafeSsl"),
        required=(_set("address", "addresses", "host", "hosts"), _set("stream")),
        auth=_set("address", "addresses", "host", "hosts", "port", "ports", "username", "password",
                  "sentinelUsername", "sentinelPassword", "sentinelMaster", "tls", "ca", "cert", "key",
                  "keyPassword"),
        integers=_set("pendingEntriesCount", "streamLength", "lagCount", "activationLagCount", "databaseIndex"),
        booleans=_set("enableTLS", "unsafeSsl"),
        excludes={"streamLength": _set("consumerGroup")},
    ),
    "rabbitmq": Scaler(
        engine="amqp",
        counts="`protocol: http` (default): the management API's messages, ready and unacknowledged; "
               "`protocol: amqp`: ready messages only",
        reads=_set("host", "hostFromEnv", "protocol", "queueName", "mode", "value", "activationValue",
                   "queueLength", "vhostName", "useRegex", "excludeUnacknowledged", "pageSize", "operation",
                   "timeout", "unsafeSsl", "usernameFromEnv", "passwordFromEnv"),
        required=(_set("host"), _set("queueName")),
        auth=_set("host", "protocol", "username", "password", "ca", "cert", "key", "keyPassword", "tls",
                  "workloadIdentityResource"),
        integers=_set("pageSize"),
        numbers=_set("value", "activationValue", "queueLength"),
        booleans=_set("useRegex", "excludeUnacknowledged", "unsafeSsl"),
        enums={"protocol": _set("http", "amqp", "auto"), "mode": _set("QueueLength", "MessageRate")},
    ),
    "gcp-pubsub": Scaler(
        engine="google",
        counts="num_undelivered_messages of the subscription (Cloud Monitoring), unacked ones included; "
               "deprecated since KEDA 2.18",
        reads=_set("subscriptionName", "subscriptionNameFromEnv", "topicName", "topicNameFromEnv", "mode", "value",
                   "activationValue", "valueIfNull", "aggregation", "timeHorizon", "credentialsFromEnv",
                   "credentialsFromEnvFile"),
        required=(_set("subscriptionName", "topicName"), _set("GoogleApplicationCredentials", "credentials")),
        auth=_set("GoogleApplicationCredentials"),
        numbers=_set("value", "activationValue", "valueIfNull"),
    ),
    "pulsar": Scaler(
        engine="pulsar",
        counts="msgBacklog of the subscription (admin API stats), unacked messages included",
        reads=_set("adminURL", "adminURLFromEnv", "topic", "topicFromEnv", "subscription", "subscriptionFromEnv",
                   "msgBacklogThreshold", "activationMsgBacklogThreshold", "isPartitionedTopic", "tls",
                   "authModes"),
        required=(_set("adminURL"), _set("topic"), _set("subscription")),
        auth=_set("bearerToken", "ca", "cert", "key", "username", "password", "clientSecret", "oauthTokenURI",
                  "scope", "clientID", "endpointParams"),
        integers=_set("msgBacklogThreshold", "activationMsgBacklogThreshold"),
        booleans=_set("isPartitionedTopic"),
        enums={"tls": _set("enable"), "authModes": _set("bearer", "tls", "bearer,tls", "basic", "oauth")},
    ),
    "nats-jetstream": Scaler(
        engine="nats",
        counts="the durable consumer's num_pending plus num_ack_pending (monitoring endpoint)",
        reads=_set("account", "stream", "consumer", "lagThreshold", "activationLagThreshold", "useHttps",
                   "natsServerMonitoringEndpoint"),
        required=(_set("account"), _set("stream"), _set("consumer"), _set("natsServerMonitoringEndpoint")),
        auth=_set("account", "natsServerMonitoringEndpoint"),
        integers=_set("lagThreshold", "activationLagThreshold"),
        booleans=_set("useHttps"),
    ),
    "postgresql": Scaler(
        engine="postgres",
        counts="the query's count of pending and running rows",
        reads=_set("query", "targetQueryValue", "activationTargetQueryValue", "connectionFromEnv", "host", "port",
                   "userName", "dbName", "sslmode", "passwordFromEnv"),
        required=(_set("query"), _set("connection", "host")),
        auth=_set("connection", "host", "port", "userName", "dbName", "sslmode", "password"),
        numbers=_set("targetQueryValue", "activationTargetQueryValue"),
    ),
}


def readme_table() -> str:
    """The chart README's table of triggers, one row a scaler."""
    oldest, newest = (v.lstrip("v") for v in TESTED_KEDA)
    lines = [
        f"What each trigger counts and what its scaler reads (KEDA {oldest} to {newest}, from its code; "
        "tests/unit/keda_scalers.py):",
        "",
        "| Engine | Trigger | Counts | Required | Integers | Auth parameters |",
        "|---|---|---|---|---|---|",
    ]
    for name, scaler in SCALERS.items():
        required = "; ".join(" or ".join(f"`{k}`" for k in sorted(group)) for group in scaler.required)
        integers = ", ".join(f"`{k}`" for k in sorted(scaler.integers)) or "none (floats)"
        auth = ", ".join(f"`{k}`" for k in sorted(scaler.auth))
        lines.append(f"| {scaler.engine} | `{name}` | {scaler.counts} | {required} | {integers} | {auth} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(readme_table(), end="")
