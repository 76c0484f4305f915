"""Commands for: Perception: devices, the MQTT consumer, the simulator."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

sensing_app = typer.Typer(help="Perception: devices, the MQTT consumer, the simulator.", no_args_is_help=True)

# Sub-command groups this module adds to `zhizhi`, by name.
COMMANDS: dict[str, typer.Typer] = {"sensing": sensing_app}


def _boot() -> Any:
    from zhizhi.config import Settings
    from zhizhi.service.bootstrap import bootstrap

    return bootstrap(Settings())


@sensing_app.command("import-devices")
def import_devices(file: Path) -> None:
    """Register devices from CSV: code,type,scene,lon,lat[,model,name,department_code,status]."""
    zz = _boot()
    n, errors = zz.sensing.import_csv(file)
    typer.echo(f"registered: {n}")
    for row, why in errors:
        typer.echo(f"row {row}: {why}", err=True)
    raise typer.Exit(1 if errors and not n else 0)


@sensing_app.command("devices")
def devices(scene: str | None = None, limit: int = 20) -> None:
    """List registered devices."""
    zz = _boot()
    shown = [d for d in zz.sensing.devices if scene is None or d.scene == scene]
    typer.echo(f"{len(shown)} devices")
    for d in shown[:limit]:
        typer.echo(f"{d.code}\t{d.type}\t{d.scene}\t{d.place_code}\t{d.status.value}")


@sensing_app.command("alarms")
def alarms(state: str = "active", limit: int = 20) -> None:
    """List alarms (active by default)."""
    zz = _boot()
    items, total = zz.sensing.alarms(state=state, limit=limit)
    typer.echo(f"{total} alarms ({state})")
    for a in items:
        typer.echo(f"#{a.id}\t{a.severity.label}\t{a.state.value}\t{a.device_code}\t{a.rule_code}\t"
                   f"case={a.case_id}\t{a.message}")


@sensing_app.command("tick")
def tick() -> None:
    """Run the periodic job once: offline rules, last-seen, retention."""
    typer.echo(str(_boot().sensing.tick()))


@sensing_app.command("consume")
def consume(
    host: Annotated[str | None, typer.Option(help="MQTT broker (default: settings)")] = None,
    port: Annotated[int | None, typer.Option()] = None,
    group: Annotated[str, typer.Option(help="shared-subscription group: consumers in one group split the load")] =
    "zhizhi",
    batch: Annotated[int, typer.Option(help="messages per ingest batch")] = 200,
    max_readings: Annotated[int, typer.Option(help="readings per ingest batch at most (bounds the latency)")] =
    50_000,
    seconds: Annotated[float, typer.Option(help="stop after this long (0 = run until interrupted)")] = 0.0,
    partitions: Annotated[str | None, typer.Option(
        help="own these partitions, e.g. 0-3 or 0,2,5: subscribe to zhizhi/v1/part/{n} instead of the shared "
             "group, so every reading of a device reaches this consumer (exact rule state)")] = None,
    of: Annotated[int, typer.Option(help="number of partitions the devices are split into")] = 16,
) -> None:
    """Subscribe to zhizhi/v1/obs/# and zhizhi/v1/batch/# (shared), or own partitions; ingest what arrives."""
    from zhizhi.domain.errors import ValidationFailed
    from zhizhi.sensing.mqtt import Consumer, parse_partitions

    try:
        owned = parse_partitions(partitions, of) if partitions is not None else None
    except ValidationFailed as exc:
        raise typer.BadParameter(exc.message, param_hint="--partitions") from None
    zz = _boot()
    c = Consumer(zz.sensing, host or zz.settings.mqtt_host, port or zz.settings.mqtt_port, group=group,
                 max_messages=batch, max_readings=max_readings, partitions=owned)
    c.start()
    where = f"partitions {owned} of {of}" if owned is not None else f"group {group}"
    typer.echo(f"consuming as {c.client._client_id.decode()} in {where}")
    started = time.monotonic()
    try:
        while not seconds or time.monotonic() - started < seconds:
            time.sleep(1.0)
            zz.sensing.tick()
    except KeyboardInterrupt:
        pass
    finally:
        c.stop()
    s = c.stats
    typer.echo(f"messages: {s.messages} (bad {s.bad_messages}), readings accepted: {s.accepted}, "
               f"refused: {s.refused} {dict(s.reasons)}")


@sensing_app.command("simulate")
def simulate(
    devices: Annotated[int, typer.Option(help="simulated devices (registered when missing)")] = 600,
    rate: Annotated[float, typer.Option(help="readings per second to send (0 = as fast as possible)")] = 0.0,
    minutes: Annotated[int, typer.Option(help="simulated minutes to replay, ending now")] = 130,
    incidents: Annotated[int, typer.Option(help="incidents injected per scene")] = 2,
    via: Annotated[str, typer.Option(help="mqtt | http | direct")] = "mqtt",
    url: Annotated[str, typer.Option(help="API base for --via http")] = "http://127.0.0.1:8000",
    api_key: Annotated[str, typer.Option(envvar="ZHIZHI_API_KEY",
                                         help="with --via http: an integrator's API key (zhizhi keys create)")] = "",
    batch: Annotated[int, typer.Option(help="readings items per message / request")] = 1000,
    partitions: Annotated[int, typer.Option(help="with --via mqtt: split each batch by device partition and send "
                                                  "it to zhizhi/v1/part/{n} (0 = one batch topic)")] = 0,
    check: Annotated[float, typer.Option(help="after sending, wait this many seconds and check that every "
                                               "incident became an alarm and a case (0 = no check)")] = 0.0,
    seed: int = 7,
) -> None:
    """Publish realistic readings with injected incidents; prints what it injected."""
    import orjson

    from zhizhi.sensing.ingest import dt_to_ms
    from zhizhi.sensing.mqtt import batch_topic, partition_of, partition_topic
    from zhizhi.sensing.simulator import Simulator, make_devices_in_city

    zz = _boot()
    devs = make_devices_in_city(zz.gazetteer, devices, seed=seed)
    if via == "http" and not api_key:
        raise typer.BadParameter("--via http needs --api-key (or ZHIZHI_API_KEY): the API refuses anonymous "
                                 "readings", param_hint="--api-key")
    missing = [d for d in devs if d.code not in zz.sensing.index]
    if missing and via == "http":  # an integration registers its devices through the API, as it posts readings
        import httpx

        for i in range(0, len(missing), 1000):
            body = [{"code": d.code, "type": d.type, "scene": d.scene, "lon": d.lon, "lat": d.lat}
                    for d in missing[i:i + 1000]]
            httpx.post(f"{url}/api/v1/devices", json=body, headers={"X-API-Key": api_key},
                       timeout=60).raise_for_status()
    elif missing:
        zz.sensing.register(missing)
    sim = Simulator(devs, seed=seed)
    injected = sim.inject(incidents, start_minute=max(minutes - 128, 1))
    for inc in injected:
        typer.echo(f"inject {inc.scene}\t{inc.device}\t{inc.rule_code}\tminute {inc.start_minute}")
    start = dt_to_ms(zz.clock.now()) - minutes * 60_000
    sent, t0 = 0, time.monotonic()
    publish: Any
    if via == "mqtt":
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        client.connect(zz.settings.mqtt_host, zz.settings.mqtt_port)
        client.loop_start()

        def publish(items: list[Any]) -> None:
            if not partitions:
                client.publish(batch_topic(f"sim-{seed}"), orjson.dumps(items), qos=1).wait_for_publish(30)
                return
            split: dict[int, list[Any]] = {}
            for it in items:
                split.setdefault(partition_of(it["device"], partitions), []).append(it)
            infos = [client.publish(partition_topic(p), orjson.dumps(part), qos=1) for p, part in split.items()]
            for info in infos:
                info.wait_for_publish(30)
    elif via == "http":
        import httpx

        http = httpx.Client(base_url=url, timeout=60, headers={"X-API-Key": api_key})

        def publish(items: list[Any]) -> None:
            http.post("/api/v1/observations", content=orjson.dumps(items),
                      headers={"content-type": "application/json"}).raise_for_status()
    else:
        def publish(items: list[Any]) -> None:
            zz.sensing.ingest(items)
    for items in sim.minutes(start, minutes, batch_size=batch):
        publish(items)
        sent += sum(len(i["values"]) for i in items)
        if rate:
            ahead = sent / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    elapsed = time.monotonic() - t0
    typer.echo(f"sent: {sent} readings in {elapsed:.1f} s ({sent / max(elapsed, 1e-9):,.0f} readings/s) via {via}")
    if check:
        time.sleep(check)
        zz.sensing.load()
        found = missing_alarm = 0
        for inc in injected:
            items, _ = zz.sensing.alarms(device=inc.device, limit=50)
            hit = [a for a in items if a.rule_code == inc.rule_code]
            if hit and hit[0].case_id:
                found += 1
            else:
                missing_alarm += 1
                typer.echo(f"NOT FOUND: {inc}", err=True)
        typer.echo(f"incidents → alarm and case: {found}/{len(injected)}")
        raise typer.Exit(1 if missing_alarm else 0)
