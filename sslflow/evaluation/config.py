"""The probe's settings: one frozen dataclass per probing step, grouped by ``ProbeConfig``.

Each part is also the config of one Dagster asset (its fields are derived from these), so
Python, the CLI and the UI share names, defaults and checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sslflow.evaluation.knn import DEFAULT_KS, DEFAULT_TEMPERATURE, LIGHTLY_SETTING
from sslflow.evaluation.linear import DEFAULT_CS, DEFAULT_LRS, LinearProbeKind
from sslflow.evaluation.plots import Projection


@dataclass(frozen=True)
class FeatureConfig:
    """How frozen features are extracted (the probe_features asset).

    Attributes:
        baselines: also extract raw pixels (at most 32 px a side) and a randomly initialised
            copy of the model.
        batch_size: images per forward pass.
        num_workers: DataLoader workers decoding shards (0 = in process).
        seed: seed of the randomly initialised baseline.
    """

    baselines: bool = True
    batch_size: int = 256
    num_workers: int = 0
    seed: int = 0


@dataclass(frozen=True)
class KnnConfig:
    """Weighted kNN settings (InstDisc/DINO: cosine similarity, votes weighted by exp(sim/T)).

    Attributes:
        ks: neighbour counts, each at temperature ``temperature``.
        temperature: T in exp(sim / T); 0.07 as in DINO.
        lightly_setting: add k=200, T=0.1 to compare with lightly's benchmark tables.
    """

    ks: tuple[int, ...] = DEFAULT_KS
    temperature: float = DEFAULT_TEMPERATURE
    lightly_setting: bool = True

    def __post_init__(self) -> None:
        if not self.ks or min(self.ks) < 1 or self.temperature <= 0:
            raise ValueError(
                "kNN needs ks ≥ 1 and temperature > 0, "
                f"got ks={self.ks}, temperature={self.temperature}"
            )

    def settings(self) -> tuple[tuple[int, float], ...]:
        """The (k, T) pairs to evaluate."""
        found = [(k, self.temperature) for k in self.ks]
        if self.lightly_setting and LIGHTLY_SETTING not in found:
            found.append(LIGHTLY_SETTING)
        return tuple(found)


@dataclass(frozen=True)
class LinearConfig:
    """Linear probes, each hyper-parameter chosen on a seeded validation split of train.

    Attributes:
        probes: sgd: torch heads for all learning rates in one pass (fast on 60k × 512);
            logistic: scikit-learn lbfgs with a C sweep (exact, ~minutes per C on 60k samples
            on 2 CPU cores).
        cs: C values of the logistic sweep (log-spaced).
        lrs: peak learning rates of the SGD sweep.
        sgd_epochs: epochs of each SGD head (cosine decay to zero).
        validation_fraction: share of train held out to choose C / the learning rate.
        seed: validation split, initialisation and batch order.
    """

    probes: tuple[str, ...] = (LinearProbeKind.SGD.value,)
    cs: tuple[float, ...] = DEFAULT_CS
    lrs: tuple[float, ...] = DEFAULT_LRS
    sgd_epochs: int = 10
    validation_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        known = [kind.value for kind in LinearProbeKind]
        if not self.probes or any(p not in known for p in self.probes):
            raise ValueError(
                f"linear probes must be a non-empty list of {known}, got {list(self.probes)}"
            )

    def kinds(self) -> tuple[LinearProbeKind, ...]:
        return tuple(LinearProbeKind(p) for p in self.probes)


@dataclass(frozen=True)
class ReportConfig:
    """How the probing report is drawn.

    Attributes:
        projection: 2-D projection of test features: pca, or tsne (~30 s).
        earlier_runs: earlier probing reports of the experiment shown in the table.
    """

    projection: Literal["pca", "tsne"] = "pca"
    earlier_runs: int = 10

    def __post_init__(self) -> None:
        Projection(self.projection)


@dataclass(frozen=True)
class ProbeConfig:
    """What to probe and how: one part per probing step (each is also an asset's config).

    Attributes:
        features: feature extraction (probe_features).
        knn: weighted kNN (knn_probe).
        linear: linear probes (linear_probe).
        report: the report (probing_report).
    """

    features: FeatureConfig = field(default_factory=FeatureConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)
    linear: LinearConfig = field(default_factory=LinearConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def params(self) -> dict[str, str]:
        """The settings as flat MLflow params (one string per setting)."""
        return {
            "knn_settings": ",".join(f"k{k}_t{t:g}" for k, t in self.knn.settings()),
            "linear": ",".join(self.linear.probes),
            "cs": ",".join(f"{c:g}" for c in self.linear.cs),
            "lrs": ",".join(f"{lr:g}" for lr in self.linear.lrs),
            "sgd_epochs": str(self.linear.sgd_epochs),
            "validation_fraction": str(self.linear.validation_fraction),
            "seed": str(self.linear.seed),
            "baselines": str(self.features.baselines),
        }
