"""Signal sources: plugins that turn configured targets into :class:`~scaler.signals.Signals`.

* :mod:`scaler.sources.prometheus` -- vLLM series from Prometheus (PromQL in :mod:`scaler.sources.promql`),
  pods still loading (``starting_replicas``) and each target's ``activationQuery`` (``upstream_demand``,
  the wake-up signal at zero replicas); see ``docs/signals.md``.
"""
