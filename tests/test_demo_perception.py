"""The demo's perception step: simulated devices of every scene, incidents that become alarms and cases."""

from __future__ import annotations

from typing import Any

from zhizhi.demo import simulate_sensing


def test_demo_devices_raise_alarms_that_open_cases_and_a_rerun_adds_nothing(app: Any) -> None:
    first = simulate_sensing(app, n_devices=30, minutes=130, per_scene=1)
    assert first.devices == 30 and first.incidents == 6 and first.readings > 30 * 100
    alarms, _ = app.sensing.alarms(limit=1000)
    scenes = {a.scene for a in alarms if a.case_id}
    assert {"septic_tank", "forest_fire", "waterlogging", "elderly", "high_throw", "kitchen_waste"} <= scenes
    with app.uow() as uow:
        cases = uow.cases.get_many(sorted({a.case_id for a in alarms if a.case_id}))
    assert first.cases >= 6 and len(cases) >= 6 and {c.source for c in cases} == {"sensor"}
    again = simulate_sensing(app, n_devices=30, minutes=130, per_scene=1)
    assert again.readings == 0 and again.alarms == first.alarms  # the same readings are duplicates: refused
