"""Turn a finished training run into the shipped default: float16 weights, metrics, model card.

    python tools/ship_model.py runs/default

Writes models/sd_unet_synthetic_pets.weights.h5, models/sd_unet_synthetic_pets.json (what the site
and the tests read) and models/MODEL_CARD.md. Commit the weights only when they meet the bar.
"""

import csv
import json
import platform
import sys
from pathlib import Path

import numpy as np

from reportgen import model_io, training
from reportgen.datasets.synthetic_pets.render import render_example
from reportgen.inputs import InputGeometry

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = {"seed": 2, "index": 0}  # test image 0 of synthetic_pets


def main(run_dir: Path) -> None:
    weights = ROOT / "models" / model_io.DEFAULT_WEIGHTS
    training.export_float16(run_dir / "best.keras", weights)
    model = model_io.load(weights_path=weights).model

    metrics = training.evaluate(model, "synthetic_pets", "test")
    reference = training.real_model(run_dir / "best.keras")
    images = np.stack([InputGeometry(160, 160, 3).pixels(render_example(2, i).image) for i in range(8)]).astype("float32")
    agreement = float((reference.predict(images, verbose=0).argmax(-1) == model.predict(images, verbose=0).argmax(-1))
                      .mean())

    example = render_example(EXPECTED["seed"], EXPECTED["index"])
    probabilities = model.predict(InputGeometry(160, 160, 3).pixels(example.image).astype("float32")[None], verbose=0)[0]
    history = list(csv.DictReader((run_dir / "history.csv").open()))
    config = json.loads((run_dir / "config.json").read_text())
    wall = int((run_dir / "wall_time_s.txt").read_text()) if (run_dir / "wall_time_s.txt").exists() else None
    best = min(history, key=lambda row: float(row["val_loss"]))
    checksum = model_io.sha256(weights)
    meta = {
        "sha256": checksum,
        "trained_on": f"synthetic_pets/full train split ({2000 - config['validation_examples']} images, "
                      f"{config['validation_examples']} held out for validation), 160 x 160",
        "command": f"reportgen train --run-dir {run_dir} --epochs {config['epochs']} "
                   f"--export {run_dir}/sd_unet_synthetic_pets.weights.h5",
        "epochs_run": len(history),
        "best_epoch": int(best["epoch"]) + 1,
        "best_val_loss": round(float(best["val_loss"]), 4),
        "wall_time_s": wall,
        "float16_argmax_agreement": round(agreement, 5),
        "metrics": {
            "images": metrics.images,
            "pet_iou": round(metrics.class_iou[0], 4),
            "background_iou": round(metrics.class_iou[1], 4),
            "border_iou": round(metrics.class_iou[2], 4),
            "mean_iou": round(metrics.mean_iou, 4),
            "pixel_accuracy": round(metrics.pixel_accuracy, 4),
        },
        "expected_prediction": {
            **EXPECTED,
            "mean_probabilities": [round(float(v), 5) for v in probabilities.mean(axis=(0, 1))],
            "mask_20x20": probabilities.argmax(-1)[4::8, 4::8].astype(int).tolist(),
        },
    }
    (ROOT / "models" / model_io.MODEL_META).write_text(json.dumps(meta, indent=1) + "\n")
    card = (ROOT / "tools" / "model_card_template.md").read_text()
    card = card.format(
        weights_mb=f"{weights.stat().st_size / 1e6:.1f}", sha=checksum, epochs=len(history), command=meta["command"],
        wall=f"{wall / 60:.0f} minutes" if wall else "unknown",
        valloss=", ".join(f"{float(row['val_loss']):.4f}" for row in history), images=metrics.images,
        pet=f"{metrics.class_iou[0]:.4f}", bg=f"{metrics.class_iou[1]:.4f}", border=f"{metrics.class_iou[2]:.4f}",
        miou=f"{metrics.mean_iou:.4f}", acc=f"{metrics.pixel_accuracy:.4f}", agree=f"{agreement:.2%}")
    (ROOT / "models" / model_io.MODEL_CARD).write_text(card)
    print(json.dumps({k: v for k, v in meta.items() if k != "expected_prediction"}, indent=1))
    print("machine:", platform.machine(), platform.processor() or "", f"{__import__('os').cpu_count()} cores")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
