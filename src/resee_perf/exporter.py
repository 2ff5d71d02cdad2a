"""``GET /metrics``: the Prometheus exposition of every metric this process, or every gunicorn
worker, has recorded.

Include it with ``path("", include("resee_perf.urls"))``. It is not public: a client reads it
from an address in ``RESEE_PERF['METRICS_ALLOWED_NETWORKS']`` (loopback by default) or with
``Authorization: Bearer <RESEE_PERF['METRICS_TOKEN']>``; anyone else gets an empty 403, so a
stranger learns neither the metrics nor why. docs/observability.md explains the deployment.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from functools import lru_cache

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed

from resee_perf.conf import conf

__all__ = ["is_allowed", "metrics"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@lru_cache(maxsize=16)
def _networks(
    cidrs: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


def _address_allowed(remote_addr: str) -> bool:
    try:
        address = ipaddress.ip_address(remote_addr)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # A dual-stack socket reports 127.0.0.1 as ::ffff:127.0.0.1.
        address = address.ipv4_mapped
    return any(address in network for network in _networks(tuple(conf.METRICS_ALLOWED_NETWORKS)))


def is_allowed(request: HttpRequest) -> bool:
    """May this request read the metrics? A presented token decides alone: right, yes; wrong,
    no (even from an allowed network, so a misconfigured scraper fails loudly everywhere)."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, presented = header.partition(" ")
        token = conf.METRICS_TOKEN
        return (
            token is not None
            and scheme.lower() == "bearer"
            # Constant time: the comparison must not tell a guesser how many bytes were right.
            and hmac.compare_digest(presented.strip().encode(), token.encode())
        )
    return _address_allowed(request.META.get("REMOTE_ADDR", ""))


def exposition(accept: str) -> tuple[bytes, str]:
    """The metrics in the format ``accept`` asks for (OpenMetrics or the text format 0.0.4)
    and its content type. Under ``PROMETHEUS_MULTIPROC_DIR``, every worker's, merged."""
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.exposition import choose_encoder

    registry = REGISTRY
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        # A fresh registry per scrape, as prometheus-client documents: the collector reads
        # the workers' files, and the default registry would add this process's values twice.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


def metrics(request: HttpRequest) -> HttpResponse:
    # Refused before anything else, a 405 included: a stranger learns nothing about the URL.
    if not is_allowed(request):
        return HttpResponse(status=403, content_type="text/plain")
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    try:
        body, content_type = exposition(request.headers.get("Accept", ""))
    except ImportError:
        return HttpResponse(
            b"resee-perf exports metrics with the prometheus extra: "
            b"pip install 'resee-perf[prometheus]'\n",
            status=501,
            content_type="text/plain",
        )
    response = HttpResponse(body, content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response
