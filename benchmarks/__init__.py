"""The benchmark studies: each ``run_*`` module (and ``inference_precision``, ``training_throughput``)
is one study, run as ``python -m benchmarks STUDY [options]`` (``python -m benchmarks --help``
lists them). What they share: ``tasks`` (the one table of tasks and each study's selection),
``common`` (the method x task run loop, re-exporting ``datasets``, ``methods``, ``evaluation`` and
``tables``), and the reserved subjects' ``reserved_data`` and ``reserved_methods``. Not a test;
not run in CI, and not part of the installed package.
"""
