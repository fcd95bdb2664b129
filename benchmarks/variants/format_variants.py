"""Rewrite benchmarks/variants/default_search.json in its hand-kept layout (one line per
variant), checking that the content is unchanged. Usage::

    python benchmarks/variants/format_variants.py [PATH]

It lives here, not in benchmarks/, because benchmarks/run_all.py runs every script there.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_search.json")


def _j(x: Any) -> str:
    return json.dumps(x, ensure_ascii=False)


def _campaigns(cs: list[dict[str, Any]], ind: str) -> str:
    out = []
    for c in cs:
        head = {k: v for k, v in c.items() if k not in ("variants", "note", "retired")}
        lines = [ind + "{" + _j(head)[1:-1] + ","]
        lines += [f"{ind} {_j(k)}: {_j(c[k])}," for k in ("note", "retired") if k in c]
        lines.append(ind + ' "variants": {')
        vs = list(c["variants"].items())
        lines += [f"{ind}  {_j(n)}: {_j(v)}" + ("," if i < len(vs) - 1 else "")
                  for i, (n, v) in enumerate(vs)]
        lines.append(ind + " }}")
        out.append("\n".join(lines))
    return ",\n".join(out)


def layout(d: dict[str, Any]) -> str:
    """The file's text for the table ``d``."""
    q = d["quick"]
    return ("{\n"
            f' "about": {_j(d["about"])},\n'
            f' "task": {_j(d["task"])}, "budget": {_j(d["budget"])}, '
            f'"milestones": {_j(d["milestones"])},\n'
            f' "campaigns": [\n{_campaigns(d["campaigns"], "  ")}\n ],\n'
            f' "quick": {{"task": {_j(q["task"])}, "budget": {_j(q["budget"])}, '
            f'"milestones": {_j(q["milestones"])}, "campaigns": [\n'
            f'{_campaigns(q["campaigns"], "  ")}\n ]}}\n}}\n')


def main(argv: list[str]) -> int:
    path = argv[0] if argv else DEFAULT
    with open(path, encoding="utf-8") as fh:
        d = json.load(fh)
    text = layout(d)
    if json.loads(text) != d:
        print(f"{path}: the layout would change the content; not written", file=sys.stderr)
        return 1
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
