"""Write tiny Stable Diffusion 1.x files (the real key layout) and a block-weighted recipe for the screenshots.

    python docs/sd_demo.py FOLDER   # prints the recipe's path
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from merge_studio.core.naming.presets import sd_preset  # noqa: E402
from merge_studio.core.recipe import Recipe  # noqa: E402
from tests.sd_models import make_sd_checkpoint  # noqa: E402


def main(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    names = ("anime-style-v3", "photoreal-v2", "sd-v1-5")
    paths = [make_sd_checkpoint(folder / f"{n}.safetensors", "sd1", seed=i) for i, n in enumerate(names)]
    recipe = Recipe.model_validate({
        "method": "add_difference",
        "models": [{"path": str(paths[0])}, {"path": str(paths[1])}],
        "base": str(paths[2]),
        "params": {"alpha": {"blocks": sd_preset("GRAD_V")}},
        "part_sources": {"vae": str(paths[0])},
        "output": str(folder / "merged.safetensors"),
    })
    return recipe.save(folder / "recipe.yaml")


if __name__ == "__main__":
    print(main(Path(sys.argv[1])))
