"""Every number the README and the documentation pages quote is in a committed JSON, to its printed precision.

Convention, applied to the whole of README.md and of every docs/*.md page (the API pages are docstrings) outside
code (fenced blocks and code spans: names, settings and printed outputs that other tests run) and outside the
generated tables (``<!-- report:NAME -->`` blocks, which tests/repro/test_report.py checks against the JSONs whole):
- a number written with a decimal point or an exponent (0.617, 5.5e-3, 3.2e-14, 6·10⁸ is not checked)
  must equal some number in figures/*.json or benchmarks/results/*.json once that number is rounded
  to the printed digits (significant digits in scientific form, decimals otherwise; signs ignored);
- a one-digit scientific number (4e-12, 1e-7) is a setting or threshold, not a measurement: it must
  follow =, ≤, <, >, ≥, + or η and equal a JSON number exactly; a measurement carries two digits;
- after ≤ or < the number is a bound: the JSON number rounded up ("at most 5.5e-3" quotes a maximum,
  so it is rounded to the nearest like any quoted number).
Integers, version numbers and references such as "Eq. 48" or "Sec. 6.1" are not checked.
"""
import bisect
import json
import math
import re

from conftest import ROOT

PAGES = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))]
NOT_PROSE = re.compile(r"<!-- report:([\w-]+) -->.*?<!-- /report:\1 -->|```.*?```|!\[[^\]]*\]\([^)]*\)|`[^`]*`", re.S)
NUMBER = re.compile(r"(?<![\w.·])(\d+(?:\.\d+)?(?:e[+-]?\d+)?|\d*\.\d+)(?![\w.]*\d)")
REFERENCE = re.compile(r"(Eq|Eqs|Sec|Fig|Figs|Prop|App|Example|Examples|Table|Appendix|Algo|ALGO|Part)\.?\s*[A-Z]?\.?$")
BOUND = re.compile(r"(≤|<)\s*$")
SETTING = re.compile(r"(=|≤|<|>|≥|η|\+)\s*$")
CRITERION_NUMBER = re.compile(r"\d+(?:\.\d+)?e[-+]?\d+")


def code_literals() -> set[float]:
    """The scientific literals of the tests, benchmarks and scripts: the thresholds and settings a page may quote
    (a test's tolerance has no JSON; its source is the test)."""
    files = [*ROOT.glob("*.py"), *(ROOT / "tests").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    return {abs(float(t)) for f in files for t in CRITERION_NUMBER.findall(f.read_text(encoding="utf-8"))}


def json_numbers() -> list[float]:
    values: list[float] = []

    def walk(x):
        if isinstance(x, bool):
            return
        if isinstance(x, (int, float)):
            values.append(abs(float(x)))
        elif isinstance(x, dict):
            for k, v in x.items():
                if k == "criterion" and isinstance(v, str):  # a claim's thresholds are stated in its criterion
                    values.extend(abs(float(t)) for t in CRITERION_NUMBER.findall(v))
                else:
                    walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    for path in [*sorted((ROOT / "figures").glob("*.json")), *sorted((ROOT / "benchmarks" / "results").glob("*.json"))]:
        walk(json.loads(path.read_text()))
    return values


def quoted_numbers(text: str) -> list[tuple[str, str]]:
    """(number, the 30 characters before it) for every decimal or scientific number in the page's prose."""
    found = []
    part = NOT_PROSE.sub(" ", text)  # generated tables, code and images: checked elsewhere, or names, not numbers
    for m in NUMBER.finditer(part):
        token = m.group(1)
        if "." not in token and "e" not in token:
            continue
        found.append((token, part[max(0, m.start() - 30):m.start()]))
    return found


def near(values: list[float], centre: float, spread: float) -> list[float]:
    """The ``values`` (sorted) within ``spread`` of ``centre``."""
    return values[bisect.bisect_left(values, centre - spread):bisect.bisect_right(values, centre + spread)]


def problem(token: str, before: str, values: list[float], literals: set[float] = frozenset()) -> str | None:
    """Why ``token`` is not a JSON number to its printed precision (None when it is); ``values`` sorted."""
    if REFERENCE.search(before.rstrip()):
        return None
    printed = float(token)
    if "e" in token:
        mantissa = token.split("e")[0].replace(".", "").lstrip("0")
        digits = max(1, len(mantissa))
        if digits == 1 and "." not in token.split("e")[0]:
            if any(math.isclose(v, printed, rel_tol=1e-12) for v in literals):
                return None  # a threshold or setting written in the code: a test's tolerance, a script's rate
            if not SETTING.search(before.rstrip() + " "[:0]) and not SETTING.search(before):
                return "a one-digit measurement (write two digits, or it is a setting after =, ≤, <, >, +, η)"
            equal = near(values, printed, 1e-8 * printed)  # isclose to 1e-12 is well within 1e-8 of it
            return None if any(math.isclose(v, printed, rel_tol=1e-12) for v in equal) else "no JSON number equals it"

        def rounded(v):
            return float(f"{v:.{digits - 1}e}")

        def step(v):  # one unit in the last printed digit
            return 10.0 ** (math.floor(math.log10(v)) - digits + 1) if v > 0 else 0.0
    else:
        decimals = len(token.split(".")[1])

        def rounded(v):
            return round(v, decimals)

        def step(v):
            return 10.0 ** -decimals
    # Only numbers near the printed one can match, so only they are rounded (rounding all ~27 000 for each of
    # ~500 printed numbers took 15 s). A match v rounds to printed p (to 1e-9): to d significant digits v moves by
    # at most ½·10^(1−d)·v ≤ 10^(1−d)·p < 10 units of p; to `decimals` places by half a unit; a bound lies less
    # than one unit below p. So every match is within 10 units (scientific) or 1 unit of p, plus isclose's 1e-9.
    units = 10 if "e" in token else 1
    candidates = near(values, printed, units * step(printed) + 1e-8 * printed)
    matches = [v for v in candidates if math.isclose(rounded(v), printed, rel_tol=1e-9, abs_tol=0)]
    if BOUND.search(before):
        # a bound is the JSON number rounded up: printed − one unit < v ≤ printed
        if any(printed - step(printed) < v <= printed for v in candidates):
            return None
        return ("a bound below the JSON number" if matches else "no JSON number rounds up to it")
    return None if matches else "no JSON number rounds to it"


def check(text: str, values: list[float], literals: set[float] = frozenset()) -> list[str]:
    values = sorted({v for v in values if math.isfinite(v)})  # NaN and ±inf round to no printed number
    return [f"{token!r} after {before!r}: {why}" for token, before in quoted_numbers(text)
            if (why := problem(token, before, values, literals))]


def test_pages_number_in_the_json():
    values, literals = json_numbers(), code_literals()
    problems = {page: found for page in PAGES
                if (found := check((ROOT / page).read_text(encoding="utf-8"), values, literals))}
    assert problems == {}


def test_every_page_is_checked():
    """The pages a reader sees: the README and every page of the documentation's navigation but the API."""
    import yaml

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    listed = {f"docs/{v}" for item in nav for v in item.values() if isinstance(v, str)}
    assert listed <= set(PAGES) and len(listed) >= 10


def test_the_check_catches_the_referees_examples():
    """Five numbers a referee found misquoted on the README, against their JSON values: the check flags each."""
    values = [5.548e-3, 8.4e-12, 3.6e-12, 1.2e-7, 3.5e-6, 1.13e-16, 1e-7, 1e-6]
    bad = ["Q̃ moves by at most 5.6e-3 of its terms", "ND keeps w × ẇ to 4e-12 and stays",
           "(against 1e-7 in float64)", "the cosine ≤ 1.1e-16 at random points", "exceeds the bound by 3e15×"]
    for sentence in bad:
        assert check(sentence, values), sentence
    good = "Q̃ moves by at most 5.55e-3; ND keeps w × ẇ to 8.4e-12; λ drift 1.2e-7; ≤ 1.2e-16; η = 1e-6"
    assert check(good, values) == []
    # the same numbers inside code, an image or a generated table are not prose
    assert check(f"`{bad[0]}`\n```\n{bad[1]}\n```\n<!-- report:x -->\n{bad[2]}\n<!-- /report:x -->", values) == []
