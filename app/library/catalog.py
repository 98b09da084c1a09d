"""The curated list of Gemma 4 repositories, their download size and the memory each needs.

Sizes are computed, not copied from the Hub: parameter counts per component come from the blueprint
(§9 of gemma4-architecture.md, which matches the model cards), multiplied by the bytes each weight takes
in that repository's format. Quantized repositories keep the towers, embed_vision and the norms in bf16,
as the mlx-community conversions do.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.models import USABLE_RAM_FRACTION, format_bytes, physical_ram_bytes

GIB = 1024**3
BF16_BYTES = 2.0
# Affine quantization with group 64: the packed bits plus one bf16 scale and one bf16 bias per group.
QUANT_BYTES = {4: 0.5 + 4 / 64, 8: 1.0 + 4 / 64}
DEFAULT_CONTEXT = 8192
# MLX's buffer cache, prefill activations and the app itself, measured as roughly this on M-series Macs.
RUNTIME_OVERHEAD_BYTES = 1 * GIB


@dataclass(frozen=True)
class VariantSize:
    """Parameters (millions) by how a conversion stores them; KV cache bytes at DEFAULT_CONTEXT."""
    name: str
    quantized: float      # text weights that 4/8-bit conversions quantize (embed_audio included)
    kept_float: float     # vision/audio towers, embed_vision, norms and scalars
    router: float         # the MoE router, 8-bit in every conversion
    dense_mlp: float      # the 26B's shared dense MLP (8-bit in mlx-community's 26B 4-bit file)
    hf_extra: float       # unused KV-shared k/v weights that only the Google files carry
    kv_cache_bytes: int   # sliding part (one window) + full layers x DEFAULT_CONTEXT, from §9

    @property
    def total(self) -> float:
        return self.quantized + self.kept_float + self.router


_MIB = 1024**2
VARIANTS = {
    "e2b": VariantSize("E2B", 5100 - 473.67, 473.67, 0, 0, 19, 6 * _MIB + 6144 * DEFAULT_CONTEXT),
    "e4b": VariantSize("E4B", 7940 - 474.74, 474.74, 0, 0, 55, 20 * _MIB + 16384 * DEFAULT_CONTEXT),
    "26b-a4b": VariantSize("26B-A4B", 25810 - 573.39 - 10.9, 573.39, 10.9, 535.3, 0,
                           200 * _MIB + 20480 * DEFAULT_CONTEXT),
    "31b": VariantSize("31B", 31270 - 577.1, 577.1, 0, 0, 0, 800 * _MIB + 81920 * DEFAULT_CONTEXT),
}
VARIANT_ORDER = ("e2b", "e4b", "26b-a4b", "31b")  # smallest and fastest first


@dataclass(frozen=True)
class CatalogEntry:
    repo_id: str
    variant: str              # key of VARIANTS
    bits: int | None          # None: the bf16 original
    download_bytes: int
    memory_bytes: int         # weights + KV cache at DEFAULT_CONTEXT + runtime overhead

    @property
    def label(self) -> str:
        precision = f"{self.bits}-bit" if self.bits else "bf16 original"
        return f"Gemma 4 {VARIANTS[self.variant].name} · {precision}"

    @property
    def runnable(self) -> bool:
        """The originals run too, but they are mainly the source for a conversion."""
        return self.bits is not None


def weight_bytes(size: VariantSize, bits: int | None, dense_mlp_8bit: bool = False) -> int:
    if bits is None:
        return int((size.total + size.hf_extra) * 1e6 * BF16_BYTES)
    eight_bit = size.router + (size.dense_mlp if dense_mlp_8bit else 0)
    low_bit = size.quantized - (size.dense_mlp if dense_mlp_8bit else 0)
    return int((low_bit * QUANT_BYTES[bits] + eight_bit * QUANT_BYTES[8] + size.kept_float * BF16_BYTES) * 1e6)


def _entry(repo_id: str, variant: str, bits: int | None, dense_mlp_8bit: bool = False) -> CatalogEntry:
    size = VARIANTS[variant]
    weights = weight_bytes(size, bits, dense_mlp_8bit)
    return CatalogEntry(repo_id, variant, bits, weights, weights + size.kv_cache_bytes + RUNTIME_OVERHEAD_BYTES)


# Every name here appears in public projects that download it (Hub cache paths, model lists, bug reports).
CATALOG: tuple[CatalogEntry, ...] = (
    _entry("google/gemma-4-E2B-it", "e2b", None),
    _entry("mlx-community/gemma-4-e2b-it-4bit", "e2b", 4),
    _entry("mlx-community/gemma-4-e2b-it-8bit", "e2b", 8),
    _entry("google/gemma-4-E4B-it", "e4b", None),
    _entry("mlx-community/gemma-4-e4b-it-4bit", "e4b", 4),
    _entry("mlx-community/gemma-4-e4b-it-8bit", "e4b", 8),
    _entry("google/gemma-4-26B-A4B-it", "26b-a4b", None),
    _entry("mlx-community/gemma-4-26b-a4b-it-4bit", "26b-a4b", 4, dense_mlp_8bit=True),
    _entry("mlx-community/gemma-4-26b-a4b-it-8bit", "26b-a4b", 8),
    _entry("google/gemma-4-31B-it", "31b", None),
    _entry("mlx-community/gemma-4-31b-it-4bit", "31b", 4),
    _entry("mlx-community/gemma-4-31b-it-8bit", "31b", 8),
)


def usable_memory(ram_bytes: int | None = None) -> int:
    return int((physical_ram_bytes() if ram_bytes is None else ram_bytes) * USABLE_RAM_FRACTION)


def fits(entry: CatalogEntry, ram_bytes: int | None = None) -> bool:
    return entry.memory_bytes <= usable_memory(ram_bytes)


def recommend(ram_bytes: int | None = None) -> CatalogEntry | None:
    """The largest variant that fits, at 8 bits when that fits too, else 4 bits; None when nothing fits."""
    fitting = [entry for entry in CATALOG if entry.runnable and fits(entry, ram_bytes)]
    if not fitting:
        return None
    return max(fitting, key=lambda entry: (VARIANT_ORDER.index(entry.variant), entry.bits))


def describe(entry: CatalogEntry, ram_bytes: int | None = None) -> str:
    verdict = "fits this Mac" if fits(entry, ram_bytes) else "too large for this Mac"
    return f"{format_bytes(entry.download_bytes)} download, needs about {format_bytes(entry.memory_bytes)}: {verdict}"
