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
  beforehand: ``snapshot_image_build_s``).

Results are printed as a table and written to ``bench/results.json``.
"""
