#!/usr/bin/env bash
# Set up initbench on a fresh Debian machine with Python 3.11:
#   1. FashionMNIST from Debian's dataset-fashion-mnist package (skipped if already there),
#   2. torch==2.14.1 + torchvision==0.29.1 (skipped if a working torch + torchvision is
#      installed, e.g. your own CUDA build),
#   3. this package, editable, with its test tools: pip install -e '.[dev]'.
# Installs into the Python that runs it ($PYTHON, default python3): activate a venv first
# if you want one.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "setup: installing FashionMNIST (apt-get install dataset-fashion-mnist)"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq dataset-fashion-mnist
  else
    echo "setup: no apt-get; FashionMNIST will be looked for in ./data or downloaded"
  fi
fi

if "$PYTHON" -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "setup: keeping the installed torch $("$PYTHON" -c 'import torch; print(torch.__version__)')"
else
  echo "setup: installing torch==2.14.1 torchvision==0.29.1"
  "$PYTHON" -m pip install -q torch==2.14.1 torchvision==0.29.1
fi

echo "setup: installing initbench (pip install -e '.[dev]')"
"$PYTHON" -m pip install -q -e '.[dev]'
echo "setup: done"
