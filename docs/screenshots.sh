#!/usr/bin/env bash
# Regenerate the pictures in docs/images/ with the app's own --screenshot, so the README
# always shows the current window. Runs offscreen; the demo models are trained once and
# cached (MERGE_STUDIO_DATA_DIR, default ~/.local/share/merge-studio).
#
#   bash docs/screenshots.sh
#
# Settings go to a throw-away folder, so your recent files never appear in the pictures.
set -euo pipefail
cd "$(dirname "$0")/.."
app="${MERGE_STUDIO:-.venv/bin/merge-studio}"
python="${PYTHON:-.venv/bin/python}"
out=docs/images
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export QT_QPA_PLATFORM=offscreen XDG_CONFIG_HOME="$scratch/config"
mkdir -p "$out"

"$app" --size 1280x800 --screenshot "$out/welcome.png"
# The demo MLPs (trained on first use), opened as files like a user would.
mapfile -t demo < <("$python" -c 'from merge_studio.core.demo import ensure_demo_models
print(*ensure_demo_models().paths("zoo:mlp"), sep="\n")')
"$app" "${demo[@]}" --size 1280x800 --select 0 --tab Inspector --screenshot "$out/window.png"
# The analysis tabs with results, as the README shows them.
"$app" "${demo[0]}" "${demo[1]}" --size 1600x1000 --tab Barrier --run align,barrier --screenshot "$out/barrier.png"
mapfile -t resnets < <("$python" -c 'from merge_studio.core.demo import ensure_demo_models
print(*ensure_demo_models().paths("zoo:resnet20"), sep="\n")')
"$app" "${resnets[@]}" --size 1600x1000 --tab Permutations --run align --screenshot "$out/permutations.png"
ls -l "$out"
