"""A synthetic text world for CPU-sized soft-prompt experiments.

* `grammar` / `tasks` - lexicon, sentence grammar and four SuperGLUE-shaped tasks
  (BoolQ-, RTE-, COPA-, WiC-like) with learnable rules and negated twins;
* `writer` - official-format SuperGLUE JSONL files (`ensure_world_data`);
* `corpus` - the text corpus (SentencePiece training, span corruption);
* `seqio_tasks` - seqio tasks `world_<task>` (no task name) and `world_<task>_prefixed`;
* `bench_tasks` - the quality benchmark's tasks: `world_<task>_heldout` (dev from train,
  test = the labelled validation file) and their k-shot train subsets (`bench/quality.py`);
* `paths` - the shipped SentencePiece model and pretrained T5 checkpoint;
* `pretrain` - the script that pretrains the shipped tiny T5.1.1.

Modules are imported on demand (`seqio_tasks` pulls in seqio / TensorFlow).
"""
