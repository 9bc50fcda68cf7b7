"""Provenance: what build.json records (tool, settings, sources, input checksums), and the
check that an incremental build uses the salt of the build it extends."""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import __version__
from .config import Config
from .errors import BuildError
from .manifest import MANIFEST, ManifestRecord
from .privacy import Privacy
from .work import sha256_file
from .writer import BUILD_INFO


def check_same_salt(out_dir: Path, privacy: Privacy, config: Config) -> None:
    """Refuse to add to a build made with another salt: every token (and index) would change."""
    info_path = out_dir / BUILD_INFO
    if not (out_dir / MANIFEST).is_file() or not info_path.is_file():
        return
    try:
        old = json.loads(info_path.read_text(encoding="utf-8")).get("salt_check")
    except (OSError, ValueError, AttributeError):
        return
    if old is None:
        raise BuildError(
            f"{out_dir} was built by a gmai-build without salted identifiers: its questions "
            "cannot be matched to this build's; build into a new folder")
    if old != privacy.check_value:
        where = "build.salt" if config.build.salt else "the per-user key (no build.salt given)"
        raise BuildError(
            f"{out_dir} was built with another salt than {where}: its groups, sample ids and "
            "question identities would all change. Use the salt of that build (build.salt), or "
            "build into a new folder")


def settings_for_record(config: Config) -> dict[str, Any]:
    """Build settings for build.json: no salt, no output folder, config files by name only
    (their folders may name a person; their content is what counts)."""
    settings = config.build.model_dump(mode="json", exclude={"out", "salt"})
    if config.build.question_pool is not None:
        settings["question_pool"] = config.build.question_pool.name
    settings["vocabulary"] = [p.name for p in config.build.vocabulary]
    return settings


def build_info(
    config: Config, inputs: dict[str, dict[str, str]], summary: dict[str, Any],
    previous: Mapping[str, ManifestRecord],
) -> dict[str, Any]:
    import cv2
    import numpy as np

    return {
        "tool": "gmai-build",
        "tool_version": __version__,
        "config_file": config.path.name,
        "config_sha256": config.config_hash,
        "seed": config.build.seed,
        "settings": settings_for_record(config),
        "sources": [
            {"name": s.name, "format": s.format, "modality": s.modality, "license": s.license,
             "citation": s.citation, "label_map_sha256": sha256_file(s.label_map)}
            for s in config.sources
        ],
        "input_sha256": inputs,
        "libraries": {"python": platform.python_version(), "numpy": np.__version__,
                      "opencv": cv2.__version__},
        "questions": summary["total"],
        "incremental": bool(previous),
    }
