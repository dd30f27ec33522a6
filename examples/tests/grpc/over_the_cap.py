"""A grpcio client against hello-server at its connection cap (max_connections = 1).

One channel holds the only slot; a call on a second channel must fail at once with
UNAVAILABLE, and the server must have refused only a few connections for it: grpc-core
treats a connection that completes HTTP/2's handshake and then says GOAWAY as one to try
again at once, so a refusal in proper HTTP/2 would have the client reconnect in a loop until
its deadline (thousands of connections a second). Prints `refused <code> <seconds>
<connections refused>` for the test to check.

Usage: over_the_cap.py HOST:PORT ADMIN_HOST:PORT
"""

import json
import sys
import time
import urllib.request

import grpc

addr, admin = sys.argv[1], sys.argv[2]

holder = grpc.insecure_channel(addr)
grpc.channel_ready_future(holder).result(timeout=10)

# A channel of its own: grpcio shares connections between a process's channels otherwise.
second = grpc.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)])
call = second.unary_unary(
    "/hello.Greeter/SayHello",
    request_serializer=lambda b: b,
    response_deserializer=lambda b: b,
)
started = time.monotonic()
try:
    call(b"", timeout=5)
    code = "OK"
except grpc.RpcError as e:
    code = e.code().name
took = time.monotonic() - started

with urllib.request.urlopen(f"http://{admin}/stats.json", timeout=10) as page:
    refused = json.load(page)["process"]["connections_refused"]
print(f"refused {code} {took:.2f} {refused}", flush=True)
