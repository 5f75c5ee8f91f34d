"""Sphinx configuration for deepinv_tunable (built-in extensions, sphinx-gallery for the
tutorials, which run on the CPU at every build, and the default theme)."""

import os
import sys

# The package is normally installed (editable); this makes a plain checkout work too.
sys.path.insert(0, os.path.abspath(".."))

import deepinv_tunable

project = "deepinv_tunable"
author = "deepinv_tunable developers"
copyright = "deepinv_tunable developers"
release = deepinv_tunable.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
    "sphinxcontrib.bibtex",
]

# the papers, cited with :footcite: from docstrings and pages (one bibliography file)
bibtex_bibfiles = ["refs.bib"]

sphinx_gallery_conf = {
    "examples_dirs": "tutorials",  # scripts, executed at build time
    "gallery_dirs": "auto_tutorials",  # generated pages (not in git)
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
}

exclude_patterns = ["_build", "benchmark_table.rst", "tutorials/README.rst", "sg_execution_times.rst"]
templates_path = []
html_static_path = []
html_theme = "alabaster"

# Docstrings are deepinv-style reST (":param type name:"). Classes without their own docstring
# (pydantic models) must not inherit pydantic's BaseModel docstring.
autodoc_inherit_docstrings = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
autoclass_content = "class"
