"""gunicorn reads this file from its working directory: ``cd example_project && gunicorn
resee.wsgi``. With ``PROMETHEUS_MULTIPROC_DIR`` set, /metrics merges every worker's metrics;
these two hooks empty the directory at start and forget exited workers' gauges."""

from resee_perf.gunicorn import child_exit, when_ready  # noqa: F401
