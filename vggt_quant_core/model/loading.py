"""Load and save VGGT weights without unpickling code and without doubling peak memory.

Accepted: the official ``model.pt`` (plain float32 state dict), ``.safetensors`` files, and
directories holding one of them (plus an optional ``config.json``). The model is built on the meta
device and each tensor is converted and assigned as it is read, so the peak is one model in its
final dtype plus one tensor (memory-mapped ``.pt`` tensors are used in place when no cast is needed).
"""

import json
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..fileio import PathLike, atomic_path
from .config import HEAD_NAMES, VGGTConfig
from .vggt import VGGT

# File names looked for inside a checkpoint directory, in order of preference.
_WEIGHT_NAMES = ("model.safetensors", "model.pt", "state_dict.safetensors", "pytorch_model.bin")
# Keys of the huggingface hub config of facebook/VGGT-1B (the VGGT constructor arguments).
_HUB_CONFIG_KEYS = {"img_size", "patch_size", "embed_dim", "enable_camera", "enable_point", "enable_depth",
                    "enable_track"}
_CONFIG_METADATA_KEY = "vggt_config"
_REPORT = 5  # how many offending keys an error lists per kind


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable, unsafe, or not matching the model."""


def _find_weights(directory: Path) -> Path:
    for name in _WEIGHT_NAMES:
        if (directory / name).is_file():
            return directory / name
    candidates = sorted(p for p in directory.iterdir() if p.suffix in (".safetensors", ".pt", ".pth"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise CheckpointError(f"{directory}: no weights file (.safetensors, .pt, .pth) in this directory")
    raise CheckpointError(f"{directory}: several weight files, pass one explicitly: "
                          f"{', '.join(p.name for p in candidates)}")


def _config_from_json(path: Path) -> VGGTConfig:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable config ({exc})") from exc
    try:
        if set(data) <= _HUB_CONFIG_KEYS:  # huggingface hub config: VGGT-1B sizes, optional heads off
            if data.get("embed_dim", 1024) != 1024 or data.get("patch_size", 14) != 14:
                raise ValueError("the official VGGT constructor only supports embed_dim 1024, patch 14")
            config = VGGTConfig(img_size=data.get("img_size", 518))
            return config.without_heads(*[n for n in HEAD_NAMES if not data.get(f"enable_{n}", True)])
        return VGGTConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid VGGT config ({exc})") from exc


def _file_kind(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(9)
    if not head:
        raise CheckpointError(f"{path}: file is empty")
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    return "torch-legacy"


class _TensorSource:
    """Uniform lazy access to the tensors of a .pt or .safetensors file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.metadata: Dict[str, str] = {}
        kind = _file_kind(path)
        try:
            if kind == "safetensors":
                self._file = safe_open(str(path), framework="pt", device="cpu")
                self.metadata = self._file.metadata() or {}
                self._keys = list(self._file.keys())
                self._tensors = None
            else:
                loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=kind == "torch-zip")
                self._tensors = _unwrap_state_dict(loaded, path)
                self._keys = list(self._tensors)
        except CheckpointError:
            raise
        except Exception as exc:  # the readers raise many types for damaged files
            raise CheckpointError(_describe_read_error(path, exc)) from exc

    def keys(self) -> List[str]:
        return self._keys

    def shape(self, key: str) -> Tuple[int, ...]:
        if self._tensors is not None:
            return tuple(self._tensors[key].shape)
        return tuple(self._file.get_slice(key).get_shape())

    def get(self, key: str) -> torch.Tensor:
        try:
            return self._tensors[key] if self._tensors is not None else self._file.get_tensor(key)
        except Exception as exc:
            raise CheckpointError(_describe_read_error(self.path, exc)) from exc


def _describe_read_error(path: Path, exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    if "Weights only load failed" in str(exc):
        return (f"{path}: the file holds Python objects other than tensors; refusing to unpickle it "
                f"(only weights_only=True loading is allowed)")
    return f"{path}: not a readable checkpoint, possibly truncated or corrupt ({exc.__class__.__name__}: {text})"


def _unwrap_state_dict(loaded, path: Path) -> Dict[str, torch.Tensor]:
    """The official file is a flat state dict; also accept {"model": sd} / {"state_dict": sd}."""
    if isinstance(loaded, dict) and len(loaded) == 1 and next(iter(loaded)) in ("model", "state_dict"):
        loaded = next(iter(loaded.values()))
    if not isinstance(loaded, dict) or not loaded:
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor), got {type(loaded).__name__}")
    bad = [k for k, v in loaded.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors: {bad[:_REPORT]}")
    return loaded


def low_precision_parameter_names(model: VGGT) -> set:
    """Parameters stored in the reduced ``dtype`` by ``load_vggt``: Linear/Conv weights and biases of
    the aggregator, exactly what autocast would cast anyway. Norms, LayerScale, tokens, position
    embeddings and the heads stay float32."""
    names = set()
    for module_name, module in model.aggregator.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            names.update(f"aggregator.{module_name}.{p}" for p, _ in module.named_parameters())
    return names


def _summarise(kind: str, keys: Iterable[str]) -> str:
    keys = list(keys)
    more = f" (+{len(keys) - _REPORT} more)" if len(keys) > _REPORT else ""
    return f"{len(keys)} {kind}: {', '.join(keys[:_REPORT])}{more}"


def load_vggt(path: PathLike, *, config: Optional[VGGTConfig] = None, dtype: torch.dtype = torch.float32,
              device: Union[str, torch.device] = "cpu", heads: Optional[Iterable[str]] = None) -> VGGT:
    """Build VGGT and load weights with strict key and shape matching; returns the model in eval mode.

    Args:
        path: a weights file or a directory containing one (and optionally ``config.json``).
        config: architecture; default: ``config.json`` beside the weights, the config stored in a
            checkpoint written by ``save_vggt``, else VGGT-1B.
        dtype: storage dtype of the aggregator's Linear/Conv parameters (float32, bfloat16 or
            float16); everything else stays float32. Run reduced-precision models under autocast
            (``vggt_quant_core.inference.run_vggt`` does).
        device: where the parameters end up.
        heads: heads to build (``camera``, ``depth``, ``point``, ``track``); weights of the others are
            skipped. Default: every head of the config.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    weights = _find_weights(path) if path.is_dir() else path
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
    source = _TensorSource(weights)
    if config is None:
        config_json = weights.parent / "config.json"
        if _CONFIG_METADATA_KEY in source.metadata:
            config = VGGTConfig.from_dict(json.loads(source.metadata[_CONFIG_METADATA_KEY]))
        elif config_json.is_file():
            config = _config_from_json(config_json)
        else:
            config = VGGTConfig()
    if heads is not None:
        heads = set(heads)
        config = config.without_heads(*[n for n in config.enabled_heads if n not in heads])
        missing_heads = heads - set(config.enabled_heads)
        if missing_heads:
            raise CheckpointError(f"{weights}: head(s) {sorted(missing_heads)} requested but absent from "
                                  f"the config")

    with torch.device("meta"):
        model = VGGT(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    disabled = tuple(f"{n}_head." for n in HEAD_NAMES if n not in config.enabled_heads)
    present = [k for k in source.keys() if not k.startswith(disabled)]
    missing = [k for k in expected if k not in set(present)]
    unexpected = [k for k in present if k not in expected]
    mismatched = [f"{k} {list(source.shape(k))} vs model {list(expected[k])}"
                  for k in present if k in expected and source.shape(k) != expected[k]]
    if missing or unexpected or mismatched:
        problems = [_summarise(kind, keys) for kind, keys in (
            ("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)) if keys]
        raise CheckpointError(f"{weights} does not match the model "
                              f"({len(expected)} tensors expected): " + "; ".join(problems))

    low_precision = low_precision_parameter_names(model)
    state = {}
    for key in expected:
        tensor = source.get(key)
        target = dtype if key in low_precision else torch.float32
        state[key] = tensor.to(device=device, dtype=target)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def save_vggt(model: VGGT, path: PathLike) -> None:
    """Write the weights as float32 ``.safetensors`` with the architecture config in the metadata,
    atomically (an interrupted save leaves any previous file intact)."""
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {_CONFIG_METADATA_KEY: json.dumps(model.config.to_dict())}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
