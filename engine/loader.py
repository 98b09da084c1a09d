"""`engine.load(path)`: a model folder -> a ready Model, refusing anything that does not fit exactly."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from . import fused
from .checkpoint import Progress, load_tensors, weight_files
from .config import ModelConfig, QuantConfig, read_config
from .core_split import usable_cores
from .errors import EngineError
from .network import Gemma4Network

_LISTED = 8


def _listing(names: set[str]) -> str:
    shown = ", ".join(sorted(names)[:_LISTED])
    more = len(names) - _LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _quantize_like_checkpoint(net: nn.Module, tensors: dict[str, mx.array], quant: QuantConfig | None) -> None:
    """Turn exactly the modules whose weights the file stores quantized into quantized modules."""

    def predicate(path: str, module: nn.Module):
        if f"{path}.scales" not in tensors:
            return False
        if quant is None:
            raise EngineError(f"{path} is stored quantized but config.json has no quantization block")
        spec = quant.for_module(path) or quant.default
        return {"group_size": spec.group_size, "bits": spec.bits, "mode": spec.mode}

    nn.quantize(net, class_predicate=predicate)


def _check_names_and_shapes(net: nn.Module, tensors: dict[str, mx.array]) -> None:
    expected = dict(tree_flatten(net.parameters()))
    missing = set(expected) - set(tensors)
    unknown = set(tensors) - set(expected)
    if unknown:
        raise EngineError(f"the weight files hold {len(unknown)} tensor(s) this model does not have: "
                          f"{_listing(unknown)}. Is config.json the one that belongs to these weights?")
    if missing:
        raise EngineError(f"the weight files lack {len(missing)} tensor(s) the model needs: {_listing(missing)}. "
                          "The download may be incomplete.")
    wrong = {f"{name} (file {list(tensors[name].shape)}, model {list(array.shape)})"
             for name, array in expected.items() if tuple(tensors[name].shape) != tuple(array.shape)}
    if wrong:
        raise EngineError(f"{len(wrong)} tensor(s) have the wrong shape for config.json: {_listing(wrong)}")


def _parameter_count(tensors: dict[str, mx.array], quant: QuantConfig | None) -> int:
    total = 0
    for name, array in tensors.items():
        stem, _, leaf = name.rpartition(".")
        if leaf in ("scales", "biases") and f"{stem}.weight" in tensors and f"{stem}.scales" in tensors:
            continue
        if leaf == "weight" and f"{stem}.scales" in tensors and quant is not None:
            spec = quant.for_module(stem) or quant.default
            total += array.size * 32 // spec.bits
        else:
            total += array.size
    return total


def open_folder(path: str | Path) -> Path:
    folder = Path(path).expanduser()
    if not folder.exists():
        raise EngineError(f"model folder {folder} does not exist")
    if not folder.is_dir():
        raise EngineError(f"{folder} is a file; choose the folder that holds config.json and the weights")
    return folder


def build_network(config: ModelConfig, folder: Path,
                  progress: Progress | None = None) -> tuple[Gemma4Network, int, int]:
    """Build the module tree and bind the checkpoint's tensors to it (lazily: nothing is read yet)."""
    tensors, nbytes = load_tensors(weight_files(folder), config.text, progress)
    if progress:
        progress("building the model", 0.0)
    net = Gemma4Network(config)
    _quantize_like_checkpoint(net, tensors, config.quantization)
    _check_names_and_shapes(net, tensors)
    net.load_weights(list(tensors.items()), strict=True)
    net.text.stack_projections()
    if not fused.has_fast_kernels():  # the CPU backend, where each operation runs on one core
        net.text.split_over_cores(usable_cores())
    net.eval()
    return net, nbytes, _parameter_count(tensors, config.quantization)


def load(path: str | Path, dtype: mx.Dtype | None = None, progress: Progress | None = None):
    """Load a Gemma 4 model folder (either layout, any precision). Never touches the network.

    Weights are mapped lazily; `Model.warm_up` reads them in with progress. `progress(stage, fraction)`
    is told how far the checks have come.
    """
    from .model import Model

    folder = open_folder(path)
    config = read_config(folder)
    net, nbytes, params = build_network(config, folder, progress)
    model = Model(folder, config, net, weight_bytes=nbytes, parameter_count=params, dtype=dtype)
    model.open_chat_files()
    return model
