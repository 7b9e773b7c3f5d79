"""The hot path's stages, called by the ingest agent (:mod:`agents.ingest`) for each batch.

- :mod:`~agents.pipeline.customer_stage`: a batch's events applied to each
  customer's state through the core, and what that emits;
- :mod:`~agents.pipeline.customer_cache`: the customers kept in memory between batches;
- :mod:`~agents.pipeline.learner`: the content policy the worker learns and decides with;
- :mod:`~agents.pipeline.forecasts`: the per-customer predictions (next purchase, churn);
- :mod:`~agents.pipeline.lapses`: the win-back checks of quiet customers, due on event time;
- :mod:`~agents.pipeline.campaign_rows`: campaign records as the store keeps them;
- :mod:`~agents.pipeline.campaign_desk`: campaign statistics and proposal approval.
"""
