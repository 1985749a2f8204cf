"""Data curation (Vo et al., 2024): embeddings, hierarchical k-means with resampling, balanced
hierarchical sampling, deduplication, incremental assignment and a report. Plain Python.

Heavy modules (embedders, report plotting) are imported from their submodules on use.
"""

from sslflow.curation.assignment import AssignConfig, assign
from sslflow.curation.dedup import CopyRule, DedupResult, find_copies_of, find_duplicates
from sslflow.curation.hierarchical import HierarchyConfig, Level, build_hierarchy
from sslflow.curation.hierarchy_store import Hierarchy, HierarchyError, load_hierarchy
from sslflow.curation.incremental import Assignment, assign_new
from sslflow.curation.kmeans import KMeansConfig, KMeansResult, kmeans
from sslflow.curation.rows import EmbeddingsError, RowSubset
from sslflow.curation.sampling import CuratedIndex, LeafStrategy, allocate, sample_hierarchy
from sslflow.curation.stats import normalised_entropy

__all__ = [
    "AssignConfig",
    "Assignment",
    "CopyRule",
    "CuratedIndex",
    "DedupResult",
    "EmbeddingsError",
    "Hierarchy",
    "HierarchyConfig",
    "HierarchyError",
    "KMeansConfig",
    "KMeansResult",
    "LeafStrategy",
    "Level",
    "RowSubset",
    "allocate",
    "assign",
    "assign_new",
    "build_hierarchy",
    "find_copies_of",
    "find_duplicates",
    "kmeans",
    "load_hierarchy",
    "normalised_entropy",
    "sample_hierarchy",
]
