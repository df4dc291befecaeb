"""Business metrics, next to django-prometheus's request and database metrics at /metrics.

Two kinds:
- Counters for things that happen in the web process (`counter(...)` returns a shared
  prometheus_client Counter by name).
- Gauges read from the database at scrape time, so they are right whichever process
  (web, worker, relay) made the change: an app registers a provider with
  `gauge_provider_register(name, documentation, labels, provider)`, where `provider()`
  returns `{label_values_tuple: value}`. The outbox backlog is registered here.
"""

from collections.abc import Callable

from django.db.models import Count
from prometheus_client import REGISTRY, Counter
from prometheus_client.core import GaugeMetricFamily

from ems.models import OutboxEvent

_counters: dict[str, Counter] = {}
_providers: dict[str, tuple[str, list[str], Callable[[], dict[tuple, float]]]] = {}


def counter(name: str, documentation: str, labels: list[str] | None = None) -> Counter:
    if name not in _counters:
        _counters[name] = Counter(name, documentation, labels or [])
    return _counters[name]


def gauge_provider_register(
    name: str, documentation: str, labels: list[str], provider: Callable[[], dict[tuple, float]]
) -> None:
    _providers[name] = (documentation, labels, provider)


class _DatabaseGauges:
    def collect(self):
        for name, (documentation, labels, provider) in list(_providers.items()):
            family = GaugeMetricFamily(name, documentation, labels=labels)
            try:
                values = provider()
            except Exception:  # noqa: BLE001 - a failing provider must not break /metrics
                continue
            for label_values, value in values.items():
                family.add_metric(list(label_values), value)
            yield family


def _outbox_backlog() -> dict[tuple, float]:
    rows = OutboxEvent.objects.filter(delivered_at__isnull=True).values("sink").annotate(n=Count("id"))
    backlog = {(sink,): 0.0 for sink in OutboxEvent.Sink.values}
    backlog.update({(row["sink"],): float(row["n"]) for row in rows})
    return backlog


_registered = False


def install() -> None:
    """Called once from EmsConfig.ready()."""
    global _registered
    if _registered:
        return
    REGISTRY.register(_DatabaseGauges())
    gauge_provider_register(
        "ems_outbox_pending", "Outbox rows not yet delivered, by sink", ["sink"], _outbox_backlog
    )
    _registered = True
