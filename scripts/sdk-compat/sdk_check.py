"""Exercises ward through the official Dapr Python SDK (DaprClient), unchanged.

Run by scripts/sdk-compat.sh under `ward run`, which sets DAPR_HTTP_PORT / DAPR_GRPC_PORT (and DAPR_API_TOKEN for
the token variant). Prints one line per check and a final `N passed, N failed`; exits non-zero on any failure.
"""
import json
import os
import queue
import sys
import time
import traceback

import grpc
from dapr.clients import DaprClient
from dapr.clients.grpc._state import StateOptions, Concurrency
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.clients.grpc._response import TopicEventResponse
from google.protobuf import wrappers_pb2
from dapr.conf import settings

MODE = os.environ.get("SDK_MODE", "plain")
results = {"passed": 0, "failed": 0}


def check(name, fn):
    try:
        fn()
        results["passed"] += 1
        print(f"PASS [{MODE}] {name}", flush=True)
    except Exception as err:  # noqa: BLE001 - report every failure and go on
        results["failed"] += 1
        print(f"FAIL [{MODE}] {name}: {type(err).__name__}: {err}", flush=True)
        traceback.print_exc(limit=2)


def grpc_code(err):
    code = getattr(err, "code", None)
    return code() if callable(code) else code


def expect_code(fn, code):
    try:
        fn()
    except Exception as err:  # noqa: BLE001
        got = grpc_code(err)
        if got != code and str(got) != str(code) and getattr(got, "name", None) != code.name:
            raise AssertionError(f"expected {code}, got {got}: {err}") from err
        return
    raise AssertionError(f"expected {code}, call succeeded")


client = DaprClient()
store = "statestore"
key = f"sdk-{MODE}"


def state_round_trip():
    client.save_state(store, key, "hello")
    resp = client.get_state(store, key)
    assert resp.data == b"hello", resp.data
    assert resp.etag, "an ETag is returned"


def state_etags():
    etag = client.get_state(store, key).etag
    client.save_state(store, key, "v2", etag=etag)
    expect_code(lambda: client.save_state(store, key, "v3", etag=etag), grpc.StatusCode.ABORTED)
    assert client.get_state(store, key).data == b"v2"


def state_first_write():
    opts = StateOptions(concurrency=Concurrency.first_write)
    expect_code(lambda: client.save_state(store, key, "x", options=opts), grpc.StatusCode.ABORTED)


def state_delete():
    client.save_state(store, key + "-del", "bye")
    client.delete_state(store, key + "-del")
    assert client.get_state(store, key + "-del").data == b""


def bulk_get():
    client.save_state(store, key + "-a", "A")
    client.save_state(store, key + "-b", "B")
    items = {i.key: i.data for i in client.get_bulk_state(store, [key + "-a", key + "-b", key + "-none"]).items}
    assert items[key + "-a"] == b"A" and items[key + "-b"] == b"B" and items[key + "-none"] == b"", items


def transaction():
    client.execute_state_transaction(store, [
        TransactionalStateOperation(key=key + "-t1", data="one", operation_type=TransactionOperationType.upsert),
        TransactionalStateOperation(key=key + "-a", operation_type=TransactionOperationType.delete),
    ])
    assert client.get_state(store, key + "-t1").data == b"one"
    assert client.get_state(store, key + "-a").data == b""
    # A transaction whose second operation has a stale ETag applies nothing.
    stale = client.get_state(store, key + "-t1").etag
    client.save_state(store, key + "-t1", "one-again")
    expect_code(lambda: client.execute_state_transaction(store, [
        TransactionalStateOperation(key=key + "-t2", data="two", operation_type=TransactionOperationType.upsert),
        TransactionalStateOperation(key=key + "-t1", data="x", etag=stale, operation_type=TransactionOperationType.upsert),
    ]), grpc.StatusCode.ABORTED)
    assert client.get_state(store, key + "-t2").data == b""


def out_of_scope_store():
    # "hidden" exists but is scoped to another app: it must look exactly like a store that does not exist.
    expect_code(lambda: client.get_state("hidden", "k"), grpc.StatusCode.INVALID_ARGUMENT)
    expect_code(lambda: client.get_state("no-such-store", "k"), grpc.StatusCode.INVALID_ARGUMENT)


def secrets():
    assert client.get_secret("secretstore", "db-password").secret == {"db-password": "s3cr3t"}
    # Out of the app's secret scopes: answered exactly as a missing secret (ward's invariant 3; Dapr says 403).
    expect_code(lambda: client.get_secret("secretstore", "admin-key"), grpc.StatusCode.INTERNAL)
    expect_code(lambda: client.get_secret("secretstore", "no-such-secret"), grpc.StatusCode.INTERNAL)
    bulk = client.get_bulk_secret("secretstore").secrets
    assert "db-password" in bulk and "admin-key" not in bulk, bulk


def metadata():
    meta = client.get_metadata()
    assert meta.application_id == os.environ["APP_ID"], meta.application_id
    names = {c.name for c in meta.registered_components}
    assert "statestore" in names and "hidden" not in names, names


def invoke_http():
    resp = client.invoke_method("echo", "hello", data=b"ping", http_verb="POST")
    assert resp.text().startswith("echo:/hello"), resp.text()


def invoke_grpc():
    settings.DAPR_API_METHOD_INVOCATION_PROTOCOL = "grpc"
    try:
        with DaprClient() as grpc_client:
            resp = grpc_client.invoke_method("echo", "hello", data=b"ping", http_verb="POST")
            assert resp.text().startswith("echo:/hello"), resp.text()
    finally:
        settings.DAPR_API_METHOD_INVOCATION_PROTOCOL = "http"


def metadata_set():
    client.set_metadata(f"sdk-{MODE}", "yes")
    extended = client.get_metadata().extended_metadata
    assert extended.get(f"sdk-{MODE}") == "yes", extended


def invoke_grpc_app_custom_data():
    # The SDK's invoke-custom-data example: bytes to a gRPC app (dapr.ext.grpc.App), a typed protobuf answer that
    # the caller unpacks; over gRPC invocation a typed request keeps its type too.
    resp = wait_for(lambda: client.invoke_method("grpc-app", "say", data=b"SOME_DATA"))
    answer = wrappers_pb2.StringValue()
    resp.unpack(answer)
    assert answer.value == "bytes:SOME_DATA", answer.value
    settings.DAPR_API_METHOD_INVOCATION_PROTOCOL = "grpc"
    try:
        with DaprClient() as grpc_client:
            resp = grpc_client.invoke_method("grpc-app", "say", data=wrappers_pb2.StringValue(value="hi"))
            answer = wrappers_pb2.StringValue()
            resp.unpack(answer)
            assert answer.value == "proto:hi", answer.value
    finally:
        settings.DAPR_API_METHOD_INVOCATION_PROTOCOL = "http"


def grpc_proxying_to_grpcio():
    # The SDK's grpc_proxying example: a plain gRPC call through the sidecar to a grpcio server (needs `te: trailers`).
    port = os.environ["DAPR_GRPC_PORT"]
    metadata = [("dapr-app-id", "grpc-app")]
    if settings.DAPR_API_TOKEN:
        metadata.append(("dapr-api-token", settings.DAPR_API_TOKEN))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        say = channel.unary_unary("/ward.compat.Echo/Say")
        answer = wait_for(lambda: say(b"ping", metadata=metadata, timeout=5))
    assert answer == b"echo:ping", answer


def wait_for(call, seconds=15):
    deadline = time.time() + seconds
    while True:
        try:
            return call()
        except Exception:  # noqa: BLE001 - the app may still be starting
            if time.time() > deadline:
                raise
            time.sleep(0.3)


def pubsub_round_trip():
    # Streaming subscription (SubscribeTopicEventsAlpha1) and PublishEvent, through the same sidecar.
    received = queue.Queue()

    def handler(message):
        received.put(message)
        return TopicEventResponse("success")

    topic = f"sdk-{MODE}"
    close = client.subscribe_with_handler("pubsub", topic, handler)
    try:
        deadline = time.time() + 10
        got = None
        while got is None and time.time() < deadline:
            client.publish_event("pubsub", topic, json.dumps({"n": 1}), data_content_type="application/json")
            try:
                got = received.get(timeout=1)
            except queue.Empty:
                pass
        assert got is not None, "no event delivered"
        assert got.data() == {"n": 1}, got.data()
        assert got.topic() == topic and got.pubsub_name() == "pubsub", (got.topic(), got.pubsub_name())
        assert got.source() == os.environ["APP_ID"], got.source()
    finally:
        close()


def pubsub_scopes():
    # Another checker's topic is forbidden; an out-of-scope pubsub looks exactly like a missing one.
    other = "sdk-plain" if MODE == "token" else "sdk-token"
    expect_code(lambda: client.publish_event("pubsub", other, "x"), grpc.StatusCode.PERMISSION_DENIED)
    expect_code(lambda: client.publish_event("hidden-pubsub", "t", "x"), grpc.StatusCode.INVALID_ARGUMENT)
    expect_code(lambda: client.publish_event("no-such-pubsub", "t", "x"), grpc.StatusCode.INVALID_ARGUMENT)


def wrong_token():
    good = settings.DAPR_API_TOKEN
    settings.DAPR_API_TOKEN = "not-the-token"
    try:
        with DaprClient() as bad:
            expect_code(lambda: bad.get_state(store, key), grpc.StatusCode.UNAUTHENTICATED)
    finally:
        settings.DAPR_API_TOKEN = good


for name, fn in [
    ("save/get state", state_round_trip),
    ("state ETags", state_etags),
    ("first-write concurrency", state_first_write),
    ("delete state", state_delete),
    ("bulk get", bulk_get),
    ("transaction (atomic)", transaction),
    ("out-of-scope store looks missing", out_of_scope_store),
    ("secrets with scopes", secrets),
    ("metadata", metadata),
    ("invoke_method over HTTP", invoke_http),
    ("invoke_method over gRPC", invoke_grpc),
    ("metadata set", metadata_set),
    ("invoke a gRPC app (dapr.ext.grpc) with custom protobuf data", invoke_grpc_app_custom_data),
    ("gRPC proxying to a grpcio app", grpc_proxying_to_grpcio),
    ("publish_event + subscribe_with_handler", pubsub_round_trip),
    ("pub/sub topic and component scopes", pubsub_scopes),
]:
    check(name, fn)
if MODE == "token":
    check("wrong API token is UNAUTHENTICATED", wrong_token)

print(f"[{MODE}] {results['passed']} passed, {results['failed']} failed", flush=True)
sys.exit(1 if results["failed"] else 0)
