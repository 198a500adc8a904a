"""Files named one by one: each checked (exists, is a file, has a kind's suffix), list files, roots.

A list of paths, a list file's lines, a directory's or a glob's matches: every named file is
checked here, a local path on disk, a URL from one round of listings of the folders the URLs
name (not a request per file), and each one that fails becomes a bad input
(:class:`~weightmaps.errors.BadSample`) instead of an error. :func:`common_parent` is the root
the ids of a list are relative to. Cut here because local discovery and remote discovery both
take lists whose entries may be either: the one place that knows both kinds of file.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from weightmaps import remote_files
from weightmaps.errors import BadSample, WeightmapsError
from weightmaps.location import is_url
from weightmaps.readers import file_suffix
from weightmaps.sources.found import SampleKind, strip_suffix

__all__ = ["check_file", "check_url", "checked_files", "common_parent", "file_checker", "read_list_file"]


def checked_files(
    files: Sequence[str], kind: SampleKind, options: Mapping[str, Any] | None = None
) -> tuple[list[str], list[BadSample]]:
    """The files that exist and have a suffix of ``kind``, and a bad input for each other one."""
    check = file_checker(files, kind, options)
    good, problems = [], []
    for f in files:
        try:
            check(f)
        except WeightmapsError as exc:
            if is_url(f):
                problems.append(BadSample(strip_suffix(posixpath.basename(f)), f, _reason(exc, f)))
            else:
                problems.append(BadSample(strip_suffix(os.path.basename(f)), os.path.abspath(f), _reason(exc, f)))
        else:
            good.append(f)
    return good, problems


def _reason(exc: WeightmapsError, path: str) -> str:
    message = str(exc)
    return message[len(path) + 2:] if message.startswith(f"{path}: ") else message


def read_list_file(
    list_path: str, kind: SampleKind, options: Mapping[str, Any] | None = None
) -> tuple[list[str], list[BadSample]]:
    """The files a list file names, and a bad input for each line naming none (all of them).

    A local or remote (URL) list file; its lines may be URLs, checked together (one listing of
    each folder they name) after the local ones."""
    remote_list = is_url(list_path)
    base = remote_files.url_parent(list_path) if remote_list else os.path.dirname(os.path.abspath(list_path))
    try:
        if remote_list:
            lines = remote_files.fetch(list_path, options).decode("utf-8").splitlines()
        else:
            with open(list_path, encoding="utf-8") as f:
                lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise WeightmapsError(f"{list_path}: cannot read the list file: {e}") from e
    named: list[tuple[int, str]] = []
    for lineno, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if is_url(entry):
            p = remote_files.normalize_url(entry)
        elif remote_list:
            p = remote_files.url_join(base, entry)
        else:
            p = os.path.join(base, os.path.expanduser(entry))
        named.append((lineno, p))
    check = file_checker([p for _, p in named], kind, options)
    files, problems = [], []
    for lineno, p in named:
        try:
            check(p)
        except WeightmapsError as e:
            problems.append(BadSample(f"{list_path}:{lineno}", None, str(e)))  # "<list>:<line>: <file>: why"
            continue
        files.append(p)
    if not files and not problems:
        raise WeightmapsError(f"{list_path}: the list file names no {kind.noun} files")
    return files, problems


def file_checker(files: Sequence[str], kind: SampleKind, options: Mapping[str, Any] | None) -> Callable[[str], None]:
    """``check(f)`` for each of ``files``: :func:`check_file`, or :func:`check_url` from one
    round of listings of the URLs among them (not a request per file)."""
    urls = [f for f in files if is_url(f)]
    infos = remote_files.infos(urls, (), options) if urls else {}

    def check(f: str) -> None:
        if is_url(f):
            check_url(f, kind, infos.get(f))
        else:
            check_file(f, kind)

    return check


def check_file(path: str, kind: SampleKind) -> None:
    """Raise a WeightmapsError naming ``path`` unless it is an existing file of ``kind``."""
    if os.path.islink(path) and not os.path.exists(path):
        raise WeightmapsError(f"{path}: a link to {os.readlink(path)}, which does not exist")
    if not os.path.exists(path):
        raise WeightmapsError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise WeightmapsError(f"{path}: not a file")
    if file_suffix(path) not in kind.suffixes:
        raise WeightmapsError(
            f"{path}: not {kind.a_noun} file (expected one of {', '.join(kind.suffixes)})"
        )


def check_url(url: str, kind: SampleKind, info: Mapping[str, Any] | None) -> None:
    """:func:`check_file` of a URL, from its listing info (None: not listed)."""
    if info is None:
        raise WeightmapsError(f"{url}: no such file")
    if info.get("type", "file") != "file":
        raise WeightmapsError(f"{url}: not a file")
    if file_suffix(url) not in kind.suffixes:
        raise WeightmapsError(f"{url}: not {kind.a_noun} file (expected one of {', '.join(kind.suffixes)})")


def common_parent(paths: Sequence[str]) -> str:
    """The root a list's sample ids are relative to: the deepest folder holding every path (for
    URLs on several buckets, the protocol's root); local paths and URLs do not mix."""
    urls = [p for p in paths if is_url(p)]
    if not urls:
        return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    if len(urls) < len(paths):
        raise WeightmapsError(
            f"{urls[0]} and {next(p for p in paths if not is_url(p))}: the inputs mix URLs and local "
            "paths; sample ids are relative to one root, so give them in one place"
        )
    schemes = {u.partition("://")[0] for u in urls}
    if len(schemes) > 1:
        raise WeightmapsError(f"the inputs mix protocols ({', '.join(sorted(schemes))}); give them in one place")
    scheme = schemes.pop()
    hosts = {u.partition("://")[2].split("/", 1)[0] for u in urls}
    if len(hosts) > 1:
        return f"{scheme}://"  # several buckets: ids start with the bucket
    folders = ["/" + remote_files.url_parent(u).partition("://")[2].partition("/")[2] for u in urls]
    common = posixpath.commonpath(folders).rstrip("/")
    return f"{scheme}://{hosts.pop()}{common}"
