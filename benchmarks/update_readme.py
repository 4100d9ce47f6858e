"""Put the generated Results and benchmark text into README.md, between marker comments.

    medsam-segment evaluate --cases ../shared/data/cases.json --out docs/results
    medsam-segment benchmark --out docs/results
    python benchmarks/update_readme.py --results docs/results

``evaluate`` writes ``readme_section.md`` and ``benchmark`` writes ``benchmark.md``; this script replaces the text
between ``<!-- BEGIN generated: NAME -->`` and ``<!-- END generated: NAME -->`` in the README with them, and
rewrites their relative links (plots, results.md) so that they resolve from the README's folder. The README's own
prose outside the markers is left alone.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Dict

SECTIONS = {"results": "readme_section.md", "benchmark": "benchmark.md"}


def relink(text: str, results_dir: str, readme_dir: str) -> str:
    """Make Markdown links to bare file names (``](plot.png)``) relative to the README's folder."""
    prefix = os.path.relpath(results_dir, readme_dir).replace(os.sep, "/")

    def fix(match: re.Match[str]) -> str:
        target = match.group(1)
        if "://" in target or target.startswith(("/", "#")) or "/" in target:
            return match.group(0)
        return f"]({prefix}/{target})"

    return re.sub(r"\]\(([^)\s]+)\)", fix, text)


def splice(readme: str, name: str, body: str) -> str:
    """Replace the text between the markers of ``name``; the markers must be there, once each."""
    begin, end = f"<!-- BEGIN generated: {name} -->", f"<!-- END generated: {name} -->"
    if readme.count(begin) != 1 or readme.count(end) != 1 or readme.index(begin) > readme.index(end):
        raise ValueError(f"README must hold the markers {begin} and {end} once each, in that order")
    head, rest = readme.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body.strip()}\n{end}{tail}"


def update_readme(readme_path: str, results_dir: str) -> Dict[str, bool]:
    """Splice each generated file that exists in ``results_dir``; returns which sections were updated."""
    with open(readme_path, encoding="utf-8") as handle:
        readme = handle.read()
    readme_dir = os.path.dirname(os.path.abspath(readme_path))
    done = {}
    for name, filename in SECTIONS.items():
        path = os.path.join(results_dir, filename)
        done[name] = os.path.isfile(path)
        if not done[name]:
            continue
        with open(path, encoding="utf-8") as handle:
            body = handle.read()
        if name == "results":  # the README keeps its own "## Results" heading outside the markers
            body = re.sub(r"\A## Results\s*\n", "", body)
        if name == "benchmark":
            body = re.sub(r"\A# Benchmark[^\n]*\n", "", body)
        readme = splice(readme, name, relink(body, os.path.abspath(results_dir), readme_dir))
    with open(readme_path, "w", encoding="utf-8") as handle:
        handle.write(readme)
    return done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="docs/results", help="folder of readme_section.md / benchmark.md")
    parser.add_argument("--readme", default="README.md")
    args = parser.parse_args(argv)
    done = update_readme(args.readme, args.results)
    for name, updated in done.items():
        print(f"{name}: {'updated' if updated else 'not found, left as it was'}")
    return 0 if any(done.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
