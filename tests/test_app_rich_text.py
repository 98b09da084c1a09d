"""Replies as prose, highlighted code (with copy buttons) and readable math."""

from PySide6.QtGui import QGuiApplication

from app.highlight import language_for
from app.rich_text import Block, inline_math, math_to_unicode, split_blocks
from app.widgets import CodeBlock, MathBlock, RichText


def test_fences_split_code_from_prose_and_an_open_fence_runs_to_the_end():
    blocks = split_blocks("Intro\n\n```python\nx = 1\n```\nAfter\n~~~\nraw\n")
    assert [b.kind for b in blocks] == ["markdown", "code", "markdown", "code"]
    assert blocks[1] == Block("code", "x = 1", "python")
    assert blocks[3] == Block("code", "raw\n", "")   # still streaming: no closing fence yet


def test_math_becomes_readable_unicode():
    assert math_to_unicode(r"E = mc^2") == "E = mc²"
    assert math_to_unicode(r"\frac{a+b}{2} \le \sqrt{x}") == "(a+b)⁄2 ≤ √x"
    assert math_to_unicode(r"\sum_{i=1}^{n} \alpha_i") == "∑ᵢ₌₁ⁿ αᵢ"
    assert math_to_unicode(r"x^{y+z2}") == "x^(y+z2)"   # no superscript for y: left readable, not mangled
    blocks = split_blocks(r"So $$\int_0^1 f(x)\,dx$$ holds")
    assert blocks[1] == Block("math", "∫₀¹ f(x) dx")


def test_inline_math_keeps_money_as_money():
    assert inline_math("costs $5 and $10") == "costs $5 and $10"
    assert inline_math(r"area $\pi r^2$ or \(x_1\)") == "area `π r²` or `x₁`"


def test_code_blocks_are_coloured_and_copyable(qtbot):
    block = CodeBlock('def f(x):\n    return "s" + 2  # done', "py")
    qtbot.addWidget(block)
    first, second = block.editor.document().firstBlock(), block.editor.document().firstBlock().next()

    def color_at(text_block, column):
        return next(f.format.foreground().color().name() for f in text_block.layout().formats()
                    if f.start <= column < f.start + f.length)

    keyword, call = color_at(first, 0), color_at(first, 4)
    string, number, comment = color_at(second, 12), color_at(second, 17), color_at(second, 20)
    assert len({keyword, call, string, number, comment}) == 5
    block.copy_button.click()
    assert QGuiApplication.clipboard().text() == block.code() and block.copy_button.text() == "Copied"


def test_unknown_languages_stay_plain_and_block_comments_span_lines(qtbot):
    plain = CodeBlock("if x: return 1", "brainfuck")
    qtbot.addWidget(plain)
    assert language_for("brainfuck") is None and plain.editor.document().firstBlock().layout().formats() == []
    c = CodeBlock("/* one\ntwo */ int x;", "c")
    qtbot.addWidget(c)
    second = c.editor.document().firstBlock().next()
    spans = {(f.start, f.length) for f in second.layout().formats()}
    assert (0, 6) in spans and (7, 3) in spans   # "two */" commented, "int" a keyword


def _colours(block: CodeBlock) -> list[list[tuple[int, int, str]]]:
    lines, text_block = [], block.editor.document().firstBlock()
    while text_block.isValid():
        lines.append(sorted((f.start, f.length, f.format.foreground().color().name())
                            for f in text_block.layout().formats()))
        text_block = text_block.next()
    return lines


def test_a_code_block_streamed_a_few_characters_at_a_time_is_coloured_as_if_shown_whole(qtbot):
    code = '/* a comment\nover lines */ int x = 1;\nchar *s = "str\\"ing"; // done\nreturn x + 42;\n'
    whole = CodeBlock(code, "c")
    streamed = CodeBlock("", "c")
    for widget in (whole, streamed):
        qtbot.addWidget(widget)
    for end in range(0, len(code) + 1, 3):
        streamed.set_code(code[:end])
    streamed.set_code(code)
    assert streamed.code() == code and _colours(streamed) == _colours(whole)
    assert streamed.editor.height() == whole.editor.height()
    streamed.set_code("int y;")   # not a continuation (the reply was regenerated): shown afresh
    assert streamed.code() == "int y;"


def test_streaming_touches_only_the_changing_block(qtbot):
    body = RichText()
    qtbot.addWidget(body)
    body.set_markdown("Hello\n\n```python\nx = 1")
    prose, code = body.widgets
    body.set_markdown("Hello\n\n```python\nx = 1\ny = 2\n```\n\n$$a^2$$")
    assert body.widgets[0] is prose and body.widgets[1] is code
    assert code.code() == "x = 1\ny = 2" and isinstance(body.widgets[2], MathBlock)
    assert body.widgets[2].text() == "a²"
    body.set_markdown("Hello")
    assert body.widgets == [prose] and body.toPlainText() == "Hello"


def test_a_fence_inside_a_list_item_loses_the_list_indentation_only():
    reply = "1. Save this as app.py:\n\n   ```python\n   def main():\n       print('hi')\n  x\n   ```\n2. Run it."
    blocks = split_blocks(reply)
    assert blocks[1] == Block("code", "def main():\n    print('hi')\nx", "python")


def test_dollars_inside_code_spans_are_not_math():
    assert inline_math("run `echo $USER/$HOME` for $x^2$") == "run `echo $USER/$HOME` for `x²`"
    assert inline_math("``a`$b$`` stays") == "``a`$b$`` stays"
    blocks = split_blocks("the shell's `$$` is its pid; $$a^2$$")
    assert blocks == [Block("markdown", "the shell's `$$` is its pid; "), Block("math", "a²")]
