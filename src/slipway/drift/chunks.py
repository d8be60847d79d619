"""One chunk of the prediction log as numpy arrays, and a text column kept as codes.

The log reader (``drift/logs.py``) yields :class:`Chunk` s; the drift check counts them
(``drift/tally.py``) and the retrain window reads rows of them (``drift/window.py``). A text
column with few distinct values (a categorical feature, the model version) is a
:class:`Coded` column: integer codes into its distinct texts, as pyarrow's dictionary encoding
gives it, so counting it is a ``bincount`` and comparing it is an integer comparison, with no
Python string made per row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class Coded:
    """A text column as ``codes`` into its distinct ``texts``; code ``-1`` is a null."""

    codes: np.ndarray  # integers, one per row
    texts: tuple[str, ...]

    @classmethod
    def from_arrow(cls, column: pa.Array | pa.ChunkedArray) -> Coded:
        """A string column by pyarrow's dictionary encoding (nulls stay nulls)."""
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        encoded = column.dictionary_encode()
        codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
        return cls(codes.astype(np.int32, copy=False), tuple(encoded.dictionary.to_pylist()))

    @classmethod
    def of(cls, values: Sequence[str | None] | np.ndarray) -> Coded:
        """Texts (None for a null) as a coded column; a value that is not text by its ``str``."""
        texts: dict[str, int] = {}
        codes = np.empty(len(values), dtype=np.int32)
        for row, value in enumerate(values):
            codes[row] = -1 if value is None else texts.setdefault(str(value), len(texts))
        return cls(codes, tuple(texts))

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, row: int) -> str | None:
        code = int(self.codes[row])
        return None if code < 0 else self.texts[code]

    def take(self, picked: np.ndarray) -> Coded:
        """The rows ``picked`` (a boolean mask or positions)."""
        return Coded(self.codes[picked], self.texts)

    def matches(self, text: str) -> np.ndarray:
        """Whether each row reads ``text``."""
        if text not in self.texts:
            return np.zeros(len(self.codes), dtype=bool)
        return self.codes == self.texts.index(text)

    def counts(self) -> Counter[str | None]:
        """How many rows read each text, nulls under None (texts no row reads left out)."""
        tally = np.bincount(self.codes + 1, minlength=len(self.texts) + 1).tolist()
        counted: Counter[str | None] = Counter()
        for text, count in zip((None, *self.texts), tally, strict=True):
            if count:
                counted[text] += count  # two codes of one text (not pyarrow's) add up
        return counted

    def tolist(self) -> list[str | None]:
        return [self[row] for row in range(len(self.codes))]


@dataclass(frozen=True)
class Chunk:
    """Up to ``chunk_rows`` used predictions, one array entry per prediction, in log order.

    ``features`` maps each numeric feature to float64 (NaN for null) and each categorical one
    to a :class:`Coded` column; ``timestamp`` is ``datetime64[ms]`` in UTC.
    """

    features: dict[str, np.ndarray | Coded]
    probability: np.ndarray  # float64
    high_risk: np.ndarray  # bool
    release_id: np.ndarray  # object, str
    model_version: Coded
    timestamp: np.ndarray  # datetime64[ms]

    def __len__(self) -> int:
        return len(self.probability)
