"""Quantile summaries: building, wire form, validation of what arrives, merging, queries."""

from __future__ import annotations

import base64
import importlib.util
import itertools
import struct
import sys
from pathlib import Path

import datasketches
import numpy as np
import pytest

from edgefleet.drift import sketch
from edgefleet.drift.errors import InsufficientDataError, SummaryError
from edgefleet.drift.sketch import MAX_SUMMARY_BYTES, SERVER_K, QuantileSummary

SIZES = [0, 1, 2, 24, 199, 200, 201, 1_000, 20_000]


def library_sketch(summary: QuantileSummary) -> datasketches.kll_floats_sketch:
    """The DataSketches sketch inside a summary's wire form (the envelope is 4 bytes)."""
    return datasketches.kll_floats_sketch.deserialize(summary.to_bytes()[4:])


def with_envelope(payload: bytes) -> bytes:
    return b"EFQ\x01" + payload


def ecdf(data: np.ndarray, points: np.ndarray) -> np.ndarray:
    ordered = np.sort(data.astype(np.float32).astype(np.float64))
    return np.searchsorted(ordered, points, side="right") / ordered.size


# --- building and reading back ---------------------------------------------------------


@pytest.mark.parametrize("n", SIZES)
def test_round_trip_through_bytes_and_text_keeps_everything(n: int) -> None:
    values = np.random.default_rng(n).normal(size=n)
    summary = QuantileSummary.of(values)

    for copy in (
        QuantileSummary.from_bytes(summary.to_bytes()),
        QuantileSummary.from_text(summary.to_text()),
        # What the server stored after checking it reads the same without the check.
        QuantileSummary.from_text(summary.to_text(), trusted=True),
    ):
        assert copy.to_bytes() == summary.to_bytes()
        assert copy.n == n and copy.k == SERVER_K and copy.is_empty == (n == 0)
        if n:
            assert copy.min == summary.min == float(np.float32(values.min()))
            assert copy.max == summary.max == float(np.float32(values.max()))
            grid = np.linspace(-3, 3, 61)
            np.testing.assert_array_equal(copy.cdf(grid), summary.cdf(grid))


@pytest.mark.parametrize("k", [8, 9, 50, 200, 1_000])
@pytest.mark.parametrize("n", [2, 24, 3_000, 60_000])
def test_cdf_and_quantiles_are_the_library_s_own(k: int, n: int) -> None:
    # The queries read the sketch's weighted sample in numpy; they must give exactly what
    # DataSketches gives (inclusive ranks), and every k's level layout must validate.
    rng = np.random.default_rng(k * n)
    summary = QuantileSummary.from_bytes(QuantileSummary.of(rng.gamma(2.0, size=n), k=k).to_bytes())
    library = library_sketch(summary)
    points = np.unique(np.concatenate([rng.gamma(2.0, size=200), [0.0, 1e9]]).astype(np.float32))
    ranks = np.concatenate([[0.0, 1.0], rng.uniform(size=200)])

    np.testing.assert_array_equal(
        summary.cdf(points), np.array(library.get_cdf(list(points), True))[:-1]
    )
    np.testing.assert_array_equal(
        summary.quantiles(ranks), np.array(library.get_quantiles(list(ranks), True))
    )


def test_small_summaries_are_exact() -> None:
    summary = QuantileSummary.of([3.0, 1.0, 4.0, 1.0, 5.0])

    np.testing.assert_array_equal(
        summary.cdf([0.0, 1.0, 2.0, 4.0, 5.0, 9.0]), [0.0, 0.4, 0.4, 0.8, 1.0, 1.0]
    )
    np.testing.assert_array_equal(summary.quantiles([0.0, 0.4, 0.41, 0.5, 1.0]), [1, 1, 3, 3, 5])
    assert (summary.n, summary.min, summary.max) == (5, 1.0, 5.0)


def test_cdf_takes_any_shape_counts_the_value_asked_about_and_gives_nan_at_nan() -> None:
    summary = QuantileSummary.of([0.1, 0.2, 0.3, 0.4])

    result = summary.cdf([[0.1, 0.2], [np.nan, np.inf]])

    assert result.shape == (2, 2)
    np.testing.assert_array_equal(result, [[0.25, 0.5], [np.nan, 1.0]])
    assert summary.cdf(-np.inf)[()] == 0.0


def test_non_finite_values_are_left_out() -> None:
    summary = QuantileSummary.of([1.0, np.nan, np.inf, -np.inf, 1e300, -1e300, 2.0])

    assert (summary.n, summary.min, summary.max) == (2, 1.0, 2.0)
    assert QuantileSummary.of([np.nan, np.inf]).is_empty


def test_empty_summaries_refuse_questions_they_cannot_answer() -> None:
    empty = QuantileSummary.empty()

    assert empty.n == 0 and empty.is_empty and repr(empty) == f"QuantileSummary(n=0, k={SERVER_K})"
    assert QuantileSummary.from_text(empty.to_text()).is_empty
    for question in (
        lambda: empty.min,
        lambda: empty.max,
        lambda: empty.cdf([0.0]),
        lambda: empty.quantiles([0.5]),
    ):
        with pytest.raises(InsufficientDataError, match="empty"):
            question()


def test_ranks_outside_the_unit_interval_are_refused() -> None:
    summary = QuantileSummary.of([1.0, 2.0])
    for bad in ([-0.1], [1.5], [np.nan]):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            summary.quantiles(bad)


@pytest.mark.parametrize("k", [0, 7, 65_536])
def test_k_out_of_range_is_refused(k: int) -> None:
    with pytest.raises(SummaryError, match="k must be"):
        QuantileSummary.of([1.0], k=k)
    with pytest.raises(SummaryError, match="k must be"):
        QuantileSummary.merge_all([], k=k)


# --- what arrives from devices ----------------------------------------------------------


def other_sketches() -> dict[str, bytes]:
    rng = np.random.default_rng(7)
    values = rng.normal(size=500)
    doubles = datasketches.kll_doubles_sketch(200)
    doubles_one = datasketches.kll_doubles_sketch(200)
    doubles_one.update(1.5)
    req = datasketches.req_floats_sketch(12)
    classic = datasketches.quantiles_floats_sketch(128)
    tdigest = datasketches.tdigest_float(100)
    for value in values:
        for other in (doubles, req, classic, tdigest):
            other.update(float(value))
    hll = datasketches.hll_sketch(12)
    hll.update("a")
    negative_ints = datasketches.kll_ints_sketch(200)
    for value in rng.integers(-50, 50, size=300):
        negative_ints.update(int(value))
    return {
        "kll_doubles": doubles.serialize(),
        "kll_doubles_single": doubles_one.serialize(),
        "req": req.serialize(),
        "classic_quantiles": classic.serialize(),
        "tdigest": tdigest.serialize(),
        "hll": hll.serialize_compact(),
        "kll_ints": negative_ints.serialize(),
    }


@pytest.mark.parametrize("kind", sorted(other_sketches()))
def test_another_kind_of_sketch_is_refused(kind: str) -> None:
    with pytest.raises(SummaryError):
        QuantileSummary.from_bytes(with_envelope(other_sketches()[kind]))


@pytest.mark.parametrize("trusted", [False, True])
def test_a_bare_sketch_without_the_envelope_is_refused(trusted: bool) -> None:
    bare = QuantileSummary.of(np.arange(50.0)).to_bytes()[4:]
    with pytest.raises(SummaryError, match="EFQ"):
        QuantileSummary.from_bytes(bare, trusted=trusted)


def test_an_unknown_format_version_says_so() -> None:
    data = bytearray(QuantileSummary.of([1.0, 2.0]).to_bytes())
    data[3] = 2
    with pytest.raises(SummaryError, match="format 2 is not known"):
        QuantileSummary.from_bytes(bytes(data))


@pytest.mark.parametrize("n", [1, 2, 24, 1_000])
def test_every_truncation_and_padding_is_refused(n: int) -> None:
    data = QuantileSummary.of(np.random.default_rng(n).normal(size=n)).to_bytes()
    for length in range(len(data)):
        with pytest.raises(SummaryError):
            QuantileSummary.from_bytes(data[:length])
    for extra in (b"\x00", b"\x00" * 4, b"\x00" * 8):
        with pytest.raises(SummaryError):
            QuantileSummary.from_bytes(data + extra)


def test_garbage_is_refused() -> None:
    rng = np.random.default_rng(3)
    for size in range(0, 300, 7):
        garbage = rng.integers(0, 256, size=size, dtype=np.uint8).tobytes()
        for data in (garbage, with_envelope(garbage)):
            with pytest.raises(SummaryError):
                QuantileSummary.from_bytes(data)


def full_sketch_bytes() -> bytearray:
    """A multi-level sketch's wire form (its levels start at byte 4 + 20)."""
    values = np.random.default_rng(11).normal(size=5_000)
    return bytearray(QuantileSummary.of(values).to_bytes())


def test_levels_that_would_make_the_library_read_out_of_bounds_are_refused() -> None:
    # The C++ reader trusts the levels array; a start beyond the capacity makes it read
    # (and allocate) billions of items. The check must come first.
    data = full_sketch_bytes()
    struct.pack_into("<I", data, 4 + 20, 0xFFFFFF00)
    with pytest.raises(SummaryError, match="levels are out of order"):
        QuantileSummary.from_bytes(bytes(data))


def test_a_count_that_disagrees_with_the_items_weights_is_refused() -> None:
    data = full_sketch_bytes()
    (n,) = struct.unpack_from("<Q", data, 4 + 8)
    struct.pack_into("<Q", data, 4 + 8, n + 1)
    with pytest.raises(SummaryError, match="weigh"):
        QuantileSummary.from_bytes(bytes(data))


def test_non_finite_or_disordered_items_are_refused() -> None:
    data = full_sketch_bytes()
    items_at = len(data) - 4 * library_sketch(QuantileSummary.from_bytes(bytes(data))).num_retained
    for position, value, message in (
        (len(data) - 4, np.nan, "non-finite|outside"),
        (len(data) - 4, np.inf, "non-finite|outside"),
        (items_at - 8, np.nan, "non-finite"),  # the minimum
        (len(data) - 4, -1e30, "not sorted|outside"),  # the top level's last item
    ):
        broken = bytearray(data)
        struct.pack_into("<f", broken, position, value)
        with pytest.raises(SummaryError, match=message):
            QuantileSummary.from_bytes(bytes(broken))


def test_random_corruption_never_crashes_and_what_is_accepted_is_consistent() -> None:
    # A corrupted item value can still be a valid sketch (there is no checksum); anything
    # accepted must then be a sketch the library reads back byte for byte, with a CDF.
    rng = np.random.default_rng(5)
    originals = [bytes(full_sketch_bytes()), QuantileSummary.of(rng.normal(size=30)).to_bytes()]
    refused = 0
    for trial in range(2_000):
        data = bytearray(originals[trial % 2])
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(4, len(data)))] = int(rng.integers(256))
        try:
            summary = QuantileSummary.from_bytes(bytes(data))
        except SummaryError:
            refused += 1
            continue
        assert library_sketch(summary).serialize() == bytes(data[4:])
        cdf = summary.cdf(np.linspace(-5, 5, 11))
        assert np.all(np.diff(cdf) >= 0) and cdf[-1] <= 1.0
    assert refused > 1_000


def test_oversized_input_is_refused_before_it_is_read() -> None:
    with pytest.raises(SummaryError, match="refused"):
        QuantileSummary.from_bytes(b"EFQ\x01" + bytes(MAX_SUMMARY_BYTES))
    with pytest.raises(SummaryError, match="refused"):
        QuantileSummary.from_text("A" * (2 * MAX_SUMMARY_BYTES))


@pytest.mark.parametrize(
    "text",
    ["not base64!", "RUZRAQ", "RUZRAQ=", "ÄÖÜ", "RUZRAQ==\n", ""],
)
def test_bad_text_is_refused(text: str) -> None:
    with pytest.raises(SummaryError):
        QuantileSummary.from_text(text)


def test_wrong_types_are_refused() -> None:
    summary = QuantileSummary.of([1.0])
    with pytest.raises(SummaryError, match="bytes, not str"):
        QuantileSummary.from_bytes("EFQ")  # type: ignore[arg-type]
    with pytest.raises(SummaryError, match="string, not bytes"):
        QuantileSummary.from_text(b"RUZR")  # type: ignore[arg-type]
    with pytest.raises(SummaryError, match="cannot merge"):
        summary.merged([1.0])  # type: ignore[arg-type]
    with pytest.raises(SummaryError, match="cannot merge"):
        QuantileSummary.merge_all([summary, "x"])  # type: ignore[list-item]


def test_an_empty_sketch_of_doubles_reads_as_an_empty_summary() -> None:
    # Empty KLL sketches of any item type serialise to the same 8 bytes: nothing is lost.
    empty = datasketches.kll_doubles_sketch(200).serialize()
    assert QuantileSummary.from_bytes(with_envelope(empty)).is_empty


# --- merging ---------------------------------------------------------------------------


def test_merged_leaves_both_operands_alone_and_counts_everything() -> None:
    rng = np.random.default_rng(2)
    left = QuantileSummary.of(rng.normal(size=5_000))
    right = QuantileSummary.of(rng.normal(2.0, size=300), k=50)
    left_bytes, right_bytes = left.to_bytes(), right.to_bytes()

    both = left.merged(right)

    assert both is not left and both is not right
    assert (left.to_bytes(), right.to_bytes()) == (left_bytes, right_bytes)
    assert both.n == 5_300 and both.k == left.k
    assert both.min == min(left.min, right.min) and both.max == max(left.max, right.max)
    assert left.merged(QuantileSummary.empty()).n == left.n
    assert QuantileSummary.empty().merged(left).n == left.n


def test_merge_all_merges_into_server_k() -> None:
    parts = [QuantileSummary.of(np.arange(10.0), k=20), QuantileSummary.of(np.arange(5.0), k=8)]

    assert QuantileSummary.merge_all(parts).k == SERVER_K
    assert QuantileSummary.merge_all(parts, k=64).k == 64
    assert QuantileSummary.merge_all(parts).n == 15
    assert QuantileSummary.merge_all([]).is_empty


def test_merge_order_changes_nothing_beyond_the_sketch_s_error() -> None:
    rng = np.random.default_rng(4)
    chunks = [
        rng.normal(0.0, 1.0, size=40_000),
        rng.normal(3.0, 0.5, size=25_000),
        rng.exponential(2.0, size=30_000),
        rng.uniform(-4.0, 4.0, size=5_000),
    ]
    a, b, c, d = (QuantileSummary.of(chunk) for chunk in chunks)
    data = np.concatenate(chunks)
    grid = np.quantile(data, np.linspace(0.001, 0.999, 999))
    orders = [
        a.merged(b).merged(c).merged(d),
        a.merged(b.merged(c.merged(d))),
        d.merged(c).merged(b).merged(a),
        c.merged(a).merged(d.merged(b)),
        QuantileSummary.merge_all([b, d, a, c]),
        QuantileSummary.merge_all([QuantileSummary.merge_all([c, a]), d, b]),
    ]
    truth = ecdf(data, grid)
    for merged in orders:
        # Merged sketches (several levels, level 0 unsorted) read back byte for byte.
        assert QuantileSummary.from_bytes(merged.to_bytes()).to_bytes() == merged.to_bytes()
        assert merged.n == data.size
        assert merged.min == float(np.float32(data.min()))
        assert merged.max == float(np.float32(data.max()))
        assert np.abs(merged.cdf(grid) - truth).max() <= merged.rank_error
    for first, second in itertools.pairwise(orders):
        gap = np.abs(first.cdf(grid) - second.cdf(grid)).max()
        assert gap <= first.rank_error + second.rank_error


def test_many_small_device_summaries_merge_to_the_fleet_s_distribution() -> None:
    # 1,000 devices x 100 rows, each its own (exact) summary sent as text, as in telemetry.
    rng = np.random.default_rng(6)
    rows = rng.normal(size=(1_000, 100)) * rng.uniform(0.5, 2.0, size=(1_000, 1))
    texts = [QuantileSummary.of(device).to_text() for device in rows]

    fleet = QuantileSummary.merge_all(QuantileSummary.from_text(text) for text in texts)

    grid = np.quantile(rows, np.linspace(0.001, 0.999, 999))
    assert fleet.n == rows.size
    assert QuantileSummary.from_text(fleet.to_text()).to_bytes() == fleet.to_bytes()
    assert np.abs(fleet.cdf(grid) - ecdf(rows.ravel(), grid)).max() <= fleet.rank_error


# --- without datasketches ---------------------------------------------------------------


def test_without_the_library_every_constructor_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    text = QuantileSummary.of([1.0, 2.0]).to_text()
    monkeypatch.setattr(sketch, "HAVE_KLL", False)

    for build in (
        lambda: QuantileSummary.of([1.0]),
        lambda: QuantileSummary.empty(),
        lambda: QuantileSummary.from_text(text),
        lambda: QuantileSummary.from_bytes(base64.b64decode(text)),
        lambda: QuantileSummary.merge_all([]),
    ):
        with pytest.raises(SummaryError, match="datasketches") as raised:
            build()
        assert raised.value.details == {"module": "datasketches"}


def test_the_module_imports_with_numpy_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh copy of the module under another name, where importing datasketches fails.
    monkeypatch.setitem(sys.modules, "datasketches", None)
    path = Path(sketch.__file__)
    spec = importlib.util.spec_from_file_location("edgefleet_drift_sketch_without_kll", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look the module up
    spec.loader.exec_module(module)

    assert module.HAVE_KLL is False
    with pytest.raises(SummaryError, match="pip install"):
        module.QuantileSummary.of([1.0])
