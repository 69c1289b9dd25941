"""The channel data of a layer page: what its script needs to name every tile and show any channel.

Tiles are not separate files: a layer's grid is one picture per image, with its channels in rank
order, so the page finds a tile by geometry (`grid`), its channel through `order`, and everything
about that channel by its index in the model. The data is embedded in the page (a JSON script
element), since a page opened from file:// may not fetch files beside it.
"""

from __future__ import annotations

import base64

import numpy as np

from reportgen import assets, catalog


def _number(value, digits: int = 4) -> float | None:
    """A few significant digits: what a person reads, at a third of the characters."""
    return _numbers([value], digits)[0]


def _numbers(values, digits: int = 4) -> list:
    """`_number` of every value; the decimals are worked out for all at once, since a layer page has
    tens of thousands of numbers (Python's `round` then gives the shortest text of each)."""
    values = np.asarray(values, np.float64)
    finite = np.isfinite(values)
    magnitude = np.where(finite & (values != 0), np.abs(values), 1.0)
    decimals = (digits - 1 - np.floor(np.log10(magnitude))).astype(int)
    return [round(v, d) if ok else None for v, d, ok in zip(values.tolist(), decimals.tolist(), finite.tolist())]


def packed(values, dtype: str = "<f2") -> str:
    """Numbers as base64 of little-endian `dtype` (float16 by default, in which every stored
    activation is exact): a third of the characters of JSON numbers, on pages with a thousand
    channels and ten images. site.js `unpack` reads them."""
    return base64.b64encode(np.ascontiguousarray(values, dtype=dtype).tobytes()).decode("ascii")


def per_channel(result) -> list[dict]:
    """The layer's per-channel statistics, each its catalog key for the page script, a name for
    people and its values in model order."""
    s = result.stats
    found = [(key, catalog.by_key(key).label, values) for key, values in
             (("strength", s.channel_strength), ("ntv", s.ntv), ("effective_area", s.effective_area))]
    if np.isfinite(s.best_iou).any():
        # The focus class first: the views that show one IoU (the channel summary, the scatter) take the first.
        first = [s.classes.focus] + [k for k in range(s.classes.count) if k != s.classes.focus]
        found += [("best_iou_focus" if k == s.classes.focus else f"best_iou_{s.classes.names[k]}",
                   catalog.by_key("best_iou_focus").label.replace("{focus}", s.classes.names[k]), s.best_iou[k])
                  for k in first]
    shown = [{"key": key, "name": name, "values": _numbers(values)} for key, name, values in found]
    if s.importance is not None:
        measure = {"key": "taylor_importance", "name": catalog.by_key("taylor_importance").label,
                   "values": _numbers(s.importance)}
        if s.importance_intervals is not None:
            measure["low"], measure["high"] = (_numbers(s.importance_intervals[:, k]) for k in (0, 1))
        shown.append(measure)
    return shown


def channel_numbers(result, input_size, ranges: np.ndarray) -> dict:
    """The numeric part of a layer's channel data, computed beside its pictures in a worker process:
    everything but the images' names and pictures, which only the whole build knows (`layer_channels`).
    `ranges`: each pictured image's colour range per channel (`AssetWriter.layer_pictures`)."""
    layout = result.layout
    return {
        "channels": int(result.shape[-1]),
        "positions": int(np.prod(result.shape[:-1])),  # of each map: 1 for a 1x1 map, one value an image
        "order": [int(c) for c in result.order],
        "grid": {"columns": layout.columns, "tile_w": layout.tile_w, "tile_h": layout.tile_h, "gap": layout.gap,
                 "width": layout.width, "height": layout.height},
        "stats": per_channel(result),
        # Per pictured image, each channel's colour range as its tile was drawn: low, high, packed.
        "ranges": [packed(np.asarray(image, np.float32).ravel()) for image in ranges],
        "examples": _examples(result, input_size),
    }


def layer_channels(numbers: dict, image_views: list[dict], examples: dict[int, dict]) -> dict:
    """Everything the layer page's channel view shows, in one JSON-ready value.

    `examples` maps a statistics image's index to its id, picture and page (`AssetWriter.example_pictures`).
    """
    data = {**numbers, "images": [{"id": v["id"], "href": v["href"], "input": v["input"]} for v in image_views]}
    if numbers["examples"] is not None:
        shown = {key: value for key, value in numbers["examples"].items() if key != "used"}
        data["examples"] = {**shown, "images": [examples[i] for i in numbers["examples"]["used"]]}
    return data


def _examples(result, input_size) -> dict | None:
    """Each channel's dataset examples as crops of shared pictures: which picture, where, the value."""
    top = result.stats.examples if result.stats is not None else None
    if top is None or len(result.shape) != 3:
        return None
    height, width = input_size
    grid_h, grid_w = result.shape[:2]
    used = top.used_images()
    slot_of = {image: k for k, image in enumerate(used)}
    tops, lefts, side = assets.example_boxes((top.rows + 0.5) / grid_h, (top.cols + 0.5) / grid_w,
                                             result.receptive_field, height, width)
    kept = top.images >= 0
    slots = np.vectorize(lambda image: slot_of.get(int(image), 0), otypes=[np.int64])(top.images)
    items = np.stack([np.asarray(top.values, np.float16).view(np.uint16), slots, tops, lefts], axis=-1)[kept]
    return {
        "used": used,  # statistics image indices; `layer_channels` turns them into pictures
        "input": [height, width], "side": side, "field": _number(result.receptive_field),
        "counts": kept.sum(axis=1).tolist(),  # examples per channel
        # Per channel, strongest first, four uint16 each: the value's float16 bits, the index in
        # `images`, top and left, packed.
        "items": packed(items.ravel(), "<u2"),
    }


def every_channel(results, rows: list[dict]) -> dict:
    """The channel search page's data: every channel of every layer, with the numbers of its channel
    view (`per_channel`, one definition for both), as columns of little-endian float32, NaN where
    undefined (`_search_column`).

    `rows`: the index's layer rows (layer_table.layer_row), for each layer's name, page and role."""
    measured = [r for r in results if r.stats is not None]
    heads = {m["key"]: m["name"] for m in per_channel(measured[0])} if measured else {}
    columns = {key: [] for key in heads}
    for result in measured:
        found = {m["key"]: m["values"] for m in per_channel(result)}
        for key in heads:
            values = found.get(key) or [None] * int(result.shape[-1])
            columns[key].extend(np.nan if v is None else v for v in values)
    by_index = {row["index"]: row for row in rows}
    return {
        "layers": [{"index": r.conv.index, "name": by_index[r.conv.index]["name"],
                    "href": by_index[r.conv.index]["href"], "role": r.role, "channels": int(r.shape[-1])}
                   for r in measured],
        "columns": [{"key": key, **_search_column(name, columns[key])} for key, name in heads.items()],
    }


FLOAT16_NORMAL = (2.0 ** -14, 65504.0)  # the magnitudes float16 holds to 3 significant digits


def _search_column(name: str, values) -> dict:
    """One column of the search data: float16 (half the download) where every value is 0 or a
    normal float16 number, which keeps the 3 significant digits the page shows; float32 otherwise."""
    values = np.asarray(values, np.float64)
    magnitude = np.abs(values[np.isfinite(values) & (values != 0)])
    half = magnitude.size == 0 or (magnitude.min() >= FLOAT16_NORMAL[0] and magnitude.max() <= FLOAT16_NORMAL[1])
    dtype = "<f2" if half else "<f4"
    return {"name": name, "dtype": dtype[1:], "values": packed(values, dtype)}
