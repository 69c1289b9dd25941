"""What the report says of a model's parts: block roles, the charts' sections, claims to test.

The shipped SD-UNet has a profile of its own (its builder names every conv deliberately, and the
original author's claim, 'mask-like around conv layer 43', was made about it alone). Any other model
gets roles read from its own graph: the stage is the map size a conv works at, and a model whose maps
grow again after their smallest (a U-Net, an FPN) has an encoder, a bottleneck and a decoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ENCODER, BOTTLENECK, DECODER = 0, 1, 2
SECTION_NAMES = ("encoder", "bottleneck", "decoder")


@dataclass(frozen=True)
class Profile:
    """A model's parts in words, one entry per conv layer in graph order."""

    name: str  # "SD-UNet" or "" (read from the graph)
    roles: tuple[str, ...]  # each conv's place in the model, in words ("" where nothing can be said)
    sections: tuple[int | None, ...]  # ENCODER, BOTTLENECK, DECODER or None, for the charts' shading
    claim_layer: int | None = None  # the conv (from 1) of the claim 'mask-like around conv layer N'


def _map_size(shape: Sequence[int]) -> int | None:
    """Pixels of a conv's maps (output shape without the batch axis, channels last); None when not spatial."""
    return int(shape[0]) * int(shape[1]) if len(shape) == 3 else None


def from_graph(shapes: Sequence[Sequence[int]]) -> Profile:
    """Roles and sections from the convs' output shapes alone: stage k of K by map size, largest first,
    and, where the maps grow again after their smallest, encoder / bottleneck / decoder."""
    sizes = [_map_size(shape) for shape in shapes]
    spatial = [s for s in sizes if s is not None]
    if not spatial:
        return Profile("", ("",) * len(sizes), (None,) * len(sizes))
    stages = sorted(set(spatial), reverse=True)
    smallest = stages[-1]
    first = sizes.index(smallest)
    last = len(sizes) - 1 - sizes[::-1].index(smallest)
    grows_again = any(s is not None and s > smallest for s in sizes[last + 1:])
    roles, sections = [], []
    for k, (size, shape) in enumerate(zip(sizes, shapes)):
        if size is None:
            roles.append("")
            sections.append(None)
            continue
        section = None
        if grows_again:
            section = ENCODER if k < first else BOTTLENECK if k <= last else DECODER
        stage = f"stage {stages.index(size) + 1} of {len(stages)} ({shape[0]}x{shape[1]} maps)"
        roles.append(f"{SECTION_NAMES[section]}, {stage}" if section is not None else stage)
        sections.append(section)
    return Profile("", tuple(roles), tuple(sections))


def for_model(names: Sequence[str], paths: Sequence[tuple[str, ...]], shapes: Sequence[Sequence[int]]) -> Profile:
    """The SD-UNet's profile when the convs are the builder's (every name one it gives, none nested, 51 of
    them), else the one read from the graph."""
    from reportgen.profiles import sd_unet

    if sd_unet.is_sd_unet(names, paths):
        return sd_unet.profile(names)
    return from_graph(shapes)


def of_layers(results) -> Profile:
    """The profile of the layers a report holds (each with its `conv`)."""
    return for_model([r.conv.name for r in results], [r.conv.path for r in results],
                     [r.conv.output_shape for r in results])
