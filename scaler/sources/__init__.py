"""Signal sources: plugins that turn configured targets into :class:`~scaler.signals.Signals`.

* :mod:`scaler.sources.prometheus` -- vLLM series from Prometheus (PromQL in :mod:`scaler.sources.promql`);
  see ``docs/signals.md``.
"""
