"""The model registry on disk: versions published atomically into a Triton model repository, and aliases.

Layout of a registry folder (local by default; the same tree is what a Triton pod mounts)::

    registry.json                     aliases ({"champion": 3, "challenger": 4}); written atomically
    versions/<V>/card.json            the model card; its presence is what makes version V registered
    versions/<V>/status.json          what a rollout concluded (failed with its reasons, or promoted), if any
    models/                           the local Triton model repository (avlops serve points Triton here)
      <model>/<V>/                    version V of a model: model.py, serving.json, model.onnx, weights, catalogue
      <model>/configs/v<V>.pbtxt      the configuration serving version V (Triton's --model-config-name=v<V>)
      <model>/configs/<alias>.pbtxt   the configuration of an alias's version (--model-config-name=<alias>)
      <model>/config.pbtxt            the champion's (what a plain ``tritonserver --model-repository`` loads)
    gpu/                              the GPU production repository: same layout, configs rendered for GPUs,
      <model>/<V> -> ../../models/<model>/<V>     version folders shared with the local repository
    .staging/  .lock

Publishing version V: everything is written under ``.staging`` and fsynced; then, holding ``.lock``, each model's
version folder is renamed into place (each rename is atomic, and no configuration names V yet, so Triton never loads
a partial set), its ``configs/v<V>.pbtxt`` is written (temp file, fsync, rename), and the card's folder is renamed
last. Aliases change by rewriting ``registry.json`` and the alias configurations, composing models before ensembles.
A crash leaves at most version folders without a card; the next registration removes them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from avlops.fileio import exclusive_lock, read_json_object, write_bytes_atomic, write_json_atomic

__all__ = ["ALIAS_PATTERN", "CHAMPION", "Registry", "RegistryError"]

CHAMPION = "champion"
ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_VERSION_CONFIG = re.compile(r"^v(\d+)$")
FORMAT = "avlops.registry"


class RegistryError(RuntimeError):
    """A registry operation that cannot be done (unknown version or alias, a busy or corrupt registry)."""


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (folders best effort), deepest first."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            path = Path(folder) / name
            if path.is_symlink():
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        with contextlib.suppress(OSError):
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def check_alias(alias: str) -> str:
    if not ALIAS_PATTERN.match(alias) or _VERSION_CONFIG.match(alias):
        raise RegistryError(f"alias {alias!r}: use lowercase letters, digits, '-' or '_', not v<N>")
    return alias


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.models = self.root / "models"
        self.gpu = self.root / "gpu"
        self.cards = self.root / "versions"

    # -- reading ------------------------------------------------------------------------------------------------
    def versions(self) -> list[int]:
        """Registered versions (those with a card), oldest first."""
        if not self.cards.is_dir():
            return []
        return sorted(int(p.name) for p in self.cards.iterdir() if p.name.isdigit() and (p / "card.json").is_file())

    def card(self, version: int) -> dict[str, Any]:
        path = self.cards / str(version) / "card.json"
        if not path.is_file():
            raise RegistryError(f"{self.root}: no version {version} (registered: {self.versions() or 'none'})")
        return read_json_object(path, what="model card", error=RegistryError)

    def aliases(self) -> dict[str, int]:
        path = self.root / "registry.json"
        if not path.is_file():
            return {}
        data = read_json_object(path, what="registry file", error=RegistryError)
        return {str(k): int(v) for k, v in data.get("aliases", {}).items()}

    def resolve(self, ref: str | int) -> int:
        """A version number, ``v<N>``, ``N`` or an alias -> a registered version."""
        text = str(ref)
        m = _VERSION_CONFIG.match(text)
        if m or text.isdigit():
            version = int(m.group(1) if m else text)
            if version not in self.versions():
                raise RegistryError(f"{self.root}: no version {version} (registered: {self.versions() or 'none'})")
            return version
        aliases = self.aliases()
        if text not in aliases:
            raise RegistryError(f"{self.root}: no alias {text!r} (aliases: {aliases or 'none'})")
        return aliases[text]

    def find_checkpoint(self, sha256: str) -> int | None:
        """The newest version registered from weights with this sha256, if any."""
        for version in reversed(self.versions()):
            if self.card(version).get("checkpoint", {}).get("sha256") == sha256:
                return version
        return None

    def model_names(self, version: int) -> list[str]:
        return list(self.card(version)["models"])

    def blessed(self, version: int) -> bool:
        """Whether the evaluation verdict recorded in the version's card blessed it."""
        blessing = self.card(version).get("evaluation", {}).get("blessing", {})
        return bool(isinstance(blessing, dict) and blessing.get("blessed") is True)

    def status(self, version: int) -> dict[str, Any]:
        """What rollouts concluded about a version (``versions/<V>/status.json``): ``{}`` when nothing yet, else
        ``{"status": "failed" | "promoted", "reasons": [...], "rollout": id, "at": time}``."""
        self.card(version)  # an unknown version is an error, not an empty status
        path = self.cards / str(version) / "status.json"
        return read_json_object(path, what="rollout status", error=RegistryError) if path.is_file() else {}

    def set_status(self, version: int, status: str, reasons: list[str], **extra: Any) -> None:
        """Record a rollout's conclusion about ``version`` (atomically; the card itself never changes)."""
        self.card(version)
        write_json_atomic(self.cards / str(version) / "status.json", {"status": status, "reasons": reasons, **extra})

    # -- writing ------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive hold on the registry (one writer at a time); raises at once if another process holds it."""
        with exclusive_lock(
            self.root, lambda: RegistryError(f"{self.root}: another registration or promotion is running")
        ):
            yield

    def next_version(self) -> int:
        """The next version number, past every version folder on disk (even a crash's leftovers)."""
        seen = set(self.versions())
        if self.models.is_dir():
            for model in self.models.iterdir():
                if model.is_dir():
                    seen |= {int(p.name) for p in model.iterdir() if p.name.isdigit()}
        return max(seen, default=0) + 1

    def remove_orphans(self) -> list[Path]:
        """Delete version folders (and their configs) that no card registers: a crashed registration's remains."""
        registered = set(self.versions())
        removed: list[Path] = []
        for repo in (self.models, self.gpu):
            if not repo.is_dir():
                continue
            for model in repo.iterdir():
                for child in model.iterdir() if model.is_dir() else ():
                    if child.name.isdigit() and int(child.name) not in registered:
                        if child.is_symlink():
                            child.unlink()
                        else:
                            shutil.rmtree(child)
                        removed.append(child)
                for cfg in (model / "configs").glob("v*.pbtxt") if model.is_dir() else ():
                    m = _VERSION_CONFIG.match(cfg.stem)
                    if m and int(m.group(1)) not in registered:
                        cfg.unlink()
                        removed.append(cfg)
        shutil.rmtree(self.root / ".staging", ignore_errors=True)
        return removed

    def staging(self, version: int) -> Path:
        base = self.root / ".staging"
        base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"v{version}-", dir=base))

    def commit(self, stage: Path, version: int, configs: Mapping[str, Mapping[str, str]]) -> None:
        """Move staged version ``version`` into place (see the module docstring). ``configs[repo][model]`` is the
        rendered configuration text of each model for the ``models`` and ``gpu`` repositories; the caller holds
        :meth:`lock`. Model order matters: composing models come before the ensembles that pin them."""
        _fsync_tree(stage)
        for repo_name, by_model in configs.items():
            repo = self.root / repo_name
            for model in by_model:
                src, dest = stage / repo_name / model / str(version), repo / model / str(version)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dest)
            for model, text in by_model.items():
                write_bytes_atomic(repo / model / "configs" / f"v{version}.pbtxt", text.encode())
        self.cards.mkdir(parents=True, exist_ok=True)
        os.replace(stage / "versions" / str(version), self.cards / str(version))
        with contextlib.suppress(OSError):
            fd = os.open(self.cards, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)

    def set_alias(self, alias: str, version: int, render: Any) -> None:
        """Point ``alias`` at ``version`` and rewrite its configurations (``champion`` also ``config.pbtxt``).

        ``render(repo_name, model, version_config_text, alias) -> text`` re-labels a version's configuration;
        the caller holds :meth:`lock`.
        """
        check_alias(alias)
        if version not in self.versions():
            raise RegistryError(f"{self.root}: no version {version} to point {alias!r} at")
        models = self.model_names(version)
        for repo in (self.models, self.gpu):
            for model in models:  # composing models first: the card lists them in contract order
                base = repo / model / "configs"
                text = render(repo.name, model, (base / f"v{version}.pbtxt").read_text(encoding="utf-8"), alias)
                write_bytes_atomic(base / f"{alias}.pbtxt", text.encode())
                if alias == CHAMPION:
                    write_bytes_atomic(repo / model / "config.pbtxt", text.encode())
        aliases = {**self.aliases(), alias: version}
        write_json_atomic(self.root / "registry.json", {"format": FORMAT, "format_version": 1, "aliases": aliases})
