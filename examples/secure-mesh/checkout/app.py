"""checkout: places three orders with orders (allowed by its ACL), then tries things the controls refuse.

Standard library only. Every call goes to this app's own sidecar on 127.0.0.1 with its API token.
"""
import json
import os
import time
import urllib.error
import urllib.request

SIDECAR = f"http://127.0.0.1:{os.environ['DAPR_HTTP_PORT']}"
API_TOKEN = os.environ.get("DAPR_API_TOKEN", "")


def call(method, path, payload=None, token=API_TOKEN):
    data = json.dumps(payload).encode() if payload is not None else None
    headers = {"content-type": "application/json"}
    if token:
        headers["dapr-api-token"] = token
    req = urllib.request.Request(f"{SIDECAR}{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def place(order_id):
    # orders may still be starting: retry the first order for a few seconds.
    for _ in range(50):
        status, body = call("POST", "/v1.0/invoke/orders/method/orders", {"id": order_id})
        if status == 200:
            break
        time.sleep(0.2)
    print(f"order {order_id}: {status} {body}")


for order_id in (1, 2, 3):
    place(order_id)

status, body = call("GET", "/v1.0/invoke/orders/method/admin")
print(f"GET orders/admin (not allowed by orders' ACL): {status} {body}")

status, body = call("POST", "/v1.0/invoke/orders/method/orders/refund", {"id": 1})
print(f"POST orders/refund (ACL allows, capability orders:refund not granted): {status} {body}")

status, body = call("GET", "/v1.0/state/orders-store/order-1")
print(f"read orders-store from checkout (store scoped to orders): {status} {body}")

status, body = call("POST", "/v1.0/publish/orderpubsub/order-placed", {"id": 99})
print(f"publish order-placed from checkout (publishingScopes: checkout may publish nothing): {status} {body}")

status, body = call("GET", "/v1.0/metadata", token="wrong-token")
print(f"call my sidecar with a wrong API token: {status} {body}")
print("checkout done")
