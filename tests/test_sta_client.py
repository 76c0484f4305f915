"""A standard SensorThings client, unchanged, against /sta/v1.1: FROST's own Python client (`frost_sta_client`).

The issue asks that "standard SensorThings clients must work against it unchanged". Our own tests of the entity
model check the wire format as we read the standard; this one checks it as a client written by others reads it:
deep insert of a Thing with its Location, queries with $filter/$expand/$orderby/$top and paging through
@iot.nextLink, creating Observations (the client reads the new id from the Location header), reading them back,
and HTTP Basic authentication (the only kind the client speaks: the account's name and one of its API keys).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import frost_sta_client as fsc
import geojson
import pytest

from zhizhi.service import accounts
from zhizhi.service.accounts import create_api_key

TEST_PASSWORD = "Frost-client-2026!"


def _service(http_server: str, app: Any, username: str = "sta-frost") -> fsc.SensorThingsService:
    # What a sensor platform connects as: an integrator (系统对接) for the whole city, by API key.
    accounts.create_user(app, username, TEST_PASSWORD, ("integrator",), ("500000",))
    key = create_api_key(app, username, "frost client")
    return fsc.SensorThingsService(f"{http_server}/sta/v1.1", auth_handler=fsc.AuthHandler(username, key))


def _thing(code: str, lon: float, lat: float) -> fsc.Thing:
    where = fsc.Location(name=f"{code} 位置", description="化粪池井口", encoding_type="application/geo+json",
                         location=geojson.Point((lon, lat)))
    return fsc.Thing(name=code, description="化粪池甲烷探测器", locations=[where],
                     properties={"type": "methane_detector", "scene": "septic_tank"})


def test_frost_client_registers_queries_and_posts_observations(http_server: str, app: Any) -> None:
    service = _service(http_server, app)
    first, second = _thing("M-frost-1", 106.55, 29.55), _thing("M-frost-2", 106.56, 29.56)
    service.create(first)
    service.create(second)
    assert isinstance(first.id, int) and first.id != second.id  # read back from the Location header

    found = list(service.things().query().filter("name eq 'M-frost-1'").expand("Locations,Datastreams").list())
    assert [t.name for t in found] == ["M-frost-1"]
    (where,) = found[0].locations
    assert list(where.location["coordinates"])[:2] == pytest.approx([106.55, 29.55])
    streams = {d.name: d for d in found[0].datastreams}
    methane = next(d for name, d in streams.items() if "methane" in name or "甲烷" in name)

    # Paging: one Thing per page, the client follows @iot.nextLink until the end.
    names = [t.name for t in service.things().query().orderby("name", "ASC").top(1).list()]
    assert names == ["M-frost-1", "M-frost-2"]

    now = app.clock.now()
    for minutes, value in ((2, 1.5), (1, 30.0)):  # the second is over the septic tank's methane limit
        obs = fsc.Observation(result=value, phenomenon_time=(now - timedelta(minutes=minutes)).isoformat(),
                              datastream=methane)
        service.create(obs)
        assert obs.id  # '<datastream>-<epoch ms>', quoted by the client in later paths
    back = service.observations().find(obs.id)
    assert back.result == pytest.approx(30.0)
    results = [o.result for o in methane.get_observations().query().orderby("phenomenonTime", "ASC").list()]
    assert results == pytest.approx([1.5, 30.0])

    alarms, _ = app.sensing.alarms()
    raised = [(a.device_code, a.rule_code) for a in alarms]
    assert ("M-frost-1", "methane_high") in raised, raised  # the reading went through the rules too
    assert {c for c, _ in raised} == {"M-frost-1"}


def test_frost_client_is_refused_without_a_valid_key(http_server: str, app: Any) -> None:
    service = _service(http_server, app)
    service.create(_thing("M-frost-3", 106.55, 29.55))
    wrong = fsc.SensorThingsService(f"{http_server}/sta/v1.1", auth_handler=fsc.AuthHandler("sta-frost", "zz_wrong"))
    with pytest.raises(Exception, match=r"401|Unauthorized|登录"):
        list(wrong.things().query().list())
    # A valid key under another account's name is refused as well.
    accounts.create_user(app, "someone-else", TEST_PASSWORD, ("admin",))
    other_key = create_api_key(app, "someone-else", "k")
    borrowed = fsc.SensorThingsService(f"{http_server}/sta/v1.1", auth_handler=fsc.AuthHandler("sta-frost", other_key))
    with pytest.raises(Exception, match=r"401|Unauthorized|登录"):
        list(borrowed.things().query().list())


def test_frost_client_moves_a_thing_reads_its_history_and_deletes_an_observation(http_server: str, app: Any) -> None:
    """Moving a device the two ways this client offers (a new Location created with its Thing; the Thing updated
    with a new Location, which the client sends as PUT), then its HistoricalLocations read back with the client's
    query API, and an Observation deleted."""
    service = _service(http_server, app, "sta-frost-mv")
    thing = _thing("M-frost-mv", 106.52, 29.52)
    service.create(thing)
    start = app.clock.fixed

    app.clock.fixed = start + timedelta(minutes=10)
    there = fsc.Location(name="新井口", description="北侧", encoding_type="application/geo+json",
                         location=geojson.Point((106.54, 29.58)), things=[thing])
    service.create(there)
    assert isinstance(there.id, int)

    app.clock.fixed = start + timedelta(minutes=20)
    fetched = service.things().find(thing.id)
    fetched.locations = [fsc.Location(name="井口三", description="南侧", encoding_type="application/geo+json",
                                      location=geojson.Point((106.57, 29.52)))]
    service.update(fetched)

    back = service.things().find(thing.id)
    history = list(back.get_historical_locations().query().expand("Locations").orderby("time", "ASC").list())
    assert len(history) == 3
    where = [list(h.locations.entities[0].location["coordinates"])[:2] for h in history]
    assert where == [pytest.approx([106.52, 29.52]), pytest.approx([106.54, 29.58]), pytest.approx([106.57, 29.52])]
    assert history[1].locations.entities[0].id == there.id
    newest = list(service.historical_locations().query().filter(f"time gt {history[1].time}").list())
    assert [h.id for h in newest] == [history[2].id]
    (current,) = list(back.get_locations().query().list())
    assert current.name == "井口三" and list(current.location["coordinates"])[:2] == pytest.approx([106.57, 29.52])
    device = app.sensing.device("M-frost-mv")
    assert (device.lon, device.lat) == (106.57, 29.52) and device.place_code.startswith("500103002")

    stream = next(iter(service.things().find(thing.id).get_datastreams().query().list()))
    when = app.clock.now() - timedelta(minutes=1)
    obs = fsc.Observation(result=2.5, phenomenon_time=when.isoformat(), datastream=stream)
    service.create(obs)
    assert service.observations().find(obs.id).result == pytest.approx(2.5)
    service.delete(obs)
    with pytest.raises(Exception, match=r"404|Not Found"):
        service.observations().find(obs.id)
    assert list(stream.get_observations().query().list()) == []
