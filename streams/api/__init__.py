"""The operator surface over HTTP: the aiohttp application (:mod:`~streams.api.web`),
its bearer tokens and roles (:mod:`~streams.api.auth`), ``/v1/status``
(:mod:`~streams.api.status`), ``/metrics`` (:mod:`~streams.api.metrics`), the
OpenAPI document (:mod:`~streams.api.openapi`), the dashboard's files
(``dashboard/``) and the terminal overview of ``relevanz status``
(:mod:`~streams.api.overview`).
"""
