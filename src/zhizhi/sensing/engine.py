"""The vectorised rule engine: evaluates every alarm rule over a whole batch of readings with numpy.

State lives in arrays indexed by a dense device index (0..n-1): the latest value and
time per (device, quantity), last-seen per device, and per rule the parameters
(type defaults with per-device overrides), whether its alarm is active, and the start
of the current "condition holds" run for duration rules. A batch is sorted once by
(quantity, device, time), so each quantity's readings are one contiguous slice; each
rule then works on its quantity's slice with array operations and group boundaries —
no Python loop per reading, and a rule whose quantity is not in the batch costs nothing.

Within one batch each (device, rule) settles on its *last* raise-or-clear reading. An
alarm raised and cleared inside one batch (a fall, a thrown object) is reported as a
"flash": raised and cleared, both on record. A clear and re-raise of an active alarm
inside one batch collapses into a repeat. The time of an alarm is the first reading
that met the condition.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from zhizhi.domain.alarms import AlarmRule, RuleKind
from zhizhi.sensing.catalogue import SensingCatalogue

MINUTE_MS = 60_000
#: Batch times are packed as offsets from the batch's earliest reading into the sort key.
MAX_SPAN_MS = (1 << 30) - 1


@dataclass
class Transitions:
    """What one rule did in one batch: device indices, with reading time (ms) and value."""

    rule: int
    raised: np.ndarray
    raised_t: np.ndarray
    raised_v: np.ndarray
    cleared: np.ndarray
    cleared_t: np.ndarray
    cleared_v: np.ndarray
    repeated: np.ndarray
    repeated_t: np.ndarray
    repeated_v: np.ndarray
    #: raised and cleared again inside the batch (a fall, a thrown object): both steps are recorded
    flash: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    flash_t: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    flash_v: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.float64))
    flash_clear_t: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    @property
    def empty(self) -> bool:
        return not (self.raised.size or self.cleared.size or self.repeated.size or self.flash.size)


def _cmp(values: np.ndarray, limits: np.ndarray | float, op: str) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        if op == ">":
            return values > limits
        if op == ">=":
            return values >= limits
        if op == "<":
            return values < limits
        if op == "<=":
            return values <= limits
        if op == "abs>":
            return np.abs(values) > limits
    raise ValueError(op)


class RuleEngine:
    """Rule state for every device; `evaluate` takes validated column arrays of one batch."""

    def __init__(self, catalogue: SensingCatalogue, capacity: int = 1024) -> None:
        self.catalogue = catalogue
        self.quantities = list(catalogue.quantities)
        self.qindex = {q: i for i, q in enumerate(self.quantities)}
        self.rules: list[AlarmRule] = list(catalogue.rules)
        self.rindex = {r.code: i for i, r in enumerate(self.rules)}
        self.n = 0
        self._alloc(max(capacity, 16))

    # ------------------------------------------------------------------ devices
    def _alloc(self, cap: int) -> None:
        nq, nr = len(self.quantities), len(self.rules)

        def grow(old: np.ndarray | None, shape: tuple[int, ...], fill: float | int | bool, dtype: type) -> np.ndarray:
            new = np.full(shape, fill, dtype=dtype)
            if old is not None:
                new[: old.shape[0]] = old
            return new

        g = getattr
        self.latest_v = grow(g(self, "latest_v", None), (cap, nq), np.nan, np.float64)
        self.latest_t = grow(g(self, "latest_t", None), (cap, nq), 0, np.int64)
        self.last_seen = grow(g(self, "last_seen", None), (cap,), 0, np.int64)
        self.applies = _grow2(g(self, "applies", None), nr, cap, False, np.bool_)
        self.value = _grow2(g(self, "value", None), nr, cap, np.nan, np.float64)
        self.clear = _grow2(g(self, "clear", None), nr, cap, np.nan, np.float64)
        self.minutes = _grow2(g(self, "minutes", None), nr, cap, 0.0, np.float64)
        self.active = _grow2(g(self, "active", None), nr, cap, False, np.bool_)
        self.run_start = _grow2(g(self, "run_start", None), nr, cap, 0, np.int64)
        self.cap = cap

    def add_device(self, device_type: str, scene: str, overrides: dict[str, dict[str, object]] | None = None,
                   seen_ms: int = 0) -> int:
        """Register a device; its rules are its type's rules in its scene, with its own overrides."""
        if self.n >= self.cap:
            self._alloc(self.cap * 2)
        i = self.n
        self.n += 1
        self.last_seen[i] = seen_ms
        self.configure(i, device_type, scene, overrides or {})
        return i

    def configure(self, i: int, device_type: str, scene: str, overrides: dict[str, dict[str, object]]) -> None:
        for r, rule in enumerate(self.rules):
            applies = rule.device_type == device_type and rule.scene == scene
            own = overrides.get(rule.code, {}) if applies else {}
            if own.get("enabled") is False:
                applies = False
            self.applies[r, i] = applies
            self.value[r, i] = float(own.get("value", rule.value))  # type: ignore[arg-type]
            clear = own.get("clear", rule.clear)
            self.clear[r, i] = float(clear) if clear is not None else self.value[r, i]  # type: ignore[arg-type]
            self.minutes[r, i] = float(own.get("minutes", rule.minutes))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, dev: np.ndarray, q: np.ndarray, t: np.ndarray, v: np.ndarray) -> list[Transitions]:
        """Update the latest values and evaluate every rule on one validated batch."""
        if dev.size == 0:
            return []
        t0 = int(t.min())
        span = t - t0
        if int(span.max()) > MAX_SPAN_MS:
            raise ValueError("a batch may span at most 12 days of readings")
        key = ((q.astype(np.int64) * self.cap + dev) << 30) | span
        order = np.argsort(key, kind="stable")
        dd, qq, tt, vv = dev[order], q[order], t[order], v[order]
        dq = key[order] >> 30
        last_dq = np.ones(dd.size, dtype=np.bool_)
        last_dq[:-1] = dq[1:] != dq[:-1]
        # where each quantity's slice begins and ends in the sorted batch
        bounds = np.searchsorted(qq, np.arange(len(self.quantities) + 1))

        out: list[Transitions] = []
        # Rules on one quantity read the previous value (rate) before the latest values move on.
        for r, rule in enumerate(self.rules):
            if rule.kind in (RuleKind.THRESHOLD, RuleKind.RATE, RuleKind.DURATION):
                qi = self.qindex[rule.quantity or ""]
                lo, hi = int(bounds[qi]), int(bounds[qi + 1])
                if lo == hi:
                    continue
                tr = self._single(r, rule, dd[lo:hi], tt[lo:hi], vv[lo:hi])
                if tr is not None and not tr.empty:
                    out.append(tr)

        # The latest value per (device, quantity) — only when newer than what is held.
        li = np.flatnonzero(last_dq)
        ld, lq, lt, lv = dd[li], qq[li], tt[li], vv[li]
        newer = lt >= self.latest_t[ld, lq]
        self.latest_v[ld[newer], lq[newer]] = lv[newer]
        self.latest_t[ld[newer], lq[newer]] = lt[newer]
        # last seen per device: the max time of its readings in the batch
        seen = np.zeros(self.n, dtype=np.int64)
        np.maximum.at(seen, ld, lt)
        touched = np.flatnonzero(seen)  # times are epoch ms, never 0
        self.last_seen[touched] = np.maximum(self.last_seen[touched], seen[touched])

        for r, rule in enumerate(self.rules):
            if rule.kind is RuleKind.COMBINATION:
                tr = self._combination(r, rule, touched)
            elif rule.kind is RuleKind.OFFLINE:
                tr = self._back_online(r, touched)
            else:
                continue
            if tr is not None and not tr.empty:
                out.append(tr)
        return out

    def offline(self, now_ms: int) -> list[Transitions]:
        """The periodic check: devices silent longer than their offline rule allows."""
        out = []
        for r, rule in enumerate(self.rules):
            if rule.kind is not RuleKind.OFFLINE:
                continue
            devs = np.flatnonzero(self.applies[r, : self.n])
            seen = self.last_seen[devs]
            silent = (now_ms - seen) > self.minutes[r, devs] * MINUTE_MS
            new = devs[silent & ~self.active[r, devs]]
            self.active[r, new] = True
            e = np.empty(0, dtype=np.int64)
            ef = np.empty(0, dtype=np.float64)
            out.append(Transitions(r, new, np.full(new.size, now_ms, dtype=np.int64), np.full(new.size, np.nan),
                                   e, e, ef, e, e, ef))
        return [tr for tr in out if not tr.empty]

    # ------------------------------------------------------------------ rule kinds
    def _single(self, r: int, rule: AlarmRule, dd: np.ndarray, tt: np.ndarray, vv: np.ndarray) -> Transitions | None:
        """One rule over its quantity's slice of the batch (sorted by device, then time)."""
        qi = self.qindex[rule.quantity or ""]
        applies = self.applies[r, dd]
        if applies.all():
            d, t, v = dd, tt, vv
        else:
            idx = np.flatnonzero(applies)
            if idx.size == 0:
                return None
            d, t, v = dd[idx], tt[idx], vv[idx]
        first = np.ones(d.size, dtype=np.bool_)
        first[1:] = d[1:] != d[:-1]
        if rule.kind is RuleKind.THRESHOLD:
            cond = _cmp(v, self.value[r, d], rule.op)
            clr = ~_cmp(v, self.clear[r, d], rule.op)
            return self._settle(r, d, t, v, cond, clr)
        if rule.kind is RuleKind.RATE:
            prev_v = np.empty_like(v)
            prev_t = np.empty_like(t)
            prev_v[1:], prev_t[1:] = v[:-1], t[:-1]
            prev_v[first], prev_t[first] = self.latest_v[d[first], qi], self.latest_t[d[first], qi]
            dt_min = (t - prev_t) / MINUTE_MS
            valid = (prev_t > 0) & (dt_min > 0) & ~np.isnan(prev_v)
            with np.errstate(invalid="ignore", divide="ignore"):
                rate = np.where(valid, (v - prev_v) / np.where(dt_min > 0, dt_min, 1.0), np.nan)
            cond = valid & _cmp(rate, self.value[r, d], rule.op)
            return self._settle(r, d, t, rate, cond, valid & ~cond)
        # DURATION: the condition must have held without a break for `minutes`.
        cond = _cmp(v, self.value[r, d], rule.op)
        prev_cond = np.empty_like(cond)
        prev_cond[1:] = cond[:-1]
        prev_cond[first] = self.run_start[r, d[first]] > 0
        starts = cond & ~prev_cond
        pos = np.arange(d.size)
        start_pos = np.maximum.accumulate(np.where(starts | first, pos, 0))
        started_here = starts[start_pos]
        run_t = np.where(started_here, t[start_pos], self.run_start[r, d[start_pos]])
        held = cond & ((t - run_t) >= self.minutes[r, d] * MINUTE_MS)
        last = np.ones(d.size, dtype=np.bool_)
        last[:-1] = d[1:] != d[:-1]
        ld = d[last]
        self.run_start[r, ld] = np.where(cond[last], run_t[last], 0)
        return self._settle(r, d, t, v, held, ~cond)

    def _combination(self, r: int, rule: AlarmRule, touched: np.ndarray) -> Transitions | None:
        d = touched[self.applies[r, touched]]
        if d.size == 0:
            return None
        results = []
        times = []
        for term in rule.terms:
            qi = self.qindex[term.quantity]
            results.append(_cmp(self.latest_v[d, qi], term.value, term.op))
            times.append(self.latest_t[d, qi])
        stack = np.vstack(results)
        cond = stack.all(axis=0) if rule.mode == "all" else stack.any(axis=0)
        t = np.vstack(times).max(axis=0)
        first_q = self.qindex[rule.terms[0].quantity]
        return self._settle(r, d, t, self.latest_v[d, first_q], cond, ~cond)

    def _back_online(self, r: int, touched: np.ndarray) -> Transitions | None:
        d = touched[self.active[r, touched]]
        if d.size == 0:
            return None
        self.active[r, d] = False
        e = np.empty(0, dtype=np.int64)
        ef = np.empty(0, dtype=np.float64)
        return Transitions(r, e, e, ef, d, self.last_seen[d].copy(), np.full(d.size, np.nan), e, e, ef)

    def _settle(self, r: int, d: np.ndarray, t: np.ndarray, v: np.ndarray, up: np.ndarray,
                down: np.ndarray) -> Transitions:
        """Each device ends on its last raise-or-clear reading; compare with the state before."""
        e = np.flatnonzero(up | down)
        de = d[e]
        last = np.ones(e.size, dtype=np.bool_)
        last[:-1] = de[1:] != de[:-1]
        fin = e[last]
        fd = d[fin]
        now_up = up[fin]
        before = self.active[r, fd]
        self.active[r, fd] = now_up
        raised_m = now_up & ~before
        cleared_m = ~now_up & before
        repeated_m = now_up & before
        # An alarm's time is the first reading in the batch that met the condition.
        ui = np.flatnonzero(up)
        du = d[ui]
        firsts = np.ones(ui.size, dtype=np.bool_)
        firsts[1:] = du[1:] != du[:-1]
        fu, fu_dev = ui[firsts], du[firsts]
        raised_dev = fd[raised_m]
        at = fu[np.searchsorted(fu_dev, raised_dev)] if raised_dev.size else np.empty(0, dtype=np.int64)
        flash_m = ~now_up & ~before & np.isin(fd, fu_dev)
        flash_dev = fd[flash_m]
        fat = fu[np.searchsorted(fu_dev, flash_dev)] if flash_dev.size else np.empty(0, dtype=np.int64)
        return Transitions(
            r, raised_dev, t[at], v[at],
            fd[cleared_m], t[fin[cleared_m]], v[fin[cleared_m]],
            fd[repeated_m], t[fin[repeated_m]], v[fin[repeated_m]],
            flash_dev, t[fat], v[fat], t[fin[flash_m]],
        )


def _grow2(old: np.ndarray | None, rows: int, cap: int, fill: float | int | bool, dtype: type) -> np.ndarray:
    new = np.full((rows, cap), fill, dtype=dtype)
    if old is not None:
        new[:, : old.shape[1]] = old
    return new
