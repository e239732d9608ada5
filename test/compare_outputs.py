#!/usr/bin/env python3
"""Compare an output folder of the container with the expected one (standard library only).

    python3 test/compare_outputs.py EXPECTED_DIR ACTUAL_DIR    # exit 0 when they agree

Agreement means: the same JSON files; for Track 1 documents ("Multiple points") the same number
of points, each expected point matched one-to-one to an actual point within 1 um with the same
name, probability within 1e-3 and every other field equal (numbers within 1e-3); for Track 2
(a list of ``{"class", "confidence"}``) the same classes in page order with confidences within
1e-3; any other JSON equal up to 1e-3 on numbers. Points are matched by position, not by list
order, so that two candidates of nearly equal score may swap places.

Used by ``test.sh`` (host side, no dependencies) and importable from pytest.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

POINT_TOLERANCE_MM = 0.001  # 1 um: coordinates are in millimetres
PROBABILITY_TOLERANCE = 1e-3
MAX_REPORTED = 10  # differences listed per file


def compare_dirs(expected: Path, actual: Path) -> list[str]:
    """Differences between two output folders, as readable lines; empty when they agree."""
    expected, actual = Path(expected), Path(actual)
    want = _files(expected)
    have = _files(actual)
    problems = [f"missing output file: {name}" for name in sorted(want - have)]
    problems += [f"unexpected output file: {name}" for name in sorted(have - want)]
    for name in sorted(want & have):
        try:
            exp_doc = json.loads((expected / name).read_text())
        except ValueError as exc:
            problems.append(f"{name}: expected file is not JSON ({exc})")
            continue
        try:
            act_doc = json.loads((actual / name).read_text())
        except ValueError as exc:
            problems.append(f"{name}: not valid JSON ({exc})")
            continue
        problems += [f"{name}: {p}" for p in compare_documents(exp_doc, act_doc)]
    return problems


def compare_documents(expected: object, actual: object) -> list[str]:
    """Differences between two output documents (dispatches on the document's kind)."""
    if _is_points_document(expected):
        return compare_points_documents(expected, actual)
    if _is_classification_list(expected):
        return compare_classifications(expected, actual)
    return compare_values(expected, actual, "$")


def compare_points_documents(expected: dict, actual: object) -> list[str]:
    if not isinstance(actual, dict) or not isinstance(actual.get("points"), list):
        return ["expected a points document with a 'points' list"]
    problems = compare_values(
        {k: v for k, v in expected.items() if k != "points"},
        {k: v for k, v in actual.items() if k != "points"},
        "$",
    )
    exp_points, act_points = expected["points"], actual["points"]
    if len(exp_points) != len(act_points):
        problems.append(f"{len(act_points)} points, expected {len(exp_points)}")
    pairs, unmatched_exp, unmatched_act = match_points(exp_points, act_points, POINT_TOLERANCE_MM)
    for i in unmatched_exp[:MAX_REPORTED]:
        problems.append(f"expected point {_describe(exp_points[i])} has no output point within 1 um")
    for j in unmatched_act[:MAX_REPORTED]:
        problems.append(f"output point {_describe(act_points[j])} is not expected")
    for i, j in pairs:
        problems += [
            f"point {_describe(exp_points[i])}: {p}"
            for p in compare_values(
                {k: v for k, v in exp_points[i].items() if k != "point"},
                {k: v for k, v in act_points[j].items() if k != "point"},
                "",
            )
        ]
    return _capped(problems)


def match_points(expected: list[dict], actual: list[dict], tolerance: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """One-to-one matching of points closer than ``tolerance``, nearest pairs first.

    Returns (pairs of indices, unmatched expected indices, unmatched actual indices). Points are
    bucketed on a grid of ``tolerance`` cells, so the cost stays linear for spread-out points."""
    grid: dict[tuple[int, int], list[int]] = {}
    act_xy = [_xy(p) for p in actual]
    for j, xy in enumerate(act_xy):
        if xy is not None:
            grid.setdefault(_cell(xy, tolerance), []).append(j)
    candidates = []
    for i, p in enumerate(expected):
        xy = _xy(p)
        if xy is None:
            continue
        cx, cy = _cell(xy, tolerance)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for j in grid.get((cx + dx, cy + dy), ()):
                    d = math.dist(xy, act_xy[j])
                    if d <= tolerance:
                        candidates.append((d, i, j))
    candidates.sort()
    used_exp: set[int] = set()
    used_act: set[int] = set()
    pairs = []
    for _, i, j in candidates:
        if i not in used_exp and j not in used_act:
            used_exp.add(i)
            used_act.add(j)
            pairs.append((i, j))
    unmatched_exp = [i for i in range(len(expected)) if i not in used_exp]
    unmatched_act = [j for j in range(len(actual)) if j not in used_act]
    return pairs, unmatched_exp, unmatched_act


def compare_classifications(expected: list, actual: object) -> list[str]:
    if not isinstance(actual, list):
        return ["expected a list of classifications"]
    problems = []
    if len(expected) != len(actual):
        problems.append(f"{len(actual)} classifications, expected {len(expected)} (one per page)")
    for page, (e, a) in enumerate(zip(expected, actual)):
        problems += [f"page {page}: {p}" for p in compare_values(e, a, "")]
    return _capped(problems)


def compare_values(expected: object, actual: object, where: str) -> list[str]:
    """Structural equality, numbers within PROBABILITY_TOLERANCE (bools and strings exact)."""
    label = where or "value"
    if isinstance(expected, bool) or isinstance(actual, bool) or not _is_number(expected) or not _is_number(actual):
        if isinstance(expected, dict) and isinstance(actual, dict):
            problems = []
            for key in sorted(set(expected) | set(actual)):
                sub = f"{where}.{key}" if where else str(key)
                if key not in actual:
                    problems.append(f"{sub} missing")
                elif key not in expected:
                    problems.append(f"{sub} not expected")
                else:
                    problems += compare_values(expected[key], actual[key], sub)
            return problems
        if isinstance(expected, list) and isinstance(actual, list):
            if len(expected) != len(actual):
                return [f"{label}: length {len(actual)}, expected {len(expected)}"]
            problems = []
            for k, (e, a) in enumerate(zip(expected, actual)):
                problems += compare_values(e, a, f"{where}[{k}]")
            return problems
        if expected != actual or type(expected) is not type(actual):
            return [f"{label}: {actual!r}, expected {expected!r}"]
        return []
    if not math.isclose(expected, actual, rel_tol=0.0, abs_tol=PROBABILITY_TOLERANCE):
        return [f"{label}: {actual!r}, expected {expected!r} (tolerance {PROBABILITY_TOLERANCE:g})"]
    return []


# --------------------------------------------------------------------------- helpers


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else set()


def _is_points_document(doc: object) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("points"), list)


def _is_classification_list(doc: object) -> bool:
    return isinstance(doc, list) and all(isinstance(d, dict) and "class" in d for d in doc) and bool(doc)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _xy(point: dict) -> tuple[float, float] | None:
    p = point.get("point") if isinstance(point, dict) else None
    if isinstance(p, list) and len(p) >= 2 and all(_is_number(c) for c in p[:2]):
        return float(p[0]), float(p[1])
    return None


def _cell(xy: tuple[float, float], size: float) -> tuple[int, int]:
    return math.floor(xy[0] / size), math.floor(xy[1] / size)


def _describe(point: dict) -> str:
    xy = _xy(point)
    where = f"({xy[0]:.4f}, {xy[1]:.4f}) mm" if xy else repr(point.get("point"))
    return f"{point.get('name', '?')!r} at {where}"


def _capped(problems: list[str]) -> list[str]:
    if len(problems) <= MAX_REPORTED:
        return problems
    return problems[:MAX_REPORTED] + [f"... and {len(problems) - MAX_REPORTED} more differences"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[0] + "\n\nusage: compare_outputs.py EXPECTED_DIR ACTUAL_DIR", file=sys.stderr)
        return 2
    problems = compare_dirs(Path(argv[0]), Path(argv[1]))
    for p in problems:
        print(f"  {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
