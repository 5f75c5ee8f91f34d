"""Fill ``docs/_intersphinx/`` with the intersphinx inventories that ``docs/conf.py`` links to,
so that later builds link to other projects' docs without network (``make docs-inventories``).

Each inventory is downloaded from its site. Python's, when that fails, is copied from a local
install of its docs (Debian: ``apt-get install python3.11-doc``). The cache is not committed:
these files belong to other projects and change with their releases; run this again to refresh.
"""

import ast
import glob
import shutil
import sys
import urllib.request
from pathlib import Path

DOCS = Path(__file__).resolve().parent
CACHE = DOCS / "_intersphinx"
LOCAL = {"python": sorted(glob.glob("/usr/share/doc/python3*/html/objects.inv"))}
MAGIC = b"# Sphinx inventory version"


def inventory_urls() -> dict[str, str]:
    """``INTERSPHINX_URLS`` of conf.py, read without executing it (that imports torch)."""
    for node in ast.parse((DOCS / "conf.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "INTERSPHINX_URLS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit("docs/conf.py has no INTERSPHINX_URLS")


def fetch(name: str, url: str) -> str:
    target = CACHE / f"{name}.inv"
    tmp = target.with_suffix(".tmp")
    try:
        with urllib.request.urlopen(f"{url}/objects.inv", timeout=10) as response:
            data = response.read()
        if not data.startswith(MAGIC):
            raise ValueError("not a Sphinx inventory")
        tmp.write_bytes(data)
        tmp.replace(target)
        return f"downloaded from {url}"
    except Exception as err:  # offline, moved, not Sphinx: fall back or leave the entry out
        for path in LOCAL.get(name, []):
            shutil.copyfile(path, tmp)
            tmp.replace(target)
            return f"copied from {path} (download failed: {err.__class__.__name__})"
        return f"not cached ({err})"


def main() -> int:
    CACHE.mkdir(exist_ok=True)
    for name, url in inventory_urls().items():
        print(f"{name:10s} {fetch(name, url)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
