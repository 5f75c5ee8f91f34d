"""The benchmark studies: each module is one study, run as ``python -m benchmarks STUDY [options]``
(``python -m benchmarks --help`` lists them). ``common`` is the library they share. Not a test;
not run in CI, and not part of the installed package.
"""
