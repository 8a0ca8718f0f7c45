"""The README's two set-up commands, .ci/run, and gin file headers stay consistent."""

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
# test files register in this process (e.g. test_tasks_mrqa.py's local-file tasks).
LIST_NAMES = ("import json; from xprompt_jax import tasks; print(json.dumps("
              "list(tasks.registered_task_names()) + list(tasks.registered_mixture_names())))")


def test_readme_lists_every_registered_task_and_mixture():
    text = (ROOT / "README.md").read_text()
    out = subprocess.run([sys.executable, "-c", LIST_NAMES], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    names = json.loads(out.strip().splitlines()[-1])
    assert len(names) > 100, names
    missing = [n for n in names if f"`{n}`" not in text]
    assert not missing, f"README lacks {len(missing)} names, e.g. {missing[:5]}"
