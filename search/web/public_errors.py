"""How a failure becomes what a visitor or an API caller reads: one line, naming no server folder, and as a
Gradio error, escaped (gradio's toast shows its message as HTML, and messages may quote a query, an id, a filter
value or an uploaded file's name)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import gradio as gr

from search.web.page_text import html_text

# An absolute path's folders: a slash not inside a word, a number or a URL, then names each ending in a slash.
_FOLDERS = re.compile(r"(?<![\w.:/~-])/(?:[^\s/:]+/)+")


def without_server_paths(message: str, paths: tuple[Any, ...] = ()) -> str:
    """`message` naming files as the caller knows them: each of `paths` by its name, any other absolute
    path without its folders (an upload's temporary path says where the server keeps its files)."""
    for path in paths:
        if isinstance(path, str) and os.path.isabs(path):
            message = message.replace(path, Path(path).name)
    return _FOLDERS.sub("", message)


def bug_message(exc: BaseException) -> str:
    """What a caller is told of a failure that is a bug, not their input: its kind only (the rest goes to the log)."""
    return f"the search failed on the server ({type(exc).__name__}); try again or report it"


def shown_error(message: str, paths: tuple[Any, ...] = ()) -> gr.Error:
    """The gr.Error for `message`: without server paths, escaped for the toast, no traceback in the log."""
    return gr.Error(html_text(without_server_paths(message, paths), attribute=False), print_exception=False)
