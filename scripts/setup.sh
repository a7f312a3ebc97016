#!/usr/bin/env bash
# Installs what the workbench needs on a fresh Debian machine, then builds it in release mode.
# Idempotent and quiet when everything is already present.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(libopenblas-dev libhdf5-dev zlib1g-dev libturbojpeg0-dev libjpeg62-turbo-dev libpng-dev libwebp-dev libopenmpi-dev openmpi-bin pkg-config dataset-fashion-mnist)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

swift build -c release --product workbench 2>&1 | { grep -E "error|warning: .*(unreachable|never)" || true; }
test -x .build/release/workbench || { echo "setup: the release build failed; run 'swift build -c release' to see why" >&2; exit 1; }
