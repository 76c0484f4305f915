"""Report → dispatched latency, in process: p50 and p99 of `zz.handle(ReportCase)` per store.

Each report carries a point and a category, so one `handle` call stores it, locates it, registers
it and dispatches it (each step its own committed transaction) before returning; the time of that
call is the latency. Points are representative points of random grid polygons, so every one lies
inside the city. Runs on a fresh SQLite file and, when a server answers, a fresh PostgreSQL
database. Goal: p99 < 20 ms. Usage: python bench/report_dispatch.py [--help]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, backends, database, emit, load_city, make_app, pg_base_url, workdir


def percentile(sorted_ms: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    k = max(0, min(len(sorted_ms) - 1, round(q / 100 * len(sorted_ms) + 0.5) - 1))
    return sorted_ms[k]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--reports", type=int, default=2000, help="timed reports per store (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=50, help="untimed reports first (indexes, caches)")
    ap.add_argument("--backend", choices=["sqlite", "postgresql"], help="run one store only")
    ap.add_argument("--pg", help="PostgreSQL server URL (default: ZHIZHI_TEST_PG or 127.0.0.1:5432)")
    ap.add_argument("--city", choices=["auto", "demo", "tiny"], default="auto",
                    help="place hierarchy: the Chongqing demo city or the tests' tiny city (default: auto)")
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--cache-dir", type=Path, default=ROOT / "var" / "cache", help="demo city and index cache")
    args = ap.parse_args(argv)

    import shapely

    from zhizhi.domain.case import CaseState
    from zhizhi.domain.places import Level
    from zhizhi.service.commands import ReportCase

    hierarchy, label = load_city(args.city, args.cache_dir)
    grids = [g for g in hierarchy.level_geometries(Level.GRID) if g is not None]
    points = shapely.get_coordinates(shapely.point_on_surface(grids))
    print(f"# city: {label}; {len(points)} grid polygons; {args.reports} reports (+{args.warmup} warm-up)")
    pg = pg_base_url(args.pg)
    if pg is None and not args.backend:
        print("# PostgreSQL: no server answers; SQLite only")
    with workdir() as tmp:
        for backend in backends(pg, args.backend):
            rng = random.Random(args.seed)
            with database(backend, pg, Path(tmp)) as url:
                zz = make_app(url, hierarchy, Path(tmp) / backend, args.cache_dir)
                try:
                    categories = [c.code for c in zz.catalogue.leaves()]
                    ms: list[float] = []
                    last = None
                    for i in range(args.warmup + args.reports):
                        lon, lat = points[rng.randrange(len(points))]
                        cmd = ReportCase(source="citizen", source_id=f"bench-{i}", title="路面破损",
                                         description="基准测试上报 / benchmark report",
                                         category_code=rng.choice(categories), lon=float(lon), lat=float(lat))
                        t0 = time.perf_counter()
                        last = zz.handle(cmd)
                        elapsed = (time.perf_counter() - t0) * 1000
                        if i >= args.warmup:
                            ms.append(elapsed)
                    with zz.uow() as uow:
                        states = uow.cases.count_by_state()
                    ms.sort()
                    emit(f"report_dispatch_p50_{backend}", percentile(ms, 50), "ms")
                    emit(f"report_dispatch_p99_{backend}", percentile(ms, 99), "ms")
                    emit(f"report_dispatch_mean_{backend}", statistics.fmean(ms), "ms")
                    emit(f"report_dispatch_max_{backend}", ms[-1], "ms")
                    emit(f"report_dispatch_dispatched_{backend}", states.get(CaseState.DISPATCHED.value, 0),
                         f"of {args.warmup + args.reports}")
                    assert last is not None
                finally:
                    zz.engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
