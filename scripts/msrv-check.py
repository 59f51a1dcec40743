#!/usr/bin/env python3
"""The minimum Rust version the workspace declares (`rust-version`), checked as far as
this machine can without that toolchain (only one toolchain can be installed here):

- every package in Cargo.lock that declares a `rust-version` declares one at or below
  ours, so no dependency needs a newer compiler than we promise;
- our own code's use of the standard library is checked by clippy's `incompatible_msrv`
  lint, which reads `rust-version` and runs with `-D warnings` in `.ci/run`.

What this does not catch: language features newer than the MSRV in our own code (the
compiler is newer). The container image build (`deploy/Dockerfile`) compiles on the
declared toolchain wherever a container engine runs it.

Usage: scripts/msrv-check.py   (exit 1 and a list when a dependency needs more)
"""
import json
import subprocess
import sys


def version(text):
    parts = [int(p) for p in text.split(".")[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


def main():
    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    members = set(metadata["workspace_members"])
    ours = {p["rust_version"] for p in metadata["packages"] if p["id"] in members and p.get("rust_version")}
    if len(ours) != 1:
        print(f"msrv-check: the workspace's crates declare {sorted(ours) or 'no'} rust-version; want one", file=sys.stderr)
        return 1
    msrv = ours.pop()
    too_new = sorted(
        (p["name"], p["version"], p["rust_version"])
        for p in metadata["packages"]
        if p["id"] not in members and p.get("rust_version") and version(p["rust_version"]) > version(msrv)
    )
    if too_new:
        print(f"msrv-check: dependencies that need a newer Rust than our {msrv}:", file=sys.stderr)
        for name, ver, needs in too_new:
            print(f"  {name} {ver} needs {needs}", file=sys.stderr)
        return 1
    declared = sum(1 for p in metadata["packages"] if p["id"] not in members and p.get("rust_version"))
    print(f"msrv-check: rust-version {msrv}; {declared} dependencies declare theirs, none above it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
