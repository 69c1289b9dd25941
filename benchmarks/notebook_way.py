"""The way the original notebook did it, as the baseline: one matplotlib figure of 8 x 4 subplots
(the first 32 channels) per conv layer and image, saved as PNG. Same model, same images."""

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(out: Path, images: int) -> None:
    started = time.monotonic()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from reportgen import capture, model_io, sources, tfds_source

    loaded = model_io.load()
    model = loaded.model
    convs = capture.find_conv_layers(model)
    probe = capture.probe_model(model, convs)
    selected = sources.select(tfds_source.tfds_split("synthetic_pets", "test", 160), images)
    batch = np.stack([s.image for s in selected]).astype("float32")
    outputs = probe.predict(batch, verbose=0)
    out.mkdir(parents=True, exist_ok=True)
    for layer, maps in zip(convs, outputs):
        for i in range(len(selected)):
            fig, axes = plt.subplots(4, 8, figsize=(16, 8))
            for c, ax in enumerate(axes.ravel()):
                if c < maps.shape[-1]:
                    ax.imshow(maps[i, :, :, c], cmap="viridis")
                ax.axis("off")
            fig.savefig(out / f"{layer.index:02d}_{i}.png")
            plt.close(fig)
    print(f"notebook way: {len(convs) * len(selected)} figures in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
