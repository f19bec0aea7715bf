"""orders: receives orders from checkout (through both sidecars, over mTLS), keeps them in its state store and
publishes an `order-placed` event, which its subscription delivers back to it (pub/sub, signed by its sidecar).

Standard library only. The sidecar's address comes from DAPR_HTTP_PORT; the API tokens from the environment.
"""
import hmac
import json
import os
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SIDECAR = f"http://127.0.0.1:{os.environ['DAPR_HTTP_PORT']}"
API_TOKEN = os.environ.get("DAPR_API_TOKEN", "")
APP_TOKEN = os.environ.get("APP_API_TOKEN", "")


def save(key, value):
    body = json.dumps([{"key": key, "value": value}]).encode()
    req = urllib.request.Request(f"{SIDECAR}/v1.0/state/orders-store", data=body, method="POST",
                                 headers={"content-type": "application/json", "dapr-api-token": API_TOKEN})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status


def wait_for_subscriptions():
    # /v1.0/healthz answers 204 once the sidecar's subscriptions are active: an event published before that would
    # find no subscriber on the in-memory broker. (The server is threaded: the sidecar reads GET /dapr/subscribe
    # from this app while a request is waiting here.)
    for _ in range(100):
        try:
            with urllib.request.urlopen(f"{SIDECAR}/v1.0/healthz", timeout=2) as resp:
                if resp.status == 204:
                    return
        except OSError:
            pass
        time.sleep(0.1)


def publish(topic, event):
    wait_for_subscriptions()
    body = json.dumps(event).encode()
    req = urllib.request.Request(f"{SIDECAR}/v1.0/publish/orderpubsub/{topic}", data=body, method="POST",
                                 headers={"content-type": "application/json", "dapr-api-token": API_TOKEN})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def authorized(self):
        # Only our own sidecar knows APP_API_TOKEN; compare in constant time.
        presented = self.headers.get("dapr-api-token", "")
        return not APP_TOKEN or hmac.compare_digest(presented, APP_TOKEN)

    def do_POST(self):
        if not self.authorized():
            return self.reply(401, {"error": "not from my sidecar"})
        length = int(self.headers.get("content-length", "0"))
        order = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/events/order-placed":
            # A CloudEvent from the pubsub; `ward-publisher` names the publisher its sidecar verified.
            data = order.get("data", {})
            print(f"event order-placed for order {data.get('id')} from {order.get('source')} "
                  f"(publisher verified: {self.headers.get('ward-publisher', 'no')})")
            return self.reply(200, {"status": "SUCCESS"})
        if self.path.startswith("/orders/refund"):
            print("refund served (this line must never appear: the capability check refuses it)")
            return self.reply(200, {"refunded": order.get("id")})
        caller = self.headers.get("dapr-caller-app-id", "?")
        save(f"order-{order.get('id')}", order)
        print(f"received order {order.get('id')} from {caller} (verified identity), saved to orders-store")
        publish("order-placed", {"id": order.get("id")})
        self.reply(200, {"saved": order.get("id")})

    def do_GET(self):
        if not self.authorized():
            return self.reply(401, {"error": "not from my sidecar"})
        if self.path == "/dapr/subscribe":
            # No programmatic subscriptions: order-placed is declared in resources/pubsub.yaml.
            return self.reply(200, [])
        print("admin page served (this line must never appear: the ACL denies it)")
        self.reply(200, {"admin": "secrets"})


print(f"orders listening on 127.0.0.1:{os.environ.get('APP_PORT', '6001')}")
ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("APP_PORT", "6001"))), Handler).serve_forever()
