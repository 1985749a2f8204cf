"""One declaration per stage config: the Dagster Config classes are derived from the core's."""

from __future__ import annotations

import dataclasses

import pytest

from sslflow.curation.curate import SamplingConfig
from sslflow.curation.embeddings import EmbedConfig
from sslflow.curation.hierarchical import HierarchyConfig
from sslflow.data import WriterConfig
from sslflow.evaluation.config import FeatureConfig, KnnConfig, LinearConfig, ReportConfig
from sslflow.fields import attribute_docs
from sslflow.pipelines.assets.curation import (
    CuratedIndexConfig,
    CuratedShardsConfig,
    KMeansHierarchyConfig,
)
from sslflow.pipelines.assets.data import EvalSplitConfig, RawShardsConfig
from sslflow.pipelines.assets.embeddings import EmbeddingsConfig
from sslflow.pipelines.assets.pretraining import PretrainedModelConfig
from sslflow.pipelines.assets.probing import (
    KnnProbeConfig,
    LinearProbeConfig,
    ProbeFeaturesConfig,
    ProbingReportConfig,
)
from sslflow.ssl.config import PretrainConfig

DERIVED = [
    (PretrainedModelConfig, PretrainConfig, {"progress_bar", "strategy"}),
    (EmbeddingsConfig, EmbedConfig, {"tracking_uri", "progress"}),
    (ProbeFeaturesConfig, FeatureConfig, set()),
    (KnnProbeConfig, KnnConfig, set()),
    (LinearProbeConfig, LinearConfig, set()),
    (ProbingReportConfig, ReportConfig, set()),
    (RawShardsConfig, WriterConfig, set()),
    (EvalSplitConfig, WriterConfig, set()),
    (CuratedShardsConfig, WriterConfig, set()),
    (KMeansHierarchyConfig, HierarchyConfig, {"progress"}),
    (CuratedIndexConfig, SamplingConfig, set()),
]


@pytest.mark.parametrize(("asset_config", "core", "process_local"), DERIVED)
def test_same_fields_defaults_and_descriptions(
    asset_config: type, core: type, process_local: set[str]
) -> None:
    fields = asset_config.model_fields
    docs = attribute_docs(core)
    for field in dataclasses.fields(core):
        if field.name in process_local:
            assert field.name not in fields
            continue
        default = (
            field.default if field.default is not dataclasses.MISSING else field.default_factory()
        )  # type: ignore[misc]
        derived = fields[field.name].get_default(call_default_factory=True)
        if isinstance(default, tuple):  # config schemas have lists; dataclass rows are their fields
            default = [
                list(dataclasses.astuple(v)) if dataclasses.is_dataclass(v) else v for v in default
            ]
        assert derived == default, field.name
        assert fields[field.name].description == docs[field.name] and docs[field.name], field.name


def test_default_asset_config_builds_the_default_core_config() -> None:
    built = PretrainedModelConfig().pretrain_config()
    assert dataclasses.replace(built, progress_bar=True) == PretrainConfig()
    assert EmbeddingsConfig().embed_config("", "pixels") == EmbedConfig(progress=True)
    assert KMeansHierarchyConfig().hierarchy_config("pixels") == HierarchyConfig(
        spherical=False, progress=True
    )
    assert KMeansHierarchyConfig().hierarchy_config("resnet18").spherical is True
    assert RawShardsConfig().writer() == WriterConfig()


def test_every_core_field_is_settable_and_lists_become_tuples() -> None:
    config = PretrainedModelConfig(
        mean=[0.5, 0.4, 0.3],
        std=[0.2, 0.2, 0.2],
        momentum=0.8,
        min_lr_ratio=0.1,
        deterministic=True,
        image_size=64,
        in_chans=3,
    )
    core = config.pretrain_config()
    assert (core.mean, core.std, core.momentum, core.min_lr_ratio, core.deterministic) == (
        (0.5, 0.4, 0.3),
        (0.2, 0.2, 0.2),
        0.8,
        0.1,
        True,
    )


def test_attribute_docs_join_continuation_lines() -> None:
    docs = attribute_docs(PretrainConfig)
    assert docs["image_size"].startswith("side of the global views; 0 = auto")
    assert "at most 224" in docs["image_size"] and "\n" not in docs["image_size"]
