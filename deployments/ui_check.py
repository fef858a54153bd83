"""Look at the Prefect UI as a user does, in headless Chromium: the nightly comparison's run
form (choices for organisms and infrastructure, the XCP-ng pool's fields, no "Property is
type None"), the event feed and the newest bioxen.vm.alert event (its resource labels,
related flow run and payload). Saves a screenshot of each and fails (exit 1) when one is
not what it should be.

Needs Debian's chromium (`apt-get install -y chromium`) and the playwright package
(`pip install playwright`; its own browser download is not needed), and a server set up by
deployments/setup.sh whose UI is on (the default of `prefect server start`):

    python3 deployments/ui_check.py --ui http://127.0.0.1:4200 --out docs/screenshots
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

DEPLOYMENT = "compare-organisms/nightly-comparison"
CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 30_000
# what the run form must show: the organisms and infrastructures as choices, the pool's
# fields, the alert thresholds
FORM_MUST_SHOW = ("syn3a", "minimal_cell", "xcpng_pool", "Credentials Block",
                  "alert_low_atp_percent", "vm_type")
FORM_MUST_NOT_SHOW = ("Property is type None",)


def deployment_id(api: str) -> str:
    """The nightly comparison's id, from the server's API."""
    import httpx

    flow, name = DEPLOYMENT.split("/")
    response = httpx.get(f"{api}/deployments/name/{flow}/{name}", timeout=30)
    response.raise_for_status()
    return response.json()["id"]


def latest_alert(api: str) -> dict | None:
    """The newest bioxen.vm.alert.* event on the server (None: there is none)."""
    import httpx

    response = httpx.post(f"{api}/events/filter", timeout=30, json={
        "filter": {"event": {"prefix": ["bioxen.vm.alert."]}, "order": "DESC"}, "limit": 1})
    response.raise_for_status()
    events = response.json()["events"]
    return events[0] if events else None


def shrink(path: Path) -> None:
    """Keep the PNG small (64 colours: UI screenshots are mostly flat)."""
    from PIL import Image

    with Image.open(path) as image:
        image.convert("RGB").quantize(colors=64).save(path, optimize=True)


def check(ui: str, api: str, out: Path, chromium: str = CHROMIUM) -> list[str]:
    """Screenshots of the run form, the event feed and the newest alert event in `out`;
    the problems found."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    problems = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True,
                                             args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 2300})
        page.goto(f"{ui}/deployments/deployment/{deployment_id(api)}/run",
                  wait_until="networkidle", timeout=WAIT_MS)
        page.get_by_text("xcpng_pool").first.wait_for(timeout=WAIT_MS)
        text = page.inner_text("body")
        problems += [f"run form lacks {s!r}" for s in FORM_MUST_SHOW if s not in text]
        problems += [f"run form shows {s!r}" for s in FORM_MUST_NOT_SHOW if s in text]
        page.screenshot(path=str(out / "run-form.png"), full_page=True)

        page.set_viewport_size({"width": 1100, "height": 900})
        page.goto(f"{ui}/events", wait_until="networkidle", timeout=WAIT_MS)
        try:  # the newest bioxen event at the top of the screenshot
            first = page.get_by_text(re.compile(r"^bioxen\.vm\.")).first
            first.wait_for(timeout=WAIT_MS)
            first.evaluate("node => node.closest('.timeline-item, li, article, div')"
                           ".scrollIntoView({block: 'start'})")
        except Exception:  # noqa: BLE001 (reported below, with the screenshot taken)
            problems.append("event feed shows no bioxen.vm event")
        page.screenshot(path=str(out / "event-feed.png"))

        alert = latest_alert(api)
        if alert is None:
            problems.append("no bioxen.vm.alert event on the server")
        else:
            page.goto(f"{ui}/events/event/{alert['occurred'][:10]}/{alert['id']}",
                      wait_until="networkidle", timeout=WAIT_MS)
            page.get_by_text("Raw").first.click()
            page.get_by_text("bioxen.organism").first.wait_for(timeout=WAIT_MS)
            page.screenshot(path=str(out / "alert-event.png"))
        browser.close()
    for png in out.glob("*.png"):
        shrink(png)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ui", default="http://127.0.0.1:4200", help="the Prefect UI's URL")
    parser.add_argument("--api", help="the Prefect API's URL (default: <ui>/api)")
    parser.add_argument("--out", type=Path, default=Path("ui-check"),
                        help="folder for the screenshots")
    parser.add_argument("--chromium", default=CHROMIUM, help="the Chromium executable")
    args = parser.parse_args(argv)
    problems = check(args.ui.rstrip("/"), (args.api or f"{args.ui.rstrip('/')}/api"),
                     args.out, args.chromium)
    for problem in problems:
        print(f"ui_check: {problem}", file=sys.stderr)
    print(f"screenshots in {args.out}: run-form.png, event-feed.png, alert-event.png")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
