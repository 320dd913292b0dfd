#!/usr/bin/env bash
# The wheel a user installs: it carries only the product (rtanim, engines, train), no calib package
# and no bare cli module, and from a fresh virtual environment `rtanim`, `python -m rtanim` and
# `rtanim demo` work outside the checkout. Run by .ci/run; by hand: bash calib/wheel_check.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
PY="${PYTHON:-python3}"

# build from a copy, so the checkout gets no build/ folder
mkdir "$WORK/src"
tar -C "$ROOT" --exclude=./.git --exclude=./.venv --exclude=./.data --exclude=./runs --exclude=./build -cf - . | tar -C "$WORK/src" -xf -
"$PY" -m pip wheel -q --no-deps -w "$WORK/dist" "$WORK/src" >/dev/null
WHEEL="$(ls "$WORK"/dist/rtanim-*.whl)"
"$PY" - "$WHEEL" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
tops = sorted({n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))})
assert tops == ["engines", "rtanim", "train"], f"the wheel's top-level names: {tops}"
assert any(n.startswith("rtanim/assets/refine.safetensors") for n in names), "no shipped weights in the wheel"
print(f"wheel: {len(names)} files, top level {', '.join(tops)}")
PY

"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$WORK/venv/bin/python" -m pip install -q torch==2.13.0 "$WHEEL"
cd "$WORK"  # outside the checkout: only what the wheel installed can be imported
for name in calib cli; do
  if "$WORK/venv/bin/python" -c "import $name" 2>/dev/null; then
    echo "the wheel installs a top-level '$name'" >&2
    exit 1
  fi
done
"$WORK/venv/bin/rtanim" --help >/dev/null
"$WORK/venv/bin/python" -m rtanim --help >/dev/null
"$WORK/venv/bin/rtanim" demo -o "$WORK/demo"
test -s "$WORK/demo/expressions.png" && test -s "$WORK/demo/demo.mp4"
echo "wheel check: rtanim, python -m rtanim and rtanim demo work from a fresh venv"
