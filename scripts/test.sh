#!/usr/bin/env bash
# The test command: installs the system tools the tests need, then runs every test.
# Usage: ./scripts/test.sh   (root, or strace already installed)
set -euo pipefail
cd "$(dirname "$0")/.."

# strace: the fsync test watches the log store's syscalls with it.
if ! command -v strace >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace
  else
    echo "scripts/test.sh: strace is missing; install it (apt-get install strace)" >&2
    exit 1
  fi
fi

cargo test --workspace --locked
