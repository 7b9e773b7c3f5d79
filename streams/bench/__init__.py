"""``relevanz bench``: the tools that measure the engine.

- :mod:`~streams.bench.run`: the command, one run from the raw Kafka limit to the pipeline;
- :mod:`~streams.bench.options`: what a run generates and the settings it uses;
- :mod:`~streams.bench.stages`: the measured stages (raw consumer, bare Faust, pipeline);
- :mod:`~streams.bench.decide`: ``/v1/decide`` latency;
- :mod:`~streams.bench.sweep`: the pipeline over audience and catalogue sizes.
"""
