"""Sphinx configuration for leap-sync's documentation site.

Why Sphinx: autodoc renders the API reference from the docstrings that state each
contract, Furo is the theme websockets uses, and MyST lets every page stay Markdown
(readable on the forge as it is). Build it with ``tox -e docs`` (warnings are errors,
nitpicky: every cross-reference must resolve).
"""

from __future__ import annotations

import leap_sync

project = "leap-sync"
author = "the leap-sync authors"
copyright = "2026, the leap-sync authors"
release = leap_sync.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links resolve, and are checked

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_default_options = {"members": True}
autodoc_preserve_defaults = True

# No network at build time: Python's own objects are named, not linked.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

nitpicky = True
nitpick_ignore = [
    # Internal names that public signatures mention: the type variables of EventChannel
    # and of the servers' start() and connection listings, and the close-code reaction
    # CloseCode.action returns.
    ("py:class", "leap_sync.channels.T"),
    ("py:obj", "leap_sync.channels.T"),
    ("py:class", "leap_sync.wire.close.CloseAction"),
    ("py:class", "leap_sync.testing.websocket.embedded._S"),
    ("py:class", "leap_sync.testing.websocket.embedded.InfoT"),
]
nitpick_ignore_regex = [
    # Standard library and third-party names the reference mentions in signatures; with no
    # intersphinx inventory (the build is offline) they cannot resolve.
    (r"py:.*", r"(builtins|typing|collections\.abc|queue|ssl|logging|socket|threading|datetime|enum|types)\..*"),
    (r"py:.*", r"(_?typeshed|attr|attrs|websocket|websockets|pytest|_pytest|http\.server|io|random)(\..*)?"),
]

html_theme = "furo"
html_title = f"leap-sync {release}"
html_static_path: list[str] = []
