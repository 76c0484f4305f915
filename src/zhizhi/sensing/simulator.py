"""Simulated devices for the demo and the tests: realistic readings with injected incidents.

The simulator keeps the list of incidents it injected (device, scene, the rule that
should fire), so a test can check that each one became an alarm and, where the
scene's policy says so, a case. Time is simulated: a window of minutes is replayed
(one reading per device and quantity a minute), as fast as asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from zhizhi.domain.devices import Device

MIN = 60_000
SCENE_TYPES = {"septic_tank": "methane_detector", "forest_fire": "forest_station", "waterlogging": "water_gauge",
               "elderly": "bracelet", "high_throw": "throw_camera", "kitchen_waste": "waste_bin"}
#: Normal range of each quantity (uniform), well inside every alarm limit.
NORMAL = {"methane": (0.0, 5.0), "temperature": (12.0, 24.0), "humidity": (55.0, 85.0), "wind_speed": (0.0, 3.0),
          "smoke": (0.0, 0.05), "water_level": (0.0, 4.0), "heart_rate": (62.0, 88.0), "fall": (0.0, 0.0),
          "movement": (3.0, 40.0), "throw_event": (0.0, 0.0), "fill_level": (10.0, 60.0)}
#: scene → (quantity, incident value, minutes it lasts, rule it must raise)
INCIDENTS = {"septic_tank": ("methane", 42.0, 3, "methane_high"),
             "forest_fire": ("smoke", 1.5, 3, "smoke_detected"),
             "waterlogging": ("water_level", 35.0, 7, "water_deep"),
             "elderly": ("fall", 1.0, 1, "elderly_fall"),
             "high_throw": ("throw_event", 1.0, 1, "throw_detected"),
             "kitchen_waste": ("fill_level", 97.0, 125, "bin_not_collected")}
QUANTITIES = {"methane_detector": ("methane", "temperature"),
              "forest_station": ("temperature", "humidity", "wind_speed", "smoke"),
              "water_gauge": ("water_level",), "bracelet": ("heart_rate", "fall", "movement"),
              "throw_camera": ("throw_event",), "waste_bin": ("fill_level",)}


@dataclass(frozen=True)
class Incident:
    device: str
    scene: str
    rule_code: str
    quantity: str
    start_minute: int
    minutes: int


def make_devices(n: int, bbox: tuple[float, float, float, float], seed: int = 7, prefix: str = "SIM") -> list[Device]:
    """n devices spread over the scenes and over a bounding box (keep the box inside the city)."""
    rng = np.random.default_rng(seed)
    scenes = list(SCENE_TYPES)
    x0, y0, x1, y1 = bbox
    lon = rng.uniform(x0, x1, n)
    lat = rng.uniform(y0, y1, n)
    return [Device(code=f"{prefix}-{i:07d}", type=SCENE_TYPES[scenes[i % len(scenes)]], scene=scenes[i % len(scenes)],
                   lon=float(lon[i]), lat=float(lat[i]), model="sim-1") for i in range(n)]


class Simulator:
    def __init__(self, devices: list[Device], seed: int = 11) -> None:
        self.devices = devices
        self.rng = np.random.default_rng(seed)
        self.incidents: list[Incident] = []

    def inject(self, per_scene: int, start_minute: int) -> list[Incident]:
        """Choose `per_scene` devices of each scene for an incident starting at that minute of the window."""
        chosen = []
        for scene in SCENE_TYPES:
            pool = [d for d in self.devices if d.scene == scene and d.code not in {i.device for i in self.incidents}]
            if not pool:
                continue
            picks = self.rng.choice(len(pool), size=min(per_scene, len(pool)), replace=False)
            q, _, minutes, rule = INCIDENTS[scene]
            for p in picks:
                chosen.append(Incident(pool[int(p)].code, scene, rule, q, start_minute, minutes))
        self.incidents.extend(chosen)
        return chosen

    def minutes(self, start_ms: int, count: int, batch_size: int = 5000) -> Iterator[list[dict[str, Any]]]:
        """Batches of readings (one per device and quantity each simulated minute), incidents included."""
        by_device: dict[str, list[Incident]] = {}
        for inc in self.incidents:
            by_device.setdefault(inc.device, []).append(inc)
        batch: list[dict[str, Any]] = []
        for m in range(count):
            t = start_ms + m * MIN
            for d in self.devices:
                values = {}
                for q in QUANTITIES[d.type]:
                    lo, hi = NORMAL[q]
                    values[q] = round(float(self.rng.uniform(lo, hi)), 3) if hi > lo else lo
                for inc in by_device.get(d.code, ()):
                    if inc.start_minute <= m < inc.start_minute + inc.minutes:
                        values[inc.quantity] = INCIDENTS[inc.scene][1]
                batch.append({"device": d.code, "time": t, "values": values})
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch


def make_devices_in_city(gazetteer: Any, n: int, seed: int = 7, prefix: str = "SIM") -> list[Device]:
    """n devices at random grids of the loaded city (a point inside each chosen grid)."""
    hierarchy = gazetteer.hierarchy
    rng = np.random.default_rng(seed)
    grids = hierarchy.level_geometries("grid")
    if len(grids) == 0:
        raise ValueError("no grids loaded: run `zhizhi init` first")
    picks = rng.integers(0, len(grids), n)
    points: dict[int, tuple[float, float]] = {}
    for g in set(picks.tolist()):
        p = grids[g].representative_point()
        points[g] = (p.x, p.y)
    scenes = list(SCENE_TYPES)
    out = []
    for i, g in enumerate(picks.tolist()):
        scene = scenes[i % len(scenes)]
        x, y = points[g]
        out.append(Device(code=f"{prefix}-{i:07d}", type=SCENE_TYPES[scene], scene=scene, lon=x, lat=y,
                          model="sim-1"))
    return out
