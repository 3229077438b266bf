#!/usr/bin/env bash
# Install Merge Studio on Debian/Ubuntu: system packages, a virtual environment, the app.
# Then start it with the demo models, unless --no-launch is given.
#
#   bash packaging/install.sh              # install and start the app
#   bash packaging/install.sh --no-launch  # install only (CI, headless machines)
#
# TORCH_SPEC overrides the torch requirement (default: torch==2.13.0; a CPU or CUDA
# build, whichever pip finds for this machine). VENV picks the environment folder.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
launch=1
for arg in "$@"; do
  case "$arg" in
    --no-launch) launch=0 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown option: $arg" >&2; exit 2 ;;
  esac
done

venv="${VENV:-$here/.venv}"
torch_spec="${TORCH_SPEC:-torch==2.13.0}"
python="${PYTHON:-python3}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if command -v apt-get >/dev/null 2>&1; then
  echo "== system packages (graphviz for module graphs, Qt's runtime libraries, xvfb)"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq graphviz xvfb python3-venv >/dev/null
  # Qt's X11/EGL/font libraries; names differ a little between releases, so each is optional.
  for pkg in libgl1 libegl1 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3 \
             libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxcb-xinerama0 \
             libxcb-randr0 libxcb-render-util0 libxcb-image0 libglib2.0-0 fonts-dejavu-core; do
    as_root apt-get install -y -qq "$pkg" >/dev/null 2>&1 || echo "   (optional package $pkg not available; skipped)"
  done
else
  echo "apt-get not found: install graphviz yourself (e.g. brew install graphviz)" >&2
fi

echo "== Python environment in $venv"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# torch first and pinned, so no other requirement pulls a different build.
"$venv/bin/python" -m pip install -q "$torch_spec"
"$venv/bin/python" -m pip install -q -e "$here[test]"
echo "== installed: $("$venv/bin/merge-studio" --version)"

if [ "$launch" = 1 ]; then
  if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
    echo "No display found: starting the window on a virtual screen is pointless."
    echo "Run '$venv/bin/merge-studio --demo' on a desktop, or see README.md for headless commands."
    exit 0
  fi
  exec "$venv/bin/merge-studio" --demo
fi
