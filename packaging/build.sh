#!/usr/bin/env bash
# Build the one-folder Merge Studio application with PyInstaller, then prove it works:
# the built program must start in a clean environment (env -i: only PATH, HOME and
# QT_QPA_PLATFORM) and render a screenshot headless. Prints the folder's size and the
# start-up time (launch to screenshot written, median of 3 runs).
#
#   bash packaging/build.sh            # build into build/ and dist/ (both gitignored)
#   bash packaging/build.sh --check    # only run the checks on an existing dist/
#
# VENV picks the Python environment (default .venv); its torch is what gets bundled,
# so build from an environment with the CPU wheel of torch to keep the folder small.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
venv="${VENV:-$here/.venv}"
python="$venv/bin/python"
app="$here/dist/merge-studio/merge-studio"
build=1
for arg in "$@"; do
  case "$arg" in
    --check) build=0 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown option: $arg" >&2; exit 2 ;;
  esac
done

if [ "$build" = 1 ]; then
  if ! "$python" -c "import PyInstaller" 2>/dev/null; then
    echo "== installing PyInstaller into $venv"
    "$python" -m pip install -q pyinstaller
  fi
  if "$python" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)"; then
    echo "warning: this torch is a CUDA build; its CUDA libraries are excluded, so the app runs on CPU only" >&2
  fi
  echo "== building with PyInstaller $("$python" -m PyInstaller --version)"
  start=$(date +%s)
  "$python" -m PyInstaller --noconfirm --log-level WARN \
    --distpath "$here/dist" --workpath "$here/build/pyinstaller" \
    "$here/packaging/pyinstaller/merge_studio.spec"
  echo "   built in $(( $(date +%s) - start )) s"
fi

[ -x "$app" ] || { echo "error: $app was not built" >&2; exit 1; }

echo "== checking the build in a clean environment"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
clean_env=(env -i PATH=/usr/bin:/bin HOME="$scratch/home" QT_QPA_PLATFORM=offscreen)
mkdir -p "$scratch/home"

version="$("${clean_env[@]}" "$app" --version)"
echo "   $version"
"${clean_env[@]}" "$app" methods list >"$scratch/methods.txt"
echo "   $(grep -c . "$scratch/methods.txt") lines from 'methods list'"

times=()
cpu=()
TIMEFORMAT='%R %U %S'  # wall, user, system seconds of what `time` runs (children included)
for run in 1 2 3; do
  shot="$scratch/screenshot-$run.png"
  if ! { time "${clean_env[@]}" "$app" --screenshot "$shot" >"$scratch/run-$run.log" 2>&1 ; } 2>"$scratch/time-$run"; then
    echo "error: the built program failed to render a screenshot:" >&2; cat "$scratch/run-$run.log" >&2; exit 1
  fi
  read -r wall user sys <"$scratch/time-$run"
  times+=("$wall")
  cpu+=("$(awk "BEGIN{print $user + $sys}")")
done

# The picture must be a real window, not an empty or blank file.
"$python" - "$scratch/screenshot-1.png" <<'PY'
import struct, sys, zlib
from pathlib import Path
data = Path(sys.argv[1]).read_bytes()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
width, height = struct.unpack(">II", data[16:24])
assert width >= 640 and height >= 400, f"screenshot too small: {width}x{height}"
raw, pos = b"", 8
while pos < len(data):
    length, kind = struct.unpack(">I4s", data[pos:pos + 8])
    if kind == b"IDAT":
        raw += data[pos + 8:pos + 8 + length]
    pos += 12 + length
pixels = zlib.decompress(raw)
distinct = len(set(pixels[i:i + 4] for i in range(0, len(pixels), 997)))
assert distinct > 20, f"screenshot looks blank ({distinct} distinct samples)"
print(f"   screenshot {width}x{height}, {len(data) // 1024} KiB, {distinct} distinct pixel samples: ok")
PY
cp "$scratch/screenshot-1.png" "$here/dist/merge-studio-screenshot.png"

size="$(du -sh "$here/dist/merge-studio" | cut -f1)"
median="$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p)"
median_cpu="$(printf '%s\n' "${cpu[@]}" | sort -n | sed -n 2p)"
load="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo '?')"
printf '== result\n   size of dist/merge-studio: %s\n' "$size"
printf '   start to screenshot written, median of 3: %.2f s wall (runs: %s), %.2f s CPU; load average %s on %s CPUs\n' \
  "$median" "$(printf '%.2f ' "${times[@]}")" "$median_cpu" "$load" "$(nproc)"
echo "   screenshot: dist/merge-studio-screenshot.png"
