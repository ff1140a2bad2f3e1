"""Run-directory files: weights and training state in safetensors, config in JSON.

Nothing here unpickles: ``safetensors`` holds only tensors and string metadata, so a
checkpoint can never execute code when loaded. Every write goes to a temporary file
that is renamed into place, so a crash leaves the previous file whole.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from flowforge.atomic import atomic_target
from flowforge.errors import FlowforgeError, warn
from flowforge.transforms.coupling import rename_legacy_keys

CONFIG = "config.json"
METRICS = "metrics.jsonl"
RESULTS = "results.json"
BEST_WEIGHTS = "model.safetensors"
LAST_CHECKPOINT = "checkpoint.safetensors"
DIGEST_KEY = "tensors_sha256"  # in a safetensors file's metadata: the digest of its tensors
MAX_JSON_BYTES = 16 << 20  # a config.json is a few kB; a larger one is not flowforge's


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_target(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a run directory, refused with one line when missing, too large, too deeply
    nested or not an object."""
    if not path.is_file():
        raise FlowforgeError(f"{path}: missing (is {path.parent} a flowforge run directory?)")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise FlowforgeError(f"{path}: {path.stat().st_size:,} bytes, too large for a flowforge config "
                             f"(at most {MAX_JSON_BYTES:,})")
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FlowforgeError(f"{path}: corrupt JSON ({err})") from None
    except RecursionError:
        raise FlowforgeError(f"{path}: corrupt JSON (nested too deeply)") from None
    if not isinstance(obj, dict):
        raise FlowforgeError(f"{path}: corrupt, expected a JSON object")
    return obj


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl, one per evaluation. A last line cut off mid-write (the
    run killed while appending it) is left out with a warning; any other line that is no JSON
    object is refused in one line."""
    path = Path(path)
    if not path.is_file():
        raise FlowforgeError(f"{path}: missing (is {path.parent} a flowforge run directory?)")
    lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            record = None
        if isinstance(record, dict) and type(record.get("step")) is int:  # noqa: E721 - a bool is no step
            records.append(record)
        elif number == len(lines):  # no newline after it: the writer stopped part-way through it
            warn(f"{path}: its last line was cut off (the run stopped while writing it); read without it")
        else:
            raise FlowforgeError(f"{path}: line {number} is not a metrics record (the file is damaged or was edited)")
    return records


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
    """Write ``tensors`` as safetensors, with ``metadata`` and the SHA-256 of both (so that a byte
    changed on disk since is noticed on loading, not scored or resumed from)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_target(path) as tmp:
        # one metadata key: safetensors writes several in a random order, and a run's files must repeat byte for byte
        recorded = {**(metadata or {}), DIGEST_KEY: tensors_sha256(tensors, metadata or {})}
        # bytes written into our own temporary file: save_file makes a temporary of its own (.tmpXXXXXX)
        # that a kill would leave behind, where a resume's clean-up does not know its name
        tmp.write_bytes(save(tensors, metadata={"json": json.dumps(recorded)}))


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not path.is_file():
        raise FlowforgeError(f"{path}: missing (is {path.parent} a flowforge run directory?)")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as fh:
            metadata = json.loads((fh.metadata() or {}).get("json", "{}"))
        recorded = metadata.pop(DIGEST_KEY, None) if isinstance(metadata, dict) else None
    except (SafetensorError, OSError, json.JSONDecodeError, ValueError) as err:
        raise FlowforgeError(f"{path}: corrupt or not a safetensors file ({str(err).splitlines()[0]})") from None
    if recorded is not None and recorded != tensors_sha256(tensors, metadata):  # files written before carry none
        raise FlowforgeError(f"{path}: corrupt (its tensors no longer match the SHA-256 written with them)")
    return tensors, metadata


def tensors_sha256(tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> str:
    """The SHA-256 of the metadata and of the tensors' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load a state dict whose names, shapes and dtypes must match the module's (keys written by
    older versions are renamed first), turning a mismatch into one line that names the file."""
    from flowforge.training.validate import tensor_mismatch

    state = rename_legacy_keys(module, dict(state))
    detail = tensor_mismatch(state, module.state_dict())
    if detail:
        raise FlowforgeError(f"{source}: weights do not match the model in config.json ({detail})")
    module.load_state_dict(state)


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    state = optimizer.state_dict()
    tensors = {f"{idx}.{name}": value for idx, slots in state["state"].items()
               for name, value in slots.items() if torch.is_tensor(value)}
    return tensors, state["param_groups"]


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                           param_groups: list[dict]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for group in param_groups:  # JSON turned tuples into lists
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})
