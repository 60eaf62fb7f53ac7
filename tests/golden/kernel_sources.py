"""Record or check the sha256 of the generated kernel source of every library loss.

The refactoring pin of the compiler: each catalog loss (value + gradient + diagonal Hessian
with respect to every differentiable input; float64 and float32; targets cpu, parallel and
cuda; mean reduction, unweighted) has its generated module's source hashed. Generating the
source needs no Numba compile, so the whole table takes seconds.

    python3 tests/golden/kernel_sources.py --write   # re-record (say why in the commit)
    python3 tests/golden/kernel_sources.py --dump DIR  # write every source, to diff by hand
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

import lossdsl
from lossdsl import catalog, compiler

HASHES = Path(__file__).with_name("kernel_sources.json")
TARGETS = ("cpu", "parallel", "cuda")
DTYPES = ("float64", "float32")


def kernel_source(compiled: lossdsl.CompiledLoss, dtype: str) -> str:
    """The source of the value + gradient + Hessian kernel of every differentiable input,
    generated but not imported (nothing is compiled)."""
    constants = compiled.constant_inputs()
    wrt = tuple(name for name in compiled.inputs if name not in constants)
    spec = compiled.specialization(compiled.default_ranks())
    request = compiler.KernelRequest(np.dtype(dtype), compiled.target, True, wrt, wrt)
    return compiler.generate_source(spec, request).source


def sources() -> Iterator[tuple[str, str]]:
    """(case key, generated source) for every case, in a fixed order."""
    for entry in catalog.entries():
        for target in TARGETS:
            compiled = lossdsl.compile(entry.call_expression(), target=target)
            for dtype in DTYPES:
                yield f"{entry.name}/{target}/{dtype}", kernel_source(compiled, dtype)


def digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="re-record the hashes")
    parser.add_argument("--dump", metavar="DIR",
                        help="write each source to DIR/<loss>.<target>.<dtype>.py")
    args = parser.parse_args(argv)
    recorded = {}
    for key, source in sources():
        recorded[key] = digest(source)
        if args.dump:
            out = Path(args.dump)
            out.mkdir(parents=True, exist_ok=True)
            (out / (key.replace("/", ".") + ".py")).write_text(source)
    if args.write:
        HASHES.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
        print(f"wrote {len(recorded)} hashes to {HASHES}")
        return 0
    expected = json.loads(HASHES.read_text())
    changed = sorted(k for k in expected if recorded.get(k) != expected[k])
    print(f"{len(recorded)} sources, {len(changed)} changed")
    for key in changed:
        print("  changed:", key)
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
