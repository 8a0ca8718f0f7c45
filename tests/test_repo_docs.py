"""The README (its size, its two set-up commands, its links), .ci/run, gin file headers and
the docs' one task list stay consistent."""

import json
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)


def test_readme_opens_with_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    first_blocks = re.findall(r"```(\w*)\n(.*?)\n```", text, flags=re.S)[:2]
    assert [lang for lang, _ in first_blocks] == ["bash", "bash"]
    assert all("\n" not in body and body.startswith("pip install") for _, body in first_blocks)
    # nothing but a heading line and the commands come before the explanation
    head = text.split(first_blocks[1][1])[0]
    assert head.count("```") == 3


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = _readme_commands()[1]
    assert "pytest" in test_command
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines


def test_every_gin_file_has_a_header():
    files = sorted((ROOT / "gin").rglob("*.gin"))
    assert files
    for path in files:
        head = path.read_text().split("\n\n")[0]
        for word in ("Provides:", "Requires:", "Include order:"):
            assert word in head or word in path.read_text()[:1500], f"{path}: no {word!r}"


# In a fresh interpreter: what `import xprompt_jax.tasks` registers, without the tasks other
# test files register in this process (e.g. test_tasks_mrqa.py's local-file tasks), and the
# markdown list its generator (`python -m xprompt_jax.tasks`) writes.
LIST_NAMES = ("import json; from xprompt_jax import tasks; print(json.dumps({'names': "
              "list(tasks.registered_task_names()) + list(tasks.registered_mixture_names()), "
              "'markdown': tasks.catalog.markdown()}))")
TASKS_MD = ROOT / "tasks" / "TASKS.md"
TASKS_PAGE = ROOT / "docs" / "tasks.md"


def test_readme_is_at_most_15_kb_and_links_existing_pages():
    data = (ROOT / "README.md").read_bytes()
    assert len(data) <= 15 * 1024, f"README.md is {len(data)} bytes"
    links = re.findall(r"\]\((docs/[^)#]+)", data.decode())
    assert len(links) >= 10, links
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert not missing, missing


def test_the_docs_tasks_page_lists_every_registered_task_and_mixture():
    """One task list: tasks/TASKS.md, what the generator produces now, included by the docs
    tasks page; neither the README nor another page copies it."""
    out = subprocess.run([sys.executable, "-c", LIST_NAMES], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    listed = json.loads(out.strip().splitlines()[-1])
    names = listed["names"]
    assert len(names) > 100, names
    text = TASKS_MD.read_text(encoding="utf-8")
    assert text == listed["markdown"], (
        "tasks/TASKS.md is stale: run `python -m xprompt_jax.tasks --write tasks/TASKS.md`")
    missing = [n for n in names if f"`{n}`" not in text]
    assert not missing, f"tasks/TASKS.md lacks {len(missing)} names, e.g. {missing[:5]}"
    # the docs page includes it (pymdownx.snippets, mkdocs.yml)
    assert '--8<-- "tasks/TASKS.md"' in TASKS_PAGE.read_text(encoding="utf-8").splitlines()
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    copies = [str(p.relative_to(ROOT)) for p in pages
              if sum(f"`{n}`" in p.read_text(encoding="utf-8") for n in names) > len(names) / 2]
    assert not copies, f"the task list is copied into {copies}"
