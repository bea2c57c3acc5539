#!/usr/bin/env python3
"""Generates the checked-in gRPC stubs of ``rendezvous.v1`` for the Python client.

The stubs (``rendezvous_pb2.py``, its ``.pyi`` and ``rendezvous_pb2_grpc.py``) are made from
``proto/rendezvous/v1/rendezvous.proto`` with the protoc that ``grpcio-tools`` bundles, then
their imports are made package-relative so they work as ``rendezvous_client._gen``. The output
depends only on the pinned ``grpcio-tools`` version (requirements-dev.txt).

Usage (from anywhere)::

    python clients/python/generate.py           # rewrite src/rendezvous_client/_gen/
    python clients/python/generate.py --check   # exit 1, naming stale files, when they differ
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import tempfile
from importlib.resources import files
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
PROTO = "rendezvous/v1/rendezvous.proto"
GEN_DIR = HERE / "src" / "rendezvous_client" / "_gen"
PACKAGE = "rendezvous_client._gen"
OUTPUTS = ("rendezvous_pb2.py", "rendezvous_pb2.pyi", "rendezvous_pb2_grpc.py")

# protoc names the modules after the proto's path; inside the package they are siblings, and
# the message classes' ``__module__`` must be where they can be imported from.
REWRITES = {
    "rendezvous_pb2.py": (("'rendezvous.v1.rendezvous_pb2'", f"'{PACKAGE}.rendezvous_pb2'"),),
    "rendezvous_pb2_grpc.py": (
        ("from rendezvous.v1 import rendezvous_pb2 as", "from . import rendezvous_pb2 as"),
    ),
}


def generate(dest: Path) -> None:
    """Writes the stubs into ``dest`` (which must exist)."""
    well_known = files("grpc_tools").joinpath("_proto")
    with tempfile.TemporaryDirectory() as raw:
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTO_ROOT}",
                f"-I{well_known}",
                f"--python_out={raw}",
                f"--pyi_out={raw}",
                f"--grpc_python_out={raw}",
                PROTO,
            ]
        )
        if status != 0:
            raise SystemExit(f"protoc failed with status {status}")
        for name in OUTPUTS:
            text = (Path(raw) / "rendezvous" / "v1" / name).read_text(encoding="utf-8")
            for old, new in REWRITES.get(name, ()):
                if old not in text:
                    raise SystemExit(f"{name}: protoc's output no longer contains {old!r}")
                text = text.replace(old, new)
            (dest / name).write_text(text, encoding="utf-8")


def stale_files(fresh: Path) -> list[str]:
    """The checked-in outputs that differ from (or are missing next to) those in ``fresh``."""
    stale = []
    for name in OUTPUTS:
        checked_in = GEN_DIR / name
        if not checked_in.is_file() or checked_in.read_bytes() != (fresh / name).read_bytes():
            stale.append(str(checked_in.relative_to(HERE.parent.parent)))
    return stale


def main() -> int:
    """Regenerates the stubs, or with ``--check`` reports whether they are up to date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="regenerate into a temporary directory and fail when the checked-in stubs differ",
    )
    args = parser.parse_args()
    if not args.check:
        generate(GEN_DIR)
        print(f"generated {', '.join(OUTPUTS)} in {GEN_DIR}")
        return 0
    with tempfile.TemporaryDirectory() as fresh:
        generate(Path(fresh))
        stale = stale_files(Path(fresh))
    if stale:
        tools = importlib.metadata.version("grpcio-tools")
        print(
            f"stale generated files (regenerated with grpcio-tools {tools}; "
            "requirements-dev.txt pins the version CI uses): "
            f"{', '.join(stale)}\nrun: python clients/python/generate.py",
            file=sys.stderr,
        )
        return 1
    print("generated stubs are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
