"""Draw the README's sample sheet: 16 synthetic_pets test images above their trimaps."""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from reportgen.datasets.synthetic_pets import synthetic_pets_dataset_builder as builder
from reportgen.datasets.synthetic_pets.render import BREEDS, render_example
from reportgen.render import trimap_rgb

TILE = 160


def main(out: Path) -> None:
    columns = []
    for index in range(16):
        example = render_example(builder.SPLIT_SEEDS["test"], index)
        image = Image.fromarray(example.image).resize((TILE, TILE), Image.Resampling.BILINEAR)
        trimap = Image.fromarray(trimap_rgb(example.trimap)).resize((TILE, TILE), Image.Resampling.NEAREST)
        columns.append(np.concatenate([np.asarray(image), np.asarray(trimap)], axis=0))
        print(index, BREEDS[example.label])
    rows = [np.concatenate(columns[r * 8:(r + 1) * 8], axis=1) for r in range(2)]
    Image.fromarray(np.concatenate(rows, axis=0)).save(out, optimize=True)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/synthetic_pets_samples.png"))
