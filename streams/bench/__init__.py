"""``interest-stream bench``: the benchmark room, one module per ``--sections`` name.

- :mod:`streams.bench.main`: the command and the runner (options, sections in order, table,
  JSON); nothing imports it but the CLI;
- :mod:`streams.bench.common`: what the sections share (config, rows and table, statistics,
  timing, the ml-100k events); :mod:`streams.bench.processes`: the child processes a section
  starts and watches (settings, environment, ``/metrics.json``, memory);
- the sections: :mod:`~streams.bench.stream` (with :mod:`~streams.bench.latency` and the
  pass-through apps of :mod:`~streams.bench.baseline`), :mod:`~streams.bench.encoder`,
  :mod:`~streams.bench.rank`, :mod:`~streams.bench.ann` (its data in
  :mod:`~streams.bench.ann_data`), :mod:`~streams.bench.sequence`, :mod:`~streams.bench.state`,
  :mod:`~streams.bench.store` (with :mod:`~streams.bench.store_worker`; their users in
  :mod:`~streams.bench.store_data`) and
  :mod:`~streams.bench.gpu`.

Importing this package loads nothing: the CLI imports :mod:`streams.bench.main` when ``bench``
runs, and the runner imports each section when it runs.
"""
