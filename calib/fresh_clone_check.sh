#!/usr/bin/env bash
# The README's three setup blocks, word for word, on a fresh clone in a temporary folder: clone,
# virtual environment and install; the demo; the tests. A manual or CI check (slow: it installs
# PyTorch and runs the whole suite); pytest does not run it. The clone sits in a temporary folder,
# so ../shared/data is absent there and the data tests skip, as on a newcomer's machine.
#
#   bash calib/fresh_clone_check.sh [REPO]   REPO: what to clone (default: this checkout's repository,
#                                            its committed HEAD; uncommitted changes are not seen)
#   KEEP=1 bash calib/fresh_clone_check.sh   keep the temporary folder to look at afterwards
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
export RTANIM_REPO="${1:-$here}"
work="$(mktemp -d "${TMPDIR:-/tmp}/rtanim-fresh.XXXXXX")"
if [ "${KEEP:-0}" = 1 ]; then echo "keeping $work"; else trap 'rm -rf "$work"' EXIT; fi

# A newcomer's shell: no virtual environment active.
if [ -n "${VIRTUAL_ENV:-}" ]; then
  PATH="$(printf '%s' "$PATH" | tr ':' '\n' | grep -vxF "$VIRTUAL_ENV/bin" | paste -sd: -)"
  unset VIRTUAL_ENV
fi

# The blocks come from the README being cloned, not from this working tree.
git clone -q "$RTANIM_REPO" "$work/readme"
awk '/^```bash$/ {on = 1; n++; next} /^```/ {on = 0; next} on && n <= 3' "$work/readme/README.md" \
  > "$work/readme-blocks.sh"
rm -rf "$work/readme"
echo "--- the README's blocks:"
cat "$work/readme-blocks.sh"
echo "---"
start=$SECONDS
(cd "$work" && bash -e -o pipefail -x readme-blocks.sh)  # -e: stop at the first failing line
echo "fresh clone: the README's setup, demo and test blocks passed in $((SECONDS - start)) s"
