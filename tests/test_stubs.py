"""The committed gRPC stubs match the .proto; the .proto matches what the real connector sends."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from e6auth.grpc import e6x_engine_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent

# Run in a child: the connector registers the same unpackaged message names as our stubs, and
# one protobuf descriptor pool cannot hold both.
CONNECTOR_DESCRIPTOR = """
import json
from e6data_python_connector.server import e6x_engine_pb2 as theirs
file = theirs.DESCRIPTOR
service = file.services_by_name["QueryEngineService"]
messages = {}
for name, message in file.message_types_by_name.items():
    messages[name] = sorted(
        (f.name, f.number, f.type, f.is_repeated, f.has_presence) for f in message.fields
    )
methods = {m.name: [m.input_type.name, m.output_type.name] for m in service.methods}
print(json.dumps({"package": file.package, "messages": messages, "methods": methods}))
"""


def test_committed_stubs_are_what_protoc_makes_from_the_proto() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "generate_stubs.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(60)
def test_every_message_and_method_matches_the_connector() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CONNECTOR_DESCRIPTOR],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    theirs = json.loads(result.stdout)
    ours = pb.DESCRIPTOR
    assert ours.package == theirs["package"] == ""
    service = ours.services_by_name["QueryEngineService"]
    assert len(service.methods) >= 20
    for method in service.methods:
        assert theirs["methods"][method.name] == [method.input_type.name, method.output_type.name]
    for name, message in ours.message_types_by_name.items():
        fields = sorted(
            (f.name, f.number, f.type, f.is_repeated, f.has_presence) for f in message.fields
        )
        assert fields == [tuple(field) for field in theirs["messages"][name]], name
