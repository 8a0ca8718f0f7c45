"""MkDocs hooks of this site (`hooks:` in mkdocs.yml; not a page: `exclude_docs`).

1. `<details>` blocks render the markdown inside them, as GitHub does: `tasks/TASKS.md`
   (included by the tasks page) folds its few-shot list in one.
2. Files that the bench scripts write under `bench/results/` (the quality plot) are part of
   the site. A page links them by their path from the page, `../bench/results/<file>`, which
   also works when the page is read on GitHub.
3. A subscript chain in a docstring (`params['encoder']['prompt']`) is text, not a
   `[title][identifier]` cross-reference: autorefs would report it as an unresolved
   reference and print it mangled.
"""

from __future__ import annotations

import html
import pathlib
import re

from markdown import Extension
from markdown.preprocessors import Preprocessor
from mkdocs.structure.files import File

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = "bench/results"


class _DetailsMarkdown(Preprocessor):
    """`<details>` -> `<details markdown="1">` (md_in_html renders its content). Runs after
    pymdownx.snippets (priority 32), before the raw-HTML block stage (priority 20)."""

    def run(self, lines):
        return [re.sub(r"^<details>", '<details markdown="1">', line) for line in lines]


class _DetailsExtension(Extension):
    def extendMarkdown(self, md):  # noqa: N802 (Python-Markdown's name)
        md.preprocessors.register(_DetailsMarkdown(md), "details_markdown", 25)


def on_config(config):
    config.markdown_extensions.append(_DetailsExtension())
    return config


def on_files(files, config):
    for path in sorted((REPO / RESULTS).glob("*.png")):
        files.append(File(f"{RESULTS}/{path.name}", src_dir=str(REPO),
                          dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    return files


def on_page_markdown(markdown, page, config, files):
    # `../bench/results/x.png` from a page at the top of docs/ is `bench/results/x.png` in
    # the site's file list (on_files).
    depth = page.file.src_uri.count("/") + 1
    return markdown.replace("](" + "../" * depth + RESULTS + "/",
                            "](" + "../" * (depth - 1) + RESULTS + "/")


_AUTOREF = re.compile(r"<autoref (?P<attrs>[^>]*)>(?P<title>.*?)</autoref>", re.S)
_IDENTIFIER = re.compile(r'\bidentifier="(?P<id>[^"]*)"')
_LITERAL = re.compile(r"""^(?:'[^']*'|"[^"]*"|-?\d+|-?\d*:-?\d*)$""")


def on_page_content(content, page, config, files):
    def literal(match):
        found = _IDENTIFIER.search(match["attrs"])
        if not found or not _LITERAL.match(html.unescape(found["id"])):
            return match[0]
        return f"[{match['title']}][{found['id']}]"

    return _AUTOREF.sub(literal, content)
