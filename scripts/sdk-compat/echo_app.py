"""The invocation target: answers `echo:<path>` to anything."""
import os
from http.server import BaseHTTPRequestHandler, HTTPServer


class Echo(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self):
        length = int(self.headers.get("content-length", "0") or 0)
        self.rfile.read(length)
        body = f"echo:{self.path}".encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = answer


HTTPServer(("127.0.0.1", int(os.environ["APP_PORT"])), Echo).serve_forever()
