"""The versions of the sequence model the workers serve: one folder each, one symlink swapped
atomically, the last K kept, rollback, and the decisions log.

Beside the folder the workers watch (``INTEREST_STREAM_SEQUENCE_MODEL_DIR``, default
``<home>/models/sequence``)::

    models/sequence                         -> sequence.versions/seq-1a2b3c4d5e6f (relative link)
    models/sequence.versions/<version>/     a complete model folder (graph, items, card)
    models/sequence.versions/versions.json  the promotion history, oldest first
    models/sequence.decisions.jsonl         one JSON line per decision (the dashboard's table)

A promotion moves a finished model folder (staged in ``sequence.versions``, so on the same file
system) to ``sequence.versions/<version>`` and then swaps the link: a new link under a temporary
name is renamed over the old one (``rename(2)``), so a path through ``models/sequence`` reaches
the old version or the new one, never a mixture. The workers' watcher
(:mod:`streams.worker.model_watch`) compares the card's (mtime, size, inode) through the link:
every version has its own card file, so a swap, a rollback included, is a new card to it. The
link is relative, so the models folder can be mounted elsewhere (a container) whole.

The history is a stack: a promotion pushes (dropping versions that were rolled back), a rollback
pops back to the version promoted before the serving one. Version folders not among the last
``keep`` entries are deleted at a promotion. A folder left by ``interest-stream train --out``
(no link yet) is adopted as the first version. Every change holds an exclusive lock
(``sequence.versions/.lock``), so a trainer and an operator's rollback never interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from encoders.runtime.sequence import CARD_FILE
from streams.errors import ModelRejected
from streams.settings import Settings
from streams.worker.dashboard import decisions_log

__all__ = [
    "HISTORY_FILE",
    "ModelStore",
    "VersionEntry",
    "append_decision",
    "card_version",
    "model_group",
]

HISTORY_FILE = "versions.json"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True, slots=True)
class VersionEntry:
    """One promotion: the version (its folder's name), when, and by what (``trainer``,
    ``train`` for a model written by ``interest-stream train --out``, ``adopted``)."""

    version: str
    at: float
    how: str


def card_version(folder: Path) -> str:
    """The ``version`` of the model card in ``folder``; :class:`ModelRejected` when unreadable."""
    try:
        card = json.loads((Path(folder) / CARD_FILE).read_text(encoding="utf-8"))
        version = card["version"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelRejected(f"no readable model card in {folder}: {exc}") from exc
    if not isinstance(version, str) or not _SAFE_NAME.match(version):
        raise ModelRejected(f"model card in {folder} has an unusable version {version!r}")
    return version


def append_decision(path: Path, record: Mapping[str, Any]) -> None:
    """Append one decision as one JSON line (one ``write`` in append mode, then fsync)."""
    line = json.dumps(record, ensure_ascii=False, allow_nan=False, sort_keys=True) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


class ModelStore:
    """The versions behind the live folder ``live`` (what the workers watch); a promotion keeps
    the last ``keep`` (``None``: every version in the history)."""

    def __init__(self, live: Path, keep: int | None = None) -> None:
        if keep is not None and keep < 2:
            raise ValueError("keep at least 2 versions (one to serve, one to roll back to)")
        self.live = Path(live)
        self.keep = keep
        self.root = self.live.parent / f"{self.live.name}.versions"
        self.decisions = decisions_log(self.live)

    # ------------------------------------------------------------------ reading

    def serving(self) -> str | None:
        """The version the live folder holds now (``None``: no model there)."""
        try:
            return card_version(self.live)
        except ModelRejected:
            return None

    def serving_folder(self) -> Path | None:
        """The version folder the link points at (``None``: no link, or not into the store)."""
        if not self.live.is_symlink():
            return None
        target = (self.live.parent / os.readlink(self.live)).resolve()
        return target if target.parent == self.root.resolve() else None

    def history(self) -> list[VersionEntry]:
        """The promotion history, oldest first (empty when there is none or it is unreadable)."""
        try:
            raw = json.loads((self.root / HISTORY_FILE).read_text(encoding="utf-8"))
            return [VersionEntry(str(e["version"]), float(e["at"]), str(e["how"])) for e in raw]
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def kept(self) -> list[str]:
        """Version folders on disk (finished ones: staging folders start with a dot)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith("."))  # fmt: skip

    # ------------------------------------------------------------------ changing

    def staging(self) -> Path:
        """A new empty folder inside the store to write a candidate into (same file system)."""
        folder = self.root / f".staging-{uuid.uuid4().hex[:12]}"
        folder.mkdir(parents=True)
        return folder

    def discard(self, staged: Path) -> None:
        """Remove a staging folder (a candidate that was not promoted)."""
        if staged.parent == self.root and staged.name.startswith(".staging-"):
            shutil.rmtree(staged, ignore_errors=True)

    def promote(self, staged: Path, *, how: str, expect: str | None | bool = False) -> str:
        """Make the finished model in ``staged`` the served one; returns its version.

        ``staged`` (from :meth:`staging`) becomes ``<root>/<version>``; the link is swapped; the
        history gets the new entry (versions rolled back from are dropped from it) and version
        folders beyond the last ``keep`` entries are deleted. ``expect``: the version the
        decision was made against (``None``: no model; ``False``, the default: not checked);
        another one serving now (a rollback meanwhile) raises :class:`ModelRejected` and
        changes nothing.
        """
        version = card_version(staged)
        with self._locked():
            if expect is not False and (now := self.serving()) != expect:
                raise ModelRejected(f"the serving model changed to {now} during the round "
                                    f"(compared with {expect}): not promoted")  # fmt: skip
            self._adopt_legacy()
            target = self.root / version
            if target.exists():  # the same graph again (its digest names the version)
                shutil.rmtree(staged)
            else:
                os.rename(staged, target)
            history = self._upto_serving(self.history())
            self._link(version)
            history.append(VersionEntry(version, time.time(), how))
            history = history[-self.keep :] if self.keep else history
            self._write_history(history)
            self._prune(history)
        return version

    def rollback(self) -> tuple[str, str]:
        """Serve the version promoted before the serving one; returns (from, to)."""
        if not self.root.is_dir():
            raise ModelRejected(f"no version history behind {self.live}: nothing to roll back")
        with self._locked():
            self._adopt_legacy()
            history = self._upto_serving(self.history())
            current = self.serving_folder()
            if current is None or not history:
                raise ModelRejected(f"no version history behind {self.live}: nothing to roll back")
            if history[-1].version != current.name:
                raise ModelRejected(f"the serving version {current.name} is not in the history")
            if len(history) < 2:
                raise ModelRejected(
                    f"{current.name} is the oldest version kept: nothing to roll back to"
                )
            previous = history[-2].version
            if not (self.root / previous / CARD_FILE).is_file():
                raise ModelRejected(f"kept version {previous} has no model card any more")
            self._link(previous)
            self._write_history(history[:-1])
        return current.name, previous

    # ------------------------------------------------------------------ internals

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _upto_serving(self, history: list[VersionEntry]) -> list[VersionEntry]:
        """The history up to the serving version's last entry (after a rollback, or a crash
        between the swap and the history write, the entries beyond it are not served)."""
        current = self.serving_folder()
        names = [entry.version for entry in history]
        if current is None or current.name not in names:
            return history
        last = len(names) - 1 - names[::-1].index(current.name)
        return history[: last + 1]

    def _adopt_legacy(self) -> None:
        """A plain folder at the live path (``interest-stream train --out``) becomes the first
        version: renamed into the store (same files, same card inode) and linked at once."""
        live = self.live
        if live.is_symlink() or not live.exists():
            return
        if not live.is_dir():
            raise ModelRejected(f"{live} is a file, not a model folder")
        if not any(live.iterdir()):
            live.rmdir()
            return
        version = card_version(live)
        target = self.root / version
        if target.exists():
            target = self.root / f"{version}.adopted-{uuid.uuid4().hex[:6]}"
        os.rename(live, target)
        self._link(target.name)
        self._write_history([*self.history(), VersionEntry(target.name, time.time(), "adopted")])

    def _link(self, name: str) -> None:
        """Swap the live link to ``<root>/<name>`` with one rename, then sync the folder."""
        tmp = self.live.parent / f".{self.live.name}.{uuid.uuid4().hex[:8]}.tmp"
        os.symlink(Path(self.root.name) / name, tmp)
        try:
            os.replace(tmp, self.live)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        _sync_dir(self.live.parent)

    def _write_history(self, history: list[VersionEntry]) -> None:
        tmp = self.root / f".{HISTORY_FILE}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_text(json.dumps([asdict(e) for e in history], indent=1) + "\n", "utf-8")
        os.replace(tmp, self.root / HISTORY_FILE)

    def _prune(self, history: list[VersionEntry]) -> None:
        """Delete version folders that are neither in ``history`` nor served."""
        keep = {entry.version for entry in history}
        serving = self.serving_folder()
        if serving is not None:
            keep.add(serving.name)
        for name in self.kept():
            if name not in keep:
                shutil.rmtree(self.root / name, ignore_errors=True)


def _sync_dir(folder: Path) -> None:
    """fsync a folder, so that a rename in it survives a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- CLI


@click.group("model")
@click.option("--models", "live", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="The folder the workers hot-reload (default: INTEREST_STREAM_SEQUENCE_MODEL_DIR"
              ", <home>/models/sequence).")  # fmt: skip
@click.pass_context
def model_group(ctx: click.Context, live: Path | None) -> None:
    """The served sequence model's versions: list them, roll back one."""
    settings = ctx.obj if isinstance(ctx.obj, Settings) else Settings.from_env()
    ctx.obj = ModelStore(live or settings.resolved_sequence_model_dir)


@model_group.command("list")
@click.pass_obj
def list_command(store: ModelStore) -> None:
    """The kept versions, newest first; * marks the one the workers serve."""
    serving = store.serving_folder()
    history = store.history()
    if serving is None:
        version = store.serving()
        click.echo(f"{store.live}: " + (f"{version}, not versioned yet (the trainer's first "
                   "promotion adopts it)" if version else "no model"))  # fmt: skip
    for entry in reversed(history):
        mark = "*" if serving is not None and entry.version == serving.name else " "
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(entry.at))
        click.echo(f"{mark} {entry.version}  {when}  {entry.how}")
    for name in sorted(set(store.kept()) - {e.version for e in history}):
        click.echo(f"  {name}  (rolled back from; removed at the next promotion)")


@model_group.command("rollback")
@click.pass_obj
def rollback_command(store: ModelStore) -> None:
    """Serve the version promoted before the serving one (workers switch without a restart)."""
    try:
        before, after = store.rollback()
    except ModelRejected as exc:
        raise click.ClickException(exc.reason) from exc
    append_decision(store.decisions, {
        "time": time.time(), "action": "rollback", "promoted": True, "from": before,
        "to": after, "reason": "interest-stream model rollback",
    })  # fmt: skip
    click.echo(f"rolled back from {before} to {after}; the workers load it at their next poll "
               "(INTEREST_STREAM_MODEL_POLL_S)")  # fmt: skip
