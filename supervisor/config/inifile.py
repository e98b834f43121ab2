"""The ini-file core shared by ``config.ini`` and ``taskautomation.ini``: reading the file safely, splitting it
into case-insensitive sections (the user's spelling kept for messages), looking a key up through a validator,
and the unknown-section/key warnings.

It knows no schema: config.py says which sections and keys exist. Every message has one shape, built by
``Context``: ``task 'NAME': /abs/config.ini: [Section] Key = 'value': reason`` (the home config omits the
``task`` part).
"""

from __future__ import annotations

import configparser
import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, TypeVar

from .. import safefile
from ..errors import ConfigError
from ..safefile import UnsafeFileError
from .values import InvalidValue

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    key: str  # as the user spelled it
    value: str


@dataclass(frozen=True)
class Section:
    name: str  # as the user spelled it
    entries: Mapping[str, Entry]  # lower-cased key -> entry, in file order


@dataclass(frozen=True)
class Context:
    """Where a message comes from: the prefix every error and warning starts with."""

    path: Path
    task: str | None

    @property
    def prefix(self) -> str:
        file = os.path.abspath(self.path)
        return f"task '{self.task}': {file}" if self.task is not None else file

    def error(self, section: str, key: str, value: str, reason: str) -> ConfigError:
        return ConfigError(f"{self.prefix}: [{section}] {key} = {value!r}: {reason}")

    def fail(self, what: str) -> ConfigError:
        return ConfigError(f"{self.prefix}: {what}")

    def warning(self, what: str) -> str:
        return f"{self.prefix}: {what}"


def parse_sections(text: str, ctx: Context) -> dict[str, Section]:
    """Split ``text`` into case-insensitive sections; configparser syntax errors become ConfigError."""
    parser = configparser.ConfigParser(
        interpolation=None,  # a '%' in a value (a URL, a format string) must not break parsing
        inline_comment_prefixes=(";", "#"),  # only after whitespace: 'a#b' stays a value
        strict=True,  # exact duplicates are reported with their line number
        empty_lines_in_values=False,
        # [DEFAULT] would silently leak its keys into every section; make it an ordinary (unknown) one.
        default_section="\0no default section",
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep spelling; we fold case ourselves
    try:
        parser.read_string(text, source=os.fspath(ctx.path))
    except configparser.DuplicateSectionError as exc:
        raise ctx.fail(f"line {exc.lineno}: section [{exc.section}] appears twice") from None
    except configparser.DuplicateOptionError as exc:
        raise ctx.fail(f"line {exc.lineno}: [{exc.section}] {exc.option} appears twice") from None
    except configparser.MissingSectionHeaderError as exc:
        raise ctx.fail(f"line {exc.lineno}: {exc.line.strip()!r} comes before any [section] header") from None
    except configparser.ParsingError as exc:
        errors = list(getattr(exc, "errors", ()))
        if errors:
            lineno = errors[0][0]
            lines = text.split("\n")  # configparser counts lines the same way (StringIO)
            # configparser stores repr(line) with its newline; show the line as the user wrote it.
            shown = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else str(errors[0][1])
            more = f" (and {len(errors) - 1} more bad lines)" if len(errors) > 1 else ""
            raise ctx.fail(f"line {lineno}: cannot parse {shown!r}: expected 'Key = value'{more}") from None
        raise ctx.fail(f"cannot parse: {exc}") from None
    except configparser.Error as exc:
        raise ctx.fail(f"cannot parse: {exc}") from None

    sections: dict[str, Section] = {}
    for name in parser.sections():
        folded = name.strip().lower()
        if folded in sections:
            raise ctx.fail(
                f"section [{name}] appears twice (also as [{sections[folded].name}]); "
                "section names are case-insensitive"
            )
        entries: dict[str, Entry] = {}
        for key, value in parser.items(name, raw=True):
            fkey = key.lower()
            if fkey in entries:
                raise ctx.fail(f"[{name}] {key} appears twice (also as {entries[fkey].key}); keys are case-insensitive")
            entries[fkey] = Entry(key, value)
        sections[folded] = Section(name, entries)
    return sections


def _closest(word: str, candidates: tuple[str, ...]) -> str | None:
    """The canonical candidate ``word`` is an obvious typo of, if any."""
    by_lower = {c.lower(): c for c in candidates}
    match = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.75)
    return by_lower[match[0]] if match else None


def unknown_warnings(sections: Mapping[str, Section], schema: Mapping[str, tuple[str, ...]], ctx: Context) -> list[str]:
    """One warning per unknown section and per unknown key in a known section."""
    warnings: list[str] = []
    canonical_sections = tuple(schema)
    for folded, section in sections.items():
        known_section = next((s for s in canonical_sections if s.lower() == folded), None)
        if known_section is None:
            hint = _closest(section.name, canonical_sections)
            suffix = f" (did you mean [{hint}]?)" if hint else ""
            warnings.append(ctx.warning(f"[{section.name}]: unknown section, ignored{suffix}"))
            continue
        known_keys = schema[known_section]
        for fkey, entry in section.entries.items():
            if any(k.lower() == fkey for k in known_keys):
                continue
            # A known key in the wrong section is a likelier mistake than a typo: say where it belongs.
            home = next((s for s, keys in schema.items() if any(k.lower() == fkey for k in keys)), None)
            if home is not None:
                canonical = next(k for k in schema[home] if k.lower() == fkey)
                hint = f" ({canonical} belongs in [{home}])"
            else:
                close = _closest(entry.key, known_keys)
                hint = f" (did you mean {close}?)" if close else ""
            warnings.append(ctx.warning(f"[{known_section}] {entry.key}: unknown key, ignored{hint}"))
    return warnings


def lookup(
    sections: Mapping[str, Section],
    section: str,
    key: str,
    parse: Callable[[str], T],
    default: T,
    ctx: Context,
    *,
    shown: Callable[[str], str] | None = None,
) -> T:
    """``[section] key`` parsed by ``parse``; ``default`` when absent; ConfigError when invalid, showing the
    value as ``shown`` makes it (a secret's error must not print the secret)."""
    found = sections.get(section.lower())
    entry = found.entries.get(key.lower()) if found is not None else None
    if entry is None:
        return default
    try:
        return parse(entry.value)
    except InvalidValue as exc:
        raise ctx.error(section, key, shown(entry.value) if shown else entry.value, str(exc)) from None


def has_key(sections: Mapping[str, Section], section: str, key: str) -> bool:
    """True when ``[section] key`` is in the file (whatever its value)."""
    found = sections.get(section.lower())
    return found is not None and key.lower() in found.entries


def present_values(sections: Mapping[str, Section], section: str, keys: tuple[str, ...]) -> dict[str, str]:
    """The raw values of ``keys`` present in ``section``, under their canonical spelling."""
    found = sections.get(section.lower())
    if found is None:
        return {}
    return {key: found.entries[key.lower()].value for key in keys if key.lower() in found.entries}


def read_text(path: Path, ctx: Context, *, missing_ok: bool = False) -> str:
    """The file's text, decoded as UTF-8 (a BOM is accepted: Windows editors add one).

    Read through :mod:`.safefile`: a FIFO, device or directory named config.ini, a symlink loop or a file
    over the 1 MiB cap is a ConfigError naming the cause, never a blocked or unbounded read.
    """
    try:
        return safefile.read_text(path, max_bytes=safefile.CONFIG_MAX_BYTES)
    except FileNotFoundError:
        if missing_ok:
            raise
        raise ctx.fail("cannot read: file does not exist") from None
    except UnsafeFileError as exc:
        raise ctx.fail(exc.reason) from None
