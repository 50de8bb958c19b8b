"""mkdocs hook: the pages' plain-text notation rendered as sub- and superscripts in the site.

The pages (and the tables generated from the figures' JSON) write indices as ``θ_{k+1}``, ``W_i``, ``e^{−2λt}``,
``η^p``, which GitHub shows as typed; the site shows θ<sub>k+1</sub>, W<sub>i</sub>, e<sup>−2λt</sup>. Code (fenced
blocks, inline code), link targets, HTML and comments are left as they are. No JavaScript, no network.
"""
import re

# what is never rewritten: fenced code, inline code, HTML comments and tags, link/image targets, autorefs targets
PROTECTED = re.compile(r"```.*?```|`[^`\n]*`|<!--.*?-->|<[^>\n]*>|\]\([^)\n]*\)|\]\[[^\]\n]*\]", re.S)
BRACED = re.compile(r"(?<=[^\s\\_^])([_^])\{")
INDEX = r"[A-Za-z0-9αβγδεζηθικλμνξπρστυφχψωℓ]"
SINGLE = re.compile(rf"(?<![A-Za-z_`\\])([^\W\d_])([_^])({INDEX}{{1,3}})(?![A-Za-z0-9_])")
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


def render_notation(markdown: str) -> str:
    pieces, last = [], 0
    for m in PROTECTED.finditer(markdown):
        pieces += [_plain(markdown[last:m.start()]), m.group(0)]
        last = m.end()
    return "".join(pieces + [_plain(markdown[last:])])


def _plain(text: str) -> str:
    text = _braced(text)
    return SINGLE.sub(lambda m: f"{m.group(1)}<{TAG[m.group(2)]}>{m.group(3)}</{TAG[m.group(2)]}>", text)


def on_page_markdown(markdown, page, config, files):
    return render_notation(markdown)
