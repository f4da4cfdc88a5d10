"""Check that headless Chromium renders a dataset's QC report.

Run: ``make check-report`` (installs Debian's ``chromium`` when missing, then runs this), or
``.venv/bin/python tools/check_report_chromium.py [DATASET_DIR]``.

Without a dataset folder it builds a small one first (two tiny phantoms and a CT with no hip, so
the report has ``done`` and ``skipped`` rows). It then asks Chromium, headless, for the rendered DOM
of ``report.html`` and for a screenshot, and checks that the DOM holds the table with one row per
case of the ledger, that every ``qc.png`` link and thumbnail resolves, and that the screenshot is a
non-blank PNG (kept with ``--screenshot PATH``).
Exit status 0 when all hold; one line on stderr and status 1 otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class _Rows(HTMLParser):
    def __init__(self):
        super().__init__()
        self.in_body, self.rows, self.links, self.images = False, 0, [], []

    def handle_starttag(self, tag, attrs):
        if tag == "tbody":
            self.in_body = True
        elif tag == "tr" and self.in_body:
            self.rows += 1
        elif tag == "a" and self.in_body:
            self.links.append(dict(attrs).get("href", ""))
        elif tag == "img" and self.in_body:
            self.images.append(dict(attrs).get("src", ""))

    def handle_endtag(self, tag):
        if tag == "tbody":
            self.in_body = False


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("check_report_chromium: no chromium on PATH (Debian: apt-get install chromium)")


def _small_dataset(folder: Path) -> Path:
    from thagpu.dataset import build_dataset
    from thagpu.phantom import write_phantoms
    inputs = folder / "in"
    write_phantoms(inputs, n=2, seed=7400, size="tiny", preset="hard")
    shutil.copytree(ROOT / "tests" / "data" / "dicom-abdomen", inputs / "abdomen")
    build_dataset(inputs, folder / "ds", workers=1, device="cpu")
    return folder / "ds"


def check(dataset: Path, browser: str, screenshot: Path | None = None) -> str:
    from thagpu.dataset import Ledger
    report = dataset / "report.html"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"]
    dom = subprocess.run([browser, *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True,
                         timeout=120)
    if dom.returncode != 0 or "<table" not in dom.stdout:
        raise SystemExit(f"check_report_chromium: chromium did not render {report}: {dom.stderr.strip()[-300:]}")
    parser = _Rows()
    parser.feed(dom.stdout)
    with Ledger(dataset / "ledger.sqlite") as ledger:
        cases = len(ledger.rows())
    if parser.rows != cases:
        raise SystemExit(f"check_report_chromium: rendered table has {parser.rows} rows, ledger {cases} cases")
    if sorted(parser.images) != sorted(parser.links):
        raise SystemExit("check_report_chromium: the thumbnails are not the linked QC pictures")
    missing = [link for link in parser.links + parser.images if not (dataset / link).is_file()]
    if missing:
        raise SystemExit(f"check_report_chromium: links to missing files: {missing[:3]}")
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "report.png"
        subprocess.run([browser, *flags, "--window-size=1400,900", f"--screenshot={shot}", report.as_uri()],
                       capture_output=True, timeout=120)
        if not shot.is_file():
            raise SystemExit("check_report_chromium: chromium wrote no screenshot")
        import matplotlib.image
        pixels = matplotlib.image.imread(shot)
        if pixels.std() < 0.01:
            raise SystemExit("check_report_chromium: the screenshot is blank")
        size = f"{pixels.shape[1]}x{pixels.shape[0]}"
        if screenshot is not None:
            shutil.copyfile(shot, screenshot)
    return (f"chromium rendered {report}: {parser.rows} rows (= ledger), {len(parser.links)} QC links and "
            f"thumbnails resolve, screenshot {size}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", nargs="?", type=Path, help="a dataset folder (default: build a small one)")
    parser.add_argument("--screenshot", type=Path, help="also keep the screenshot here (docs/report.png)")
    args = parser.parse_args(argv)
    browser = _chromium()
    with tempfile.TemporaryDirectory(prefix="thagpu-report-") as tmp:
        dataset = args.dataset or _small_dataset(Path(tmp))
        print(check(dataset, browser, args.screenshot))


if __name__ == "__main__":
    sys.exit(main())
