"""Copy detection on fingerprints (:mod:`sslflow.curation.fingerprints`): exact and near-duplicates.

* **exact**: equal digests of the decoded pixels.
* **near** (JPEG re-encodes, noise, 1–2 px shifts, small rescales, crops keeping most of the
  image): candidates are each thumbnail's nearest neighbours by L2 distance over 8 × 8 block
  means (streamed faiss search, O(N·neighbours) memory), verified at the best whole-pixel
  shift within ``max_shift``, by a test that depends on the image size (chosen by measurement,
  docs/benchmarks/curation.md):

  * ``pixels``, both images at most 32 px (thumbnails exact): at most ``max_differing`` of the
    pixels that are foreground in either differ by more than ``pixel_tolerance`` grey levels.
    Counting differing pixels, not averaging differences, keeps a copy whose shift pushed a
    strip of the object off the image a copy, and two garments of one silhouette apart.
  * ``correlation``, otherwise (downscaled thumbnails): a Pearson correlation ≥
    ``min_correlation`` at the best whole-pixel shift selects the pairs worth aligning; the
    alignment (:mod:`sslflow.curation.alignment`) must then cover ≥ ``min_coverage`` of both
    images and their high-pass parts must correlate ≥ ``min_detail_correlation``, which two
    distinct crops of one smooth scene do not; a pair without detail (``FLAT_DETAIL``) must
    instead agree in its aligned pixels.

Linked rows form groups (connected components); each group keeps its lowest row.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import product

import faiss
import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from torch.nn import functional as F
from tqdm.auto import tqdm

from sslflow.curation.alignment import fit_alignment, pearson
from sslflow.curation.fingerprints import BACKGROUND_TOLERANCE, CopyFeatures, background
from sslflow.curation.rows import Rows

BLOCK = 4
"""Thumbnail pixels per side of one candidate-search block (32 px → 8 × 8 block means)."""
FLAT_DETAIL = 1.0
"""Grey levels of high-pass variation below which a thumbnail has no detail to correlate."""
FLAT_MIN_CORRELATION = 0.98
FLAT_MAX_DIFFERENCE = 2.0
"""A pair without detail is a copy when its aligned thumbnails correlate ≥ 0.98 and differ by
≤ 2 grey levels on average (measured on planted copies: docs/benchmarks/curation.md §4)."""


@dataclass(frozen=True)
class CopyRule:
    """When two thumbnails are copies of one image.

    Attributes:
        neighbours: nearest neighbours searched per image for near-duplicate candidates.
        max_shift: whole thumbnail pixels of translation searched when comparing a pair.
        pixel_tolerance: grey levels by which two aligned pixels may differ and still agree.
        max_differing: largest share of foreground pixels that may disagree in a copy (small
            images).
        min_correlation: least Pearson correlation of the thumbnails at the best whole-pixel
            shift for a pair of larger images to be aligned.
        min_coverage: least share of each image the other covers once aligned (larger images).
        min_detail_correlation: least correlation of the aligned high-pass thumbnails of a copy
            (larger images).
    """

    neighbours: int = 16
    max_shift: int = 2
    pixel_tolerance: int = 32
    max_differing: float = 0.08
    min_correlation: float = 0.8
    min_coverage: float = 0.85
    min_detail_correlation: float = 0.7


METHODS = ("exact", "pixels", "correlation")


@dataclass(frozen=True)
class CopyPair:
    """Two rows found to be copies, by which method (``METHODS``), and its score: the share of
    differing pixels (``pixels``), the detail correlation once aligned (``correlation``; the
    aligned correlation for images without detail) or 0 (``exact``)."""

    a: int
    b: int
    method: str
    score: float


@dataclass
class DedupResult:
    """Outcome of :func:`find_duplicates`.

    Attributes:
        keep: sorted rows kept (one per group, plus every row without a copy).
        removed: rows dropped, in all and per method (``exact``, ``near``).
        groups: groups of two or more copies.
        pairs: every pair found, exact pairs first.
    """

    keep: np.ndarray
    removed: dict[str, int]
    groups: int
    pairs: list[CopyPair] = field(default_factory=list)


def exact_pairs(digests: np.ndarray) -> np.ndarray:
    """(P, 2) pairs (first row with a digest, a later row with the same digest)."""
    if not len(digests):
        return np.zeros((0, 2), np.int64)
    _, first, inverse = np.unique(digests, axis=0, return_index=True, return_inverse=True)
    firsts = first[inverse.ravel()]
    later = np.flatnonzero(firsts != np.arange(len(firsts)))
    return np.c_[firsts[later], later].astype(np.int64)


def _block_means(thumbs: np.ndarray) -> np.ndarray:
    """(n, S, S) uint8 → (n, (S/BLOCK)²) float32 candidate-search vectors."""
    t = torch.from_numpy(np.asarray(thumbs, dtype=np.float32)).unsqueeze(1)
    return F.avg_pool2d(t, BLOCK).flatten(1).numpy()


def candidate_pairs(
    queries: Rows,
    index_thumbs: Rows,
    neighbours: int,
    chunk_size: int = 8192,
    progress: bool = False,
    same_set: bool = True,
) -> Iterator[np.ndarray]:
    """Chunks of (P, 2) (query row, index row) nearest-neighbour pairs.

    With ``same_set`` (queries are the index), a row is not its own candidate and each pair is
    given once, lower row first.
    """
    index = faiss.IndexFlatL2((index_thumbs.shape[1] // BLOCK) ** 2)
    for start in range(0, len(index_thumbs), chunk_size):
        index.add(_block_means(index_thumbs[start : start + chunk_size]))
    k = min(neighbours + int(same_set), index.ntotal)
    for start in tqdm(
        range(0, len(queries), chunk_size), desc="copy candidates", disable=not progress
    ):
        chunk = _block_means(queries[start : start + chunk_size])
        _, found = index.search(chunk, k)
        rows = np.repeat(np.arange(start, start + len(chunk)), k).reshape(len(chunk), k)
        hit = found >= 0
        if same_set:
            hit &= found != rows
            a, b = rows[hit], found[hit]
            yield np.unique(np.c_[np.minimum(a, b), np.maximum(a, b)], axis=0)
        else:
            yield np.c_[rows[hit], found[hit]]


def differing_share(a: np.ndarray, b: np.ndarray, rule: CopyRule, shift: int) -> np.ndarray:
    """Per pair, the least share of foreground pixels that disagree over shifts of ``a`` by up
    to ``shift`` px (``b``'s centre, its border of ``shift`` px dropped, slides over ``a``)."""
    ta = torch.from_numpy(np.asarray(a, dtype=np.int16))
    tb = torch.from_numpy(np.asarray(b, dtype=np.int16))
    side = ta.shape[-1]
    inner = side - 2 * shift
    centre = tb[:, shift : shift + inner, shift : shift + inner]
    fg_b = (centre - background(tb)[:, None, None].to(torch.int16)).abs() > BACKGROUND_TOLERANCE
    fg_a = (ta - background(ta)[:, None, None].to(torch.int16)).abs() > BACKGROUND_TOLERANCE
    best = torch.ones(len(ta))
    for dy in range(2 * shift + 1):
        for dx in range(2 * shift + 1):
            window = ta[:, dy : dy + inner, dx : dx + inner]
            foreground = fg_a[:, dy : dy + inner, dx : dx + inner] | fg_b
            differ = ((window - centre).abs() > rule.pixel_tolerance) & foreground
            share = differ.count_nonzero((1, 2)) / foreground.count_nonzero((1, 2)).clamp(min=1)
            best = torch.minimum(best, share)
    return best.numpy()


def shifted_correlation(a: np.ndarray, b: np.ndarray, shift: int) -> np.ndarray:
    """Per pair, the largest Pearson correlation over shifts of ``a`` by up to ``shift`` px
    (``b``'s centre, its border of ``shift`` px dropped, slides over ``a``)."""
    ta = torch.from_numpy(np.asarray(a, dtype=np.float32))
    tb = torch.from_numpy(np.asarray(b, dtype=np.float32))
    inner = ta.shape[-1] - 2 * shift
    centre = tb[:, shift : shift + inner, shift : shift + inner]
    best = torch.full((len(ta),), -1.0)
    for dy, dx in product(range(2 * shift + 1), repeat=2):
        best = torch.maximum(best, pearson(ta[:, dy : dy + inner, dx : dx + inner], centre))
    return best.numpy()


def _pixel_test(a: np.ndarray, b: np.ndarray, rule: CopyRule) -> tuple[np.ndarray, np.ndarray]:
    """(passed, share) for small-image pairs: first within 1 px, then the full ``max_shift``
    for pairs that nearly pass (≤ 3 × ``max_differing``): distinct images cost a third."""
    share = differing_share(a, b, rule, min(1, rule.max_shift))
    if rule.max_shift > 1:
        close = np.flatnonzero(share <= 3 * rule.max_differing)
        share[close] = differing_share(a[close], b[close], rule, rule.max_shift)
    return share <= rule.max_differing, share


def _aligned_test(a: np.ndarray, b: np.ndarray, rule: CopyRule) -> tuple[np.ndarray, np.ndarray]:
    """(passed, score) for larger-image pairs: only those correlating ≥ ``min_correlation`` at
    a whole-pixel shift are aligned (most candidates are not). The score is the detail
    correlation, or for a pair without detail the aligned thumbnails' correlation."""
    passed = np.zeros(len(a), bool)
    score = np.zeros(len(a), np.float32)
    close = np.flatnonzero(shifted_correlation(a, b, rule.max_shift) >= rule.min_correlation)
    if len(close):
        fit = fit_alignment(a[close], b[close])
        flat = fit.detail_level < FLAT_DETAIL
        score[close] = np.where(flat, fit.correlation, fit.detail)
        agree = np.where(
            flat,
            (fit.correlation >= FLAT_MIN_CORRELATION) & (fit.difference <= FLAT_MAX_DIFFERENCE),
            fit.detail >= rule.min_detail_correlation,
        )
        passed[close] = (fit.coverage >= rule.min_coverage) & agree
    return passed, score


def verified(pairs: np.ndarray, a: CopyFeatures, b: CopyFeatures, rule: CopyRule) -> list[CopyPair]:
    """The candidate (row of ``a``, row of ``b``) pairs that are copies (batches of 4096)."""
    found: list[CopyPair] = []
    for start in range(0, len(pairs), 4096):
        batch = pairs[start : start + 4096]
        small = a.small[batch[:, 0]] & b.small[batch[:, 1]]
        for method, chosen in (("pixels", batch[small]), ("correlation", batch[~small])):
            if not len(chosen):
                continue
            ta, tb = a.thumbs[chosen[:, 0]], b.thumbs[chosen[:, 1]]
            if method == "pixels":
                passed, score = _pixel_test(ta, tb, rule)
            else:
                passed, score = _aligned_test(ta, tb, rule)
            found += [
                CopyPair(int(i), int(j), method, float(v))
                for (i, j), v in zip(chosen[passed], score[passed], strict=True)
            ]
    return found


def find_duplicates(features: CopyFeatures, rule: CopyRule, progress: bool = False) -> DedupResult:
    """Exact and near-duplicate groups among N fingerprinted images (see the module docstring)."""
    n = len(features)
    exact = exact_pairs(features.digests)
    pairs = [CopyPair(int(i), int(j), "exact", 0.0) for i, j in exact]
    seen = {(p.a, p.b) for p in pairs}
    for chunk in candidate_pairs(
        features.thumbs, features.thumbs, rule.neighbours, progress=progress
    ):
        for pair in verified(chunk, features, features, rule):
            if (pair.a, pair.b) not in seen:
                seen.add((pair.a, pair.b))
                pairs.append(pair)
    linked = np.array([(p.a, p.b) for p in pairs], dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(linked)), (linked[:, 0], linked[:, 1])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    first = np.full(component.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, component, np.arange(n))
    keep = np.sort(first[first < n])
    removed = dict.fromkeys(METHODS, 0)
    kept = np.zeros(n, bool)
    kept[keep] = True
    for pair in pairs:  # each dropped row is counted under the first method that linked it
        for row in (pair.a, pair.b):
            if not kept[row]:
                kept[row] = True
                removed[pair.method] += 1
    return DedupResult(
        keep=keep,
        removed={"all": n - len(keep), **removed},
        groups=int((np.bincount(component) > 1).sum()),
        pairs=pairs,
    )


def find_copies_of(
    pool: CopyFeatures, reference: CopyFeatures, rule: CopyRule, progress: bool = False
) -> list[CopyPair]:
    """Pool rows that copy a reference image (e.g. an evaluation test image): one pair
    (pool row, reference row) per such pool row, exact matches first."""
    digests = {bytes(d): row for row, d in enumerate(reference.digests)}
    pairs = [
        CopyPair(row, digests[bytes(d)], "exact", 0.0)
        for row, d in enumerate(pool.digests)
        if bytes(d) in digests
    ]
    matched = {p.a for p in pairs}
    for chunk in candidate_pairs(
        pool.thumbs, reference.thumbs, rule.neighbours, progress=progress, same_set=False
    ):
        for pair in verified(chunk, pool, reference, rule):
            if pair.a not in matched:  # one pair per pool image: the first method that found it
                matched.add(pair.a)
                pairs.append(pair)
    return pairs
