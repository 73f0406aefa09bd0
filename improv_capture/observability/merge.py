"""One /metrics for a cluster (`serve --workers N`): every worker's exposition, each sample
labelled with its ``worker``, in one family per metric name. The router serves it; it needs
nothing of the workers' state but their text, and imports nothing but prometheus-client."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families


class _Families:
    """A collector that yields families already made (the registry's protocol)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def merge_expositions(parts: Iterable[tuple[str, str]]) -> bytes:
    """``parts``: (worker label, Prometheus text format) per worker; the merged text."""
    families: dict[str, Metric] = {}
    for worker, text in parts:
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                merged.add_sample(sample.name, {**sample.labels, "worker": worker},
                                  sample.value, sample.timestamp, sample.exemplar)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families.values())))  # type: ignore[arg-type]
    return generate_latest(registry)
