"""A reply split into blocks the window renders differently: prose (Markdown), code and display math.

Pure text processing, no Qt. A fence that is still open (the reply is streaming) runs to the end,
so the code block grows in place instead of flickering between prose and code. Math is shown as
readable Unicode (α², √x, a⁄b), not typeset: good enough to read a formula without a TeX engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})\s*([\w+#.-]*)")
# Each math pattern first tries a `code span` at the same place, so dollars in code (`echo $HOME`) are
# skipped over instead of being read as math.
CODE_SPAN = r"(?P<code>(?P<ticks>`+)[^\n]+?(?<!`)(?P=ticks)(?!`))"
DISPLAY_MATH = re.compile(CODE_SPAN + r"|\$\$(?P<dollars>.+?)\$\$|\\\[(?P<brackets>.+?)\\\]", re.DOTALL)
# Inline $...$ as pandoc reads it: no space just inside the dollars, no digit right after the closing
# one, so "$5 and $10" stays money.
INLINE_MATH = re.compile(CODE_SPAN + r"|(?<![\\$])\$(?=\S)(?P<dollars>[^$\n]+?)(?<=\S)\$(?!\d)"
                         r"|\\\((?P<parens>.+?)\\\)")


@dataclass(frozen=True)
class Block:
    kind: str          # "markdown" | "code" | "math"
    text: str
    language: str = ""


def split_blocks(markdown: str) -> list[Block]:
    """Prose, fenced code and display math, in order."""
    blocks: list[Block] = []
    prose: list[str] = []
    lines = markdown.split("\n")
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            prose.append(lines[index])
            index += 1
            continue
        blocks += _prose_blocks("\n".join(prose))
        prose = []
        indent, fence, language = opening.group(1), opening.group(2), opening.group(3).lower()
        body, index = _fenced_body(lines, index + 1, fence)
        blocks.append(Block("code", "\n".join(_outdented(body, len(indent))), language))
    blocks += _prose_blocks("\n".join(prose))
    return blocks


def _fenced_body(lines: list[str], start: int, fence: str) -> tuple[list[str], int]:
    """The lines up to the closing fence (or the end, while it streams) and where to go on."""
    for index in range(start, len(lines)):
        if lines[index].strip().startswith(fence[0] * len(fence)) and not lines[index].strip().strip(fence[0]):
            return lines[start:index], index + 1
    return lines[start:], len(lines)


def _outdented(lines: list[str], width: int) -> list[str]:
    """The code as written, without the indentation of a fence inside a list item: CommonMark takes up to
    the opening fence's indentation off each line, so copied Python keeps its own indentation only."""
    return [line[min(width, len(line) - len(line.lstrip(" "))):] for line in lines]


def _prose_blocks(text: str) -> list[Block]:
    blocks, position = [], 0
    for match in DISPLAY_MATH.finditer(text):
        if match["code"]:
            continue
        blocks.append(Block("markdown", text[position:match.start()]))
        blocks.append(Block("math", math_to_unicode(match["dollars"] or match["brackets"])))
        position = match.end()
    blocks.append(Block("markdown", text[position:]))
    return [Block(b.kind, inline_math(b.text)) if b.kind == "markdown" else b
            for b in blocks if b.kind != "markdown" or b.text.strip()]


def inline_math(markdown: str) -> str:
    """$x^2$ and \\(x^2\\) as code spans holding readable Unicode; code spans already there stay as written."""
    return INLINE_MATH.sub(lambda m: m["code"] or f"`{math_to_unicode(m['dollars'] or m['parens'])}`", markdown)


SYMBOLS = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "varepsilon": "ε", "zeta": "ζ",
    "eta": "η", "theta": "θ", "iota": "ι", "kappa": "κ", "lambda": "λ", "mu": "μ", "nu": "ν", "xi": "ξ",
    "pi": "π", "rho": "ρ", "sigma": "σ", "tau": "τ", "upsilon": "υ", "phi": "φ", "varphi": "φ", "chi": "χ",
    "psi": "ψ", "omega": "ω", "Gamma": "Γ", "Delta": "Δ", "Theta": "Θ", "Lambda": "Λ", "Xi": "Ξ", "Pi": "Π",
    "Sigma": "Σ", "Phi": "Φ", "Psi": "Ψ", "Omega": "Ω",
    "times": "×", "cdot": "·", "div": "÷", "pm": "±", "mp": "∓", "le": "≤", "leq": "≤", "ge": "≥", "geq": "≥",
    "neq": "≠", "ne": "≠", "approx": "≈", "equiv": "≡", "sim": "∼", "propto": "∝", "infty": "∞",
    "sum": "∑", "prod": "∏", "int": "∫", "oint": "∮", "partial": "∂", "nabla": "∇", "in": "∈", "notin": "∉",
    "subset": "⊂", "subseteq": "⊆", "cup": "∪", "cap": "∩", "emptyset": "∅", "forall": "∀", "exists": "∃",
    "to": "→", "rightarrow": "→", "leftarrow": "←", "Rightarrow": "⇒", "Leftrightarrow": "⇔", "mapsto": "↦",
    "ldots": "…", "cdots": "⋯", "dots": "…", "circ": "∘", "degree": "°", "neg": "¬", "land": "∧", "lor": "∨",
    "quad": "  ", "qquad": "    ", ",": " ", ";": " ", "!": "", " ": " ",
}
SUPERSCRIPTS = dict(zip("0123456789+-=()niT", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁿⁱᵀ"))
SUBSCRIPTS = dict(zip("0123456789+-=()aeijknmotx", "₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎ₐₑᵢⱼₖₙₘₒₜₓ"))
GROUP = r"\{((?:[^{}]|\{[^{}]*\})*)\}"


def math_to_unicode(tex: str) -> str:
    """A readable plain-text form of a TeX formula; what it cannot map stays as written."""
    text = " ".join(tex.split())
    text = re.sub(r"\\(?:left|right|displaystyle|textstyle|mathrm|mathbf|mathit|text|operatorname)\b\s*", "", text)
    text = re.sub(r"\\frac\s*" + GROUP + r"\s*" + GROUP, lambda m: f"{_atom(m.group(1))}⁄{_atom(m.group(2))}", text)
    text = re.sub(r"\\sqrt\s*" + GROUP, lambda m: f"√{_atom(m.group(1))}", text)
    text = re.sub(r"\\([A-Za-z]+|[,;! ])", lambda m: SYMBOLS.get(m.group(1), m.group(0)), text)
    text = re.sub(r"\^" + GROUP + r"|\^(\S)", lambda m: _script(m.group(1) or m.group(2), SUPERSCRIPTS, "^"), text)
    text = re.sub(r"_" + GROUP + r"|_(\S)", lambda m: _script(m.group(1) or m.group(2), SUBSCRIPTS, "_"), text)
    return text.replace("{", "").replace("}", "")


def _atom(text: str) -> str:
    """Parentheses around anything longer than one symbol, so a⁄b stays unambiguous."""
    inner = math_to_unicode(text)
    return inner if len(inner) <= 1 or inner.isalnum() else f"({inner})"


def _script(text: str, table: dict[str, str], marker: str) -> str:
    if all(char in table for char in text):
        return "".join(table[char] for char in text)
    return f"{marker}({text})" if len(text) > 1 else f"{marker}{text}"
