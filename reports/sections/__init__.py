"""The report: what was measured where, per workload tables and figures, OOM boundaries, the HiRED
paper side by side, hardware comparisons, and every point in an appendix (nothing dropped silently).

One module per section; this one puts them in order and writes the Markdown and HTML."""

from __future__ import annotations

from pathlib import Path

from reports.data import Results
from reports.document import Section, to_html, to_markdown
from reports.sections.accuracy import accuracy_section
from reports.sections.appendix import appendix_section
from reports.sections.boundaries import boundary_section
from reports.sections.checks import checks_section
from reports.sections.compare import compare_section
from reports.sections.headlines import headlines_section
from reports.sections.paper import paper_section
from reports.sections.serving import serving_sections
from reports.sections.setup import setup_section
from reports.sections.workload import grouped, workload_section


def build_report(results: Results, out: Path, title: str = "hired-bench report") -> tuple[Path, Path]:
    """Write report.md, report.html and figures/ under `out`; returns the two report paths."""
    folder = out / "figures"
    workloads = grouped(results)
    headlines = headlines_section(workloads)
    sections = [headlines] if headlines is not None else []
    sections.append(setup_section(results))
    for i, (key, rows) in enumerate(workloads, 1):
        sections.append(workload_section(i, key, rows, folder))
    sections += serving_sections(results, folder)
    sections += [
        s
        for s in (
            accuracy_section(results, folder),
            boundary_section(results, folder),
            checks_section(results),
            paper_section(results),
            compare_section(results, folder),
        )
        if s is not None
    ]
    sections.append(appendix_section(results))
    return write(out, title, sections)


def build_compare(results: Results, out: Path) -> tuple[Path, Path] | None:
    section = compare_section(results, out / "figures", "The same workloads on several machines")
    if section is None:
        return None
    return write(out, "hired-bench hardware comparison", [setup_section(results), section])


def write(out: Path, title: str, sections: list[Section]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    markdown, page = out / "report.md", out / "report.html"
    markdown.write_text(to_markdown(title, sections, out))
    page.write_text(to_html(title, sections))
    return markdown, page
