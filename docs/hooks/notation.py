"""mkdocs hook: the plain-text notation of the pages and docstrings rendered as sub- and superscripts in the site.

The pages, the tables generated from the figures' JSON and the docstrings write indices as ``θ_{k+1}``, ``W_i``,
``e^{−2λt}``, ``η^p``, which GitHub and ``help()`` show as typed; the site shows θ<sub>k+1</sub>, W<sub>i</sub>,
e<sup>−2λt</sup>. It rewrites the text of each page's HTML; code (``<code>``, ``<pre>``), scripts, styles, tags and
attributes are left as they are. No JavaScript, no network.
"""
import re

# what is never rewritten: code, scripts, styles, comments, and every tag with its attributes
PROTECTED = re.compile(r"<(pre|code|script|style|textarea)\b.*?</\1>|<!--.*?-->|<[^>]*>", re.S | re.I)
BRACED = re.compile(r"(?<=[^\s\\_^])([_^])\{")
INDEX = r"[A-Za-z0-9αβγδεζηθικλμνξπρστυφχψωℓ]"
# a letter that does not end a longer word (W_i, not max_evaluations), or a closing ‖ or ) (‖Y − F‖_F)
SINGLE = re.compile(rf"((?<![A-Za-z_`\\])[^\W\d_]|[‖)])([_^])({INDEX}{{1,3}})(?![A-Za-z0-9_])")
TAG = {"_": "sub", "^": "sup"}


def _braced(text: str) -> str:
    """x_{…} and x^{…} (braces balanced, nested ones too) → x<sub>…</sub>, x<sup>…</sup>."""
    out, i = [], 0
    while (m := BRACED.search(text, i)) is not None:
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        if depth:  # unbalanced: leave the rest as written
            break
        tag = TAG[m.group(1)]
        out += [text[i:m.start()], f"<{tag}>", _braced(text[m.end():j - 1]), f"</{tag}>"]
        i = j
    return "".join(out) + text[i:]


def render_notation(page_html: str) -> str:
    pieces, last = [], 0
    for m in PROTECTED.finditer(page_html):
        pieces += [_plain(page_html[last:m.start()]), m.group(0)]
        last = m.end()
    return "".join(pieces + [_plain(page_html[last:])])


def _plain(text: str) -> str:
    text = _braced(text)
    return SINGLE.sub(lambda m: f"{m.group(1)}<{TAG[m.group(2)]}>{m.group(3)}</{TAG[m.group(2)]}>", text)


# Markdown reads the "_" of ∇_{W}L … ∇_{W} as emphasis: escaped in the page's source (outside code) before it does.
MARKDOWN_CODE = re.compile(r"```.*?```|`[^`\n]*`|<!--.*?-->", re.S)


def on_page_markdown(markdown, page, config, files):
    pieces, last = [], 0
    for m in MARKDOWN_CODE.finditer(markdown):
        pieces += [re.sub(r"(?<=\S)(?<!\\)_\{", r"\\_{", markdown[last:m.start()]), m.group(0)]
        last = m.end()
    return "".join(pieces + [re.sub(r"(?<=\S)(?<!\\)_\{", r"\\_{", markdown[last:])])


def on_page_content(page_html, page, config, files):
    return render_notation(page_html)
