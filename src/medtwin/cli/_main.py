"""The `medtwin` command: run the demo or a site, replay FHIR files, verify, manage keys."""

from __future__ import annotations

import base64
import getpass
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, track
from rich.table import Table

from medtwin.access import Role, new_token
from medtwin.config import Settings
from medtwin.crypto import KeyRing, SiteKeys, signature_suite
from medtwin.domain import Channel, Device, DeviceStatus
from medtwin.errors import ChainError, ConfigError, MedtwinError
from medtwin.ledger import connect_chain
from medtwin.pipeline import (
    DEFAULT_REWRAP_BATCH,
    Pipeline,
    WriterLock,
    checkpoint_claims,
    verify_store,
)
from medtwin.store import Store

app = typer.Typer(help="medtwin: secure digital twin kernel for healthcare.",
                  no_args_is_help=True, add_completion=False)
keys_app = typer.Typer(help="Site keys, patients and device keys.", no_args_is_help=True)
token_app = typer.Typer(help="API bearer tokens (stored hashed).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(token_app, name="token")
console = Console()

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Site data directory "
                                              "(default: $MEDTWIN_DATA_DIR or ./medtwin-data).")]


def _settings(data_dir: Path | None) -> Settings:
    return Settings.from_env(data_dir=data_dir)


def _fail(exc: MedtwinError) -> typer.Exit:
    console.print(f"[bold red]error:[/] {exc}")
    return typer.Exit(1)


@contextmanager
def _site(data_dir: Path | None) -> Iterator[Pipeline]:
    """The site's pipeline for one command; medtwin errors end the command with their
    message and exit code 1."""
    try:
        pipeline = Pipeline.open(_settings(data_dir))
    except MedtwinError as exc:
        raise _fail(exc) from exc
    try:
        yield pipeline
    except MedtwinError as exc:
        raise _fail(exc) from exc
    finally:
        pipeline.close()


@app.command()
def demo(
    patients: Annotated[int, typer.Option(min=1, max=200, help="Virtual patients.")] = 20,
    speed: Annotated[float, typer.Option(min=1, max=600,
                                         help="Simulated seconds per wall second.")] = 120,
    duration: Annotated[float, typer.Option(help="Wall seconds to run; 0 runs until Ctrl-C.")]
    = 60,
    headless: Annotated[bool, typer.Option(help="Print progress lines instead of the live "
                                                "table.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the virtual ward.")] = 7,
    attack: Annotated[str | None, typer.Option(
        "--attack", help="Attacks from the library, comma-separated, each on its own "
                         "patient's CGM after 20 simulated minutes: bias, ramp, freeze, "
                         "replay, noise, dropout, spike, time-shift (the device's data), "
                         "flood, rogue-device, compromised-key (the device itself).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Run a live site on 127.0.0.1 with a ward of virtual patients streaming signed packets
    in accelerated time; on exit, print the counts and verify the log."""
    from medtwin.cli._demo import parse_attacks, run_demo

    try:
        attacks = parse_attacks(attack) if attack is not None else ()
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--attack") from None
    target = data_dir or Path("medtwin-data") / time.strftime("demo-%Y%m%d-%H%M%S")
    result = run_demo(target, patients, speed, duration, headless, seed, console, attacks)
    table = Table(title="demo summary")
    table.add_column("what")
    table.add_column("count", justify="right")
    for what, n in (("packets sent", result.sent), ("packets accepted", result.accepted_packets),
                    ("packets rejected", result.rejected_packets),
                    ("readings accepted", result.counts["readings"]),
                    ("alerts raised", result.counts["alerts"]),
                    ("guard findings", result.counts.get("findings", 0)),
                    ("attack packets sent", result.attack_packets),
                    ("ledger size (records)", result.counts["leaves"])):
        table.add_row(what, str(n))
    console.print(table)
    console.print(f"[green]verify: OK[/] — {result.verified_records} records match the signed "
                  f"tree head · data in {result.data_dir}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    data_dir: DataDir = None,
) -> None:
    """Serve the API (packets in; twins, alerts, audit and a live stream out)."""
    from medtwin.cli._server import open_chain_services, serve_forever

    with _site(data_dir) as pipeline:
        try:
            services = open_chain_services(pipeline)
        except MedtwinError as exc:
            raise _fail(exc) from exc
        for line in services.lines:
            console.print(line)
        serve_forever(pipeline, host, port, services)


@app.command()
def replay(
    input_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                               help="FHIR R4 NDJSON input.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the FHIR NDJSON output.")],
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Keep the site data here (default: a temporary directory).")] = None,
    validate: Annotated[bool, typer.Option(help="Validate every output resource as FHIR "
                                                "R4.")] = True,
) -> None:
    """Run FHIR R4 NDJSON Observations and insulin MedicationAdministrations through the
    pipeline as a trusted import; write the twin's estimates and findings as FHIR NDJSON."""
    import tempfile

    from medtwin.cli._replay import replay as run_replay

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env(data_dir=data_dir or Path(tmp))
        try:
            summary = run_replay(input_file, out, settings, validate,
                                 lambda xs: track(xs, description="replaying", console=console))
        except MedtwinError as exc:
            raise _fail(exc) from exc
    console.print(f"read {summary.lines} lines: {summary.readings} readings, "
                  f"{summary.unreadable} unreadable; accepted {summary.accepted}, refused "
                  f"{summary.rejected}; alerts {summary.alerts}; guard findings "
                  f"{summary.findings}")
    for name, n in summary.written.items():
        console.print(f"  {out / name}: {n} resources")


@app.command()
def simulate(
    out: Annotated[Path, typer.Argument(dir_okay=False, help="FHIR R4 NDJSON file to write.")],
    patients: Annotated[int, typer.Option(min=1, max=200, help="Virtual patients.")] = 3,
    hours: Annotated[float, typer.Option(min=0.1, max=72, help="Simulated hours.")] = 6.0,
    seed: Annotated[int, typer.Option(help="Seed of the virtual ward.")] = 7,
    start: Annotated[str | None, typer.Option(
        help="Time of the first minute, ISO 8601 with a timezone, e.g. 2026-01-01T08:00Z "
             "(default: HOURS before now); with --seed it makes the file reproducible.")]
    = None,
    attack: Annotated[str | None, typer.Option(
        "--attack", help="Attack one patient's channel: bias, ramp, freeze, replay, noise, "
                         "dropout, spike or time-shift; the ground truth goes to "
                         "OUT.truth.json.")] = None,
    attack_channel: Annotated[str, typer.Option(
        help="Channel attacked: its LOINC code or name, e.g. glucose, heart-rate.")]
    = "glucose",
    attack_start_h: Annotated[float | None, typer.Option(
        help="Hours after the first reading when the attack starts (default: half way); it "
             "lasts to the end.")] = None,
    attack_size: Annotated[float | None, typer.Option(
        help="Size in the channel's unit (bias, noise sigma, spike), its unit per minute "
             "(ramp) or minutes (time-shift, replay lag); default: bias 40, ramp 1.5, noise "
             "25, spike 80, time-shift 10, replay 0 (the hour just before).")] = None,
    attack_patient: Annotated[str | None, typer.Option(
        help="Patient attacked (default: the first, pt-0001).")] = None,
) -> None:
    """Write a virtual ward's readings (UVA/Padova glucose, vitals, carbs, insulin) as FHIR R4
    NDJSON, e.g. as input for `medtwin replay`; with --attack, one stream attacked."""
    from medtwin.cli._replay import FileAttack, simulate_ndjson, truth_path

    file_attack = None
    if attack is not None:
        file_attack = FileAttack(_data_attack_kind(attack), _channel(attack_channel),
                                 attack_start_h, attack_size, attack_patient)
    start_ms = _epoch_ms(start) if start is not None else int(time.time() * 1000) - int(
        hours * 3_600_000)
    with console.status(f"simulating {patients} patients for {hours:g} h…"):
        try:
            n = simulate_ndjson(out, patients, hours, seed, start_ms, attack=file_attack)
        except MedtwinError as exc:
            raise _fail(exc) from exc
    console.print(f"wrote {n} resources to {out}")
    if file_attack is not None:
        console.print(f"attack {file_attack.kind}: ground truth in {truth_path(out)}")


def _epoch_ms(text: str) -> int:
    """Epoch ms of an ISO 8601 time with a timezone, else a usage error saying so."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise typer.BadParameter("not an ISO 8601 time with a timezone, e.g. "
                                 "2026-01-01T08:00Z", param_hint="--start")
    return int(when.timestamp() * 1000)


def _data_attack_kind(kind: str) -> str:
    """`kind` if it is a data attack, else a usage error listing them."""
    from medtwin.sim import ATTACK_DATA_KINDS

    if kind not in ATTACK_DATA_KINDS:
        raise typer.BadParameter(f"unknown attack {kind!r} for a file; choose one of "
                                 f"{', '.join(ATTACK_DATA_KINDS)}", param_hint="--attack")
    return kind


def _channel(name: str) -> Channel:
    """The channel called `name` (LOINC code, or its name such as heart-rate), else a usage
    error listing them."""
    key = name.strip().lower().replace("-", "_")
    for channel in Channel:
        if name.strip() == channel.code or key == channel.name.lower():
            return channel
    raise typer.BadParameter(f"unknown channel {name!r}; choose one of "
                             f"{', '.join(c.name.lower().replace('_', '-') for c in Channel)}",
                             param_hint="--attack-channel")


@app.command()
def whatif(
    history: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                            help="FHIR R4 NDJSON history: CGM glucose, "
                                                 "carbohydrates, insulin.")],
    scenario: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                             help="FHIR R4 NDJSON future meals (carbohydrate "
                                                  "Observations) and insulin doses.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for Observation.ndjson.")],
    patient: Annotated[list[str] | None, typer.Option(
        "--patient", help="Simulate this patient (repeatable; default: every patient with "
                          "CGM in the history).")] = None,
    hours: Annotated[float, typer.Option(min=0.1, max=72, help="Hours simulated after the "
                                         "scenario's last input.")] = 4.0,
    usual_basal: Annotated[bool, typer.Option(help="Add the patient's usual basal (median "
                                              "hourly delivery, last 24 h of history) to the "
                                              "scenario's doses; --no-usual-basal when the "
                                              "scenario lists every dose.")] = True,
) -> None:
    """Identify each patient's glucose twin from HISTORY, simulate the meals and insulin of
    SCENARIO after it, and write the predicted glucose (95 % band) every 5 min as FHIR."""
    from medtwin.cli._whatif import RANGE_MG_DL
    from medtwin.cli._whatif import whatif as run_whatif

    console.print("identifying twins from the history, then simulating the scenario…")
    try:
        summary = run_whatif(history, scenario, out, patient or (), hours, usual_basal,
                             progress=lambda xs: track(xs, description="identifying",
                                                       console=console))
    except MedtwinError as exc:
        raise _fail(exc) from exc
    table = Table(title=f"what-if: {summary.steps} steps of 5 min after the history")
    names = list(summary.patients[0].params)
    labels = {"insulin_sensitivity": "SI", "basal_insulin": "Ib µU/mL",
              "carb_bioavailability": "carbs f"}
    for col in ("patient", *(labels.get(m, m) for m in names), "min mg/dL", "max mg/dL",
                f"TIR {RANGE_MG_DL[0]:g}-{RANGE_MG_DL[1]:g}"):
        table.add_column(col, justify="left" if col == "patient" else "right")
    for p in summary.patients:
        table.add_row(p.patient_id, *(f"{p.params[m]:.3g} ±{100 * p.uncertainty[m]:.0f}%"
                                      for m in names),
                      f"{p.min_mg_dl:.0f}", f"{p.max_mg_dl:.0f}", f"{100 * p.time_in_range:.0f}%")
    console.print(table)
    if summary.skipped_rows:
        console.print(f"{summary.skipped_rows} history readings outside possible values "
                      "were left out")
    console.print(f"  {out / 'Observation.ndjson'}: {summary.written} resources")


@app.command()
def personalize(
    patient: Annotated[list[str] | None, typer.Option(
        "--patient", help="A patient to personalize (repeat; default: every patient).")] = None,
    days: Annotated[float, typer.Option(help="Days of the newest data to identify from.")] = 2.0,
    data_dir: DataDir = None,
) -> None:
    """Identify each patient's glucose twin (insulin sensitivity, basal insulin, carbohydrate
    bioavailability) from their stored CGM, meals and insulin; log and use the result."""
    with _site(data_dir) as pipeline:
        results = pipeline.personalize(patient, days, progress=lambda items: track(
            items, description="identifying", console=console))
    if not results:
        console.print("no patient has CGM data to personalize from")
        return
    table = Table("patient", "parameter", "value", "± (1 sd)")
    for r in results:
        for k, (name, value) in enumerate(r.params.items()):
            table.add_row(r.patient_id if k == 0 else "", name, f"{value:.4g}",
                          f"{100 * r.uncertainty[name]:.0f} %")
    console.print(table)
    console.print(f"logged as records {', '.join(f'#{r.leaf_index}' for r in results)}; "
                  f"from {sum(r.n_cgm for r in results)} CGM values")


@app.command()
def verify(data_dir: DataDir = None,
           replay: Annotated[bool, typer.Option(
               "--replay", help="Also re-derive the twins and alerts from the logged inputs "
                                "and compare them with every logged snapshot and alert (the "
                                "evil-twin check; stop the site first).")] = False) -> None:
    """Recompute the log from the store and check every record and the signed tree head."""
    settings = _settings(data_dir)
    if not Path(settings.resolved_database_url.removeprefix("sqlite:///")).exists() and (
            settings.resolved_database_url.startswith("sqlite")):
        console.print(f"[bold red]error:[/] no site in {settings.data_dir}")
        raise typer.Exit(1)
    try:
        lock: WriterLock | None = WriterLock.acquire(settings.data_dir)
    except ConfigError:
        lock = None
        if replay:
            console.print("[bold red]error:[/] the site is live; stop it before "
                          "`verify --replay` (the replay must see a log that stands still)")
            raise typer.Exit(1) from None
        console.print("the site is live: records written during the check may be reported as "
                      "a mismatch; `GET /v1/verify` checks a live site consistently")
    store = Store(settings.resolved_database_url)
    try:
        keys = SiteKeys.load(settings.resolved_keys_dir)
        chain = connect_chain(settings.chain_url) if settings.chain_url else None
        pinned = [settings.anchor_contract] if settings.anchor_contract else []
        claims = checkpoint_claims(store, settings, chain, pinned)
        unanchored = chain is not None and not claims.anchors_on_chain
        report = verify_store(store, keys.log_key_history, KeyRing(keys, settings.aead_suite),
                              claims.claims)
        replayed = Pipeline.check_replay(settings) if replay else None
    except MedtwinError as exc:
        raise _fail(exc) from exc
    finally:
        store.close()
        if lock is not None:
            lock.release()
    console.print(f"[green]verify: OK[/] {report.records} records ({report.packets} packets, "
                  f"{report.alerts} alerts, {report.rejections} rejections, "
                  f"{report.registrations} device registrations) match the signed tree head; "
                  f"{report.signatures_checked} device signatures re-checked; root "
                  f"{report.root_hex}")
    if report.pending:
        console.print(f"{report.pending} records appended since the signed head are not yet "
                      "covered by it")
    if report.erasures:
        console.print(f"{report.erasures} patients erased: {report.unreadable} of their records "
                      "checked by hash only (their data keys are destroyed)")
    if report.rotations or report.kek_retirements:
        console.print(f"{report.rotations} site KEK rotations and {report.kek_retirements} "
                      "retirements logged")
    if report.suite_changes:
        console.print(f"{report.suite_changes} changes of the AEAD suite logged")
    if report.accesses:
        console.print(f"{report.accesses} records of consent-gated access decisions logged")
    if report.token_bindings_checked:
        console.print(f"{report.token_bindings_checked} token bindings re-checked: each "
                      "holder's signature, and the token table against it")
    if report.log_key_rotations:
        console.print(f"{report.log_key_rotations} log key rotations logged, each endorsed by "
                      f"the key it replaced; the key in force is {report.log_key_id}")
    if report.log_key_id != keys.log_key.key_id:
        console.print(f"[bold yellow]warning:[/] the key file's log key is "
                      f"{keys.log_key.key_id}, not {report.log_key_id}: a rotation was "
                      "interrupted (the next start completes it) or the key file is not this "
                      "log's")
    console.print(f"checkpoints held by others agree with the log: {claims.anchors_indexed} "
                  f"anchors in the site's index, {claims.anchors_on_chain} read back from the "
                  f"chain, {claims.cosignatures} witness cosignatures")
    if unanchored:
        console.print("[bold yellow]warning:[/] MEDTWIN_CHAIN_URL is set but no anchor of this "
                      "log was found on it: pin the log's contract with "
                      "MEDTWIN_ANCHOR_CONTRACT (the site's own tables that name it are not "
                      "evidence)")
    if claims.anchors_unreachable:
        console.print(f"{claims.anchors_unreachable} indexed anchors are on a chain not "
                      "reachable here (an embedded chain ends with its process; set "
                      "MEDTWIN_CHAIN_URL to check a network's)")
    if replayed is not None:
        if not replayed.ok:
            for line in replayed.mismatches[:20]:
                console.print(f"[bold red]replay:[/] {line}")
            console.print(f"[bold red]verify --replay: FAILED[/] {len(replayed.mismatches)} "
                          "snapshots or alerts are not what the logged inputs imply")
            raise typer.Exit(1)
        console.print(f"replay: {replayed.batches} batches re-derived from the logged inputs; "
                      f"{replayed.snapshots} twin snapshots and {replayed.alerts} alerts match")
    if claims.cosignatures_unverified:
        console.print(f"{claims.cosignatures_unverified} cosignatures are from witness keys "
                      "no longer in MEDTWIN_WITNESSES (a witness removed, or re-registered "
                      "with another key): their roots were checked, not their signatures")


@keys_app.command("init")
def keys_init(data_dir: DataDir = None) -> None:
    """Create the site's key files and database if they do not exist; print the log key
    that witnesses pin (`medtwin witness --origin ... --log-key ...`)."""
    with _site(data_dir) as pipeline:
        keys_dir = pipeline.settings.resolved_keys_dir
        origin, log_key = pipeline.settings.log_origin, pipeline.keys.log_key
    console.print(f"site ready; keys in {keys_dir} (keep them off the database host's "
                  "backups)")
    console.print(f"log origin {origin}, {log_key.suite} public key "
                  f"{base64.b64encode(log_key.public_key).decode()}", soft_wrap=True)


@keys_app.command("add-patient")
def keys_add_patient(patient_id: str, data_dir: DataDir = None) -> None:
    """Register a patient and create their data key."""
    with _site(data_dir) as pipeline:
        pipeline.add_patient(patient_id)
    console.print(f"patient {patient_id} registered")


@keys_app.command("add-device")
def keys_add_device(
    device_id: str,
    patient: Annotated[str, typer.Option(help="The patient the device belongs to.")],
    out: Annotated[Path, typer.Option(help="Where to write the device's private key file.")],
    data_dir: DataDir = None,
) -> None:
    """Generate an Ed25519 key pair for a device, register it to a patient, and write the
    device's key file (mode 0600) for provisioning."""
    if out.exists():
        console.print(f"[bold red]error:[/] {out} exists; refusing to overwrite a key file")
        raise typer.Exit(1)
    private, public = signature_suite("ed25519").generate()
    with _site(data_dir) as pipeline:
        pipeline.add_device(Device(device_id, patient, "ed25519", public))
        site = _site_identity(pipeline.settings, pipeline.keys)
    _write_device_key(out, device_id, private, public, site)
    console.print(f"device {device_id} registered to {patient}; key file {out}")


def _site_identity(settings: Settings, keys: SiteKeys) -> dict[str, Any]:
    """What a device is provisioned with to check the site's signed session key: the log's
    origin and current log key (`medtwin.crypto.check_session_key`)."""
    return {"origin": settings.log_origin, "log_key": keys.log_key.public.as_json()}


def _write_device_key(out: Path, device_id: str, private: bytes, public: bytes,
                      site: dict[str, Any]) -> None:
    """Write a device's key file (mode 0600, never over an existing file), durably."""
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"device_id": device_id, "suite": "ed25519",
                   "private_key": base64.b64encode(private).decode(),
                   "public_key": base64.b64encode(public).decode(), "site": site}, handle)
        handle.flush()
        os.fsync(handle.fileno())


@keys_app.command("rotate-device")
def keys_rotate_device(
    device_id: str,
    out: Annotated[Path, typer.Option(help="Where to write the device's new private key file.")],
    reason: Annotated[str, typer.Option(help="Who asked and why (a ticket; no patient "
                                             "data).")],
    data_dir: DataDir = None,
) -> None:
    """Give a device a new Ed25519 key pair, logged; write the new key file (mode 0600) for
    provisioning. The old key signs nothing from then on."""
    if out.exists():
        console.print(f"[bold red]error:[/] {out} exists; refusing to overwrite a key file")
        raise typer.Exit(1)
    private, public = signature_suite("ed25519").generate()
    settings = _settings(data_dir)
    try:
        site = _site_identity(settings, SiteKeys.load(settings.resolved_keys_dir))
    except MedtwinError as exc:
        raise _fail(exc) from exc
    # the key file first: a rotation whose new private key was lost would lock the device out
    _write_device_key(out, device_id, private, public, site)
    try:
        with _site(data_dir) as pipeline:
            pipeline.rotate_device_key(device_id, "ed25519", public, f"cli: {reason}")
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    console.print(f"device {device_id} has a new key (logged); key file {out}")


@keys_app.command("list")
def keys_list(data_dir: DataDir = None) -> None:
    """List registered devices (works while the site is serving)."""
    store = Store(_settings(data_dir).resolved_database_url)
    table = Table("device", "patient", "suite", "status", "last seq")
    for d in store.devices():
        table.add_row(d.device_id, d.patient_id, d.suite, d.status.value, str(d.last_seq))
    store.close()
    console.print(table)


Reason = Annotated[str, typer.Option(help="Who checked what (logged; no patient data).")]


@keys_app.command("quarantine")
def keys_quarantine(device_id: str, reason: Reason = "", data_dir: DataDir = None) -> None:
    """Quarantine a device: its packets are still stored and logged, but no longer move the
    twin, until it is released. While the site is serving, use
    `POST /v1/devices/{id}/quarantine` instead."""
    with _site(data_dir) as pipeline:
        pipeline.set_device_status(device_id, DeviceStatus.QUARANTINED,
                                   f"quarantine by {getpass.getuser()}: {reason}".rstrip(": "))
    console.print(f"device {device_id} is {DeviceStatus.QUARANTINED.value}")


@keys_app.command("release")
def keys_release(device_id: str, reason: Annotated[str, typer.Option(
        help="Who checked the device and what was found (logged; required).")],
                 data_dir: DataDir = None) -> None:
    """Release a quarantined device: an audited action, logged with the reason."""
    with _site(data_dir) as pipeline:
        pipeline.release_device(device_id, f"by {getpass.getuser()}: {reason}")
    console.print(f"device {device_id} is {DeviceStatus.ACTIVE.value}")


@keys_app.command("erase-patient")
def keys_erase_patient(patient_id: str, reason: Annotated[str, typer.Option(
        help="Who asked for the erasure and on what grounds (logged; required).")],
                       data_dir: DataDir = None) -> None:
    """Erase a patient (crypto-shredding): destroy their data key, so their stored records
    can never be read again while the log still verifies. While the site is serving, use
    `POST /v1/patients/{id}/erase` instead."""
    with _site(data_dir) as pipeline:
        scrubbed = pipeline.erase_patient(patient_id, reason, getpass.getuser())
    console.print(f"patient {patient_id} erased: their data key is destroyed"
                  + ("" if scrubbed else " (the database's write-ahead log still holds the "
                     "old page until its next checkpoint)"))


Batch = Annotated[int, typer.Option(
    min=1, help="Patients re-wrapped per transaction (ingestion waits at most one batch).")]


def _rewrap_with_progress(pipeline: Pipeline, batch: int) -> int:
    """Re-wrap pending data keys under the current KEK, drawing a progress bar over patients."""
    with Progress(console=console) as bar:
        task = bar.add_task("re-wrapping data keys", total=len(pipeline.pending_rewrap()))

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return pipeline.rewrap_patients(batch, advance)


@keys_app.command("rotate")
def keys_rotate(reason: Annotated[str, typer.Option(
        help="Who asked for the rotation and why (logged; required).")],
                batch: Batch = DEFAULT_REWRAP_BATCH, data_dir: DataDir = None) -> None:
    """Rotate the site key-encryption key: new data keys are wrapped by a fresh KEK, and
    every patient's data key is re-wrapped under it in batches (erased patients skipped)."""
    with _site(data_dir) as pipeline:
        record = pipeline.start_rotation(getpass.getuser(), reason)
        console.print(f"KEK rotated: {record.old_kek_id} -> {record.new_kek_id} (logged as "
                      f"record #{record.leaf_index})")
        done = _rewrap_with_progress(pipeline, batch)
    console.print(f"{done} data keys re-wrapped under {record.new_kek_id}; once backups no "
                  f"longer need it, `medtwin keys retire-kek {record.old_kek_id}`")


@keys_app.command("rotate-log")
def keys_rotate_log(reason: Annotated[str, typer.Option(
        help="Who asked for the rotation and why (logged; required).")],
                    suite: Annotated[str | None, typer.Option(
        help="Signature suite of the new key: ed25519, ecdsa-p256 or ml-dsa-65 (default: "
             "the current key's).")] = None,
                    data_dir: DataDir = None) -> None:
    """Give the log a new signing key: the old key endorses it in a logged record, so
    witnesses and verifiers that trust the old key follow it (on a serving site use
    `POST /v1/keys/log`)."""
    with _site(data_dir) as pipeline:
        record = pipeline.rotate_log_key(getpass.getuser(), reason, suite)
    console.print(f"log key rotated: {record.previous_key_id} -> {record.key_id} "
                  f"({record.suite}, logged as record #{record.leaf_index}); public key "
                  f"{base64.b64encode(record.public_key).decode()}", soft_wrap=True)


@keys_app.command("rewrap")
def keys_rewrap(batch: Batch = DEFAULT_REWRAP_BATCH, data_dir: DataDir = None) -> None:
    """Finish an interrupted rotation: re-wrap the data keys still under an older KEK."""
    with _site(data_dir) as pipeline:
        done = _rewrap_with_progress(pipeline, batch)
        current = pipeline.keys.kek_id
    console.print(f"{done} data keys re-wrapped under {current}")


@keys_app.command("retire-kek")
def keys_retire_kek(kek_id: str, data_dir: DataDir = None) -> None:
    """Remove a previous KEK from the key file; refused while any patient's data key still
    needs it. Backups taken before the rotation need it: keep a copy with them."""
    with _site(data_dir) as pipeline:
        record = pipeline.retire_kek(kek_id, getpass.getuser())
    console.print(f"KEK {kek_id} retired from the site key file (logged as record "
                  f"#{record.leaf_index})")


@token_app.command("create")
def token_create(
    role: Annotated[Role, typer.Option(help="clinician, auditor or admin.")],
    name: Annotated[str, typer.Option(help="Who holds the token.")],
    data_dir: DataDir = None,
) -> None:
    """Create an API token; it is printed once and stored only as its hash (works while the
    site is serving)."""
    token, token_hash = new_token()
    store = Store(_settings(data_dir).resolved_database_url)
    try:
        store.add_token(token_hash, name, role.value, int(time.time() * 1000))
    finally:
        store.close()
    console.print(token, soft_wrap=True)


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Option(help="Whose tokens to revoke.")],
    data_dir: DataDir = None,
) -> None:
    """Revoke every token held by `name`; effective on its next request."""
    store = Store(_settings(data_dir).resolved_database_url)
    try:
        n = store.revoke_tokens(name)
    finally:
        store.close()
    console.print(f"revoked {n} token(s) of {name}")


@app.command()
def bench(quick: Annotated[bool, typer.Option(help="A small, fast run (CI).")] = False) -> None:
    """Ingest packets/s by batch size, UKF filter steps/s (NumPy, torch, filterpy), the
    time to personalize a patient-day and every crypto suite's operations per second."""
    from medtwin.cli._bench import (
        READINGS_PER_PACKET,
        bench_buffered_upload,
        bench_filterpy,
        bench_ingest,
        bench_personalize,
        bench_ukf,
        crypto_suite_tables,
        packet_cpu_table,
        torch_device,
    )

    n_packets = 400 if quick else 4000
    rows = bench_ingest((1, 16, 256), n_packets, n_patients=50)
    base = rows[0].packets_per_s
    table = Table(title=f"ingest: {n_packets} signed packets × {READINGS_PER_PACKET} readings, "
                        "50 patients, SQLite (synchronous=FULL)")
    for col in ("batch (packets per transaction)", "packets/s", "readings/s", "µs/packet",
                "vs batch 1"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r.batch), f"{r.packets_per_s:,.0f}", f"{r.readings_per_s:,.0f}",
                      f"{1e6 / r.packets_per_s:,.0f}", f"{r.packets_per_s / base:.1f}×")
    console.print(table)
    upload = Table(title="buffered upload: one signed packet of one patient's CGM readings")
    for col in ("readings in the packet", "ms", "readings/s"):
        upload.add_column(col, justify="right")
    for n in (256, 4096) if quick else (256, 1024, 4096):
        seconds = bench_buffered_upload(n)
        upload.add_row(f"{n:,}", f"{seconds * 1000:,.0f}", f"{n / seconds:,.0f}")
    console.print(upload)

    # UKF: NumPy up to 100k patients (1M in a full run); the same code on torch (CUDA where
    # there is one) up to 1M on a CPU, 10M on a GPU; filterpy's one patient as the baseline.
    baseline = bench_filterpy(200 if quick else 2000)
    device = torch_device()
    sizes = [1, 1_000, 10_000] if quick else [1, 1_000, 10_000, 100_000, 1_000_000]
    torch_sizes = list(sizes)
    if device is not None and device.type == "cuda" and not quick:
        torch_sizes.append(10_000_000)
    ukf = Table(title="UKF filter steps (predict + update), 3 states, batched over patients; "
                      "patient-steps/s and speed-up over filterpy's UnscentedKalmanFilter "
                      "(one patient)")
    torch_name = ("torch (not installed)" if device is None
                  else "torch cpu, 1 thread" if device.type == "cpu" else f"torch {device.type}")
    for col in ("patients", "NumPy ms/step", "NumPy patient-steps/s", "NumPy vs filterpy",
                f"{torch_name} ms/step", f"{torch_name} patient-steps/s",
                f"{torch_name} vs filterpy"):
        ukf.add_column(col, justify="right")
    if baseline is not None:
        ukf.add_row("filterpy (1)", f"{baseline * 1000:.3f}", f"{1 / baseline:,.0f}", "1×",
                    "", "", "")

    def cells(n: int, device: object | None) -> list[str]:
        seconds = bench_ukf(n, max(3, min(500, 2_000_000 // (n * 50))), device)
        per = seconds / n
        ratio = baseline / per if baseline is not None else 0.0
        return [f"{seconds * 1000:,.3f}", f"{1 / per:,.0f}",
                "n/a" if baseline is None else f"{ratio:,.{0 if ratio >= 10 else 1}f}×"]

    for n in torch_sizes:
        numpy_cells = cells(n, None) if n in sizes else ["—"] * 3
        torch_cells = cells(n, device) if device is not None else ["n/a"] * 3
        ukf.add_row(f"{n:,}", *numpy_cells, *torch_cells)
    console.print(ukf)

    personalize = Table(title="personalization: identify_glucose_params on one synthetic day "
                              "(5-min CGM, 3 meals with boluses) per patient, one batch")
    for col in ("patients in the batch", "seconds", "seconds per patient-day"):
        personalize.add_column(col, justify="right")
    for n in (1, 10) if quick else (1, 100):
        seconds = bench_personalize(n)
        personalize.add_row(f"{n:,}", f"{seconds:,.2f}", f"{seconds / n:,.3f}")
    console.print(personalize)
    for crypto_table in crypto_suite_tables(quick):
        console.print(crypto_table)
    console.print(packet_cpu_table(quick))
    from medtwin.cli._bench_log import log_table
    console.print(log_table(quick))
    try:
        from medtwin.cli._bench_anchoring import anchoring_table
        console.print(anchoring_table(quick))
    except ChainError as exc:
        console.print(f"ingest with anchoring: not measured ({exc})")


@app.command()
def witness(
    log_url: Annotated[str | None, typer.Option(help="Base URL of the site's API, e.g. "
                                                "https://site.example:8000.")] = None,
    origin: Annotated[str | None, typer.Option(help="The log's origin line (its name).")] = None,
    log_key: Annotated[str | None, typer.Option(help="The log's public key, base64, as "
                                                "`medtwin keys init` prints it.")] = None,
    log_suite: Annotated[str | None, typer.Option(help="Suite of the log key "
                                                  "(default ed25519).")] = None,
    name: Annotated[str | None, typer.Option(help="This witness's key name, e.g. "
                                             "witness.example/w1.")] = None,
    suite: Annotated[str | None, typer.Option(help="Suite of this witness's own key: ed25519 "
                                              "(cosignature/v1, the default) or ml-dsa-65 "
                                              "(post-quantum, medtwin-private type); chosen "
                                              "when its key is made.")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="Where the witness keeps its key "
                                                   "(0600) and the last checkpoint it "
                                                   "cosigned (default ./medtwin-witness).")]
    = None,
    config: Annotated[Path | None, typer.Option(exists=True, dir_okay=False,
                                                help="JSON file with any of the options "
                                                     "above (log_url, origin, log_key, ...); "
                                                     "options override it.")] = None,
    token: Annotated[str | None, typer.Option(envvar="MEDTWIN_TOKEN",
                                              help="API token (role auditor).")] = None,
    once: Annotated[bool, typer.Option(help="One round, then exit.")] = False,
    interval: Annotated[float, typer.Option(min=1, help="Seconds between rounds.")] = 60.0,
) -> None:
    """Witness a site's log: verify each checkpoint and its consistency with the last one
    cosigned, then cosign it. A split view (two histories) exits with code 3."""
    from medtwin.cli._witness import load_config, run_witness
    from medtwin.errors import SplitViewError

    try:
        settings = load_config(config, log_url=log_url, origin=origin, log_key=log_key,
                               log_suite=log_suite, name=name, state_dir=state_dir,
                               token=token, suite=suite)
        trusted = settings.trusted()
        public = base64.b64encode(trusted.public_key).decode()
        console.print(f"witness {settings.name} {trusted.suite} key {public} (register it on "
                      f"the site: MEDTWIN_WITNESSES={trusted.spec()})", soft_wrap=True)
        run_witness(settings, once=once, interval_s=interval,
                    report=lambda line: console.print(line, soft_wrap=True))
    except SplitViewError as exc:
        console.print(f"[bold red]SPLIT VIEW — refusing to cosign:[/] {exc}", soft_wrap=True)
        raise typer.Exit(3) from exc
    except MedtwinError as exc:
        raise _fail(exc) from exc


def main() -> None:
    """Entry point of the `medtwin` command."""
    app()
