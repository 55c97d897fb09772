"""Regenerate the gRPC stubs in e6auth/grpc from e6x_engine.proto (grpcio-tools' protoc).

    python tools/generate_stubs.py            # rewrite the committed stubs
    python tools/generate_stubs.py --check    # exit 1 if they differ from what protoc makes now

The proto is compiled from the repository root as ``e6auth/grpc/e6x_engine.proto`` so that the
generated service module imports its messages as ``from e6auth.grpc import e6x_engine_pb2``.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = Path("e6auth/grpc/e6x_engine.proto")
OUTPUTS = ("e6x_engine_pb2.py", "e6x_engine_pb2.pyi", "e6x_engine_pb2_grpc.py")


def generate(into: Path) -> None:
    arguments = [
        "protoc",
        f"-I{ROOT}",
        f"--python_out={into}",
        f"--pyi_out={into}",
        f"--grpc_python_out={into}",
        str(PROTO),
    ]
    if protoc.main(arguments) != 0:
        raise SystemExit("protoc failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        generate(Path(scratch))
        made = Path(scratch) / PROTO.parent
        stale = []
        for name in OUTPUTS:
            committed = ROOT / PROTO.parent / name
            if args.check:
                if not committed.exists() or not filecmp.cmp(made / name, committed, shallow=False):
                    stale.append(name)
            else:
                committed.write_bytes((made / name).read_bytes())
    if stale:
        print(f"stale generated stubs: {', '.join(stale)}; run python tools/generate_stubs.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
