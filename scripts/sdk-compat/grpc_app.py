"""grpc-app: a gRPC app built with the official SDK's `dapr.ext.grpc.App` (grpcio, gRPC's C core), unchanged.

Serves `AppCallback/OnInvoke` for `say` (answers custom protobuf data with protobuf data, as the SDK's
invoke-custom-data example) and a plain grpcio service `ward.compat.Echo/Say` for gRPC proxying (the caller names
this app in `dapr-app-id` metadata). grpcio refuses a request without `te: trailers`: this app is the check.
"""
import os

import grpc
from dapr.ext.grpc import App, InvokeMethodRequest, InvokeMethodResponse
from google.protobuf import wrappers_pb2

app = App()


@app.method(name="say")
def say(request: InvokeMethodRequest) -> InvokeMethodResponse:
    # Always a typed protobuf answer (as the SDK's invoke-custom-data receiver); a typed request (gRPC invocation
    # keeps its type URL) is unpacked, plain bytes are quoted.
    if request.is_proto():
        value = wrappers_pb2.StringValue()
        request.unpack(value)
        text = f"proto:{value.value}"
    else:
        text = f"bytes:{request.data.decode()}"
    response = InvokeMethodResponse()
    response.set_data(wrappers_pb2.StringValue(value=text))
    return response


def echo(request: bytes, context) -> bytes:
    return b"echo:" + request


def add_echo(_servicer, server):
    handler = grpc.method_handlers_generic_handler(
        "ward.compat.Echo", {"Say": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server.add_generic_rpc_handlers((handler,))


app.add_external_service(add_echo, None)
print(f"grpc-app listening on {os.environ.get('APP_PORT', '16012')}", flush=True)
app.run(int(os.environ.get("APP_PORT", "16012")))
