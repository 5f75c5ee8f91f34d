"""Sphinx configuration for deepinv_tunable (built-in extensions and the default theme only)."""

import os
import sys

# The package is normally installed (editable); this makes a plain checkout work too.
sys.path.insert(0, os.path.abspath(".."))

import deepinv_tunable  # noqa: E402

project = "deepinv_tunable"
author = "deepinv_tunable developers"
copyright = "deepinv_tunable developers"
release = deepinv_tunable.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build"]
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
