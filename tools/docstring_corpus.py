"""Training text for distillation benchmarks without a download: sentences from the docstrings of the Python
standard library installed here (a few thousand, technical English). Distillation needs only inputs, no labels:
the float teacher's outputs on them are the targets."""

from __future__ import annotations

import importlib
import inspect
import re

MODULES = ("argparse", "asyncio", "calendar", "collections", "configparser", "csv", "datetime", "decimal", "difflib",
           "email.message", "fractions", "ftplib", "functools", "gettext", "heapq", "http.client", "http.server",
           "imaplib", "inspect", "ipaddress", "json", "logging", "mailbox", "multiprocessing", "optparse", "os",
           "pathlib", "pdb", "pickle", "random", "re", "shutil", "smtplib", "socket", "sqlite3", "statistics",
           "string", "subprocess", "tarfile", "textwrap", "threading", "typing", "unittest", "urllib.parse",
           "urllib.request", "zipfile")


def docstring_sentences(modules: tuple[str, ...] = MODULES) -> list[str]:
    """Distinct sentences of 6-30 words, mostly letters, from the docstrings of ``modules`` and of the classes
    and functions they define (in a fixed order: the same Python gives the same list)."""
    sentences: dict[str, None] = {}
    for name in modules:
        module = importlib.import_module(name)
        documented = [module, *(value for _, value in sorted(vars(module).items())
                                if (inspect.isfunction(value) or inspect.isclass(value))
                                and getattr(value, "__module__", None) == name)]
        for item in documented:
            for paragraph in (inspect.getdoc(item) or "").split("\n\n"):
                for sentence in re.split(r"(?<=[.!?])\s+", " ".join(paragraph.split())):
                    if _is_prose(sentence):
                        sentences[sentence] = None
    return list(sentences)


def _is_prose(sentence: str) -> bool:
    words = sentence.split()
    letters = sum(c.isalpha() or c == " " for c in sentence)
    return (6 <= len(words) <= 30 and sentence[0].isupper() and sentence[-1] in ".?!" and ">>>" not in sentence
            and letters > 0.9 * len(sentence))
