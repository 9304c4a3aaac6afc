"""The PDP server plus an empty RPC, for benchmarks only: the transport floor.

`python -m benchmarks.floor_server [pdp serve options]` serves everything
`pdp serve` does (one worker) and `/pdp.bench.Floor/Empty`, which takes and
returns google.protobuf.Empty on the same server, thread pool and options, so
`Check` can be compared with the cost of a gRPC call that does no work.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from google.protobuf import empty_pb2

from pdp import config as settings
from pdp import logs
from pdp.server import run

FLOOR_METHOD = "/pdp.bench.Floor/Empty"


def floor_service() -> dict[str, dict[str, grpc.RpcMethodHandler]]:
    """Registered like DecisionService (pdp.server.add_registered), so both are found alike."""
    def empty(_request: empty_pb2.Empty, _context: grpc.ServicerContext) -> empty_pb2.Empty:
        return empty_pb2.Empty()

    return {"pdp.bench.Floor": {
        "Empty": grpc.unary_unary_rpc_method_handler(
            empty,
            request_deserializer=empty_pb2.Empty.FromString,
            response_serializer=empty_pb2.Empty.SerializeToString,
        ),
    }}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor_server")
    settings.add_arguments(parser)
    config = settings.from_args(parser.parse_args(argv))
    logs.configure(config.log.level, config.log.format)
    return run(config, extra_services=floor_service())


if __name__ == "__main__":
    sys.exit(main())
