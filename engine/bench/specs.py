"""What one tensor of a random checkpoint is: its key, shape and how its values are drawn."""

from __future__ import annotations

from dataclasses import dataclass

MATRIX, VECTOR, CONSTANT = "matrix", "vector", "constant"

# Sandwich norms after a sublayer are drawn larger than the rest. With every norm at 1 the input token's own
# embedding dominates the residual stream and, through the tied head, its own logit: greedy decoding then
# repeats one token and a gate on greedy tokens proves little. Larger post-norms let the layers decide.
POST_NORM_LEVEL = 4.0
FINAL_NORM_LEVEL = 3.0   # spreads the logits so the top-2 gap is well above float32 noise
JITTER = 0.25            # relative spread of norm weights: a skipped or misplaced weight changes the output


@dataclass(frozen=True)
class TensorSpec:
    """A quantizable matrix is named by its module path (the writer adds .weight/.scales/.biases);
    every other tensor by its full key."""

    name: str
    shape: tuple[int, ...]
    kind: str = MATRIX           # MATRIX: N(0, 1/fan_in); VECTOR: value +- jitter (uniform); CONSTANT: value
    quantize: bool = True        # MATRIX only: quantized when the checkpoint is
    bits_override: int | None = None
    value: float = 1.0
    jitter: float = 0.0
    fan_in: int | None = None    # defaults to the last dimension

    @property
    def quantizable(self) -> bool:
        return self.kind == MATRIX and self.quantize

    @property
    def float_key(self) -> str:
        """The key when stored unquantized."""
        return f"{self.name}.weight" if self.quantizable else self.name


def matrix(name: str, shape: tuple[int, ...], bits: int | None = None) -> TensorSpec:
    return TensorSpec(name, shape, bits_override=bits)


def float_matrix(key: str, shape: tuple[int, ...], fan_in: int | None = None) -> TensorSpec:
    return TensorSpec(key, shape, quantize=False, fan_in=fan_in)


def norm(key: str, width: int, level: float = 1.0) -> TensorSpec:
    return TensorSpec(key, (width,), VECTOR, value=level, jitter=JITTER * level)


def post_norm(key: str, width: int) -> TensorSpec:
    return norm(key, width, POST_NORM_LEVEL)


def vector(key: str, shape: tuple[int, ...], value: float, jitter: float) -> TensorSpec:
    return TensorSpec(key, shape, VECTOR, value=value, jitter=jitter)


def constant(key: str, value: float, shape: tuple[int, ...] = ()) -> TensorSpec:
    return TensorSpec(key, shape, CONSTANT, value=value)
