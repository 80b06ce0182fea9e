"""Installed size of wattwheel's extras, from the distributions installed in this environment.

For each extra set (core, core+live, core+train, core+live+train) the script follows the
requirements of wattwheel and of every dependency (markers evaluated here, extras followed) and
adds up the files each distribution installed (its RECORD). Run it in an environment where all
of them are installed (``make install-dev``):

    .venv/bin/python benchmarks/install_size.py [--json]

It prints the size of each set in MB and its five largest distributions; torch alone is most of
the training extra, and the live controller host (``wattwheel[live]``) does not install it: the
shipped LSTM runs on ONNX Runtime.
"""

from __future__ import annotations

import argparse
import json
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

SETS = {
    "core": (),
    "live": ("live",),
    "train": ("train",),
    "live+train": ("live", "train"),
}


def dist_size_bytes(dist: metadata.Distribution) -> int:
    total = 0
    for f in dist.files or ():
        path = Path(str(dist.locate_file(f)))
        if path.is_file():
            total += path.stat().st_size
    return total


def closure(extras: tuple[str, ...]) -> dict[str, int]:
    """Distribution name -> installed bytes, for wattwheel with ``extras``."""
    sizes: dict[str, int] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    stack: list[tuple[str, frozenset[str]]] = [("wattwheel", frozenset(extras))]
    while stack:
        name, wanted = stack.pop()
        key = (canonicalize_name(name), wanted)
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"{name} is not installed here: run make install-dev first") from None
        if key[0] != "wattwheel":
            sizes[key[0]] = dist_size_bytes(dist)
        for text in dist.requires or ():
            req = Requirement(text)
            envs = [{"extra": e} for e in ("", *wanted)]
            if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
                continue
            stack.append((req.name, frozenset(req.extras)))
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON line")
    args = parser.parse_args()
    result = {}
    for label, extras in SETS.items():
        sizes = closure(extras)
        top = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
        result[label] = {
            "mb": round(sum(sizes.values()) / 1e6, 1),
            "distributions": len(sizes),
            "torch": "torch" in sizes,
            "largest_mb": {k: round(v / 1e6, 1) for k, v in top},
        }
    if args.json:
        print(json.dumps(result))
        return
    for label, r in result.items():
        spec = "wattwheel" if label == "core" else f"wattwheel[{label.replace('+', ',')}]"
        largest = ", ".join(f"{k} {v}" for k, v in r["largest_mb"].items())
        print(f"{spec}: {r['mb']} MB in {r['distributions']} distributions ({largest})")


if __name__ == "__main__":
    main()
