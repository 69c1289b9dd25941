"""The site stage: a `describe.Description` -> one context per page (`pages`) -> Jinja -> files.

Templates only loop, branch and print what the page contexts prepared. Nothing here touches a model:
the site is written from plain data into a staging folder, which the pipeline swaps in atomically.
"""

from __future__ import annotations

import json
from concurrent.futures import Executor
from pathlib import Path

import jinja2

from reportgen import __version__, channels, comparison_pages, downloads, fingerprint, pages
from reportgen.describe import Description
from reportgen.outdir import KEY_FILE
from reportgen.paths import templates_dir
from reportgen.prose import fmt_interval  # noqa: F401  (where pipeline._quality_notes reads it)


def _environment() -> jinja2.Environment:
    """The one Jinja environment: autoescape on, undefined variables are errors."""
    loader = jinja2.FileSystemLoader(str(templates_dir()))
    env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    # The channel data embedded in layer pages is the largest text of the site: no spaces in it.
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "separators": (",", ":")}
    return env


class _Pages:
    """Renders templates into the staging folder and counts the pages."""

    def __init__(self, root: Path, site_context: dict):
        self.root, self.site, self.count = root, site_context, 0
        self.env = _environment()

    def write(self, template: str, relative: str, **context) -> None:
        context.setdefault("root", "../" * relative.count("/"))
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.env.get_template(template).render(**context, site=self.site), encoding="utf-8")
        self.count += 1


def write_site(root: Path, description: Description, executor: Executor | None = None) -> int:
    """Render every page and data file into `root`; returns the number of HTML pages.

    The charts, one drawing per theme, are drawn by `executor` (worker processes) while this process
    writes the pages.
    """
    from reportgen import charts, workers

    shared = pages.common(description)
    executor = executor or workers.InProcess()
    drawn = [executor.submit(charts.write_charts, root, description.layers, shared.stats_rows,
                             description.layer_cka, theme, shared.chart_plan)
             for theme in charts.THEMES]
    writer = _Pages(root, pages.site_context(description))
    writer.write("index.html", "index.html", **pages.index_context(description, shared))
    writer.write("changes.html", "changes.html", **pages.changes_context(shared))
    inside = shared.changes.inside
    if inside is not None and inside.cka is not None:
        from reportgen import cross_charts

        cross_charts.write_heatmap(root / Path(comparison_pages.CHANGES_HEATMAP).parent, Path(comparison_pages.CHANGES_HEATMAP).name,
                                   inside.cka, "this build's conv layer", "the previous build's conv layer",
                                   "Linear CKA, this build against the previous")
    for i, result in enumerate(description.layers):
        writer.write("layer.html", f"layers/{result.slug}.html", **pages.layer_context(description, shared, i))
    for i, view in enumerate(shared.image_views):
        writer.write("image.html", f"images/{view['slug']}.html", **pages.image_context(description, shared, i))
    if description.training is not None:  # the model keeps its training fingerprints beside its file
        _write_timeline_page(writer, "timeline.html", description.training, "base.html",
                             comparison_pages.TIMELINE_HEATMAP)
    writer.write("about.html", "about.html", **pages.about_context(description.mask_classes))
    every_channel = channels.every_channel(description.layers, shared.rows)
    writer.write("search.html", "search.html", **pages.search_context(description, every_channel))
    writer.write("404.html", "404.html", root="")

    _copy_static(root)
    _write_data(root / "data", description, shared, every_channel, writer.env)
    (root / KEY_FILE).write_text(description.key + "\n")
    for job in drawn:
        job.result()
    return writer.count


def _write_data(data: Path, description: Description, shared: pages.Common, every_channel: dict, env) -> None:
    """The site's data files: the statistics, the channels, the map, the predictions, the changes, the manifest."""
    data.mkdir(exist_ok=True)
    cka_rows = [[downloads.json_value(round(float(v), 6)) for v in row] for row in description.layer_cka]
    classes = description.mask_classes
    downloads.write_json(data / "stats.json", {"layers": shared.stats_rows, "layer_cka": cka_rows,
                                               "fingerprint": downloads.fingerprint_record(description.fingerprint),
                                               "class_chance": downloads.json_value(shared.chance),
                                               "mask_classes": {"names": list(classes.names),
                                                                "focus": classes.focus_name},
                                               "localisation_baselines": downloads.baselines_record(
                                                   description.localisation_baselines),
                                               "sanity": description.sanity or None,
                                               "faithfulness": description.faithfulness or None}, compact=True)
    (data / "layers.csv").write_text(downloads.csv_text(shared.stats_rows))
    # A script, not JSON: a page opened from file:// may run a script beside it but not fetch a file.
    search = json.dumps(every_channel, sort_keys=True, separators=(",", ":"))
    (data / "channels.js").write_text(f"window.reportgenChannels = {search};\n")
    (data / "architecture.js").write_text(architecture_script(env, shared.arch))
    downloads.write_json(data / "predictions.json", downloads.predictions(description))
    changes = shared.changes
    downloads.write_json(data / "changes.json", {"first_build": changes.first_build, "summary": changes.summary,
                                                 "layers": changes.rows,
                                                 "inside": downloads.inside_record(changes.inside)})
    if description.fingerprint is not None:
        description.fingerprint.save(data / fingerprint.FILE)
    downloads.write_json(data / "manifest.json", shared.manifest)


def write_comparison(root: Path, result) -> None:
    """`reportgen compare`'s site: one page, its heatmap, data/compare.json and the style sheet."""
    from reportgen import cross_charts

    root.mkdir(parents=True, exist_ok=True)
    context = comparison_pages.comparison_context(result)
    writer = _Pages(root, {"model": f"{result.a.name} and {result.b.name}", "version": __version__})
    writer.write("models.html", "index.html", **context)
    cross_charts.write_heatmap(root / Path(comparison_pages.COMPARISON_HEATMAP).parent, Path(comparison_pages.COMPARISON_HEATMAP).name,
                               result.cka, f"{result.a.name}: conv layer", f"{result.b.name}: conv layer",
                               "Linear CKA between the two models' layers")
    _copy_static(root)
    data = root / "data"
    data.mkdir(exist_ok=True)
    downloads.write_json(data / "compare.json", downloads.comparison_record(result))


def write_timeline(root: Path, found) -> None:
    """`reportgen timeline`'s site: one page, its heatmap (layers x checkpoints), data/timeline.json."""
    root.mkdir(parents=True, exist_ok=True)
    writer = _Pages(root, {"model": f"{len(found.checkpoints)} checkpoints", "version": __version__})
    _write_timeline_page(writer, "index.html", found, "standalone.html", comparison_pages.COMPARISON_HEATMAP)
    _copy_static(root)


def _write_timeline_page(writer: "_Pages", relative: str, found, layout: str, heatmap: str) -> None:
    """A timeline's page, its heatmap and data/timeline.json, as its own site or as a build's page."""
    from reportgen import cross_charts

    writer.write("timeline.html", relative, **comparison_pages.timeline_context(found, layout, heatmap))
    cross_charts.write_heatmap(writer.root / Path(heatmap).parent, Path(heatmap).name, found.cka, "conv layer",
                               "checkpoint", "CKA with the final self", column_names=found.checkpoints)
    data = writer.root / "data"
    data.mkdir(exist_ok=True)
    downloads.write_json(data / "timeline.json", downloads.timeline_record(found))


MAP_ROOT = "@root/"


def architecture_script(env, arch: dict) -> str:
    """data/architecture.js: the map's drawing, its links from the site's root written `@root/` (the
    script of each page that shows it puts the page's root there), and each conv node's fill and ink
    for every statistic of the map's list."""
    drawing = env.get_template("_architecture.html").module.architecture_svg(arch, MAP_ROOT)
    found = {"svg": str(drawing).strip(), "fills": arch["fills"], "inks": arch["inks"],
             "low": [s["low"] for s in arch["statistics"]], "high": [s["high"] for s in arch["statistics"]]}
    # A script, not JSON, as data/channels.js is; "<\/" so that no copy of it inlined in a page could end a script.
    return "window.reportgenArchitecture = " + json.dumps(found, separators=(",", ":")).replace("</", "<\\/") + ";\n"


def _copy_static(root: Path) -> None:
    (root / ".nojekyll").write_text("")
    static = templates_dir() / "static"
    (root / "assets").mkdir(exist_ok=True)
    for name in ("style.css", "site.js"):
        (root / "assets" / name).write_bytes((static / name).read_bytes())
