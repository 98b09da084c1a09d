"""Draw Lantern's app icon from vector shapes and write resources/icons/lantern.png (1024 px) and lantern.icns.

    python tools/make_icon.py [--out resources/icons]

Everything is drawn at twice the final size and scaled down once, which is what anti-aliases the edges.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFilter

SIZE = 1024
SCALE = 2
# macOS icon grid: the rounded tile is 824 px of the 1024 canvas, leaving room for the system's shadow.
TILE_MARGIN = 100
TILE_RADIUS = 185
ICNS_SIZES = [(16, 16), (32, 32), (64, 64), (128, 128), (256, 256), (512, 512), (1024, 1024)]

NIGHT_TOP = (24, 32, 64)
NIGHT_BOTTOM = (8, 12, 28)
METAL = (46, 52, 66)
METAL_EDGE = (92, 100, 118)
GLASS_HOT = (255, 214, 120)
GLASS_EDGE = (236, 132, 40)
FLAME_OUTER = (255, 160, 40)
FLAME_INNER = (255, 246, 210)


def px(value: float) -> int:
    """A length on the 1024 grid, in pixels of the supersampled canvas."""
    return round(value * SCALE)


def box(left: float, top: float, right: float, bottom: float) -> tuple[int, int, int, int]:
    return px(left), px(top), px(right), px(bottom)


def vertical_gradient(size: tuple[int, int], top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    column = Image.linear_gradient("L").resize((1, 256))
    channels = [column.point(lambda v, a=a, b=b: a + (b - a) * v // 255) for a, b in zip(top, bottom)]
    return Image.merge("RGB", channels).resize(size)


def radial_glow(size: int, centre: tuple[float, float], radius: float, colour: tuple[int, int, int],
                strength: int) -> Image.Image:
    """A soft disc of light: a filled circle blurred by half its radius."""
    glow = Image.new("L", (size, size), 0)
    cx, cy = centre
    ImageDraw.Draw(glow).ellipse(box(cx - radius, cy - radius, cx + radius, cy + radius), fill=strength)
    glow = glow.filter(ImageFilter.GaussianBlur(px(radius / 2)))
    layer = Image.new("RGBA", (size, size), colour + (0,))
    layer.putalpha(glow)
    return layer


def tile(size: int) -> Image.Image:
    """The night-sky rounded square the lantern stands on."""
    mask = Image.new("L", (size, size), 0)
    inset = TILE_MARGIN
    ImageDraw.Draw(mask).rounded_rectangle(box(inset, inset, SIZE - inset, SIZE - inset), radius=px(TILE_RADIUS),
                                           fill=255)
    background = vertical_gradient((size, size), NIGHT_TOP, NIGHT_BOTTOM).convert("RGBA")
    background.alpha_composite(radial_glow(size, (512, 540), 300, GLASS_EDGE, 150))
    background.putalpha(mask)
    return background


def glass(size: int) -> Image.Image:
    """The lit glass body: warm at the centre, amber at the rim, clipped to a barrel shape."""
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rounded_rectangle(box(392, 392, 632, 712), radius=px(70), fill=255)
    body = Image.new("RGBA", (size, size), GLASS_EDGE + (255,))
    body.alpha_composite(radial_glow(size, (512, 560), 150, GLASS_HOT, 255))
    body.putalpha(ImageChops.multiply(mask, body.getchannel("A")))
    return body


def flame(draw: ImageDraw.ImageDraw) -> None:
    """A teardrop: a circle with a pointed top, drawn twice for the hot core."""
    for (cx, cy, r, tip), colour in (((512, 610, 46, 478), FLAME_OUTER), ((512, 622, 26, 540), FLAME_INNER)):
        draw.ellipse(box(cx - r, cy - r, cx + r, cy + r), fill=colour)
        draw.polygon([(px(cx - r * 0.92), px(cy - r * 0.4)), (px(cx), px(tip)), (px(cx + r * 0.92), px(cy - r * 0.4))],
                     fill=colour)


def metalwork(draw: ImageDraw.ImageDraw) -> None:
    """Handle ring, cap, the frame's vertical bars and the base."""
    draw.arc(box(452, 206, 572, 326), start=180, end=360, fill=METAL_EDGE, width=px(18))
    for x in (452, 572):
        draw.line([(px(x), px(266)), (px(x), px(300))], fill=METAL_EDGE, width=px(18))
    draw.polygon([(px(420), px(300)), (px(604), px(300)), (px(664), px(392)), (px(360), px(392))], fill=METAL,
                 outline=METAL_EDGE, width=px(6))
    draw.rounded_rectangle(box(340, 380, 684, 408), radius=px(12), fill=METAL_EDGE)
    for x in (404, 620):
        draw.rounded_rectangle(box(x - 9, 400, x + 9, 712), radius=px(9), fill=METAL)
    draw.rounded_rectangle(box(340, 700, 684, 730), radius=px(12), fill=METAL_EDGE)
    draw.polygon([(px(372), px(728)), (px(652), px(728)), (px(624), px(800)), (px(400), px(800))], fill=METAL,
                 outline=METAL_EDGE, width=px(6))


def draw_icon() -> Image.Image:
    size = px(SIZE)
    icon = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    icon.alpha_composite(tile(size))
    icon.alpha_composite(glass(size))
    draw = ImageDraw.Draw(icon)
    flame(draw)
    metalwork(draw)
    return icon.resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def write_icons(out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    icon = draw_icon()
    png, icns = out / "lantern.png", out / "lantern.icns"
    icon.save(png, optimize=True)
    icon.save(icns, sizes=ICNS_SIZES)
    return png, icns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "resources" / "icons")
    for path in write_icons(parser.parse_args().out):
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
