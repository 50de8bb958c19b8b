"""The repository's own machinery, beside the library: what the figure scripts, ``reproduce.py``, the notebooks,
the tests and the benchmarks share. Not part of the ``symmetry`` API; it imports ``symmetry``, never the reverse.

- ``experiment``: the scripts' CLI, atomic PDF/PNG/JSON output, provenance (versions, commit), the resumable cache
- ``jobs``: the figures as jobs on a ``concurrent.futures.Executor`` (local processes or a Dask cluster)
- ``report``: the claim verdicts and the README's and docs' generated tables
- ``data``, ``cifar``, ``training``: data loading, App. H's CIFAR-10 model and attacks, the synthetic training of
  Figs. 3, 6, 9
- ``errors``: the machinery's expected failures (a leaf module)
"""
