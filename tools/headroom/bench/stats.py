"""The numbers of the bench: repeated-timing statistics, ratios with a floor, the per-job summary of a torchrun run."""

from __future__ import annotations

import statistics

from .common import ENVS, MIB, RATIO_FLOOR_MIB


def summary(values: list[float]) -> dict:
    """Median and spread of repeated timings: {"runs", "median", "min", "max", "spread"} (spread = max - min)."""
    if not values:
        raise ValueError("no values")
    return {"runs": [round(v, 3) for v in values], "median": round(statistics.median(values), 3),
            "min": round(min(values), 3), "max": round(max(values), 3), "spread": round(max(values) - min(values), 3)}


def ratio(numerator: float, denominator: float, floor: float = RATIO_FLOOR_MIB) -> tuple[float, bool]:
    """``numerator / max(denominator, floor)``; the flag says the floor was used (the ratio is then a lower bound)."""
    if floor <= 0:
        raise ValueError("floor must be positive")
    clamped = denominator < floor
    return numerator / max(denominator, floor), clamped


def format_ratio(value: float, clamped: bool) -> str:
    text = f"{value:.0f}x" if value >= 100 else f"{value:.1f}x"
    return (">=" + text) if clamped else text


def mib(value_bytes: float) -> float:
    return value_bytes / MIB


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def env_summary(ranks: list[dict]) -> dict:
    """From the per-rank worker results of one torchrun job: rank 1's figures and the sums over ranks >= 1."""
    by_rank = {r["rank"]: r for r in ranks}
    if 1 not in by_rank:
        raise ValueError("no rank 1 in the results")
    one = by_rank[1]
    others = [r for r in ranks if r["rank"] != 0]
    return {
        "rank1_load_rise_mib": round(one["load_rise_mib"], 2),
        "rank1_prepare_peak_mib": round(one["prepare_peak_mib"], 2),
        "rank1_prepare_peak_rise_mib": round(one["prepare_peak_rise_mib"], 2),
        "rank1_after_prepare_mib": round(one["after_prepare_mib"], 2),
        "rank1_before_mib": round(one["rss_before_mib"], 2),
        "nonzero_ranks_load_rise_mib": round(sum(r["load_rise_mib"] for r in others), 2),
        "nonzero_ranks_prepare_peak_rise_mib": round(sum(r["prepare_peak_rise_mib"] for r in others), 2),
        "rank0_load_rise_mib": round(by_rank[0]["load_rise_mib"], 2) if 0 in by_rank else None,
        "fsdp_enabled": all(r.get("fsdp_enabled") for r in ranks),
    }


def case_ratio(case: dict) -> dict | None:
    """Fix 2 ratios of one case (pristine / patched), rank 1 and summed over ranks >= 1; None if a side is missing."""
    res = case.get("envs", {})
    if not all(isinstance(res.get(e), dict) and "summary" in res[e] for e in ENVS):
        return None
    p, q = res["pristine"]["summary"], res["patched"]["summary"]
    r1, c1 = ratio(p["rank1_load_rise_mib"], q["rank1_load_rise_mib"])
    rs, cs = ratio(p["nonzero_ranks_load_rise_mib"], q["nonzero_ranks_load_rise_mib"])
    rp, cp = ratio(p["rank1_prepare_peak_mib"], q["rank1_prepare_peak_mib"])
    return {"rank1_load_rise": round(r1, 2), "rank1_load_rise_lower_bound": c1,
            "nonzero_ranks_load_rise": round(rs, 2), "nonzero_ranks_load_rise_lower_bound": cs,
            "rank1_prepare_peak": round(rp, 2), "rank1_prepare_peak_lower_bound": cp}
