"""Variants: many versions of a batch scored in one call.

`Evaluator.predict(variables, variants)` scores every example under V variants at once: a
chunk of R example rows becomes V*R rows (`expand`), the variables may change per row
(`variables`), and the V*R outputs are split back to `[V, R, ...]` (`split`). One batch
then serves the V prompts of a bank, the C candidate masks of the XPrompt search (their
variant lives in `xprompt/search.py`) or requests that each carry their own prompt.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..prompts import bank as bank_lib


class Variants:
    """One variant: the rows as they are (a plain evaluation)."""

    count = 1

    def variables(self, variables: Mapping[str, Any]) -> Mapping[str, Any]:
        """The variables every call of this set uses."""
        return variables

    def expand(self, features: Mapping[str, np.ndarray], indices: Sequence[int]
               ) -> Mapping[str, np.ndarray]:
        """`[R, ...]` features of the examples `indices` (padded to R rows) -> `[V*R, ...]`."""
        del indices
        return features

    def split(self, out: np.ndarray, rows: int) -> np.ndarray:
        """`[V*R, ...]` outputs -> `[V, R, ...]`."""
        del rows
        return np.asarray(out)[None]


SINGLE = Variants()


class PromptIds(Variants):
    """Every example once per prompt id of a PromptBank model (row `r*V + v` is example r
    with prompt `ids[v]`: the id token prepended, `prompts.bank.tile_for_prompts`)."""

    def __init__(self, model, ids: Sequence[int]):
        self.num = bank_lib.num_prompts(model)
        if not self.num:
            raise ValueError("prompt-id variants need a PromptedT5 whose prompt is a PromptBank")
        self.base = bank_lib.id_token_base(model)
        self.ids = list(ids)
        bank_lib.check_prompt_ids(self.ids, self.num, "evaluated prompt ids")
        self.count = len(self.ids)

    def expand(self, features, indices):
        del indices
        return bank_lib.tile_for_prompts(features, self.ids, self.base, self.num)

    def split(self, out, rows):
        out = np.asarray(out)
        return out.reshape((rows, self.count) + out.shape[1:]).swapaxes(0, 1)


class RowPromptIds(Variants):
    """Each example with its own prompt of a PromptBank model (`ids[i]` for example i; one
    variant): requests of many prompts answered in one batch."""

    def __init__(self, model, ids: Sequence[int]):
        self.num = bank_lib.num_prompts(model)
        if not self.num:
            raise ValueError("per-row prompt ids need a PromptedT5 whose prompt is a PromptBank")
        self.base = bank_lib.id_token_base(model)
        self.ids = bank_lib.check_prompt_ids(list(ids), self.num, "request prompt ids")

    def expand(self, features, indices):
        rows = next(iter(features.values())).shape[0]
        ids = np.zeros((rows,), np.int32)
        ids[:len(indices)] = self.ids[np.asarray(indices, np.int64)]
        return bank_lib.with_prompt_ids(features, ids, self.base, self.num)
