"""Synthetic traffic and the evaluators that measure decision quality on it.

- :mod:`~streams.sim.traffic`: the seeded synthetic audience and its events;
- :mod:`~streams.sim.simulation`: decision quality of the policies on that audience;
- :mod:`~streams.sim.campaign_sim`: campaign uplift on it;
- :mod:`~streams.sim.prediction_quality`: the predictions against the audience's truth;
- :mod:`~streams.sim.evaluation`, :mod:`~streams.sim.transactions` and
  :mod:`~streams.sim.baselines`: ``relevanz evaluate`` on a real transaction log;
- :mod:`~streams.sim.demo`: ``relevanz demo``, everything on one machine.
"""
