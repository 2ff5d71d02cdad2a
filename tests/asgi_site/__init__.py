"""A small ASGI site for tests/test_routers_asgi.py: the test settings with the sticky-reads
middleware and the LSN router, and two async views (a write, a read that reports its route),
served by uvicorn in a subprocess."""
