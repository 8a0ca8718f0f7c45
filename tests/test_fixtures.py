"""The repository carries its own test data (`tests/fixtures/`): complete, licensed, and
byte-identical to the project's shared copy (`../shared/fixtures`) where that exists."""

import hashlib
import pathlib

import pytest

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
SHARED = HERE.parents[1] / "shared" / "fixtures"


def _files(root: pathlib.Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_fixtures_present_with_license_and_readme(fixtures_dir):
    assert fixtures_dir == FIXTURES
    for name in ("LICENSE.apache-2.0", "README.md", "t5_spm/sentencepiece.model",
                 "t5x_tiny_legacy/checkpoint_3/checkpoint",
                 "t5x_tiny_orbax/checkpoint_3/_CHECKPOINT_METADATA"):
        assert (FIXTURES / name).is_file(), name
    assert "Apache License" in (FIXTURES / "LICENSE.apache-2.0").read_text()


def test_no_test_reads_the_shared_folder():
    offenders = []
    for path in HERE.glob("*.py"):
        if path.name == pathlib.Path(__file__).name:
            continue
        text = path.read_text()
        for needle in ('"shared" / "fixtures"', "../shared/fixtures", "parents[2]"):
            if needle in text:
                offenders.append(f"{path.name}: {needle}")
    assert not offenders, offenders


@pytest.mark.skipif(not SHARED.is_dir(), reason="no ../shared/fixtures beside the repository")
def test_fixtures_byte_identical_to_shared_copy():
    ours, theirs = _files(FIXTURES), _files(SHARED)
    assert sorted(ours) == sorted(theirs)
    differing = [name for name in ours if ours[name] != theirs[name]]
    assert not differing, differing
