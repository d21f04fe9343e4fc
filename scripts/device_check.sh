#!/usr/bin/env bash
# The GPU device check: every CUDA path and every GPU figure in one command (docs/performance.md).
#
#   bash scripts/device_check.sh --prepare .device_check   # here, with the package registries:
#                                                           # Hydra's wheels + FashionMNIST (~32 MB)
#   bash scripts/device_check.sh --out "$OUT"              # on the GPU machine (carry .device_check)
#   bash scripts/device_check.sh --device cpu --quick      # the CPU rehearsal CI runs
#
# --prepare DIR writes DIR/wheels (hydra-core, omegaconf, antlr4: pure-Python wheels, so any
# Python 3 on any platform installs them; W&B is left out: the check logs to TensorBoard only)
# and DIR/fashion-mnist (the four IDX files). The check itself installs those wheels with
# `pip install --no-index --target` when Hydra is not importable (or always, with --from DIR
# given), puts src/ on PYTHONPATH, and runs scripts/device_check.py, which needs nothing else:
# no network, no pip install -e. Any other option is passed to scripts/device_check.py
# (--device, --quick, --out, --budget, --parts; see its --help).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DEFAULT_DIR=.device_check

if [ "${1:-}" = "--prepare" ]; then
  dir=${2:?"usage: $0 --prepare DIR"}
  mkdir -p "$dir/wheels" "$dir/fashion-mnist"
  rm -f "$dir"/wheels/*.whl
  # The versions installed here (what the tests ran with), else the pyproject's ranges.
  spec() {
    local version
    version=$("$PYTHON" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p')
    if [ -n "$version" ]; then echo "$1==$version"; else echo "$2"; fi
  }
  specs=("$(spec hydra-core 'hydra-core>=1.3,<1.4')" "$(spec omegaconf 'omegaconf>=2.3,<2.4')"
         "$(spec antlr4-python3-runtime 'antlr4-python3-runtime==4.9.*')")
  echo "device_check: building wheels for ${specs[*]}"
  "$PYTHON" -m pip wheel -q --no-deps -w "$dir/wheels" "${specs[@]}"
  for whl in "$dir"/wheels/*.whl; do
    case "$whl" in
      *-py3-none-any.whl | *-py2.py3-none-any.whl) ;;
      *) echo "device_check: $whl is not a pure-Python wheel" >&2; exit 1 ;;
    esac
  done
  src=$(PYTHONPATH=src "$PYTHON" - <<'EOF'
from pathlib import Path
from initbench.data.fashion_mnist import find_local
found = find_local(Path("data"))
print(Path(next(iter(found.values()))).parent if found else "")
EOF
)
  if [ -z "$src" ]; then
    echo "device_check: FashionMNIST not found (apt-get install dataset-fashion-mnist)" >&2
    exit 1
  fi
  cp "$src"/*-ubyte* "$dir/fashion-mnist/"
  du -sh "$dir"
  echo "device_check: prepared $dir; on the GPU machine: bash scripts/device_check.sh --from $dir"
  exit 0
fi

from=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --from) from=${2:?"--from needs a folder"}; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -z "$from" ] && [ -d "$DEFAULT_DIR" ]; then
  from=$DEFAULT_DIR
fi

site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
if [ -n "$from" ] && compgen -G "$from/wheels/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
    "$from"/wheels/*.whl
elif ! "$PYTHON" -c "import hydra, omegaconf" 2>/dev/null; then
  echo "device_check: Hydra is not installed and no wheels were given:" \
       "run scripts/device_check.sh --prepare DIR first (and carry DIR)" >&2
  exit 2
fi
export PYTHONPATH="$site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
data=()
if [ -n "$from" ] && [ -d "$from/fashion-mnist" ]; then
  data=(--data-dir "$(cd "$from/fashion-mnist" && pwd)")
fi
exec "$PYTHON" scripts/device_check.py "${data[@]}" "${args[@]}"
