"""Live commands: ``emulate`` (a virtual site over real protocols) and ``serve`` (the
controller, with its API and dashboard in a child process). See ``docs/live.md``."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import errno
import gc
import json
import logging
import math
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlparse

import typer

# The API process (``api/process.py``) runs uvicorn: without the live extra these commands are
# replaced by ones that say what to install (``cli/__init__.py``), which needs this import here.
import uvicorn  # noqa: F401
from rich.console import Console

from wattwheel.adapters.store.base import StoreUnavailable
from wattwheel.cli import app
from wattwheel.domain.errors import ConfigError, WattwheelError
from wattwheel.sim.scenario import bundled_site, load_scenario

if TYPE_CHECKING:
    from wattwheel.cli.learn_wiring import LearnOptions

console = Console(stderr=True)
log = logging.getLogger("wattwheel.live")

SiteOpt = Annotated[
    Path | None, typer.Option("--site", help="site file (TOML); default: bundled cella-oversub")
]
TraceOpt = Annotated[
    Path | None, typer.Option("--trace", help="trace (default: the one the site file names)")
]
DEFAULT_DEVICES = Path("wattwheel-devices.json")
#: The interpreter's thread switch interval while serving (default 5 ms), see ``_serve``.
CONTROL_SWITCH_INTERVAL_S = 0.001


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "pymodbus", "pysnmp", "aiomqtt", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _broker(url: str) -> tuple[str, int]:
    parsed = urlparse(url if "://" in url else f"mqtt://{url}")
    if not parsed.hostname:
        _fail(f"--mqtt-url {url!r}: expected host[:port] or mqtt://host:port")
    return str(parsed.hostname), int(parsed.port or 1883)


def _reachable(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


# ---------------------------------------------------------------------------------- emulate
@app.command()
def emulate(
    site: SiteOpt = None,
    trace: TraceOpt = None,
    speed: Annotated[
        float, typer.Option(help="trace seconds per wall second (60: a 5-min step every 5 s)")
    ] = 1.0,
    start_step: Annotated[
        int | None,
        typer.Option(help="first trace step to replay (default: just before the first overload)"),
    ] = None,
    devices: Annotated[
        Path, typer.Option("--devices", help="where to write the device map for `serve`")
    ] = DEFAULT_DEVICES,
    host: Annotated[str, typer.Option(help="address the devices listen on")] = "127.0.0.1",
    redfish_port: Annotated[int, typer.Option(help="Redfish (HTTP); 0 = free port")] = 0,
    snmp_port: Annotated[int, typer.Option(help="SNMP agent (UDP); 0 = free port")] = 0,
    modbus_port: Annotated[int, typer.Option(help="Modbus TCP; 0 = free port")] = 0,
    control_port: Annotated[
        int, typer.Option(help="reserve/scheduler/status HTTP; 0 = free port")
    ] = 0,
    mqtt_url: Annotated[
        str, typer.Option(help="MQTT broker the telemetry is published to")
    ] = "localhost:1883",
    no_mqtt: Annotated[bool, typer.Option("--no-mqtt", help="do not publish over MQTT")] = False,
    write_log: Annotated[
        Path | None,
        typer.Option(
            help="record every Modbus write (wall time, unit, client address) as JSON lines"
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Serve a virtual site driven by a trace over Redfish, SNMP, Modbus/SunSpec and MQTT."""
    from wattwheel.emulate.site import EmulatorOptions

    _logging(verbose)
    site_path = site or bundled_site()
    try:
        scenario = load_scenario(site_path, trace)
    except WattwheelError as exc:
        _fail(str(exc))
    mqtt_host: str | None = None
    mqtt_port = 1883
    if not no_mqtt:
        mqtt_host, mqtt_port = _broker(mqtt_url)
        if not _reachable(mqtt_host, mqtt_port):
            console.print(
                f"[yellow]No MQTT broker reachable at {mqtt_host}:{mqtt_port}: MQTT telemetry is "
                "OFF.[/yellow] Start one (e.g. `mosquitto -p 1883`) or pass --mqtt-url; "
                "--no-mqtt silences this. Redfish, SNMP and Modbus are served regardless."
            )
            mqtt_host = None
    options = EmulatorOptions(
        host=host,
        redfish_port=redfish_port,
        snmp_port=snmp_port,
        modbus_port=modbus_port,
        control_port=control_port,
        mqtt_host=mqtt_host,
        mqtt_port=mqtt_port,
        speed=speed,
        start_step=start_step,
        modbus_write_log=None if write_log is None else str(write_log),
    )
    trace_file = str(trace.resolve()) if trace else ""
    asyncio.run(_emulate(scenario, options, site_path.resolve(), trace_file, devices))


async def _emulate(
    scenario: Any, options: Any, site_path: Path, trace_file: str, out: Path
) -> None:
    from wattwheel.emulate.site import start_emulated_site

    handle = await start_emulated_site(scenario, options, str(site_path), trace_file)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(handle.device_map, indent=1))
    os.replace(tmp, out)  # `serve` never reads a half-written map
    dm = handle.device_map
    console.print(
        f"[bold]wattwheel emulate[/bold]: site {dm['site']!r}, "
        f"{len(dm['inventory'])} servers, speed x{dm['speed']:g}, "
        f"from trace step {dm['start_step']}"
    )
    console.print(f"  Redfish   {dm['redfish']['url']}  (user {dm['redfish']['username']})")
    console.print(
        f"  SNMP      udp://{dm['snmp']['host']}:{dm['snmp']['port']}  (community = rack id)"
    )
    console.print(
        f"  Modbus    tcp://{dm['modbus']['host']}:{dm['modbus']['port']}  "
        f"units {dm['modbus']['units']}"
    )
    mq = dm["mqtt"]
    broker = "off" if mq is None else f"{mq['host']}:{mq['port']}"
    console.print(f"  MQTT      {broker}")
    console.print(f"  reserve   {dm['reserve_url']}\n  scheduler {dm['scheduler_url']}")
    console.print(f"  status    {dm['site_status_url']}")
    console.print(f"device map written to {out} — run: wattwheel serve --devices {out}")
    try:
        await _until_signalled()
    finally:
        await handle.stop()


# ---------------------------------------------------------------------------------- serve
@app.command()
def serve(
    site: SiteOpt = None,
    trace: TraceOpt = None,
    db: Annotated[
        str | None,
        typer.Option(
            help="database URL: sqlite:///PATH (default sqlite:///wattwheel.db), "
            "postgresql+psycopg://..., or memory://"
        ),
    ] = None,
    devices: Annotated[
        Path | None, typer.Option("--devices", help="device map written by `wattwheel emulate`")
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            help="LSTM model directory, 'auto' (the shipped model trained at --history-step, "
            "else the 5-minute one) or 'persistence' (the default)"
        ),
    ] = None,
    policy: Annotated[
        str, typer.Option(help="none, reactive, seed, predictive or converter")
    ] = "predictive",
    host: Annotated[str, typer.Option(help="API address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API port")] = 8080,
    token_file: Annotated[
        Path | None,
        typer.Option(help="API tokens, one 'name:role:token' per line (or WATTWHEEL_TOKENS)"),
    ] = None,
    control_period: Annotated[float, typer.Option(help="fast-loop period (s)")] = 1.0,
    plan_period: Annotated[
        float | None, typer.Option(help="planning period (s); default: the site's")
    ] = None,
    history_step: Annotated[
        float | None,
        typer.Option(help="forecast history grid (s); default 60, or the model's step"),
    ] = None,
    device_timeout: Annotated[float, typer.Option(help="per-device timeout in a tick (s)")] = 0.5,
    etcd: Annotated[
        str | None,
        typer.Option(
            help="etcd URL[,URL...] for leader election between redundant controllers "
            "(default: none, this instance leads every shard)"
        ),
    ] = None,
    instance_id: Annotated[
        str | None, typer.Option(help="this controller's name in elections (default host:pid)")
    ] = None,
    shard: Annotated[
        list[str] | None,
        typer.Option(
            help="SHARD=DOMAIN[,DOMAIN...], once per shard (default: one shard per domain)"
        ),
    ] = None,
    shards: Annotated[
        int | None,
        typer.Option(
            "--shards",
            help="N shards of contiguous domains, named s0..s{N-1} (instead of --shard specs)",
            min=1,
        ),
    ] = None,
    only_shard: Annotated[
        str | None,
        typer.Option(
            "--only-shard",
            help="run this one shard alone (one process per shard): its domains, racks, "
            "devices and MQTT topics only; with --etcd it also campaigns for the site "
            "coordinator role (reserve budgets among the shard processes)",
        ),
    ] = None,
    budget_ttl_s: Annotated[
        float,
        typer.Option(
            "--budget-ttl-s",
            help="--only-shard: after this long without a new reserve budget from the site "
            "coordinator (s), plan and command with the shard's static share of the reserve",
        ),
    ] = 10.0,
    spawn: Annotated[
        bool,
        typer.Option(
            "--spawn",
            help="with --shards/--shard: start one `serve --only-shard` process per shard (API "
            "on --port + 1, + 2, ...; SQLite file, instance id and spill journal per shard) and "
            "wait for them",
        ),
    ] = False,
    lease_ttl_s: Annotated[
        int, typer.Option(help="etcd lease TTL (s); a leader stops commanding TTL/3 before it")
    ] = 2,
    insecure_read: Annotated[
        bool,
        typer.Option(
            "--insecure-read",
            help="allow open (token-less) reads on a non-loopback --host",
        ),
    ] = False,
    spill_dir: Annotated[
        Path | None,
        typer.Option(
            help="spill journal for writes the database cannot take now (fsync'ed, replayed at "
            "the next start); default ./wattwheel-spill, or ./wattwheel-spill/<instance-id>"
        ),
    ] = None,
    spill_max_mb: Annotated[
        float, typer.Option(help="bound of the spill journal (MiB); beyond it writes are refused")
    ] = 512.0,
    learn: Annotated[
        bool,
        typer.Option(
            "--learn",
            help="continuous learning: fine-tune the LSTM on the stored telemetry in a worker "
            "process, promote a better shadow, roll back a worse one (needs torch to fine-tune)",
        ),
    ] = False,
    learn_dir: Annotated[
        Path, typer.Option(help="where --learn writes fine-tuned model versions")
    ] = Path("wattwheel-models"),
    learn_cycle_s: Annotated[
        float, typer.Option(help="--learn: scoring and promotion check period (s)")
    ] = 3600.0,
    finetune_every_s: Annotated[
        float, typer.Option(help="--learn: fine-tune period (s); at once on drift")
    ] = 86400.0,
    api_stall_s: Annotated[
        float,
        typer.Option(
            help="the API process is killed and restarted after this long without a heartbeat"
        ),
    ] = 15.0,
    api_nice: Annotated[
        int,
        typer.Option(
            min=0,
            max=19,
            help="the API process's niceness above serve's (a lower CPU priority than the loop)",
        ),
    ] = 10,
    api_cpus: Annotated[
        str,
        typer.Option(
            help="CPUs of the API process: 'auto' (with 2+ CPUs: the last one, the control "
            "process on the others), a list such as '1' or '2-3' (the control process on the "
            "other CPUs), or 'off' (no pinning)",
        ),
    ] = "auto",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the live controller against devices, with the API, dashboard and /metrics (served
    by a child process)."""
    from wattwheel.cli.live_store import default_spill_dir

    _logging(verbose)
    _check_open_bind(host, token_file, insecure_read)
    if spawn:
        if only_shard is not None:
            _fail("--spawn starts the --only-shard processes itself: give one or the other")
        names = _shard_names(shards, shard)
        raise typer.Exit(_spawn_shards(names, port, db, instance_id, spill_dir))
    election = _election_options(
        etcd, instance_id, shard, lease_ttl_s, device_timeout, shards, only_shard
    )
    if not (math.isfinite(budget_ttl_s) and budget_ttl_s >= 2.0):
        _fail(f"--budget-ttl-s {budget_ttl_s:g}: must be >= 2 s (budgets come every 1 s)")
    election = dataclasses.replace(election, budget_ttl_s=budget_ttl_s)
    if not spill_max_mb > 0:
        _fail(f"--spill-max-mb {spill_max_mb:g}: must be > 0")
    # Shard processes side by side must not share a spill journal.
    own = instance_id if instance_id is not None or only_shard is None else f"shard-{only_shard}"
    spill = StoreOptions(spill_dir or default_spill_dir(own), spill_max_mb)
    learning = _learn_options(learn, learn_dir, learn_cycle_s, finetune_every_s)
    if not (math.isfinite(api_stall_s) and api_stall_s >= 2.0):
        _fail(f"--api-stall-s {api_stall_s:g}: must be >= 2 s (the API process beats every 1 s)")
    placement = _placement(api_cpus)
    listen = _listen(host, port)
    try:
        asyncio.run(
            _serve(
                site or bundled_site(),
                trace,
                db,
                devices,
                model,
                policy,
                host,
                port,
                token_file,
                control_period,
                plan_period,
                history_step,
                device_timeout,
                election,
                spill,
                listen,
                ApiOptions(api_stall_s, api_nice, placement),
                verbose,
                learning,
            )
        )
    except WattwheelError as exc:
        _fail(str(exc))
    except StoreUnavailable as exc:
        _fail(f"--db: the database cannot be reached ({str(exc).splitlines()[0]})")


def _learn_options(
    learn: bool, learn_dir: Path, cycle_s: float, finetune_every_s: float
) -> LearnOptions | None:
    from wattwheel.cli.learn_wiring import LearnOptions

    if not learn:
        return None
    if not (cycle_s > 0 and finetune_every_s > 0):
        _fail("--learn-cycle-s and --finetune-every-s must be > 0")
    return LearnOptions(learn_dir, cycle_s, finetune_every_s)


def _start_learning(
    opts: LearnOptions | None,
    chosen: Path | str | None,
    runtime: Any,
    store: Any,
    inventory: Any,
    clock: Any,
    step_s: float,
) -> Any:
    """One continuous-learning worker (its own thread and process), or None."""
    if opts is None:
        return None
    if chosen is None or not Path(chosen).is_dir():
        console.print("[yellow]--learn needs an LSTM --model (e.g. auto): learning off[/yellow]")
        return None
    from wattwheel.cli.learn_wiring import start_learning

    worker = start_learning(opts, Path(chosen), runtime, store, inventory, clock, step_s)
    console.print(f"  learning: from {chosen}, {worker.learner.status()['fine_tuning']}")
    return worker


@dataclass(frozen=True)
class StoreOptions:
    """``serve``'s spill journal: where, and its bound (MiB)."""

    spill_dir: Path
    spill_max_mb: float


@dataclass(frozen=True)
class ApiOptions:
    """``serve``'s API process: restart after ``stall_s`` silent, niceness above serve's, and
    the (control, API) CPU split (None: not pinned; see ``api/placement.py``)."""

    stall_s: float
    nice: int
    placement: tuple[frozenset[int], frozenset[int]] | None


def _placement(api_cpus: str) -> tuple[frozenset[int], frozenset[int]] | None:
    """``--api-cpus``: the CPU split, with the control process (this one, every thread)
    pinned to its part now, before it starts any thread (they inherit it)."""
    from wattwheel.api.placement import allowed_cpus, describe, pin_process, split_cpus

    try:
        split = split_cpus(api_cpus, allowed_cpus())
    except ValueError as exc:
        _fail(str(exc))
        raise
    if split is not None:
        try:
            pin_process(split[0])
        except OSError as exc:
            console.print(f"[yellow]--api-cpus {api_cpus}: not pinned ({exc})[/yellow]")
            return None
    console.print(f"  CPUs: {describe(split)}")
    return split


@dataclass(frozen=True)
class ElectionOptions:
    """``serve``'s redundancy options, checked (see ``docs/redundancy.md``)."""

    etcd_urls: tuple[str, ...]
    instance_id: str
    shard_specs: tuple[str, ...]
    ttl_s: int
    #: names this instance's MQTT session: --instance-id, else the election name when
    #: redundant, else None (one serve: the same session at every start); a shard's own
    #: process without either: ``shard-<name>``
    session_id: str | None = None
    #: --shards N: split the domains into N shards (instead of ``shard_specs``)
    n_shards: int | None = None
    #: --only-shard: the one shard this process runs
    only_shard: str | None = None
    #: --budget-ttl-s: a shard process without a new reserve budget for this long falls back
    budget_ttl_s: float = 10.0


def _election_options(
    etcd: str | None,
    instance_id: str | None,
    shard: list[str] | None,
    lease_ttl_s: int,
    device_timeout: float,
    n_shards: int | None = None,
    only_shard: str | None = None,
) -> ElectionOptions:
    from wattwheel.runtime.leader import LeaseTiming

    urls = tuple(u.strip() for u in (etcd or "").split(",") if u.strip())
    for url in urls:
        if not url.startswith(("http://", "https://")):
            _fail(f"--etcd {url!r}: expected http://host:port (comma-separated for several)")
    try:
        timing = LeaseTiming(ttl_s=lease_ttl_s)
    except ValueError as exc:
        _fail(f"--lease-ttl-s {lease_ttl_s}: {exc}")
        raise
    if urls and not 0 < device_timeout < timing.margin:
        # A write the leadership check allowed must land before the lease can pass to another
        # instance: the margin (TTL/3) is all the slack there is.
        _fail(
            f"--device-timeout {device_timeout:g} s must be below the lease margin "
            f"(--lease-ttl-s {lease_ttl_s} / 3 = {timing.margin:.3g} s): raise --lease-ttl-s "
            "or lower --device-timeout"
        )
    name = instance_id or f"{socket.gethostname()}:{os.getpid()}"
    if not name.strip():
        _fail("--instance-id must not be empty")
    session = instance_id if instance_id is not None else (name if urls else None)
    if n_shards is not None and shard:
        _fail("give --shard specs or --shards N, not both")
    if only_shard is not None:
        if not only_shard.strip():
            _fail("--only-shard must name a shard")
        if session is None:
            session = f"shard-{only_shard}"
    return ElectionOptions(
        urls, name, tuple(shard or ()), lease_ttl_s, session, n_shards, only_shard
    )


def _shard_names(n_shards: int | None, specs: list[str] | None) -> list[str]:
    """The shard names ``--shards N`` (``s0``..) or the ``--shard`` specs give."""
    if n_shards is not None and specs:
        _fail("give --shard specs or --shards N, not both")
    if n_shards is not None:
        return [f"s{k}" for k in range(n_shards)]
    names = [spec.partition("=")[0].strip() for spec in specs or ()]
    if not names:
        _fail("--spawn needs --shards N or --shard specs")
    return names


def shard_argv(
    argv: list[str],
    name: str,
    k: int,
    port: int,
    db: str | None,
    instance_id: str | None,
    spill_dir: Path | None,
) -> list[str]:
    """The command line of shard ``name``'s process: ``serve``'s own (``argv`` from the
    subcommand on) without ``--spawn``, then its shard, port, and what must not be shared
    (the last value of an option wins)."""
    args = [a for a in argv if a != "--spawn"]
    args += ["--only-shard", name, "--port", str(port + 1 + k)]
    if db is None or db.startswith("sqlite:///"):
        base = Path(db.removeprefix("sqlite:///") if db else "wattwheel.db")
        args += ["--db", f"sqlite:///{base.with_name(f'{base.stem}-{name}{base.suffix}')}"]
    if instance_id is not None:
        args += ["--instance-id", f"{instance_id}-{name}"]
    if spill_dir is not None:
        args += ["--spill-dir", str(spill_dir / name)]
    return args


def _spawn_shards(
    names: list[str], port: int, db: str | None, instance_id: str | None, spill_dir: Path | None
) -> int:
    """``serve --spawn``: one ``serve --only-shard`` process per shard; SIGINT/SIGTERM is passed
    on to them; returns the worst exit code."""
    import subprocess

    try:
        at = sys.argv.index("serve")
    except ValueError:
        _fail("--spawn: run as `wattwheel serve ...`")
        raise
    procs = []
    for k, name in enumerate(names):
        argv = shard_argv(sys.argv[at:], name, k, port, db, instance_id, spill_dir)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", "from wattwheel.cli import main; main()", *argv]
            )
        )
        console.print(f"shard {name}: pid {procs[-1].pid}, API on port {port + 1 + k}")

    def forward(signum: int, _frame: Any) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    codes = []
    for proc in procs:
        while True:
            try:
                codes.append(proc.wait())
                break
            except KeyboardInterrupt:  # forwarded above; keep waiting for the children
                continue
    return max(codes, default=0)


def _one_shard(
    site: Any, inventory: Any, shard_of: dict[str, str], name: str
) -> tuple[Any, Any, dict[str, str]]:
    """``--only-shard``: the site, inventory and shard map cut to shard ``name``."""
    from wattwheel.runtime.shards import shard_inventory, shard_site

    domains = [d for d in site.domain_names if shard_of[d] == name]
    if not domains:
        raise ConfigError(
            "--only-shard", name, f"no such shard (shards: {sorted(set(shard_of.values()))})"
        )
    cut = shard_site(site, domains)
    return cut, shard_inventory(inventory, cut), {d: shard_of[d] for d in domains}


def _model_step_s(forecaster: Any) -> float | None:
    """The grid a trained model was fitted on (the history must use it), if it says."""
    # Wrappers (conformal calibration, the AR blend, known jobs) hold the model as ``inner``.
    for _ in range(8):
        try:
            return float(forecaster._state().step_s)
        except Exception:  # a wrapper, a baseline or an untrained model: no fixed step here
            forecaster = getattr(forecaster, "inner", None)
            if forecaster is None:
                return None
    return None


def _serve_model(model: Path | None, history_step: float | None) -> Path | str | None:
    """``--model``: a directory, a baseline name, or 'auto' = the shipped model whose step
    matches ``--history-step`` (the 5-minute model when no step is given)."""
    from wattwheel.adapters.model_artifact import shipped_model_dir, shipped_model_for_step

    if model is None or str(model) == "persistence":
        return None
    if str(model) != "auto":
        return model
    if history_step is None:
        return shipped_model_dir()
    found = shipped_model_for_step(history_step)
    if found is None:
        _fail(f"--model auto: no shipped model was trained at --history-step {history_step:g} s")
    return found


def _tokens(token_file: Path | None) -> dict[str, Any]:
    from wattwheel.api.auth import ENV_VAR, parse_tokens

    spec = os.environ.get(ENV_VAR, "")
    if token_file is not None:
        if not token_file.is_file():
            _fail(f"--token-file {token_file}: not found")
        lines = [ln.strip() for ln in token_file.read_text().splitlines()]
        spec = ",".join([spec, *(ln for ln in lines if ln and not ln.startswith("#"))])
    try:
        return parse_tokens(spec)
    except ValueError as exc:
        _fail(str(exc))
        raise


def _check_open_bind(host: str, token_file: Path | None, insecure_read: bool) -> None:
    from wattwheel.api.auth import open_bind_refusal

    refusal = open_bind_refusal(host, _tokens(token_file), insecure_read)
    if refusal is not None:
        _fail(refusal)


def _listen(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound before anything starts (a port in use is exit 2)."""
    from wattwheel.api.host import listen_socket

    deadline = time.monotonic() + 5.0
    while True:
        try:
            return listen_socket(host, port)
        except OSError as exc:
            # The API process of a serve killed just now may hold the port a moment longer.
            if exc.errno == errno.EADDRINUSE and time.monotonic() < deadline:
                time.sleep(0.25)
                continue
            _fail(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})")
            raise


def _api_process(
    listen: socket.socket,
    state: Any,
    overrides: Any,
    store: Any,
    tokens: dict[str, Any],
    site_name: str,
    inventory: Any,
    db: str | None,
    on_crash: Any,
    api_opts: ApiOptions,
    verbose: bool,
) -> Any:
    """The API (uvicorn, auth gate, routes, SSE, /metrics, dashboard) in a child process fed
    with the live state; override commands come back here (``api/host.py``)."""
    from wattwheel.adapters.store import DEFAULT_URL
    from wattwheel.api.context import ApiContext
    from wattwheel.api.desk import LocalDesk
    from wattwheel.api.gate import DEFAULT_MAX_BODY_BYTES
    from wattwheel.api.host import ApiProcess
    from wattwheel.api.pins import PinGuard

    ctx = ApiContext(state, store, overrides, time.time, site_name, PinGuard(inventory, state))

    def extras() -> dict[str, Any]:
        disagree = state.source_disagreements
        return {
            "leadership": state.leadership() if state.leadership else None,
            "tasks": state.tasks() if state.tasks else [],
            "disagreements": dict(disagree()) if disagree else None,
            "store": ctx.store_health(),
            "overrides": overrides.active(time.time()),
            "learning": state.learning() if state.learning else None,
            "reserve_budget": state.reserve_budget() if state.reserve_budget else None,
        }

    init = {
        "tokens": tokens,
        "anonymous_read": not tokens,
        "site_name": site_name,
        "domain_ids": list(state.domain_ids),
        "db_url": db or DEFAULT_URL,
        "max_body_bytes": DEFAULT_MAX_BODY_BYTES,
        "keepalive_s": 15.0,
        "log_level": logging.DEBUG if verbose else logging.INFO,
        "nice": api_opts.nice,
        "cpus": None if api_opts.placement is None else sorted(api_opts.placement[1]),
    }
    desk = LocalDesk(ctx)
    return ApiProcess(listen, init, state, desk, store, extras, on_crash, stall_s=api_opts.stall_s)


def _device_map_watch(path: Path, wired: dict[str, Any], state: Any, runtime: Any) -> Any:
    """A changed device map (the emulator restarted on new ports) puts the loop in ``degraded``
    mode, with an event, until the map matches the wiring again."""
    from wattwheel.adapters.devicemap_watch import DeviceMapWatch

    def changed(problem: str | None) -> None:
        state.set_degraded("device_map", problem)
        runtime.event("device_map", problem or f"device map {path} matches the wiring again")

    return DeviceMapWatch(path, changed, wired)


async def _serve(
    site_path: Path,
    trace: Path | None,
    db: str | None,
    devices_path: Path | None,
    model: Path | None,
    policy_name: str,
    host: str,
    port: int,
    token_file: Path | None,
    control_period: float,
    plan_period: float | None,
    history_step: float | None,
    device_timeout: float,
    election: ElectionOptions,
    store_opts: StoreOptions,
    listen: socket.socket,
    api_opts: ApiOptions,
    verbose: bool,
    learn_opts: LearnOptions | None = None,
) -> None:
    from wattwheel.adapters.model_artifact import load_forecaster
    from wattwheel.cli.coord_wiring import (
        attach_coordination,
        coordination_store,
        static_shares,
    )
    from wattwheel.cli.live_store import open_serve_store, restore_operator_overrides
    from wattwheel.cli.live_wiring import (
        Leadership,
        Wiring,
        build_leadership,
        build_wiring,
        inventory_for,
        load_device_map,
        shard_map,
    )
    from wattwheel.control.registry import make_policy
    from wattwheel.forecast.base import Forecaster
    from wattwheel.forecast.baselines import PersistenceForecaster
    from wattwheel.runtime.clock import SystemClock
    from wattwheel.runtime.inventory import default_inventory
    from wattwheel.runtime.loop import Runtime, RuntimeConfig
    from wattwheel.runtime.shards import shard_phase_s, split_shards
    from wattwheel.runtime.state import Overrides
    from wattwheel.runtime.state_mirror import MirroredLiveState, StateMirror
    from wattwheel.runtime.workers import LoopThread

    scenario = load_scenario(site_path, trace)
    site = scenario.site
    if devices_path is None and DEFAULT_DEVICES.is_file():
        devices_path = DEFAULT_DEVICES
    if devices_path is not None:
        device_map = load_device_map(devices_path)
        wired_map = copy.deepcopy(device_map)  # what the device-map watcher compares against
        inventory = inventory_for(device_map, site)
    else:
        console.print(
            "[yellow]no --devices map: no device is wired; the loop runs on the "
            "modelled reserve only[/yellow]"
        )
        device_map = {}
        inventory = default_inventory(site, 100.0, 2000.0)
    specs = election.shard_specs
    if election.n_shards is not None:
        specs = tuple(split_shards(site.domain_names, election.n_shards))
    shard_of = shard_map(site.domain_names, specs)
    static_kw = static_shares(site, shard_of)  # of the whole site, before it is cut
    # A shard process ticks at its own point of the period: the site's shard processes do not
    # all wake at once (a few cores serve them all).
    phase_s = (
        None
        if election.only_shard is None
        else shard_phase_s(election.only_shard, control_period, list(shard_of.values()))
    )
    if election.only_shard is not None:
        site, inventory, shard_of = _one_shard(site, inventory, shard_of, election.only_shard)
    policy = make_policy(policy_name, site)
    clock = SystemClock()
    write_timeout_s = device_timeout if election.etcd_urls else None
    # Redundant controllers: a flywheel no leader renews goes back to hold (2 ticks, >= 2 s).
    revert_s = max(2, math.ceil(2 * control_period)) if election.etcd_urls else 0

    # Opened first: the MQTT ingester acknowledges a batch only once the store has it durably.
    store = open_serve_store(db, store_opts.spill_dir, store_opts.spill_max_mb)

    async def build_clients() -> tuple[Leadership, Wiring, Any]:
        """On the control loop: some clients bind to the loop they are built on."""
        leadership, lead_closers = build_leadership(
            site.name,
            shard_of,
            clock,
            etcd_urls=election.etcd_urls,
            instance_id=election.instance_id,
            ttl_s=election.ttl_s,
            # A shard process campaigns for the coordinator role among the shard processes
            # (with etcd; alone it has nobody to coordinate).
            coordinator=election.only_shard is None or bool(election.etcd_urls),
        )
        wiring = build_wiring(
            device_map,
            site,
            inventory,
            device_timeout,
            write_timeout_s,
            flywheel_revert_s=revert_s,
            instance_id=election.session_id,
            telemetry_store=store,
            own_topics=election.only_shard is not None,
        )
        wiring.closers.extend(lead_closers)
        coord_store = None
        if election.only_shard is not None:
            coord_store, coord_closers = coordination_store(
                election.etcd_urls, site.name, election.ttl_s
            )
            wiring.closers[:0] = coord_closers  # closed first: revoke before the elector's
        return leadership, wiring, coord_store

    # The control side runs on its own thread's event loop: no request can delay a tick.
    control_thread = LoopThread("wattwheel-control")
    control_thread.start()
    try:
        leadership, wiring, coord_store = await control_thread.run(build_clients())
    except BaseException:
        await asyncio.to_thread(control_thread.stop)
        raise
    horizons = tuple(getattr(policy, "horizons_s", ()))
    forecaster: Forecaster
    chosen = _serve_model(model, history_step)
    if chosen is not None:
        forecaster = load_forecaster(chosen)
        console.print(f"forecaster: {chosen}")
    else:
        forecaster = PersistenceForecaster(horizons_s=horizons or (300.0,))
    step = history_step or _model_step_s(forecaster) or 60.0
    config = RuntimeConfig(
        control_period_s=control_period,
        device_timeout_s=device_timeout,
        plan_period_s=plan_period,
        history_step_s=step,
        poll_period_s=wiring.poll_period_s,
        poll_in_thread=True,
        phase_s=phase_s,
        # Telemetry that lands between ticks is acted on at once (bounded: at most one tick
        # more per period), not up to a period later.
        wake_on_telemetry=True,
        # Sources polled every 5 s must still count as fresh between two polls.
        telemetry_max_age_s=max([5.0, *(2 * p for p in wiring.poll_period_s.values())]),
        metered_racks=frozenset(wiring.metered_racks),
    )
    tokens = _tokens(token_file)
    if not tokens:
        console.print(
            "[yellow]no API tokens configured: reads are open, operator overrides "
            "are disabled (give --token-file or WATTWHEEL_TOKENS)[/yellow]"
        )
    state, overrides = MirroredLiveState(site.domain_names, StateMirror()), Overrides()
    restore_operator_overrides(store, overrides, state, clock.now_s())
    runtime = Runtime(
        site,
        policy,
        wiring.devices,
        inventory,
        clock,
        state,
        overrides,
        store,
        forecaster,
        config,
    )
    leadership.attach(runtime)
    coordination = None
    if election.only_shard is not None:
        # What the shard's domains share (reserve, shifts among them) is commanded while this
        # process leads the shard, within the reserve budget the site coordinator (one of the
        # shard processes) gives it, or its static share (docs/redundancy.md).
        runtime.coordinator = None
        coordination = attach_coordination(
            runtime,
            leadership,
            coord_store,
            election.only_shard,
            static_kw,
            election.instance_id,
            election.budget_ttl_s,
        )
        state.reserve_budget = coordination.status
    learning = _start_learning(learn_opts, chosen, runtime, store, inventory, clock, step)

    def api_crashed(message: str) -> None:
        """Counted and evented like a supervised task's crash (the event on the loop)."""
        state.count_error("task")
        control_thread.loop.call_soon_threadsafe(runtime.event, "task.crash", message)

    api = _api_process(
        listen,
        state,
        overrides,
        store,
        tokens,
        site.name,
        inventory,
        db,
        api_crashed,
        api_opts,
        verbose,
    )
    console.print(
        f"  store: durable, spill journal {store_opts.spill_dir.resolve()} "
        f"(bound {store_opts.spill_max_mb:g} MiB)"
    )
    console.print(
        f"[bold]wattwheel serve[/bold]: site {site.name!r}, policy {policy.name}, "
        f"{len(wiring.devices.telemetry)} telemetry sources; "
        f"API and dashboard on http://{host}:{listen.getsockname()[1]}/  (metrics: /metrics; "
        "served by a child process)"
    )
    if election.only_shard is not None:
        console.print(
            f"  shard {election.only_shard!r} alone: domains {list(site.domain_names)}, "
            f"{inventory.n_racks} racks, {len(inventory.servers)} servers"
        )
    if election.etcd_urls:
        console.print(
            f"  redundancy: instance {election.instance_id!r} campaigns on etcd "
            f"{','.join(election.etcd_urls)} for shards {leadership.shards} and the coordinator "
            f"(lease TTL {election.ttl_s} s)"
        )
    else:
        console.print("  redundancy: none (no --etcd): this instance leads every shard")
    if coordination is not None:
        static = coordination.static_kw[coordination.shard]
        console.print(
            f"  reserve: budget from the site coordinator (static share {static:.1f} kW of "
            f"{site.reserve.capacity_kw:.1f} kW after {election.budget_ttl_s:g} s without one)"
            if coord_store is not None
            else f"  reserve: static share {static:.1f} kW of "
            f"{site.reserve.capacity_kw:.1f} kW (no --etcd: no site coordinator)"
        )
    elector = leadership.elector
    if elector is None:  # build_leadership always makes one
        raise RuntimeError("no elector built")
    # The cross-checks' counters, per source (wattwheel_source_disagreements_total).
    state.source_disagreements = lambda: dict(runtime.view.disagreements)
    state.leadership = lambda: [
        dataclasses.asdict(role) for role in elector.status(clock.monotonic_s())
    ]
    supervisor = runtime.supervisor
    state.tasks = lambda: [*supervisor.snapshot(), api.health()]

    async def control() -> None:
        """The control side, on its own thread's event loop (no request can delay a tick)."""
        tasks = [supervisor.spawn("elector", elector.run), asyncio.ensure_future(runtime.run())]
        tasks += [supervisor.spawn(bg.name, bg.run, bg.forever) for bg in wiring.background]
        if coordination is not None:
            tasks.append(supervisor.spawn("coordination", coordination.run))
        if devices_path is not None:
            watch = _device_map_watch(devices_path, wired_map, state, runtime)
            tasks.append(supervisor.spawn("device-map-watch", watch.run))
        try:
            await asyncio.gather(*tasks)
        finally:
            # The elector first: it demotes (nothing more is written) and revokes its lease so
            # a follower takes over at once, then the runtime stops.
            tasks[0].cancel()
            await asyncio.gather(tasks[0], return_exceptions=True)
            for task in tasks[1:]:
                task.cancel()
            await asyncio.gather(*tasks[1:], return_exceptions=True)
            await wiring.close()

    # The control process's other threads (pollers, store writers, the API process's feeder)
    # give up the interpreter lock after 1 ms instead of 5 ms.
    sys.setswitchinterval(CONTROL_SWITCH_INTERVAL_S)
    # What start-up built (inventory, site, clients: ~10^5 objects for 1,000 racks) is moved
    # out of the cyclic collector's reach: a full collection over it stalled a tick by ~0.3 s.
    gc.collect()
    gc.freeze()
    running = control_thread.submit(control())
    api.start()
    try:
        await _until_signalled()
    finally:
        await asyncio.to_thread(api.stop)
        listen.close()
        if learning is not None:
            await asyncio.to_thread(learning.stop)
        await asyncio.to_thread(control_thread.stop)
        if running.done() and not running.cancelled() and running.exception() is not None:
            console.print(f"[red]control loop ended with {running.exception()!r}[/red]")
        with contextlib.suppress(Exception):
            store.flush()
        store.close()
