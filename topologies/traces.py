"""Time-varying link traces: mahimahi delivery-opportunity files and a simple CSV.

- mahimahi (`*.trace` or anything that is not `.csv`): one integer per line, a millisecond
  timestamp at which one 1,500-byte packet may be delivered; the file loops at its last
  timestamp.  Replayed as a piecewise-constant HTB rate over `bin_s` windows (default 100 ms):
  rate = opportunities in the window x 1500 B x 8 / bin_s.
- CSV (`*.csv`): header `time_s,bw_mbit,delay_ms,loss_pct`, one row per change; an empty cell
  leaves that parameter as it is.  The file loops after its last row plus the last step's length
  (the median spacing of the rows).

`load_trace(path)` raises ValueError naming the file and line that does not parse.
`write_synthetic_traces(folder)` regenerates the synthetic traces shipped in topologies/traces/.
"""

from __future__ import annotations

import csv
import math
import random
import statistics
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

MTU_BITS = 1500 * 8
TRACE_DIR = Path(__file__).parent / "traces"


@dataclass(frozen=True)
class Step:
    t_s: float
    bw_mbit: float | None = None
    delay_ms: float | None = None
    loss_pct: float | None = None


@dataclass(frozen=True)
class Trace:
    path: str
    steps: tuple[Step, ...]
    period_s: float  # the trace repeats after this long

    def at(self, t_s: float) -> Step:
        """The parameters in force at time t (loops)."""
        t = t_s % self.period_s
        current = self.steps[0]
        for s in self.steps:
            if s.t_s > t:
                break
            current = s
        return current


def resolve(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists() and (TRACE_DIR / p.name).exists() and len(p.parts) == 1:
        return TRACE_DIR / p.name
    return p


def load_trace(path: str | Path, bin_s: float = 0.1) -> Trace:
    p = resolve(path)
    return _load(str(p), bin_s)


@lru_cache(maxsize=64)
def _load(path: str, bin_s: float) -> Trace:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ValueError(f"trace {path}: cannot read ({exc.strerror})") from None
    if p.suffix == ".csv":
        return _parse_csv(path, text)
    return _parse_mahimahi(path, text, bin_s)


def _parse_mahimahi(path: str, text: str, bin_s: float) -> Trace:
    stamps: list[int] = []
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        try:
            ms = int(line)
        except ValueError:
            msg = f"trace {path} line {no}: {line[:30]!r} is not an integer (ms)"
            raise ValueError(msg) from None
        if ms < 0 or (stamps and ms < stamps[-1]):
            raise ValueError(f"trace {path} line {no}: timestamps must be >= 0 and non-decreasing")
        stamps.append(ms)
    if not stamps or stamps[-1] <= 0:
        raise ValueError(f"trace {path}: no delivery opportunities (needs a last timestamp > 0)")
    period_s = stamps[-1] / 1000
    nbins = max(1, math.ceil(period_s / bin_s))
    counts = [0] * nbins
    for ms in stamps:
        counts[min(nbins - 1, int(ms / 1000 / bin_s))] += 1
    steps = []
    for i, c in enumerate(counts):
        width = min(bin_s, period_s - i * bin_s)
        bw = max(c * MTU_BITS / width / 1e6, 0.01)  # HTB needs a rate > 0: an outage is ~0
        if not steps or steps[-1].bw_mbit != bw:
            steps.append(Step(t_s=round(i * bin_s, 6), bw_mbit=bw))
    return Trace(path=path, steps=tuple(steps), period_s=period_s)


def _parse_csv(path: str, text: str) -> Trace:
    rows = list(csv.reader(text.splitlines()))
    if rows and rows[0] and rows[0][0].strip() == "time_s":
        header, rows, first = [h.strip() for h in rows[0]], rows[1:], 2
    else:
        header, first = ["time_s", "bw_mbit", "delay_ms", "loss_pct"], 1
    known = {"time_s", "bw_mbit", "delay_ms", "loss_pct"}
    if set(header) - known:
        raise ValueError(f"trace {path} line 1: unknown column(s) {sorted(set(header) - known)}")
    steps: list[Step] = []
    for no, row in enumerate(rows, first):
        if not row or all(not c.strip() for c in row):
            continue
        cells = dict(zip(header, (c.strip() for c in row), strict=False))
        try:
            vals = {k: (float(v) if v else None) for k, v in cells.items()}
        except ValueError:
            raise ValueError(f"trace {path} line {no}: not a number in {row}") from None
        t = vals.get("time_s")
        if t is None or t < 0 or (steps and t <= steps[-1].t_s):
            raise ValueError(f"trace {path} line {no}: time_s must be increasing and >= 0")
        bw, delay, loss = vals.get("bw_mbit"), vals.get("delay_ms"), vals.get("loss_pct")
        if bw is not None and not 0 < bw <= 100_000:
            raise ValueError(f"trace {path} line {no}: bw_mbit {bw} outside (0, 100000]")
        if delay is not None and not 0 <= delay <= 10_000:
            raise ValueError(f"trace {path} line {no}: delay_ms {delay} outside [0, 10000]")
        if loss is not None and not 0 <= loss <= 100:
            raise ValueError(f"trace {path} line {no}: loss_pct {loss} outside [0, 100]")
        steps.append(Step(t, bw, delay, loss))
    if not steps:
        raise ValueError(f"trace {path}: no rows")
    if steps[0].t_s != 0:
        steps.insert(0, Step(0.0))
    gaps = [b.t_s - a.t_s for a, b in zip(steps, steps[1:], strict=False)] or [1.0]
    period = steps[-1].t_s + statistics.median(gaps)
    return Trace(path=path, steps=tuple(steps), period_s=period)


def mahimahi_lines(rates_mbit: list[float], step_s: float) -> list[int]:
    """Delivery-opportunity timestamps (ms) for a sequence of constant-rate segments."""
    out: list[int] = []
    t0 = 0.0
    for rate in rates_mbit:
        per_ms = rate * 1e6 / MTU_BITS / 1000  # opportunities per millisecond
        n = round(per_ms * step_s * 1000)
        out += [int(t0 * 1000 + (k + 0.5) / per_ms) for k in range(n)] if n else []
        t0 += step_s
    last = int(t0 * 1000)
    if not out or out[-1] < last:
        out.append(last)  # marks the loop length
    return out


def write_synthetic_traces(folder: str | Path = TRACE_DIR, seed: int = 1) -> list[Path]:
    """Write the synthetic traces shipped with the project (deterministic for a seed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    written = []
    # A square wave: 20 Mbit/s for 2 s, 4 Mbit/s for 2 s (tests see throughput change).
    p = folder / "step-20-4.trace"
    p.write_text("\n".join(map(str, mahimahi_lines([20, 4], 2.0))) + "\n")
    written.append(p)
    # A walking user on a cell: a bounded random walk between 2 and 40 Mbit/s, 0.5 s steps.
    rates, r = [], 15.0
    for _ in range(40):
        r = min(30.0, max(2.0, r * math.exp(rng.gauss(0, 0.25))))
        rates.append(round(r, 2))
    p = folder / "walk-2-30.trace"
    p.write_text("\n".join(map(str, mahimahi_lines(rates, 0.5))) + "\n")
    written.append(p)
    # A CSV with delay and loss as well: good, congested, handover outage-ish, recovered.
    p = folder / "congestion.csv"
    p.write_text(
        "time_s,bw_mbit,delay_ms,loss_pct\n"
        "0,30,10,0\n5,10,40,0.5\n10,2,80,2\n15,30,10,0\n"
    )
    written.append(p)
    return written


if __name__ == "__main__":
    for path in write_synthetic_traces():
        print(path)
