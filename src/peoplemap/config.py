"""Settings with defaults; each can be overridden by an environment variable PEOPLEMAP_<NAME>."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import InputError

RUNTIMES = ("auto", "openvino", "onnxruntime")
"""Inference runtimes for ONNX models; "auto" = OpenVINO when it is installed, else onnxruntime."""
PRECISIONS = ("auto", "fp32", "bf16")
"""Inference precisions; "auto" = bf16 where the CPU computes it natively (OpenVINO only), else fp32."""


def _default_cache() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "peoplemap")


@dataclass(frozen=True)
class Settings:
    default_model: str = "face"
    """Model used when none is named: faces for photos. `mobilenetv2` is the original design's."""
    cache_dir: str = ""
    """Where exported ONNX models are cached (never inside the repository)."""
    batch_size: int = 32
    """Images per model call."""
    max_image_pixels: int = 100_000_000
    """Images declaring more pixels than this are refused before decoding (decompression bombs)."""
    max_file_bytes: int = 512 * 1024 * 1024
    """Files larger than this are refused without reading."""
    max_upload_mb: int = 25
    """Upload limit of the app, and of query bytes passed to search."""
    threads: int = 0
    """Inference threads (onnxruntime intra-op threads; OpenVINO single-threaded streams); 0 = all cores."""
    workers: int = 0
    """Decode threads, or worker processes for models that need them (face); 0 = number of cores."""
    runtime: str = "auto"
    """ONNX inference runtime: auto | openvino | onnxruntime (auto: OpenVINO when installed)."""
    precision: str = "auto"
    """Inference precision: auto | fp32 | bf16 (auto: bf16 on CPUs with native bf16, OpenVINO only)."""
    import_regions: bool = True
    """Index runs read named face regions from photos' XMP (embedded and sidecars) and start the
    people from them (peoplemap.metadata); PEOPLEMAP_IMPORT_REGIONS=0 turns this off."""
    max_sidecar_bytes: int = 4 * 1024 * 1024
    """XMP sidecars larger than this are refused (recorded with the reason; the photo is indexed)."""

    def __post_init__(self) -> None:
        for name, allowed in (("runtime", RUNTIMES), ("precision", PRECISIONS)):
            value = getattr(self, name)
            if value not in allowed:
                raise InputError(f"{name} must be one of {list(allowed)}, got {value!r} "
                                 f"(setting {name}, environment variable PEOPLEMAP_{name.upper()})")
        if self.runtime == "onnxruntime" and self.precision == "bf16":
            raise InputError("precision 'bf16' needs runtime 'openvino' or 'auto'; onnxruntime runs fp32 "
                             "(set PEOPLEMAP_PRECISION=fp32 or auto, or PEOPLEMAP_RUNTIME=openvino)")
        if not self.cache_dir:
            object.__setattr__(self, "cache_dir", _default_cache())

    @property
    def model_dir(self) -> Path:
        return Path(self.cache_dir) / "models"


def load_settings(**overrides: object) -> Settings:
    """Defaults, then PEOPLEMAP_* environment variables, then explicit keyword overrides."""
    values: dict[str, object] = {}
    for f in fields(Settings):
        env = os.environ.get(f"PEOPLEMAP_{f.name.upper()}")
        if env is None:
            continue
        if f.type in ("int", int):
            try:
                values[f.name] = int(env)
            except ValueError:
                raise InputError(f"PEOPLEMAP_{f.name.upper()}={env!r} is not an integer") from None
        elif f.type in ("bool", bool):
            word = env.strip().lower()
            if word not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise InputError(f"PEOPLEMAP_{f.name.upper()}={env!r} is not one of 1/0, true/false, "
                                 "yes/no, on/off")
            values[f.name] = word in ("1", "true", "yes", "on")
        elif f.name in ("runtime", "precision"):
            values[f.name] = env.strip().lower()
        else:
            values[f.name] = env
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)  # type: ignore[arg-type]
