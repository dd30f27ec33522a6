"""The alarm webhook's receiver for the attack scripts: appends each POSTed body to a file,
one JSON line each, and answers 204.

    python3 webhook_sink.py <port> <file>
"""
import http.server
import sys

PORT, OUT = int(sys.argv[1]), sys.argv[2]


class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open(OUT, "ab") as f:
            f.write(body + b"\n")
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.HTTPServer(("127.0.0.1", PORT), Sink).serve_forever()
