#!/usr/bin/env bash
# Install Merge Studio on Debian/Ubuntu: system packages, a virtual environment, the app.
# Then start it with the demo models, unless --no-launch is given.
#
#   bash packaging/install.sh              # install and start the app
#   bash packaging/install.sh --no-launch  # install only (CI, headless machines)
#
# TORCH_SPEC overrides the torch requirement (default: torch==2.13.0). Without an NVIDIA
# GPU the CPU build is preferred (PyTorch's CPU index is added when it can be reached;
# TORCH_INDEX_URL names another index), so no CUDA libraries are downloaded.
# VENV picks the environment folder (default .venv), PYTHON the interpreter (python3),
# EXTRAS the optional parts (default test,hf,lora,search,fast; EXTRAS=test leaves them out).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
launch=1
for arg in "$@"; do
  case "$arg" in
    --no-launch) launch=0 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown option: $arg" >&2; exit 2 ;;
  esac
done

venv="${VENV:-$here/.venv}"
torch_spec="${TORCH_SPEC:-torch==2.13.0}"
python="${PYTHON:-python3}"
# Optional parts: Hugging Face folders (hf), PEFT adapters (lora), coefficient search (search),
# compiled merge kernels (fast).
extras="${EXTRAS:-test,hf,lora,search,fast}"
cpu_index="https://download.pytorch.org/whl/cpu"

can_be_root() { [ "$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
has_nvidia_gpu() { [ -e /proc/driver/nvidia/version ] || command -v nvidia-smi >/dev/null 2>&1; }

# ---- system packages -------------------------------------------------------------------
qt_libraries="libgl1 libegl1 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3
  libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxcb-xinerama0 libxcb-randr0
  libxcb-render-util0 libxcb-image0 libglib2.0-0 fonts-dejavu-core"
if command -v apt-get >/dev/null 2>&1 && can_be_root; then
  echo "== system packages (graphviz for module graphs, Qt's runtime libraries, xvfb)"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq graphviz xvfb python3-venv >/dev/null
  # Names differ a little between releases, so each Qt library is optional.
  for pkg in $qt_libraries; do
    as_root apt-get install -y -qq "$pkg" >/dev/null 2>&1 || echo "   (optional package $pkg not available; skipped)"
  done
elif command -v apt-get >/dev/null 2>&1; then
  echo "warning: not root and no sudo; install these yourself:" >&2
  echo "  apt-get install graphviz xvfb python3-venv $(echo $qt_libraries)" >&2
else
  echo "apt-get not found: install graphviz yourself (e.g. brew install graphviz, dnf install graphviz)" >&2
fi

# ---- Python environment ----------------------------------------------------------------
if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
  echo "error: Merge Studio needs Python 3.10 or newer; '$python' is $("$python" --version 2>&1 || echo missing)." >&2
  echo "  Set PYTHON=python3.11 (or another) and run again." >&2
  exit 1
fi
echo "== Python environment in $venv"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip)
"${pip[@]}" install -q --upgrade pip

# torch first and pinned, so no other requirement pulls a different build.
torch_index=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  torch_index=(--extra-index-url "$TORCH_INDEX_URL")
elif ! has_nvidia_gpu && command -v curl >/dev/null 2>&1 && curl -sfI --max-time 5 "$cpu_index/" >/dev/null 2>&1; then
  # No GPU: the CPU wheel (version +cpu, which pip ranks above the plain one) avoids ~3 GB of CUDA.
  torch_index=(--extra-index-url "$cpu_index")
fi
echo "== torch ($torch_spec${torch_index[*]:+, also from ${torch_index[1]}})"
"${pip[@]}" install -q "${torch_index[@]}" "$torch_spec"
"${pip[@]}" install -q -e "$here[$extras]"
echo "== installed: $("$venv/bin/merge-studio" --version), torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)')"

# A quick proof that the window can start here (offscreen, so it works without a display).
shot="$(mktemp -d)/window.png"
if QT_QPA_PLATFORM=offscreen timeout 300 "$venv/bin/merge-studio" --screenshot "$shot" >/dev/null 2>&1 && [ -s "$shot" ]; then
  echo "== the window starts (offscreen screenshot: ok)"
else
  echo "warning: the window did not render offscreen; run '$venv/bin/merge-studio --screenshot /tmp/w.png' to see why" >&2
fi
rm -rf "$(dirname "$shot")"

if [ "$launch" = 1 ]; then
  if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
    echo "No display found, so the window is not started."
    echo "On a desktop run: $venv/bin/merge-studio --demo"
    echo "Here: $venv/bin/merge-studio --help (merge, inspect, graph, barrier, ...) or --screenshot OUT.png"
    exit 0
  fi
  exec "$venv/bin/merge-studio" --demo
fi
