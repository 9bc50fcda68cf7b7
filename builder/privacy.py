"""Nothing that identifies a patient leaves the build: salted tokens for groups, ids, files, UIDs.

Every identifier a source yields (the patient/group key, the sample id, the files read, DICOM
UIDs) becomes a keyed hash (HMAC-SHA256 with the build's *salt*) before it reaches a case, a
manifest record, a summary or a message. The same salt gives the same tokens, so incremental
builds keep their question identities; without the salt a token cannot be reversed by trying
likely values (patient numbers, dates), which a plain hash would allow.

Where the salt comes from (:func:`resolve_salt`):

* ``build.salt`` in sources.yaml (``${VAR}`` allowed, so it need not be written in the file): use
  it to get the same tokens on every machine (reproducible builds shared by a team);
* otherwise a random per-user key, created once in ``$GMAI_BUILD_KEY_FILE`` or
  ``$XDG_CONFIG_HOME/gmai-build/key`` (default ``~/.config/gmai-build/key``, mode 0600). It is
  stored nowhere in the outputs (an output folder is what gets shared; a key inside it would let
  anyone who receives it test guesses), and it stays the same across this user's builds, so
  incremental builds stay stable. ``build.json`` records only a check value derived from the
  salt, so that building into a folder made with another salt is refused instead of silently
  renumbering every question.

Messages name files by the same token (``f-3fa9c2d1e0b4a7c1.dcm``) as the manifest and the
summary; ``gmai-build --show-paths`` prints real paths on the terminal for local debugging
(never into output files). :meth:`Privacy.scrub` removes paths, path components and DICOM UIDs
that a library message may carry.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

from .errors import BuildError, ConfigError

KEY_FILE_ENV = "GMAI_BUILD_KEY_FILE"
TOKEN_CHARS = 16  # 64 bits: collisions are negligible at benchmark scale
# A DICOM UID (three or more numeric components, 8+ characters: "2.25.<uuid>" has three); the
# standard's own (1.2.840.10008.*) say nothing about a patient and are kept.
_UID = re.compile(
    r"(?<![\w.])(?!1\.2\.840\.10008\.)(?=[\d.]{8,})[0-2](?:\.\d+){2,}(?!\w)(?!\.\d)")
_SAFE_SUFFIX = re.compile(r"^(\.[A-Za-z0-9]{1,6}){1,2}$")
# A path component inside a message: name characters between separators.
_WORD = re.compile(r"[\w.-]+")


def default_key_file() -> Path:
    env = os.environ.get(KEY_FILE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gmai-build" / "key"


def _user_key(path: Path) -> bytes:
    """The per-user key, created (random, 0600) on first use."""
    try:
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another build created it meanwhile
                pass
            else:
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_hex(32) + "\n")
        key = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot use the per-user salt key {path} ({exc.__class__.__name__}); set build.salt "
            f"in sources.yaml or {KEY_FILE_ENV} to a writable file") from None
    if len(key) < 32:
        raise ConfigError(f"the salt key file {path} is damaged (expected 64 hex characters); "
                          "delete it to make a new one (tokens of earlier builds will change)")
    return key.encode()


def resolve_salt(configured: str | None) -> tuple[bytes, str]:
    """(salt bytes, where it came from: "build.salt" or "per-user key")."""
    if configured:
        return configured.encode(), "build.salt"
    return _user_key(default_key_file()), "per-user key"


def _suffix(name: str) -> str:
    """A file suffix that tells the format and nothing else (``.dcm``, ``.nii.gz``)."""
    lower = name.lower()
    for double in (".nii.gz", ".tar.gz"):
        if lower.endswith(double):
            return name[-len(double):]
    suffix = Path(name).suffix
    return suffix if _SAFE_SUFFIX.match(suffix) else ""


class Privacy:
    """Keyed tokens for one build; ``show_paths`` only affects terminal messages."""

    def __init__(self, salt: bytes, show_paths: bool = False):
        self._salt = salt
        self.show_paths = show_paths

    def token(self, kind: str, *parts: object) -> str:
        msg = "\x1f".join([kind, *(str(p) for p in parts)]).encode()
        return hmac.new(self._salt, msg, hashlib.sha256).hexdigest()[:TOKEN_CHARS]

    @property
    def check_value(self) -> str:
        """Recorded in build.json: tells whether a later build uses the same salt."""
        return self.token("salt-check")

    def group(self, source: str, raw: str) -> str:
        return "g-" + self.token("group", source, raw)

    def sample_id(self, source: str, raw: str) -> str:
        return "s-" + self.token("sample", source, raw)

    def file(self, source: str, relative: str, hashed: bool = True) -> str:
        """A file relative to its source root as recorded in outputs: a token, or as it is."""
        if not hashed:
            return relative
        return "f-" + self.token("file", source, relative) + _suffix(Path(relative).name)

    def uid(self, source: str, uid: str) -> str:
        return "uid-" + self.token("uid", source, uid)

    # Messages -----------------------------------------------------------------------------
    def display(self, source: str, root: Path, path: str | Path, hashed: bool = True) -> str:
        """How a message names a file of a source: its token unless ``show_paths``."""
        if self.show_paths:
            return str(path)
        rel = relative_to_root(Path(path), root)
        if rel is None:  # outside the root (allow_outside_root): still never printed
            return self.file(source, Path(path).as_posix())
        return self.file(source, rel, hashed) if rel else "(source root)"

    def scrub(self, text: str, source: str | None, roots: Iterable[Path],
              names: Iterable[str] = (), hashed: bool = True) -> str:
        """``text`` with paths under ``roots``, the path components ``names`` and UIDs replaced."""
        if self.show_paths:
            return text
        src = source or ""
        names = names if isinstance(names, (set, frozenset)) else set(names)
        # Names with characters a path word does not have (spaces, ...) are few: inside a path
        # they are one component, elsewhere they are replaced one by one.
        spaced = sorted((n for n in names if len(n) >= 3 and not _WORD.fullmatch(n)),
                        key=len, reverse=True)  # "a b", and relative paths "a/b.png"
        component = "(?:" + "".join(re.escape(n) + "|" for n in spaced) + r"[^\s'\"`,;()\[\]{}<>/]+)"
        for root in sorted({str(r) for r in roots if str(r) not in ("", ".", "/")}, key=len,
                           reverse=True):
            pattern = re.compile(re.escape(root) + r"(?:/" + component + ")*/?")

            def path(m: re.Match[str], root: str = root) -> str:
                found = m.group(0)
                core = found.rstrip(":./")  # "file /x/a.png: reason" - punctuation stays
                return self.display(src, Path(root), core, hashed) + found[len(core):]

            text = pattern.sub(path, text)
        for name in spaced:  # names with spaces, and relative paths a source named
            if name in text:
                text = text.replace(name, self.file(src, name, hashed))
        if names:
            # Other names: every word of name characters is looked up (fast for large trees).
            def word(m: re.Match[str]) -> str:
                w = m.group(0)
                core = w.strip(".-")  # a sentence's full stop is not part of the name
                for cand in (w, core):
                    if len(cand) >= 3 and cand in names and _names_a_file(m, cand):
                        return w.replace(cand, self.file(src, cand, hashed), 1)
                return w

            text = _WORD.sub(word, text)
        return _UID.sub(lambda m: self.uid(src, m.group(0)), text)


def _names_a_file(m: re.Match[str], name: str) -> bool:
    """Whether a word equal to a file or folder name stands for it in the message.

    A plain lowercase word ("masks", "images", "series") is a file only inside a path or
    quotes (``masks/a.png``, ``'masks'``): in prose it is the message's own word. Anything
    else (digits, capitals, ``_``, a suffix) is treated as the name wherever it appears.
    """
    if not (name.isalpha() and name.islower()):
        return True
    text, start, end = m.string, m.start(), m.end()
    before = text[start - 1] if start else ""
    after = text[end] if end < len(text) else ""
    return before in "/'\"" and before != "" or after in "/'\"" and after != ""


def relative_to_root(path: Path, root: Path) -> str | None:
    """``path`` relative to ``root`` (posix), "" for the root itself, None when outside it."""
    for base in (root, root.resolve()):
        try:
            rel = path.relative_to(base).as_posix()
        except ValueError:
            continue
        return "" if rel == "." else rel
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except (ValueError, OSError):
        return None


@functools.lru_cache(maxsize=8)
def names_under(root: Path, limit: int = 200_000) -> frozenset[str]:
    """Every file and folder name under ``root`` (bounded): what a message must not show.

    Only used when a message is about to be shown (walked once per process and root), so
    builds without errors never walk the tree twice.
    """
    names: set[str] = set()
    try:
        for n, (_dirpath, dirnames, filenames) in enumerate(os.walk(root)):
            names.update(dirnames)
            names.update(filenames)
            if n > limit or len(names) > limit:
                break
    except OSError:
        pass
    return frozenset(names)


def redact_error(exc: BuildError, privacy: Privacy, root: Path, hashed: bool = True,
                 known: Iterable[str] = (), default_source: str | None = None,
                 labels: Iterable[str] = ()) -> BuildError:
    """The same error with the file named by its token and the reason scrubbed.

    ``default_source`` names the source when the error (raised by a reader) does not;
    ``labels`` are the source's raw labels: a class folder named like its label ("COVID") is
    a label, published anyway, and stays readable in the message.
    """
    if exc.redacted:
        return exc
    if privacy.show_paths:
        if exc.source or not default_source:
            return exc
        return BuildError(exc.reason, source=default_source, file=exc.file)
    names = set(names_under(root)) if root.is_dir() else set()
    for rel in known:
        names.update(Path(rel).parts)
        names.add(Path(rel).as_posix())  # named whole, by the token the outputs use
    names.difference_update(labels)
    source = exc.source or default_source or ""
    reason = privacy.scrub(exc.reason, source, [root, root.resolve()], names, hashed)
    file = None
    if exc.file is not None:
        file = privacy.display(source, root, exc.file, hashed)
    new = type(exc).__new__(type(exc))  # keeps the kind (ConfigError, DicomError, ...)
    BuildError.__init__(new, reason, source=source or None, file=file)
    new.redacted = True
    return new


_SOURCE_NAMED = re.compile(r"source '([^']+)'")


def redact_lines(lines: list[str], roots: dict[str, tuple[Path, bool]], privacy: Privacy,
                 known: dict[str, set[str]] | None = None,
                 labels: dict[str, set[str]] | None = None) -> list[str]:
    """Report lines (``validate``) with every source's paths, names and UIDs replaced.

    ``roots`` maps source name -> (root, identifying_paths); ``known`` adds path components a
    source named (a table row naming a file that does not exist is not under the root). A
    line that names its source (``source 'NAME'``) is scrubbed for that source, with the
    tokens the build uses; other lines for every source.
    """
    if privacy.show_paths:
        return lines
    names = {name: ((names_under(root) if root.is_dir() else frozenset())
                    | frozenset((known or {}).get(name, ())))
             - frozenset((labels or {}).get(name, ())) for name, (root, _) in roots.items()}
    out = []
    for line in lines:
        m = _SOURCE_NAMED.search(line)
        for name in ([m.group(1)] if m and m.group(1) in roots else list(roots)):
            root, hashed = roots[name]
            line = privacy.scrub(line, name, [root, root.resolve()], names[name], hashed)
        out.append(line)
    return out
