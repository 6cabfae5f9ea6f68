"""Quantile summaries: what a device sends about a feature's distribution, mergeable on the server.

A ``QuantileSummary`` wraps an Apache DataSketches KLL sketch of 32-bit floats. A device
builds one per feature from its row reservoir of a summary period, sends it as text in
its telemetry, and the server merges the summaries of many devices and buckets into
sketches of ``k = SERVER_K`` and scores them (``edgefleet.drift.stats.ks``,
``wasserstein``)::

    part_a = QuantileSummary.of(rows_a[:, 3])          # on a device
    payload = part_a.to_text()                         # base64, in the telemetry JSON
    fleet = QuantileSummary.merge_all(                 # on the server
        QuantileSummary.from_text(text) for text in payloads
    )
    fleet.n, fleet.quantiles(np.array([0.05, 0.5, 0.95]))

Only numpy is needed to import this module: ``datasketches`` is optional, because 32-bit
devices have no wheel of it. Without it ``HAVE_KLL`` is ``False``, no summary can be
built or read (``SummaryError`` names the missing package), and devices send the
profile's bins alone; the server then scores KS and Wasserstein from bins
(``stats.ks_from_bins``), flagged as approximate.

Accuracy. A KLL sketch is a weighted sample of the data (retained items of weight
``2**level``); its CDF differs from the data's by at most ``rank_error`` (DataSketches'
single-sided normalised rank error, 99th percentile: 1.3 % of rank at k=200, 0.14 % at
k=2000), and merged sketches keep that guarantee. While a sketch holds fewer than about
``k`` values it is exact (it holds them all), which is why a device's summary of its
24-row reservoir loses nothing whatever its k. Values are held as 32-bit floats;
non-finite values (NaN, +-inf, and numbers beyond the float32 range) are not summarised,
so ``n`` counts finite values only.

Why the server merges into k=2000 and not 200: KS needs only rank accuracy (0.01 at
k=200 is within its 0.02 tolerance), but Wasserstein-1 integrates quantile errors, and
for a 0.2 sigma shift of 100,000 normal values two k=200 sketches were off by 6 % on
average and up to 15 % (40 draws; 5 % is the tolerance). At k=2000: 0.7 % on average,
2.1 % at worst. A merged k=2000 sketch of 100,000 values is 21 KB, on the server only.

Wire format (``to_bytes``): 4 bytes ``b"EFQ\\x01"`` (what this is and its format
version: a DataSketches KLL sketch of float32) followed by the sketch's own serialisation.
``from_bytes`` validates every field of it, because the C++ deserialiser trusts its
input and a malformed one can crash the process: structure, sizes, level layout, total
weight against ``n``, finite and ordered items. At most ``MAX_SUMMARY_BYTES`` (1 MiB).

Serialized size of a k=200 summary of standard normal values, measured with
datasketches 5.2 (the same for every draw: the layout depends on n only)::

    values      to_bytes   to_text (base64)
    24             132 B       176 chars
    100            436 B       584 chars
    1,000        1,340 B     1,788 chars
    100,000      2,396 B     3,196 chars

Up to ``k`` values a summary is 4 bytes a value plus 36 of header (so k does not matter
to a device's 24-row reservoir: 132 bytes per feature); past ``k`` the size grows with
log(n) only. The texts of 101 such summaries (100 features and confidence) in one JSON
object are 19,283 bytes, 10,986 gzipped. At k=2000 (the server's merges) 100,000 values
take 21,076 bytes, 10 million 23,944.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import itertools
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgefleet.drift.errors import InsufficientDataError, SummaryError

try:
    import datasketches as _datasketches  # type: ignore[import-untyped]
except ImportError:  # no wheel for this platform (32-bit ARM): devices send bins only
    _datasketches = None

__all__ = [
    "HAVE_KLL",
    "MAX_SUMMARY_BYTES",
    "SERVER_K",
    "QuantileSummary",
    "SummaryError",
]

#: Whether quantile summaries can be built and read here (``datasketches`` imports).
HAVE_KLL: bool = _datasketches is not None

#: k of the sketches the server merges into (and the default k): rank error about 0.14 %
#: (99th percentile); Wasserstein-1 needs it (see the module docstring).
SERVER_K = 2000

#: Largest serialized summary accepted (a k=2000 sketch of a billion values is ~24 KB).
MAX_SUMMARY_BYTES = 1 << 20

FloatArray = npt.NDArray[np.float64]

# Envelope of ``to_bytes``: "EFQ" and the format version, 1 = DataSketches KLL, float32.
_MAGIC = b"EFQ"
_FORMAT_KLL_FLOAT32 = 1
_ENVELOPE = len(_MAGIC) + 1

# The DataSketches KLL serialisation (identical in its C++, Java and Python releases):
# an 8-byte preamble (preamble ints, serial version, family, flags, k as uint16, m,
# unused), then, when the sketch holds two or more values, n (uint64), min k (uint16),
# the number of levels (uint8), one unused byte, the start of each level in the item
# buffer (uint32 each; the end of the last level is the capacity implied by k and the
# number of levels), min, max, and the retained items of level 0, 1, ...
_KLL_FAMILY = 15
_KLL_M = 8
_KLL_MIN_K = 8
_KLL_MAX_LEVELS = 61
_FLAG_EMPTY = 1
_FLAG_LEVEL_ZERO_SORTED = 2
_FLAG_SINGLE_ITEM = 4
_PREAMBLE = struct.Struct("<BBBBHBB")
_FULL_HEADER = struct.Struct("<QHBB")
_ITEM = np.dtype("<f4")
_FLOAT = struct.Struct("<f")
_MIN_MAX = struct.Struct("<ff")


def _require_kll() -> Any:
    """The ``datasketches`` module; ``SummaryError`` when it is not installed."""
    if not HAVE_KLL or _datasketches is None:
        raise SummaryError(
            "quantile summaries need the 'datasketches' package, which is not installed "
            "here (no wheel for this platform?): pip install 'datasketches>=5.1', or score "
            "KS and Wasserstein from bins (edgefleet.drift.stats.ks_from_bins)",
            details={"module": "datasketches"},
        )
    return _datasketches


def _level_capacity(k: int, depth: int) -> int:
    """Items a KLL level ``depth`` levels below the top may hold: about k * (2/3)**depth,
    rounded half up, computed in integers as DataSketches does (depth split in two past 30)."""

    def scaled(k: int, depth: int) -> int:
        return (((2 * k) << depth) // int(3**depth) + 1) >> 1

    if depth <= 30:
        return max(_KLL_M, scaled(k, depth))
    half = depth // 2
    return max(_KLL_M, scaled(scaled(k, half), depth - half))


@functools.cache
def _total_capacity(k: int, num_levels: int) -> int:
    return sum(_level_capacity(k, num_levels - height - 1) for height in range(num_levels))


@dataclass(frozen=True)
class _Layout:
    """Where things are in a serialized KLL float sketch (see ``_check_kll``)."""

    n: int
    levels: tuple[int, ...]  # start of each level in the item buffer, then its capacity
    items_at: int  # byte offset of the first retained item
    minimum_at: int | None  # byte offset of min and max (None: a single value, it is both)


def _check_kll(data: bytes) -> _Layout:
    """Validate a serialized KLL float sketch completely, without the C++ library (whose
    reader trusts its input and can crash on a malformed one).

    Raises:
        SummaryError: anything about it is inconsistent; the message names what.
    """
    size = len(data)
    if size < _PREAMBLE.size:
        raise SummaryError(f"quantile summary truncated: {size} bytes, the header alone is 8")
    preamble_ints, serial, family, flags, k, m, unused = _PREAMBLE.unpack_from(data)
    if family != _KLL_FAMILY:
        raise SummaryError(
            f"not a KLL sketch: sketch family {family} (KLL is {_KLL_FAMILY}); "
            "another kind of DataSketches sketch?"
        )
    if m != _KLL_M or unused != 0 or flags & ~7:
        raise SummaryError(f"malformed KLL sketch header (m={m}, flags={flags:#x})")
    if k < _KLL_MIN_K:
        raise SummaryError(f"malformed KLL sketch: k={k} is below the minimum {_KLL_MIN_K}")
    if flags & _FLAG_EMPTY:
        if preamble_ints != 2 or serial != 1 or flags != _FLAG_EMPTY or size != _PREAMBLE.size:
            raise SummaryError(f"malformed empty KLL sketch ({size} bytes, flags={flags:#x})")
        return _Layout(0, (0,), _PREAMBLE.size, None)
    if flags & _FLAG_SINGLE_ITEM:
        if preamble_ints != 2 or serial != 2:
            raise SummaryError("malformed single-value KLL sketch header")
        if size != _PREAMBLE.size + _ITEM.itemsize:
            raise SummaryError(
                f"single-value KLL sketch of {size} bytes, expected "
                f"{_PREAMBLE.size + _ITEM.itemsize}: not a sketch of 32-bit floats?"
            )
        if not math.isfinite(_FLOAT.unpack_from(data, _PREAMBLE.size)[0]):
            raise SummaryError("KLL sketch holds a non-finite value")
        return _Layout(1, (0, 1), _PREAMBLE.size, None)
    if preamble_ints != 5 or serial != 1:
        raise SummaryError(
            f"unsupported KLL sketch layout (preamble {preamble_ints}, serial version {serial})"
        )
    levels_at = _PREAMBLE.size + _FULL_HEADER.size
    if size < levels_at:
        raise SummaryError(f"KLL sketch truncated: {size} bytes")
    n, min_k, num_levels, unused = _FULL_HEADER.unpack_from(data, _PREAMBLE.size)
    if unused != 0 or not 1 <= num_levels <= _KLL_MAX_LEVELS or not _KLL_MIN_K <= min_k <= k:
        raise SummaryError(f"malformed KLL sketch (levels={num_levels}, k={k}, min k={min_k})")
    if n < 2:
        raise SummaryError(f"malformed KLL sketch: n={n} in the layout of two or more values")
    minimum_at = levels_at + 4 * num_levels
    items_at = minimum_at + 2 * _ITEM.itemsize
    if size < items_at:
        raise SummaryError(f"KLL sketch truncated: {size} bytes")
    capacity = _total_capacity(k, num_levels)
    levels = (*struct.unpack_from(f"<{num_levels}I", data, levels_at), capacity)
    if levels[0] >= capacity or any(a > b for a, b in itertools.pairwise(levels)):
        raise SummaryError("malformed KLL sketch: its levels are out of order")
    retained = capacity - levels[0]
    if size != items_at + retained * _ITEM.itemsize:
        raise SummaryError(
            f"KLL sketch of {size} bytes, its header says "
            f"{items_at + retained * _ITEM.itemsize}: truncated, padded, or not a sketch of "
            "32-bit floats (a kll_doubles_sketch?)"
        )
    weight = sum((b - a) << h for h, (a, b) in enumerate(itertools.pairwise(levels)))
    if weight != n:
        raise SummaryError(f"malformed KLL sketch: its items weigh {weight}, its n is {n}")
    minimum, maximum = _MIN_MAX.unpack_from(data, minimum_at)
    items = np.frombuffer(data, dtype=_ITEM, count=retained, offset=items_at)
    # min/max propagate NaN and are inf when an item is: finite bounds mean finite items.
    low, high = float(items.min()), float(items.max())
    if not (math.isfinite(minimum) and math.isfinite(maximum)):
        raise SummaryError("KLL sketch holds a non-finite value")
    if not (minimum <= low and high <= maximum and math.isfinite(low + high)):
        raise SummaryError("malformed KLL sketch: items outside its own min and max")
    # Levels above 0 are sorted (level 0 too when flagged): a descent only at a level break.
    sorted_from = 0 if flags & _FLAG_LEVEL_ZERO_SORTED else levels[1] - levels[0]
    tail = items[sorted_from:]
    if tail.size > 1:
        descents = np.flatnonzero(tail[1:] < tail[:-1]) + (sorted_from + 1)
        if not {int(d) for d in descents} <= {b - levels[0] for b in levels}:
            raise SummaryError("malformed KLL sketch: a level is not sorted")
    return _Layout(int(n), levels, items_at, minimum_at)


@dataclass(frozen=True)
class _Sample:
    """A sketch as the weighted sample it is: sorted values, cumulative weights, n."""

    values: FloatArray  # sorted ascending
    cumulative: FloatArray  # cumulative[i] = total weight of values[: i + 1]
    n: int
    minimum: float
    maximum: float


def _sample_of(data: bytes, layout: _Layout) -> _Sample:
    """The weighted sample of a sketch ``_check_kll`` accepted: retained items of level h
    weigh 2**h. This is all a KLL sketch knows; its CDF and quantiles are this sample's."""
    levels = np.asarray(layout.levels, dtype=np.int64)
    populations = np.diff(levels)
    count = int(populations.sum())
    items = np.frombuffer(data, dtype=_ITEM, count=count, offset=layout.items_at)
    values = items.astype(np.float64)
    if layout.minimum_at is None:
        minimum = maximum = float(values[0]) if values.size else math.nan
    else:
        minimum, maximum = _MIN_MAX.unpack_from(data, layout.minimum_at)
    weights = np.repeat(np.ldexp(1.0, np.arange(populations.size)), populations)
    order = np.argsort(values, kind="stable")
    return _Sample(values[order], np.cumsum(weights[order]), layout.n, minimum, maximum)


@dataclass(frozen=True, eq=False)
class QuantileSummary:
    """A mergeable summary of one feature's values (a KLL sketch of float32).

    Immutable: ``merged`` and ``merge_all`` return new summaries. Build with ``of``,
    ``empty``, ``from_bytes`` or ``from_text``, not with the constructor.
    """

    _sketch: Any  # datasketches.kll_floats_sketch, never modified once wrapped

    @classmethod
    def of(cls, values: npt.ArrayLike, k: int = SERVER_K) -> QuantileSummary:
        """The summary of ``values`` (any shape, flattened); non-finite values are left out.

        Raises:
            SummaryError: ``datasketches`` is not installed, or ``k`` is outside [8, 65535].
        """
        module = _require_kll()
        with np.errstate(over="ignore"):  # beyond float32's range: inf, left out below
            data = np.asarray(values, dtype=np.float64).astype(np.float32).ravel()
        sketch = cls._new_sketch(module, k)
        finite = data[np.isfinite(data)]
        if finite.size:
            sketch.update(np.ascontiguousarray(finite))
        return cls(sketch)

    @classmethod
    def empty(cls, k: int = SERVER_K) -> QuantileSummary:
        """A summary of nothing (``n == 0``), the identity of ``merged``.

        Raises:
            SummaryError: ``datasketches`` is not installed, or ``k`` is outside [8, 65535].
        """
        return cls(cls._new_sketch(_require_kll(), k))

    @staticmethod
    def _new_sketch(module: Any, k: int) -> Any:
        if not _KLL_MIN_K <= k <= 0xFFFF:
            raise SummaryError(f"k must be between {_KLL_MIN_K} and 65535, not {k}")
        return module.kll_floats_sketch(k)

    @classmethod
    def from_bytes(cls, data: bytes, *, trusted: bool = False) -> QuantileSummary:
        """Read a summary written by ``to_bytes``.

        ``trusted=True`` is for bytes this server already validated: what it stored
        after the telemetry route's check (``fleet.domain.SketchText``) or wrote itself.
        The envelope is still checked, the sketch's own fields are not (a fifth of the
        cost of a look over a big fleet went to checking them again).

        Raises:
            SummaryError: ``data`` is not a well-formed summary (garbage, truncated, another
                kind or item type of sketch, over ``MAX_SUMMARY_BYTES``), or
                ``datasketches`` is not installed.
        """
        module = _require_kll()
        if not isinstance(data, bytes | bytearray | memoryview):
            raise SummaryError(f"a quantile summary is bytes, not {type(data).__name__}")
        data = bytes(data)
        if len(data) > MAX_SUMMARY_BYTES:
            raise SummaryError(
                f"quantile summary of {len(data)} bytes refused: the limit is "
                f"{MAX_SUMMARY_BYTES} (a k=2000 sketch of a billion values is about 24 KB)"
            )
        if len(data) < _ENVELOPE or data[: len(_MAGIC)] != _MAGIC:
            raise SummaryError("not an edgefleet quantile summary (it does not start with EFQ)")
        if data[len(_MAGIC)] != _FORMAT_KLL_FLOAT32:
            raise SummaryError(
                f"quantile summary format {data[len(_MAGIC)]} is not known to this edgefleet "
                f"(it reads format {_FORMAT_KLL_FLOAT32}); upgrade the server?"
            )
        payload = data[_ENVELOPE:]
        if trusted:
            try:
                sketch = module.kll_floats_sketch.deserialize(payload)
            except (ValueError, RuntimeError) as exc:
                raise SummaryError(f"unreadable KLL sketch: {exc}") from exc
            summary = cls(sketch)
            summary.__dict__["_bytes"] = data
            return summary
        layout = _check_kll(payload)
        try:
            sketch = module.kll_floats_sketch.deserialize(payload)
        except (ValueError, RuntimeError) as exc:  # pragma: no cover - _check_kll checks first
            raise SummaryError(f"unreadable KLL sketch: {exc}") from exc
        # What the library read must be what was sent, byte for byte.
        if sketch.serialize() != payload:  # pragma: no cover - _check_kll checks first
            raise SummaryError("KLL sketch does not read back as it was written")
        summary = cls(sketch)
        # Already known: keep them (see _bytes and _layout).
        summary.__dict__["_bytes"] = data
        summary.__dict__["_layout"] = layout
        return summary

    def to_bytes(self) -> bytes:
        """The summary's wire form (see the module docstring), read by ``from_bytes``."""
        return self._bytes

    @classmethod
    def from_text(cls, text: str, *, trusted: bool = False) -> QuantileSummary:
        """Read a summary written by ``to_text`` (standard base64 of ``to_bytes``);
        ``trusted`` as for ``from_bytes``.

        Raises:
            SummaryError: not valid base64, too long, or not a well-formed summary.
        """
        if not isinstance(text, str):
            raise SummaryError(f"a quantile summary's text is a string, not {type(text).__name__}")
        if len(text) > 4 * (-(-MAX_SUMMARY_BYTES // 3)):
            raise SummaryError(
                f"quantile summary text of {len(text)} characters refused: the limit is "
                f"{MAX_SUMMARY_BYTES} bytes once decoded"
            )
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SummaryError(f"quantile summary text is not valid base64: {exc}") from exc
        return cls.from_bytes(data, trusted=trusted)

    def to_text(self) -> str:
        """``to_bytes`` as standard base64, for JSON."""
        return base64.b64encode(self._bytes).decode("ascii")

    def merged(self, other: QuantileSummary) -> QuantileSummary:
        """A new summary of both summaries' values (this one's k); neither is changed.

        Raises:
            SummaryError: ``other`` is not a ``QuantileSummary``.
        """
        if not isinstance(other, QuantileSummary):
            raise SummaryError(f"cannot merge a quantile summary with {type(other).__name__}")
        sketch = copy.copy(self._sketch)
        sketch.merge(other._sketch)
        return QuantileSummary(sketch)

    @staticmethod
    def merge_all(parts: Iterable[QuantileSummary], k: int = SERVER_K) -> QuantileSummary:
        """One summary of all ``parts``' values, a sketch of ``k`` (empty for no parts).

        Merge order changes which items are kept, not the accuracy guarantee.

        Raises:
            SummaryError: a part is not a ``QuantileSummary``, ``datasketches`` is not
                installed, or ``k`` is outside [8, 65535].
        """
        sketch = QuantileSummary._new_sketch(_require_kll(), k)
        for part in parts:
            if not isinstance(part, QuantileSummary):
                raise SummaryError(f"cannot merge a quantile summary with {type(part).__name__}")
            sketch.merge(part._sketch)
        return QuantileSummary(sketch)

    @property
    def k(self) -> int:
        """The sketch's size and accuracy parameter."""
        return int(self._sketch.k)

    @property
    def n(self) -> int:
        """How many values the summary stands for."""
        return int(self._sketch.n)

    @property
    def is_empty(self) -> bool:
        return self.n == 0

    @property
    def min(self) -> float:
        """The smallest value summarised (exact).

        Raises:
            InsufficientDataError: the summary is empty.
        """
        self._require_values()
        return float(self._sketch.get_min_value())

    @property
    def max(self) -> float:
        """The largest value summarised (exact).

        Raises:
            InsufficientDataError: the summary is empty.
        """
        self._require_values()
        return float(self._sketch.get_max_value())

    @property
    def rank_error(self) -> float:
        """Bound on the CDF's error, as a share of n (99th percentile, single-sided)."""
        return float(self._sketch.normalized_rank_error(False))

    def cdf(self, points: npt.ArrayLike) -> FloatArray:
        """Estimated P(X <= x) at each of ``points`` (any shape; NaN gives NaN).

        Points are rounded to float32 like the values were, so ``cdf(v)`` counts ``v``.

        Raises:
            InsufficientDataError: the summary is empty.
        """
        sample = self._nonempty_sample()
        x = np.asarray(points, dtype=np.float64)
        with np.errstate(over="ignore"):
            rounded = x.astype(np.float32).astype(np.float64)
        return _step_cdf(sample, rounded)

    def support(self) -> FloatArray:
        """The distinct values the summary retains, sorted: where its CDF steps.

        Two summaries' CDFs differ most, and their difference changes slope, only at
        these points, which is what ``stats.ks`` and ``stats.wasserstein`` rely on.

        Raises:
            InsufficientDataError: the summary is empty.
        """
        return np.unique(self._nonempty_sample().values)

    def quantiles(self, ranks: npt.ArrayLike) -> FloatArray:
        """Estimated quantiles: for each rank u in [0, 1], the smallest retained value whose
        estimated CDF reaches u (the generalised inverse of ``cdf``).

        Raises:
            InsufficientDataError: the summary is empty.
            ValueError: a rank is outside [0, 1] or NaN.
        """
        sample = self._nonempty_sample()
        u = np.asarray(ranks, dtype=np.float64)
        if not np.all((u >= 0.0) & (u <= 1.0)):
            raise ValueError("ranks must lie in [0, 1]")
        return _step_quantiles(sample, u)

    def __repr__(self) -> str:
        if self.is_empty:
            return f"QuantileSummary(n=0, k={self.k})"
        return f"QuantileSummary(n={self.n}, k={self.k}, min={self.min:g}, max={self.max:g})"

    # What the summary holds, worked out once (from_bytes hands in what it validated).
    @functools.cached_property
    def _bytes(self) -> bytes:
        return _MAGIC + bytes([_FORMAT_KLL_FLOAT32]) + bytes(self._sketch.serialize())

    @functools.cached_property
    def _layout(self) -> _Layout:
        return _check_kll(self._bytes[_ENVELOPE:])

    @functools.cached_property
    def _sample(self) -> _Sample:
        return _sample_of(self._bytes[_ENVELOPE:], self._layout)

    def _require_values(self) -> None:
        if self.is_empty:
            raise InsufficientDataError("the quantile summary is empty (n=0)")

    def _nonempty_sample(self) -> _Sample:
        self._require_values()
        return self._sample


def _step_cdf(sample: _Sample, x: FloatArray) -> FloatArray:
    """The weighted sample's CDF (a right-continuous step function) at ``x``; NaN at NaN."""
    index = np.searchsorted(sample.values, x, side="right")
    below = np.concatenate(([0.0], sample.cumulative))[index]
    return np.where(np.isnan(x), np.nan, below / sample.n)


def _step_quantiles(sample: _Sample, u: FloatArray) -> FloatArray:
    """The weighted sample's generalised inverse CDF at ranks ``u`` (as DataSketches'
    inclusive quantiles: the first value whose cumulative weight reaches ceil(u * n))."""
    index = np.searchsorted(sample.cumulative, np.ceil(u * sample.n), side="left")
    return sample.values[np.minimum(index, sample.values.size - 1)]
