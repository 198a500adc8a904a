"""The benchmark's parts, shared by ``run.py`` (the benchmark) and ``gpu_day.py`` (the GPU day).

Scripts in ``benchmarks/`` import it as ``wmbench`` (``python benchmarks/run.py`` puts
``benchmarks/`` first on ``sys.path``). What is measured, and how, is told in ``run.py``'s
docstring and in ``benchmarks/README.md``. One module per job:

- :mod:`wmbench.machine`: the machine (CPU, memory, GPU), the versions, the file tag
- :mod:`wmbench.runner`: the datasets' shape (:class:`~wmbench.runner.Size`), the variants
  (a)–(e) and running one as a subprocess, timed
- :mod:`wmbench.check`: reading a variant's maps and comparing them with (a)'s
- :mod:`wmbench.stages`: the stage pass, the pipeline's own calls with a synchronised clock
- :mod:`wmbench.suite`: ``run.py``'s datasets and the benchmark of one size
- :mod:`wmbench.targets`: the issue's targets as data, and their evaluation
- :mod:`wmbench.report`: the Markdown report

Only numpy and the standard library are imported at import time (weightmaps, CuPy where they
are needed), so that the GPU day's rehearsal environment, which has little else, can load it.
"""
