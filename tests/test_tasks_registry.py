"""Registration: names, TASKS.md, lazy/offline import, vocabulary, mixtures."""

import os
import pickle
import subprocess
import sys
import textwrap

import pytest

from _tasks_import import REPO_ROOT, T5_SPM, import_tasks
from tasks_testdata.superglue import write_superglue


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    root = write_superglue(tmp_path_factory.mktemp("superglue_reg"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XPROMPT_SUPERGLUE_DIR", str(root))
        mp.setenv("XPROMPT_T5_VOCAB", str(T5_SPM))
        yield import_tasks()


def test_default_names_are_registered(tasks):
    import seqio
    names = tasks.catalog.default_task_names()
    assert len(names) == len(set(names)) == 286  # + WSC True/False x 2, MRPC labelled test, AX-b x 2, AX-g x 2, GLUE v100 x 9
    registered = set(tasks.registered_task_names())
    assert set(names) <= registered
    for n in names:
        assert n in seqio.TaskRegistry.names()
    # T5X users' unversioned names are the TFDS v1.0.2 tasks.
    for alias in ["xprompt_super_glue_rte", "lester_super_glue_boolq",
                  "xprompt_nosentinel_super_glue_wsc"]:
        assert alias in registered
        assert tasks.task_info(alias).source == "v102"
        assert (seqio.get_mixture_or_task(alias).source.tfds_dataset.name
                == seqio.get_mixture_or_task(alias + "_v102").source.tfds_dataset.name)
    for n in ["xprompt_super_glue_rte_v102", "xprompt_super_glue_rte_local",
              "lester_super_glue_rte_v102", "lester_super_glue_rte_local",
              "xprompt_nosentinel_super_glue_wsc_local",
              "xprompt_super_glue_rte_local_32shot", "lester_glue_stsb_v200",
              "lester_glue_mnli_mismatched_local", "lester_scitail_v100_16shot"]:
        assert n in registered
    mixtures = tasks.catalog.mixture_names()
    assert len(mixtures) == 27  # + lester_glue_v100_proportional
    assert set(mixtures) <= set(tasks.registered_mixture_names())
    assert set(mixtures) <= set(seqio.MixtureRegistry.names())
    assert tasks.registry.mixture_tasks("xprompt_super_glue_v102_proportional") == (
        "xprompt_super_glue_boolq_v102", "xprompt_super_glue_cb_v102",
        "xprompt_super_glue_copa_v102", "xprompt_super_glue_multirc_v102",
        "xprompt_super_glue_rte_v102", "xprompt_super_glue_wic_v102",
        "xprompt_super_glue_wsc_v102")


def test_tasks_md_lists_the_registered_names(tasks):
    text = (REPO_ROOT / "tasks" / "TASKS.md").read_text(encoding="utf-8")
    assert text == tasks.catalog.markdown(), (
        "tasks/TASKS.md is stale: run `python -m xprompt_jax.tasks --write "
        "tasks/TASKS.md`")
    for name in tasks.catalog.default_task_names() + tasks.catalog.mixture_names():
        assert f"`{name}`" in text


def test_task_info(tasks):
    info = tasks.task_info("xprompt_super_glue_multirc_local_16shot")
    assert (info.benchmark, info.task, info.family, info.source) == (
        "super_glue", "multirc", "xprompt", "local")
    assert info.fewshot == tasks.registry.FewShotSpec(16, 0, "random")
    assert info.base == "xprompt_super_glue_multirc_local"
    with pytest.raises(KeyError, match="not a task registered"):
        tasks.task_info("super_glue_rte_v102")


def test_import_is_offline_and_lazy(tmp_path):
    """A fresh interpreter with sockets disabled imports and registers everything."""
    script = textwrap.dedent("""
        import socket
        def _no_network(*args, **kwargs):
            raise RuntimeError("network access during import")
        socket.socket.connect = _no_network
        socket.create_connection = _no_network
        socket.getaddrinfo = _no_network
        import sys
        sys.path.insert(0, sys.argv[1])
        from _tasks_import import import_tasks
        tasks = import_tasks()
        vocab = tasks.get_vocabulary()
        assert vocab._sentencepiece_model_file is None, "vocabulary resolved at import"
        assert vocab._model is None
        print(len(tasks.registered_task_names()))
    """)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("XPROMPT_")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    out = subprocess.run([sys.executable, "-c", script, str(REPO_ROOT / "tests")],
                         env=env, capture_output=True, text=True, timeout=300,
                         cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "286"


def test_vocab_path_resolution(tasks, monkeypatch):
    import gin
    monkeypatch.delenv("XPROMPT_T5_VOCAB")
    assert tasks.t5_vocab_path() == \
        "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"
    monkeypatch.setenv("XPROMPT_T5_VOCAB", "/local/spm.model")
    assert tasks.t5_vocab_path() == "/local/spm.model"
    gin.parse_config("xprompt_jax.tasks.t5_vocab_path.path = '/gin/spm.model'")
    try:
        assert tasks.t5_vocab_path() == "/gin/spm.model"
    finally:
        gin.clear_config()


def test_vocabulary_equals_plain_seqio_vocabulary(tasks):
    import seqio
    vocab = tasks.get_vocabulary()
    plain = seqio.SentencePieceVocabulary(str(T5_SPM), extra_ids=100)
    assert vocab.sentencepiece_model_file == str(T5_SPM)
    assert vocab == plain
    clone = pickle.loads(pickle.dumps(vocab))
    assert clone == plain
    assert clone.encode("<extra_id_0> yes") == plain.encode("<extra_id_0> yes")
    assert vocab.decode([32099] + plain.encode("yes")) == "<extra_id_0> yes"


def test_mixture_rates_use_train_sizes(tasks):
    import seqio
    mix = seqio.get_mixture_or_task("xprompt_super_glue_local_proportional")
    rates = {t.name: mix.get_rate(t) for t in mix.tasks}
    assert rates == {
        "xprompt_super_glue_boolq_local": 3, "xprompt_super_glue_cb_local": 4,
        "xprompt_super_glue_copa_local": 2, "xprompt_super_glue_multirc_local": 6,
        "xprompt_super_glue_rte_local": 5, "xprompt_super_glue_wic_local": 2,
        "xprompt_super_glue_wsc_local": 3}
    lester = seqio.get_mixture_or_task("lester_super_glue_local_proportional")
    # Lester (T5 wsc_simple) trains on the 2 label-True WSC examples only.
    assert lester.get_rate(
        seqio.get_mixture_or_task("lester_super_glue_wsc_local")) == 2
    few = seqio.get_mixture_or_task("xprompt_super_glue_local_4shot_proportional")
    rates = {t.name: few.get_rate(t) for t in few.tasks}
    assert rates["xprompt_super_glue_rte_local_4shot"] == 4
    assert rates["xprompt_super_glue_boolq_local_4shot"] == 3
    # MultiRC 4-shot = 4 questions, but the data has 3 (6 answers).
    assert rates["xprompt_super_glue_multirc_local_4shot"] == 6
    ds = mix.get_dataset({"inputs": 64, "targets": 8}, split="train", seed=0,
                         shuffle=True, num_epochs=1)
    ex = next(ds.as_numpy_iterator())
    assert ex["targets"][0] == 32099


def test_offline_tfds_failure_names_the_local_variant_and_its_variable(tasks, monkeypatch,
                                                                      tmp_path):
    """The README's `xprompt_super_glue_rte` reads TFDS; offline without TFDS's prepared
    data TFDS fails inside its download (`KeyError: splits is empty`, as a user met it).
    The error names the `_local` variant and XPROMPT_SUPERGLUE_DIR."""
    import seqio

    from xprompt_jax.errors import DataError

    def offline(self, *args, **kwargs):
        raise KeyError("splits is empty")  # what TFDS raised for the user, offline

    monkeypatch.setattr(seqio.TfdsDataSource, "get_dataset", offline)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    task = seqio.get_mixture_or_task("xprompt_super_glue_rte")
    with pytest.raises(DataError) as err:
        task.source.get_dataset("validation", shuffle=False)
    text = str(err.value)
    assert "\n" not in text and "super_glue/rte" in text and "splits is empty" in text
    assert "xprompt_super_glue_rte_local" in text and "XPROMPT_SUPERGLUE_DIR" in text
    assert str(tmp_path) in text
    glue = seqio.get_mixture_or_task("lester_glue_rte_v200")
    with pytest.raises(DataError, match="XPROMPT_GLUE_DIR"):
        glue.source.get_dataset("validation", shuffle=False)


def test_an_unreadable_default_vocabulary_names_xprompt_t5_vocab(tasks, monkeypatch, tmp_path):
    """With XPROMPT_T5_VOCAB unset the vocabulary is T5's on gs://t5-data, unreachable
    offline: the error names the variable (before: only the file). Offline is stood for by
    a default path that cannot be read. A vocabulary given by the user keeps its own
    error. The gin/t5x model vocabulary (T5Vocabulary) equals seqio's for T5X's check."""
    import seqio

    from xprompt_jax.errors import DataError

    vocab_module = tasks.vocab
    unreachable = str(tmp_path / "t5-data" / "sentencepiece.model")
    monkeypatch.setattr(vocab_module, "DEFAULT_VOCAB_PATH", unreachable)
    monkeypatch.delenv("XPROMPT_T5_VOCAB", raising=False)
    for vocab in (vocab_module.LazySentencePieceVocabulary(),
                  vocab_module.T5Vocabulary(unreachable, extra_ids=100)):
        with pytest.raises(DataError) as err:
            vocab.encode("hello")
        assert "XPROMPT_T5_VOCAB=/path/to/sentencepiece.model" in str(err.value)
        assert unreachable in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(Exception) as err:
        vocab_module.T5Vocabulary(str(tmp_path / "mine.model"), extra_ids=100).encode("x")
    assert not isinstance(err.value, DataError)
    ours = vocab_module.T5Vocabulary(str(T5_SPM), extra_ids=100)
    theirs = seqio.SentencePieceVocabulary(str(T5_SPM), extra_ids=100)
    assert ours == theirs and theirs == ours and ours.encode("hello") == theirs.encode("hello")
    assert pickle.loads(pickle.dumps(ours)) == theirs
