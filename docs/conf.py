"""Sphinx configuration for deepinv_tunable (built-in extensions, sphinx-gallery for the
tutorials, which run on the CPU at every build, intersphinx links to the libraries we build on,
and the default theme)."""

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
    "sphinx.ext.intersphinx",
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

# -- Links to other projects' docs (intersphinx) ---------------------------------------------
# Each inventory is read from docs/_intersphinx/<name>.inv when that cache exists (fill it with
# `make docs-inventories`), else downloaded. DOCS_OFFLINE=1 (set by `make docs-check`, which CI
# runs without network) skips the download, so that an unreachable site is not a warning.
INTERSPHINX_URLS = {
    "python": "https://docs.python.org/3",
    "torch": "https://docs.pytorch.org/docs/stable",
    "numpy": "https://numpy.org/doc/stable",
    "deepinv": "https://deepinv.github.io/deepinv",
    "lightning": "https://lightning.ai/docs/pytorch/stable",
    "pydantic": "https://docs.pydantic.dev/latest",
    "nibabel": "https://nipy.org/nibabel",
    "torchio": "https://docs.torchio.org",
}
_inventory_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_intersphinx")
_offline = os.environ.get("DOCS_OFFLINE", "") not in ("", "0")
intersphinx_mapping = {}
for _name, _url in INTERSPHINX_URLS.items():
    _cache = os.path.join(_inventory_dir, f"{_name}.inv")
    _locations = ([_cache] if os.path.isfile(_cache) else []) + ([] if _offline else [None])
    if _locations:
        intersphinx_mapping[_name] = (_url, tuple(_locations))
intersphinx_timeout = 5  # seconds: without network a download fails fast instead of hanging

# Top-level modules whose names are left unlinked, without a warning, when their inventory was not
# loaded (offline) or does not exist (None: diffusers, safetensors, annotated_types). `-n` then
# reports only this package's own broken references, which are always checked.
_EXTERNAL_INVENTORY = {
    **{name: name for name in ("torch", "numpy", "deepinv", "lightning", "pydantic", "nibabel", "torchio")},
    **dict.fromkeys(("typing", "collections", "pathlib", "os", "types"), "python"),
    **dict.fromkeys(("diffusers", "safetensors", "annotated_types")),
}
# Private import paths that autodoc takes from ``__module__``: no inventory lists them, since
# these objects are documented under their public names.
_PUBLIC_NAMES = {
    "deepinv.physics.forward.": "deepinv.physics.",
    "deepinv.physics.mri.": "deepinv.physics.",
    "deepinv.models.base.": "deepinv.models.",
    "deepinv.sampling.diffusion.": "deepinv.sampling.",
    "torch._C.": "torch.",
    "torch.nn.modules.module.": "torch.nn.",
    "torch.optim.optimizer.": "torch.optim.",
    "pydantic.main.": "pydantic.",
    "lightning.pytorch.core.module.": "lightning.pytorch.core.",
    "lightning.pytorch.core.datamodule.": "lightning.pytorch.core.",
    "lightning.pytorch.callbacks.callback.": "lightning.pytorch.callbacks.",
    "torchio.transforms.augmentation.composition.": "torchio.transforms.",
    "types.Annotated": "typing.Annotated",  # how autodoc writes typing.Annotated
}


def _public_name(app, env, node, contnode):
    """Rewrite a private path to its public name before intersphinx looks it up."""
    target = node.get("reftarget", "")
    for private, public in _PUBLIC_NAMES.items():
        if target.startswith(private):
            node["reftarget"] = public + target[len(private) :]
            break


def _quiet_external(app, domain, node):
    """Silence a reference into an external module whose inventory is not loaded."""
    top = node.get("reftarget", "").split(".")[0]
    if top not in _EXTERNAL_INVENTORY:
        return None
    loaded = getattr(app.env, "intersphinx_named_inventory", {})
    return _EXTERNAL_INVENTORY[top] not in loaded or None


def _factory_default(app, what, name, obj, options, signature, return_annotation):
    """Show a dataclass ``default_factory`` as ``...``: ``<factory>`` makes Sphinx give up
    parsing the signature and split ``dict[str, float]`` at its comma."""
    if signature and "<factory>" in signature:
        return signature.replace("<factory>", "..."), return_annotation
    return None


def setup(app):
    # before intersphinx's own handler (priority 500), which then resolves the public name
    app.connect("missing-reference", _public_name, priority=400)
    app.connect("warn-missing-reference", _quiet_external)
    app.connect("autodoc-process-signature", _factory_default)
