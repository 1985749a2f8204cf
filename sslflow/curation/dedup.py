"""Near-duplicate removal by cosine similarity among nearest neighbours (as in DINOv2's data
pipeline, Oquab et al., 2023, Sec. 3): pairs above a threshold are linked, each connected group
keeps one representative (its lowest row), the rest are dropped.

The exact inner-product index (faiss ``IndexFlatIP``) holds the L2-normalised rows as float32,
so memory is 4·N·D bytes; above a few million rows an IVF index would be the next step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import faiss
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm.auto import tqdm

from sslflow.curation.kmeans import Rows, read_chunk


@dataclass
class DedupResult:
    """Outcome of ``find_duplicates``.

    Attributes:
        keep: sorted row indices kept (one per group, plus every row without a duplicate).
        removed: rows dropped.
        groups: groups of two or more near-duplicates.
        pairs: example pairs (row a, row b, cosine similarity), most similar first.
    """

    keep: np.ndarray
    removed: int
    groups: int
    pairs: list[tuple[int, int, float]] = field(default_factory=list)


def find_duplicates(
    x: Rows,
    threshold: float = 0.95,
    neighbours: int = 8,
    chunk_size: int = 16384,
    examples: int = 20,
    progress: bool = False,
) -> DedupResult:
    """Groups of rows whose cosine similarity to a neighbour is ≥ ``threshold``.

    Args:
        x: (N, D) rows (e.g. a float16 memmap).
        threshold: cosine similarity above which two rows count as near-duplicates.
        neighbours: nearest neighbours searched per row (a group larger than this is still
            found through chains of links).
        chunk_size: query rows per search.
        examples: example pairs returned for the report.
        progress: show a tqdm bar.
    """
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
    n = len(x)
    index = faiss.IndexFlatIP(x.shape[1])
    for start in range(0, n, chunk_size):
        index.add(read_chunk(x, start, min(start + chunk_size, n), spherical=True))
    sources, targets, sims = [], [], []
    k = min(neighbours + 1, n)
    for start in tqdm(range(0, n, chunk_size), desc="dedup", disable=not progress):
        chunk = read_chunk(x, start, min(start + chunk_size, n), spherical=True)
        sim, found = index.search(chunk, k)
        rows = np.repeat(np.arange(start, start + len(chunk)), k).reshape(len(chunk), k)
        hit = (sim >= threshold) & (found != rows) & (found >= 0)
        sources.append(rows[hit])
        targets.append(found[hit])
        sims.append(sim[hit])
    a, b, s = np.concatenate(sources), np.concatenate(targets), np.concatenate(sims)
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    first = np.full(component.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, component, np.arange(n))
    keep = np.sort(first[first < n])
    sizes = np.bincount(component)
    forward = a < b
    order = np.argsort(-s[forward], kind="stable")[:examples]
    pairs = [
        (int(i), int(j), float(v))
        for i, j, v in zip(a[forward][order], b[forward][order], s[forward][order], strict=True)
    ]
    return DedupResult(keep=keep, removed=n - len(keep), groups=int((sizes > 1).sum()), pairs=pairs)
