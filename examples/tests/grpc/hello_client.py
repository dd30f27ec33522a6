"""A Python gRPC client of hello-server, built from what `svrkit proto` exports, and one
built from nothing but what the server says of itself (reflection).

Run by examples/tests/grpc.rs with the generated modules (hello_pb2, hello_pb2_grpc) on its
path: `python3 hello_client.py ADDR`. It makes the calls below, asserting what each gets,
prints one line per step, then waits for a line on stdin (the test's word that the server was
sent SIGTERM) and checks that the health service says NOT_SERVING.
"""

import sys

import grpc
from google.protobuf import empty_pb2

import hello_pb2
import hello_pb2_grpc

# grpc.health.v1, by hand: HealthCheckRequest{service=1}, HealthCheckResponse{status=1}.
SERVING, NOT_SERVING = 1, 2


def health(channel, service=""):
    encoded = service.encode()
    request = (b"\x0a" + bytes([len(encoded)]) + encoded) if encoded else b""
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    answer = check(request, timeout=5)
    # Field 1, a varint (an absent field is 0, UNKNOWN).
    return answer[1] if answer[:1] == b"\x08" else 0


def main():
    addr = sys.argv[1]
    channel = grpc.insecure_channel(addr)
    stub = hello_pb2_grpc.GreeterStub(channel)

    reply = stub.SayHello(hello_pb2.HelloReq(name="python"), timeout=5)
    assert reply.greeting == "Hello, python!", reply
    # A trace started here is the trace the server logs and answers with.
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    reply = stub.SayHello(
        hello_pb2.HelloReq(name="traced"),
        timeout=5,
        metadata=[("traceparent", f"00-{trace}-00f067aa0ba902b7-01")],
    )
    assert reply.trace_id == trace, reply
    print("unary ok", flush=True)

    try:
        stub.SayHello(hello_pb2.HelloReq(name="late", delay_ms=3000), timeout=0.2)
        raise AssertionError("a call past its deadline succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e
    print("deadline ok", flush=True)

    try:
        stub.SayHello(hello_pb2.HelloReq(name="broken", fail_code=8), timeout=5)
        raise AssertionError("a call asked to fail succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INTERNAL, e
        assert "broken asked to fail" in e.details(), e.details()
        trailers = dict(e.trailing_metadata())
        assert trailers.get("svrkit-status") == "8", trailers
    print("error ok", flush=True)

    # A oneway method is a unary call returning google.protobuf.Empty.
    assert stub.Visited(hello_pb2.Visit(name="py"), timeout=5) == empty_pb2.Empty()
    print("oneway ok", flush=True)

    # No .proto at hand: the server describes itself (reflection), and a request is built
    # from what it says, as grpcurl does.
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    reflection = ProtoReflectionDescriptorDatabase(channel)
    services = sorted(reflection.get_services())
    assert services == ["grpc.health.v1.Health", "hello.Greeter"], services
    pool = descriptor_pool.DescriptorPool(reflection)
    greeter = pool.FindServiceByName("hello.Greeter")
    say_hello = greeter.FindMethodByName("SayHello")
    factory = message_factory.MessageFactory(pool)
    request_class = factory.GetPrototype(say_hello.input_type)
    response_class = factory.GetPrototype(say_hello.output_type)
    call = channel.unary_unary(
        f"/{greeter.full_name}/{say_hello.name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    reply = call(request_class(name="reflected"), timeout=5)
    assert reply.greeting == "Hello, reflected!", reply
    # The health service is described too (the gRPC project's schema, nested enum and all).
    check = pool.FindServiceByName("grpc.health.v1.Health").FindMethodByName("Check")
    check_request = factory.GetPrototype(check.input_type)
    check_response = factory.GetPrototype(check.output_type)
    statuses = check.output_type.enum_types_by_name["ServingStatus"]
    answer = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=check_response.FromString,
    )(check_request(service="hello.Greeter"), timeout=5)
    assert statuses.values_by_number[answer.status].name == "SERVING", answer
    # proto3 messages have no extensions: an empty list, not an error.
    assert list(reflection.FindAllExtensionNumbers("hello.HelloReq")) == []
    print("reflection ok", flush=True)

    assert health(channel) == SERVING
    assert health(channel, "hello.Greeter") == SERVING
    try:
        health(channel, "no.Such")
        raise AssertionError("health of an unknown service")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e
    print("health SERVING", flush=True)

    sys.stdin.readline()
    status = health(channel)
    assert status == NOT_SERVING, status
    print("health NOT_SERVING", flush=True)


if __name__ == "__main__":
    main()
