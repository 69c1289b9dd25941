"""axe-core on every page kind of a built site, in both themes: no WCAG 2.2 A/AA or best-practice
violation. axe-core is installed by the test set-up (`make test-deps`, npm) beside the venv."""

import sys
from pathlib import Path

import pytest

import conftest  # noqa: F401  (environment before TensorFlow loads)
from test_browser import browser, show_late_parts  # noqa: F401  (fixture)

pytestmark = pytest.mark.browser

AXE = Path(sys.executable).parent.parent / "node_modules" / "axe-core" / "axe.min.js"
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]


def page_kinds(site: Path) -> dict[str, str]:
    image = sorted((site / "images").glob("*.html"))[0]
    return {"index": "index.html", "layer": "layers/e3_sa_main_conv1.html",
            "channel view": "layers/e3_sa_main_conv1.html#c2", "small-map layer": "layers/daspp_pool_conv.html",
            "image": f"images/{image.name}", "about": "about.html", "changes": "changes.html",
            "search": "search.html"}


@pytest.mark.parametrize("theme,width,height", [("light", 390, 844), ("dark", 390, 844), ("light", 1440, 900)])
def test_no_axe_violation_on_any_page_kind(browser, tiny_site, theme, width, height):  # noqa: F811
    assert AXE.is_file(), f"axe-core is missing: run `make test-deps` (it installs {AXE})"
    found = []
    page = browser.new_page(viewport={"width": width, "height": height}, color_scheme=theme)
    for kind, address in page_kinds(tiny_site).items():
        page.goto((tiny_site / address.split("#")[0]).as_uri() + ("#" + address.split("#")[1] if "#" in address else ""))
        page.wait_for_load_state("load")
        if "#" not in address:  # the channel view is a modal dialog over the page: nothing behind it is read
            show_late_parts(page)
        page.add_script_tag(path=str(AXE))
        result = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", TAGS)
        assert result["passes"], kind  # axe ran its rules on the page
        found += [f"{kind}: {v['id']} ({v['impact']}) x{len(v['nodes'])} at {v['nodes'][0]['target']}: "
                  f"{v['nodes'][0]['failureSummary'].splitlines()[1].strip()}" for v in result["violations"]]
    page.close()
    assert not found, "\n".join(found)
