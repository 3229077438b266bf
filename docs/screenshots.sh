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
# A Llama-shaped Hugging Face folder (32 decoder layers at tiny widths, built in code) in the Graph tab.
hf="$scratch/hf"
"$python" -c "from pathlib import Path; from tests.hf_models import make_hf_folder
make_hf_folder(Path('$hf/llama-32-layers'), 'llama', num_hidden_layers=32)"
"$app" "$hf/llama-32-layers" --size 1600x1000 --tab Graph --screenshot "$out/graph_llama.png"
# A perplexity barrier between two fine-tunes of one tiny Llama and through their average
# (benchmarks/lm_fixtures.py trains them once, in seconds, and caches them).
mapfile -t lm < <("$python" -c 'from benchmarks.lm_fixtures import build_lm_fixtures
f = build_lm_fixtures(log=lambda _line: None)
print(f.licenses, f.docstrings, f.eval_texts["docstrings"], sep="\n")')
cp -r "${lm[0]}" "${lm[1]}" "$hf/"
OMP_NUM_THREADS=1 "$app" "$hf/licenses" "$hf/docstrings" --size 1600x1000 --tab Barrier --data "${lm[2]}" \
    --run merge,barrier --screenshot "$out/perplexity_barrier.png"
ls -l "$out"
# Stable Diffusion: the block-weight editor and an SD 1.x checkpoint's block tree (tiny files, real key layout).
"$python" docs/sd_screenshots.py "$out"
