"""The HTML report renders, references only images that exist, and compares earlier runs."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from sslflow.evaluation.knn import weighted_knn
from sslflow.evaluation.linear import sgd_probe
from sslflow.evaluation.report import ReportInput, render_report, summary_markdown
from sslflow.evaluation.report_runs import EarlierRun, RunLink
from sslflow.evaluation.results import ModelProbe, Role, load_probes, merge_probes, save_probes


class ImageSources(HTMLParser):
    """Collects every <img src> and fails on malformed nesting of the tags we write."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources.append(dict(attrs)["src"] or "")
        elif tag not in ("meta", "br"):
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open.pop() == tag, f"unbalanced </{tag}>"


def synthetic_probes(classes: int = 4) -> tuple[list[ModelProbe], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    train_y, test_y = rng.integers(0, classes, 200), rng.integers(0, classes, 80)
    centres = rng.normal(size=(classes, 16)) * 3
    train_x = centres[train_y] + rng.normal(size=(200, 16))
    test_x = centres[test_y] + rng.normal(size=(80, 16))
    probes = []
    for role, noise in ((Role.MODEL, 0.0), (Role.RAW_PIXELS, 3.0)):
        tr, te = (
            train_x + noise * rng.normal(size=train_x.shape),
            test_x + noise * rng.normal(size=test_x.shape),
        )
        knn = weighted_knn(tr, train_y, te, test_y, [(10, 0.07), (20, 0.07), (200, 0.1)])
        linear = [sgd_probe(tr, train_y, te, test_y, lrs=(0.01, 0.1), epochs=2)]
        probes.append(ModelProbe(role, role.label, f"fp-{role.value}", 16, knn=knn, linear=linear))
    return probes, test_x, test_y


def test_report_renders_with_every_image(tmp_path: Path) -> None:
    probes, test_x, test_y = synthetic_probes()
    earlier = EarlierRun(
        RunLink("models:/sslflow-simclr@current", "abc123", "http://mlflow/runs/abc123"),
        "2026-01-01T00:00:00",
        {"model.knn.k20_t0.07.top1": 0.5},
    )
    report = ReportInput(
        title="models:/sslflow-swav@current",
        summary={"data": "4 synthetic classes", "epochs": "0"},
        probes=probes,
        test_labels=test_y,
        classes=["a", "b", "c", "d"],
        projection_features=test_x,
        projection_labels=test_y,
        upstream=[RunLink("eval_split", "run42", "http://mlflow/runs/run42")],
        earlier=[earlier],
    )
    page = render_report(report, tmp_path / "report")
    parser = ImageSources()
    parser.feed(page.read_text())
    assert parser.open == []
    assert len(parser.sources) == 4  # accuracy vs k, per-class, confusion, projection
    for source in parser.sources:
        assert (page.parent / source).is_file() and (page.parent / source).stat().st_size > 1000
    text = page.read_text()
    assert (
        'href="http://mlflow/runs/run42"' in text
        and "earlier: models:/sslflow-simclr@current" in text
    )
    markdown = summary_markdown(report)
    headline = f"{probes[0].knn[1].top1:.4f}"
    assert f"| model | {probes[0].knn[0].top1:.4f} | {headline} |" in markdown
    assert "| earlier: models:/sslflow-simclr@current | – | 0.5000 |" in markdown


def test_probe_results_round_trip_and_merge(tmp_path: Path) -> None:
    probes, _, _ = synthetic_probes()
    path = save_probes(probes, tmp_path / "probes.json")
    loaded = load_probes(path)
    assert [p.metrics() for p in loaded] == [p.metrics() for p in probes]
    np.testing.assert_array_equal(loaded[0].linear[0].confusion, probes[0].linear[0].confusion)
    knn_only = [
        ModelProbe(p.role, p.description, p.fingerprint, p.feature_dim, knn=p.knn) for p in loaded
    ]
    linear_only = [
        ModelProbe(p.role, p.description, p.fingerprint, p.feature_dim, linear=p.linear)
        for p in loaded
    ]
    merged = merge_probes(linear_only[::-1], knn_only)
    assert [p.role for p in merged] == [Role.MODEL, Role.RAW_PIXELS]
    assert merged[0].metrics() == probes[0].metrics()


def test_projections_keep_separated_classes_apart() -> None:
    """Four well-separated classes in 16-D stay separable in 2-D (leave-one-out 1-NN)."""
    from sslflow.evaluation.plots import Projection, project_2d

    _, test_x, test_y = synthetic_probes()
    for method in Projection:
        points = project_2d(test_x, method)
        assert points.shape == (80, 2) and np.isfinite(points).all()
        distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
        np.fill_diagonal(distances, np.inf)
        nearest_label = test_y[distances.argmin(axis=1)]
        assert (nearest_label == test_y).mean() >= 0.9, method
