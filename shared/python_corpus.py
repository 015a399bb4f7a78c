"""A real-text corpus that ships with every CPython: language reference topics and docstrings.

The continued-pretraining chapter needs a second domain that is real English prose and
that nobody has to download. CPython carries two such texts: ``pydoc_data.topics`` (the
reference-manual topics behind ``help("assert")``) and the docstrings of its standard
library. Both change a little between Python versions, so the corpus is reproduced byte for
byte only on the same minor version (see ``python_version``).

Documents are separated exactly as in ``shared.tiny_world``: a newline, ``ENDOFTEXT`` and
another newline after each document.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import platform
import sys
from pydoc_data.topics import topics

from shared.tiny_world import ENDOFTEXT

# Standard-library modules that exist from 3.10 to 3.13 (sorted). About 40 would
# give a fair sample; we take more so that the corpus reaches about 1.6 M characters.
MODULES = """
abc argparse array ast asyncio base64 binascii bisect builtins bz2 cProfile calendar cmath
cmd code codecs collections collections.abc colorsys concurrent.futures configparser
contextlib contextvars copy copyreg csv dataclasses datetime dbm decimal difflib doctest
email.generator email.headerregistry email.message email.parser email.policy email.utils
enum filecmp fileinput fnmatch fractions ftplib functools gc getopt gettext glob graphlib
gzip hashlib heapq html html.parser http.client http.cookiejar http.cookies http.server
imaplib importlib.metadata importlib.resources inspect io ipaddress itertools json locale
logging logging.handlers lzma mailbox math mimetypes numbers operator optparse os pathlib
pdb pickle pkgutil platform poplib posixpath pprint profile pyclbr queue random re runpy
sched secrets selectors shelve shlex shutil signal smtplib socket socketserver sqlite3 ssl
statistics string struct subprocess symtable sys tarfile tempfile textwrap threading time
timeit tokenize traceback types typing unicodedata unittest unittest.mock urllib.parse
urllib.request urllib.robotparser uuid wave weakref wsgiref.headers wsgiref.simple_server
wsgiref.util xml.dom.minidom xml.etree.ElementTree xml.sax xmlrpc.client xmlrpc.server
zipfile zlib
""".split()
VAL_SHARE = 0.05


def python_version() -> str:
    """The running Python's minor version, e.g. "3.11": the corpus depends on it."""
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def build_info() -> dict[str, str]:
    """What the exact bytes depend on: Python version (minor and full) and the platform.

    Docstrings change between minor versions, ``pydoc_data.topics`` can change in patch
    releases, and some modules (``os``) document different functions on each platform.
    """
    return {
        "python": python_version(),
        "python_full": platform.python_version(),
        "platform": sys.platform,
    }


def _public_members(module) -> list[tuple[str, object]]:
    """Sorted (name, object) for the module's public classes and functions.

    ``__all__`` says what is public when the module defines it; otherwise we keep names
    without a leading underscore that are defined in the module itself (not imported).
    Objects that come from outside the standard library are skipped: test runners and
    debuggers patch a few (pytest replaces ``pdb.set_trace`` and ``threading.excepthook``).
    """
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in dir(module) if not n.startswith("_")]
    members = []
    for name in sorted(set(names)):
        obj = getattr(module, name, None)
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        home = getattr(obj, "__module__", None) or ""
        if home.split(".")[0] not in sys.stdlib_module_names:
            continue
        # C-accelerated modules define their functions in "_bisect" for "bisect", etc.
        local = home.lstrip("_") == module.__name__ or home.startswith(module.__name__ + ".")
        if hasattr(module, "__all__") or local:
            members.append((name, obj))
    return members


class _Elided:
    """Stands in for a default value whose text would differ between runs or machines."""

    def __repr__(self) -> str:
        return "..."


def _plain_default(value) -> bool:
    """Literals print the same everywhere; objects print memory addresses, strings may be paths."""
    if isinstance(value, str):
        return "/" not in value and "\\" not in value
    return value is None or isinstance(value, (bool, int, float, bytes))


def _header(qualname: str, obj) -> str:
    """ "json.dumps(obj, *, skipkeys=False, ...)" when a signature exists, else the name.

    Defaults other than plain literals print as "..." (``<object object at 0x7f..>`` or
    ``executable='/usr/bin/python3'`` would make the corpus differ from run to run), and
    annotations are left out for the same reason.
    """
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return qualname
    empty = inspect.Parameter.empty
    params = [
        p.replace(
            annotation=empty,
            default=p.default if p.default is empty or _plain_default(p.default) else _Elided(),
        )
        for p in signature.parameters.values()
    ]
    return qualname + str(signature.replace(parameters=params, return_annotation=empty))


def _module_documents(module_name: str) -> list[tuple[str, str]]:
    """(header, docstring) for a module, its public classes and functions, and their methods."""
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return []  # missing in this Python: skipped on purpose
    out = [(module_name, inspect.getdoc(module) or "")]
    for name, obj in _public_members(module):
        qualname = f"{module_name}.{name}"
        out.append((_header(qualname, obj), inspect.getdoc(obj) or ""))
        if inspect.isclass(obj):
            for attr in sorted(vars(obj)):
                method = getattr(obj, attr, None)
                if not attr.startswith("_") and inspect.isroutine(method):
                    out.append(
                        (_header(f"{qualname}.{attr}", method), inspect.getdoc(method) or "")
                    )
    return out


def python_docs_documents() -> list[str]:
    """Every document, in a fixed order: pydoc topics by key, then modules as in MODULES.

    A docstring that appeared before (inherited docs, aliases) is dropped, and so is any
    text that contains the ENDOFTEXT marker, which would break the document boundaries.
    """
    docs, seen = [], set()
    for key in sorted(topics):  # "if" and "else" share one text
        if topics[key].strip() not in seen:
            seen.add(topics[key].strip())
            docs.append(topics[key].strip())
    for module_name in MODULES:
        for header, doc in _module_documents(module_name):
            doc = doc.strip()
            if len(doc) < 40 or doc in seen:  # skip stubs like "Return self."
                continue
            seen.add(doc)
            docs.append(f"{header}\n\n{doc}")
    return [doc for doc in docs if ENDOFTEXT not in doc]


def join_documents(docs: list[str]) -> str:
    """Documents joined the tiny-world way: each one followed by "\\n<|endoftext|>\\n"."""
    return "".join(f"{doc}\n{ENDOFTEXT}\n" for doc in docs)


def python_docs_text() -> str:
    """The whole corpus as one string (see data/README.md for its size)."""
    return join_documents(python_docs_documents())


def _goes_to_val(doc: str, seed: int) -> bool:
    """A seeded hash of the text decides, so adding one document moves no other one."""
    digest = hashlib.sha256(f"{seed}\n{doc}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < VAL_SHARE * 2**64


def make_python_splits(seed: int = 0) -> dict[str, str]:
    """Train and val split by whole documents: about ``VAL_SHARE`` of them go to val."""
    docs = python_docs_documents()
    val = [_goes_to_val(doc, seed) for doc in docs]
    return {
        "train": join_documents([d for d, v in zip(docs, val) if not v]),
        "val": join_documents([d for d, v in zip(docs, val) if v]),
    }
