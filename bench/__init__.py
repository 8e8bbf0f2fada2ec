"""The workstation benchmark (``make bench``, i.e. ``python -m bench``).

Builds (once, cached in ``bench/data/``) a central server database of N
generated patients, then measures what a clerk and a workstation wait for:

- ``top_up_p50_ms`` / ``top_up_p99_ms``: one TopUp through ``LocalStore.execute``
  (decide + rows + outbox, one committed transaction) on a replica of N patients;
- ``search_p99_ms.*``: ``LocalStore.search`` by pinyin initials, name, ID-number
  prefix and card number;
- ``drain_ops_per_s`` (in-process ASGI) and ``drain_ops_per_s.http`` (uvicorn
  in another process): pushing an outbox of 10,000 ops to the central server;
- ``bootstrap_s``: a new workstation loading the server's replica image (built
  beforehand, in a process of its own: ``snapshot_image_build_s`` and
  ``image_build_peak_rss_mb``, ``bench/image_build.py``);
- the window, each in processes of its own against the server in another
  process: ``keypress_to_results_p50_ms`` / ``_p95_ms`` (the real app driven by
  Textual's Pilot, real queries typed into the cashier desk's search one key at
  a time), ``rss_mb_after_500_searches`` and
  ``rss_mb_growth_last_250_searches`` (the same process, bootstrapped over
  HTTP: ``bench/window.py``), ``cold_start_s`` (``workstation run`` in a
  pseudo-terminal until its login screen is drawn) and ``idle_cpu_percent``
  (logged in on the cashier desk, nothing typed, sync running:
  ``bench/terminal.py``).

Results are printed as a table and written to ``bench/results.json``.
"""
