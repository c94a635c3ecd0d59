"""Pieces the app's pages share: the cached Library, progress bars, the cluster button, paging.

Everything goes through the public Library API, as the CLI does. Library errors (PeoplemapError) are
shown with st.error and never as a traceback.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import threading
import time
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import streamlit as st

from ..errors import PeoplemapError
from ..wording import PROFILE_DETAILS, count, duration, plural, profile_label

if TYPE_CHECKING:
    from ..library import Library

PROFILES = ["default", "seed"]
PROFILE_HELP = "“Recommended” suits most libraries; “Original design” is how peoplemap first did it."


def library_path(argv: Sequence[str] | None = None) -> Optional[str]:
    """The --library argument the launcher passes after `--` (Streamlit puts it in sys.argv)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--library")
    args, _ = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    return args.library or os.environ.get("PEOPLEMAP_LIBRARY") or None


@st.cache_resource(show_spinner=False)
def get_library(path: str) -> "Library":
    """One Library per server process, so its embedders, FAISS indexes and cluster models load once."""
    from ..library import Library

    return Library.open(path, create=True)


def library() -> "Library":
    """The app's Library; stops the page with a message when it cannot be opened."""
    path = library_path()
    if path is None:
        st.error("No library given. Start the app with `peoplemap ui --library PATH`.")
        st.stop()
    try:
        return get_library(path)
    except PeoplemapError as e:
        show_error(e)
        st.stop()
    raise AssertionError("unreachable")  # st.stop() raises


def choose_vector_set(lib: "Library") -> None:
    """Sidebar choice of the vector set the pages show, when the library holds several.

    Called from the entry script: a widget there keeps its value across pages (a widget inside
    a page is a new widget on every other page)."""
    names = [s.model for s in lib.vector_sets()]
    if len(names) < 2:
        return
    wanted = st.session_state.pop("show_model", None)  # a page asked for a model it just indexed
    if wanted in names:
        st.session_state["vector_set"] = wanted
    elif st.session_state.get("vector_set") not in names:
        st.session_state["vector_set"] = names[-1]
    st.sidebar.selectbox("Vector set", names, key="vector_set",
                         help="The library holds vectors from several models; pick one.")


def current_model(lib: "Library") -> Optional[str]:
    """The vector set the pages show: the only one, or the sidebar's choice; None if none yet."""
    names = [s.model for s in lib.vector_sets()]
    if not names:
        return None
    for choice in (st.session_state.get("show_model"), st.session_state.get("vector_set")):
        if choice in names:
            return choice
    return names[-1]


def open_page(title: str, when_empty: str = "") -> "Optional[tuple[Library, str]]":
    """Draw a page's title; (library, vector set shown) or None (after saying so) when nothing is
    indexed yet. when_empty: what to add to the "index a folder first" hint."""
    st.title(title)
    lib = library()
    model = current_model(lib)
    if model is None:
        st.info("The library is empty: index a folder on the Index page first" + (when_empty or "."))
        return None
    return lib, model


STAGE_WORDS = {"index": "files", "assign": "placing new faces", "cluster": "step"}


class StreamlitProgress:
    """A Library progress callback drawn as one st.progress bar (at most ~10 redraws a second)."""

    def __init__(self, label: str):
        self.label = label
        self.bar = st.progress(0.0, text=f"{label}…")
        self._thread = threading.current_thread()
        self._last = 0.0

    def __call__(self, stage: str, done: int, total: Optional[int]) -> None:
        # Streamlit calls only work on the script's thread; other threads are simply not drawn.
        if threading.current_thread() is not self._thread:
            return
        now = time.monotonic()
        final = total is not None and done >= total
        if not final and now - self._last < 0.1:
            return
        self._last = now
        what = STAGE_WORDS.get(stage, stage)
        if total:
            self.bar.progress(min(1.0, done / total), text=f"{self.label}: {what} {done:,} / {total:,}")
        else:
            self.bar.progress(0.0, text=f"{self.label}: {what} {done:,}")

    def clear(self) -> None:
        self.bar.empty()


def run_cluster(lib: "Library", model: Optional[str], profile: str) -> bool:
    """Cluster with a progress bar; the summary lands in session state. False (and st.error) on error."""
    bar = StreamlitProgress("Clustering")
    try:
        s = lib.cluster(model=model, profile=profile, progress=bar)
    except PeoplemapError as e:
        bar.clear()
        show_error(e)
        return False
    bar.clear()
    st.session_state["cluster_summary"] = s
    return True


def kind_of(lib: "Library", model: Optional[str]) -> str:
    """What one item of the vector set is ("face", "body", "image"), for wording.count."""
    return lib.vector_set(model).item_kind


def cluster_summary_text(lib: "Library", s) -> str:
    kind = kind_of(lib, s.model)
    n_people = len(lib.people(s.model))
    return (f"Grouped {count(s.n_items, kind)} into **{plural(n_people, 'person', 'people')}** in "
            f"{duration(s.seconds)}; {count(s.n_noise, kind)} unsorted.")


def cluster_controls(lib: "Library", model: Optional[str], key: str) -> None:
    """Profile choice and a "Cluster" button; shows the last clustering summary of this session.
    The profile's technical description is one click away."""
    left, right = st.columns([2, 1], vertical_alignment="bottom")
    profile = left.selectbox("How to group", PROFILES, key=f"{key}_profile", help=PROFILE_HELP,
                             format_func=profile_label)
    if right.button("Cluster", key=f"{key}_cluster", type="primary", width="stretch"):
        run_cluster(lib, model, profile)
    with st.expander("Technical details"):
        st.caption(f"Profile `{profile}`: {md_escape(PROFILE_DETAILS.get(profile, ''))}")
    s = st.session_state.get("cluster_summary")
    if s is not None:
        st.success(cluster_summary_text(lib, s))


def pager(label: str, n: int, per_page: int, key: str, what: str = "") -> tuple[int, int]:
    """A page picker when n things take more than one page; returns the [start, stop) shown.
    what: a word put before the numbers of each choice ("clusters 11–20")."""
    n_pages = max(1, math.ceil(n / per_page))
    page_no = 1
    prefix = f"{what} " if what else ""
    if n_pages > 1:
        page_no = st.selectbox(label, range(1, n_pages + 1), key=key, format_func=lambda p: (
            f"{p} of {n_pages}: {prefix}{(p - 1) * per_page + 1}–{min(p * per_page, n)}"))
    start = (page_no - 1) * per_page
    return start, min(n, start + per_page)


def md_escape(text: str) -> str:
    """Text shown literally in Markdown (file names may hold `*`, `_`, `[`, ...)."""
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in text)


_MD_SPECIAL = set("\\`*_{}[]()#+-.!|<>~$:")


def md_code(text: str) -> str:
    """Text as a Markdown code span, whatever backticks it holds."""
    if "`" not in text:
        return f"`{text}`"
    fence = "`" * (max(len(m) for m in re.findall("`+", text)) + 1)
    return f"{fence} {text} {fence}"


def show_error(e: Exception, what: str = "") -> None:
    """A library error as a red box with its message (never a traceback)."""
    st.error((md_escape(what) + ": " if what else "") + md_escape(str(e)))


def short(name: str, n: int = 12) -> str:
    return name if len(name) <= n else name[:n - 1] + "…"


# -- pages and app settings ------------------------------------------------------------------------
PAGES: dict[str, "st.Page"] = {}
"""The app's pages by url path ("people", "photo", "review", ...), filled by app.main on every run,
so that a page can link to another (st.page_link, st.switch_page) with query parameters."""


def page_link(name: str, label: str, **query: object) -> None:
    """A link to another page of the app, with query parameters (a face's photo, a person)."""
    target = PAGES.get(name)
    if target is None:  # run outside app.py (a page tested on its own): no link to draw
        return
    st.page_link(target, label=label, query_params={k: str(v) for k, v in query.items()})


SETTINGS_FILE = "app-settings.json"
"""The app's settings kept in the library folder (JSON: never code), so a choice such as "hide
people seen fewer than N times" holds for every session and after a restart."""


def app_setting(lib: "Library", key: str, default):
    """A setting the user chose in the app, or `default`."""
    import json

    try:
        data = json.loads((lib.path / SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        return default
    value = data.get(key, default) if isinstance(data, dict) else default
    return value if isinstance(value, type(default)) else default


def set_app_setting(lib: "Library", key: str, value) -> None:
    """Remember a setting (written atomically; a read-only library keeps it for this run only)."""
    import json

    f = lib.path / SETTINGS_FILE
    try:
        data = json.loads(f.read_text())
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data[key] = value
    try:
        tmp = f.with_name(f".{f.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, f)
    except OSError:
        pass


def assign_to(lib: "Library", model: str, item_ids: Sequence[int], who: str):
    """Give faces to a person the user typed or picked: a number ("12", "Person 12") or a name
    someone has joins them to that person (confirmed); a new name makes a new person of them.
    Returns (the person, whether it is new)."""
    from ..errors import InputError
    from ..people import valid_name

    who = valid_name(who)
    try:
        person = lib.person(who, model)
    except InputError:
        if re.fullmatch(r"(?i)(person\s*|#)?\d+", who):
            raise  # a number that is nobody: not a name to give someone
        return lib.new_person(list(item_ids), who, model), True
    return lib.confirm_items(person.id, list(item_ids), model), False


def act(flash_key: str, where: str, action: Callable[[], str]) -> None:
    """Run a user's edit; on success rerun, with its message shown by the control that did it
    (`flash(flash_key, where)`), and the people pages' caches refreshed; a library error is shown."""
    try:
        message = action()
    except PeoplemapError as e:
        show_error(e)
        return
    st.session_state[flash_key] = (where, message)
    st.session_state["people_rev"] = st.session_state.get("people_rev", 0) + 1
    st.rerun()


def flash(flash_key: str, where: str) -> None:
    """The message of the last edit made at `where`, if any."""
    message = st.session_state.get(flash_key)
    if message and message[0] == where:
        st.success(md_escape(message[1]))


def open_edit_page(title: str, flash_key: str):
    """`open_page` for a page where the user edits people: (library, vector set, item kind, the
    last action's (where, message) or None), with that message shown as a toast; None when empty."""
    opened = open_page(title)
    if opened is None:
        return None
    lib, model = opened
    last = st.session_state.get(flash_key)
    if last:
        st.toast(md_escape(last[1]))
    return lib, model, kind_of(lib, model), last
