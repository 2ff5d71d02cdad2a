"""The metric types behind :mod:`resee_perf.metrics`: prometheus-client's when installed, a
no-op otherwise, each mirrored to an OpenTelemetry instrument when opentelemetry-api is
installed. A leaf: it defines no metric (``metrics`` does) and reads no setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol


class Metric(Protocol):
    def labels(self, *labelvalues: str) -> Metric: ...


class CounterMetric(Metric, Protocol):
    def labels(self, *labelvalues: str) -> CounterMetric: ...
    def inc(self, amount: float = 1) -> None: ...


class HistogramMetric(Metric, Protocol):
    def labels(self, *labelvalues: str) -> HistogramMetric: ...
    def observe(self, amount: float) -> None: ...


class GaugeMetric(Metric, Protocol):
    def labels(self, *labelvalues: str) -> GaugeMetric: ...
    def set(self, value: float) -> None: ...
    def inc(self, amount: float = 1) -> None: ...
    def dec(self, amount: float = 1) -> None: ...


class Noop:
    """Stands in for every metric when prometheus-client is not installed."""

    def labels(self, *labelvalues: str) -> Noop:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


try:
    from prometheus_client import Counter, Gauge, Histogram

    PROMETHEUS = True
except ImportError:  # pragma: no cover - exercised by scripts/check_wheel.sh (core only)
    PROMETHEUS = False

try:
    from opentelemetry import metrics as _otel_metrics

    _OTEL = True
except ImportError:  # pragma: no cover - the otel extra is optional
    _OTEL = False

# name -> documentation; docs/metrics.md is checked against it.
DEFINED: dict[str, str] = {}


class _OtelChild:
    """One labelled child of a metric, recorded by prometheus-client and OpenTelemetry alike."""

    __slots__ = ("_attributes", "_instrument", "_prometheus")

    def __init__(self, prometheus: Any, instrument: Any, attributes: dict[str, str]) -> None:
        self._prometheus = prometheus
        self._instrument = instrument
        self._attributes = attributes

    def labels(self, *labelvalues: str) -> _OtelChild:
        return self

    def inc(self, amount: float = 1) -> None:
        self._prometheus.inc(amount)
        if hasattr(self._instrument, "add"):
            self._instrument.add(amount, self._attributes)

    def dec(self, amount: float = 1) -> None:
        # Our gauges are only ever set; an OTel synchronous gauge has no decrement.
        self._prometheus.dec(amount)

    def set(self, value: float) -> None:
        self._prometheus.set(value)
        self._instrument.set(value, self._attributes)

    def observe(self, amount: float) -> None:
        self._prometheus.observe(amount)
        self._instrument.record(amount, self._attributes)


class _WithOtel:
    """A metric mirrored to an OpenTelemetry instrument of the same name. The instrument comes
    from the global MeterProvider: until an application configures one, it is the API's proxy,
    which drops the measurement (and forwards them once a provider is set)."""

    def __init__(self, prometheus: Any, instrument: Any, labelnames: Sequence[str]) -> None:
        self._prometheus = prometheus
        self._instrument = instrument
        self._labelnames = tuple(labelnames)

    def labels(self, *labelvalues: str) -> _OtelChild:
        return _OtelChild(
            self._prometheus.labels(*labelvalues),
            self._instrument,
            dict(zip(self._labelnames, labelvalues, strict=True)),
        )


def _otel_instrument(
    kind: str, name: str, documentation: str, buckets: Sequence[float] = ()
) -> Any:
    meter = _otel_metrics.get_meter("resee_perf")
    unit = "s" if name.endswith("_seconds") else "1"
    if kind == "counter":
        return meter.create_counter(name, unit=unit, description=documentation)
    if kind == "histogram":
        return meter.create_histogram(
            name,
            unit=unit,
            description=documentation,
            explicit_bucket_boundaries_advisory=list(buckets),
        )
    return meter.create_gauge(name, unit=unit, description=documentation)


def mirrored(
    prometheus: Any,
    kind: str,
    name: str,
    documentation: str,
    labelnames: Sequence[str],
    buckets: Sequence[float] = (),
) -> Any:
    if not _OTEL:
        return prometheus
    instrument = _otel_instrument(kind, name, documentation, buckets)
    return _WithOtel(prometheus, instrument, labelnames)


def counter(name: str, documentation: str, labelnames: Sequence[str]) -> CounterMetric:
    # prometheus-client exposes a counter as <name>_total.
    DEFINED[f"{name}_total"] = documentation
    metric = Counter(name, documentation, labelnames) if PROMETHEUS else Noop()
    return mirrored(metric, "counter", name, documentation, labelnames)  # type: ignore[no-any-return]


def histogram(
    name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
) -> HistogramMetric:
    DEFINED[name] = documentation
    metric = Histogram(name, documentation, labelnames, buckets=buckets) if PROMETHEUS else Noop()
    return mirrored(metric, "histogram", name, documentation, labelnames, buckets)  # type: ignore[no-any-return]


MultiprocessMode = Literal["all", "livemax", "livemin", "livesum"]


def gauge(
    name: str,
    documentation: str,
    labelnames: Sequence[str],
    multiprocess_mode: MultiprocessMode = "all",
) -> GaugeMetric:
    # multiprocess_mode: how the exporter merges the gauge of each gunicorn worker under
    # PROMETHEUS_MULTIPROC_DIR ("all" keeps one series per pid); the live* modes forget a
    # worker once resee_perf.gunicorn.child_exit has marked it dead.
    DEFINED[name] = documentation
    metric = (
        Gauge(name, documentation, labelnames, multiprocess_mode=multiprocess_mode)
        if PROMETHEUS
        else Noop()
    )
    return mirrored(metric, "gauge", name, documentation, labelnames)  # type: ignore[no-any-return]
