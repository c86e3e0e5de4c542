"""Hygiene for what crosses a boundary: text that must encode, names that become paths, secrets.

Everything a user sends, a server replies or a file holds passes through one of these before it is
published, written or joined to a path:

- :func:`clean_text` — any ``str`` made encodable as UTF-8 (lone surrogates, which JSON ``\\ud800``
  escapes and some servers produce, become U+FFFD); ``rclpy`` and ``Path.write_text`` raise on them.
- :func:`check_json_depth` — a bound on nesting checked *before* ``json.loads`` (Python's decoder
  recurses and a 4 KiB ``[[[[…`` raises ``RecursionError``).
- :func:`safe_name` / :func:`child_path` — ids and labels as one path component inside a root
  (``../../x`` never leaves it).
- :func:`redact_url` / :func:`redact` — credentials in ``base_url`` (``https://user:key@host``,
  ``?api_key=``) and API key values never reach logs, traces or answers.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REPLACEMENT = "\ufffd"
_SECRET_QUERY_KEYS = {"api_key", "apikey", "key", "token", "access_token", "auth", "password", "secret"}


def clean_text(text: Any) -> str:
    """``text`` as a ``str`` that encodes to UTF-8: valid surrogate pairs joined, lone ones → U+FFFD.

    >>> clean_text("ok \\ud800 end")
    'ok \\ufffd end'
    """
    if not isinstance(text, str):
        text = str(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def is_encodable(text: str) -> bool:
    """True when ``text`` encodes to UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def clean_json(value: Any) -> Any:
    """A JSON-like value with every string (keys too) passed through :func:`clean_text`."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(k) if isinstance(k, str) else k: clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


def check_json_depth(text: str, max_depth: int) -> int:
    """Nesting depth of JSON ``text`` (brackets outside strings), checked without recursion.

    Returns:
        The depth.

    Raises:
        ValueError: Deeper than ``max_depth``.
    """
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > max_depth:
                    raise ValueError(f"JSON nested deeper than {max_depth} levels")
        elif ch in "]}":
            depth -= 1
    return deepest


def safe_name(text: Any, max_len: int = 64) -> str:
    """One path component made from an id or label: letters, digits, ``-_.``; never ``.``/``..``.

    Names that had to change get a short hash of the original, so two different ids never share a
    folder (``a/b`` and ``a_b`` stay apart).

    >>> safe_name("scene_0001_q3"), safe_name("../../etc/passwd")
    ('scene_0001_q3', 'etc_passwd_936d7c04')
    """
    original = clean_text("" if text is None else text)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", original).strip("._")[:max_len]
    if name == original and name:
        return name
    digest = hashlib.sha1(original.encode("utf-8")).hexdigest()[:8]
    return f"{name[: max_len - 9]}_{digest}" if name else f"id_{digest}"


def child_path(root: str | Path, *names: Any) -> Path:
    """``root/safe_name(n1)/safe_name(n2)/...``, guaranteed to lie inside ``root``."""
    root = Path(root)
    path = root.joinpath(*(safe_name(n) for n in names))
    if not is_inside(root, path):  # unreachable with safe_name; kept as the invariant's check
        raise ValueError(f"{path} is outside {root}")
    return path


def is_inside(root: str | Path, path: str | Path) -> bool:
    """True when ``path`` (resolved, symlinks followed) lies inside ``root``."""
    root_r = Path(root).resolve()
    try:
        Path(path).resolve().relative_to(root_r)
        return True
    except ValueError:
        return False


def redact_url(url: Any) -> str:
    """``url`` without user:password and without secret query values (``?api_key=…`` → ``***``).

    >>> redact_url("https://bob:s3cret@gpu.lan:8000/v1?api_key=k&x=1")
    'https://***@gpu.lan:8000/v1?api_key=%2A%2A%2A&x=1'
    """
    if url is None:
        return ""
    text = str(url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact(text: Any, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """``text`` with each secret value replaced by ``***`` and URL credentials removed."""
    out = clean_text(text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            out = out.replace(secret, "***")
    out = re.sub(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@", r"\1***@", out)
    out = re.sub(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}", r"\1***", out)
    return out
