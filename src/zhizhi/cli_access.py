"""Commands for accounts, API keys, the personal-data key and the audit log.

Passwords are never taken from the command line's arguments (they would sit in
the shell history and the process list): they are prompted for, or read from
the environment variable named in the help.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

users_app = typer.Typer(help="Accounts and roles.", no_args_is_help=True)
keys_app = typer.Typer(help="The personal-data encryption key: generate, rotate.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail (数据铁笼): verify, show.", no_args_is_help=True)
records_app = typer.Typer(help="Person and enterprise records (一人一档/一企一档).", no_args_is_help=True)

# Sub-command groups this module adds to `zhizhi`, by name.
COMMANDS: dict[str, typer.Typer] = {"users": users_app, "keys": keys_app, "audit": audit_app,
                                    "records": records_app}
console = Console()
err = Console(stderr=True)

PasswordOpt = Annotated[str, typer.Option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
                                          envvar="ZHIZHI_NEW_PASSWORD",
                                          help="prompted for; or set ZHIZHI_NEW_PASSWORD")]


def _boot() -> Any:
    from zhizhi.config import Settings
    from zhizhi.service.bootstrap import bootstrap

    return bootstrap(Settings())


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _domain(fn: Any) -> Any:
    from zhizhi.domain.errors import DomainError

    try:
        return fn()
    except DomainError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None


@users_app.command("create-admin")
def create_admin(
    username: Annotated[str, typer.Option(help="login name")] = "admin",
    password: PasswordOpt = "",
    display_name: Annotated[str, typer.Option(help="name shown in timelines")] = "系统管理员",
) -> None:
    """Create the first administrator (whole city). Weak or default passwords are refused."""
    from zhizhi.service import accounts

    zz = _boot()
    uid = _domain(lambda: accounts.create_user(zz, username, password, ("admin",), display_name=display_name))
    console.print(f"created administrator {username} (id {uid})")


@users_app.command("create")
def create_user(
    username: str,
    roles: Annotated[str, typer.Option(help="comma-separated: " + ", ".join(
        ["citizen", "grid_worker", "dispatcher", "handler", "leader", "auditor", "admin"]))],
    places: Annotated[str, typer.Option(help="comma-separated place codes (subtrees in scope)")] = "",
    departments: Annotated[str, typer.Option(help="comma-separated department codes")] = "",
    display_name: str = "",
    password: PasswordOpt = "",
) -> None:
    """Create an account with roles and a scope (places and/or departments)."""
    from zhizhi.service import accounts

    zz = _boot()
    uid = _domain(lambda: accounts.create_user(zz, username, password, _csv(roles), _csv(places),
                                               _csv(departments), display_name))
    console.print(f"created {username} (id {uid})")


@users_app.command("list")
def list_users() -> None:
    """Every account with its roles and scope."""
    from zhizhi.service import accounts

    for u in accounts.list_users(_boot()):
        state = " (disabled)" if u.disabled else ""
        console.print(f"{u.id:>4}  {u.username:<20} {','.join(u.roles):<22} places={','.join(u.places) or '-'} "
                      f"departments={','.join(u.departments) or '-'}{state}", markup=False)


@users_app.command("disable")
def disable_user(username: str) -> None:
    """Disable an account; its sessions and API keys stop working at once."""
    from zhizhi.service import accounts

    _domain(lambda: accounts.set_disabled(_boot(), username, True))
    console.print(f"disabled {username}")


@users_app.command("set-password")
def set_password(username: str, password: PasswordOpt = "") -> None:
    """Set a new password (strength checked)."""
    from zhizhi.service import accounts

    _domain(lambda: accounts.set_password(_boot(), username, password))
    console.print(f"password of {username} changed")


@users_app.command("api-key")
def api_key(username: str, name: Annotated[str, typer.Option(help="what the key is for")] = "integration") -> None:
    """Issue an API key for an account (printed once; only its digest is stored)."""
    from zhizhi.service import accounts

    key = _domain(lambda: accounts.create_api_key(_boot(), username, name))
    console.print(key, soft_wrap=True)


@keys_app.command("generate")
def keys_generate() -> None:
    """Print a fresh key (for ZHIZHI_DATA_KEYS)."""
    from zhizhi.adapters.crypto import generate_key

    console.print(generate_key())


@keys_app.command("rotate")
def keys_rotate(keep_old: Annotated[bool, typer.Option(help="keep the old keys in the ring")] = False,
                reencrypt_only: Annotated[bool, typer.Option(help="only re-encrypt under the first key "
                                                                   "(keys from ZHIZHI_DATA_KEYS)")] = False) -> None:
    """New key in front, every personal value re-encrypted under it, old keys retired."""
    from zhizhi.service import data_keys

    zz = _boot()
    if reencrypt_only:
        from zhizhi.service.bootstrap import load_data_cipher

        n_cases, n_records = data_keys.reencrypt(zz.engine, load_data_cipher(zz.settings))
        console.print(f"re-encrypted {n_cases} cases and {n_records} records")
        return
    try:
        result = data_keys.rotate(zz.settings, zz.engine, retire_old=not keep_old)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"rotated: re-encrypted {result.cases} cases and {result.records} records; "
                  f"{result.keys} key(s) in the ring")


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the whole hash chain; exit 1 and name the first bad row if anything was altered."""
    from zhizhi.adapters import audit_log

    zz = _boot()
    with zz.uow() as uow:
        v = audit_log.verify(uow.session)
    if v.ok:
        console.print(f"audit log intact: {v.rows} rows, head {v.head}")
        return
    err.print(f"[red]audit log TAMPERED[/red] at row {v.first_bad_id}: {v.reason} ({v.rows} rows verified before)")
    raise typer.Exit(1)


@audit_app.command("show")
def audit_show(limit: int = 20, username: str | None = None, action: str | None = None) -> None:
    """The newest audit rows."""
    from zhizhi.adapters import audit_log

    zz = _boot()
    with zz.uow() as uow:
        for r in audit_log.query(uow.session, username=username, action=action, limit=limit):
            console.print(f"{r.id:>6} {r.at:%Y-%m-%d %H:%M:%S} {r.username:<16} {r.role:<11} {r.action:<20} "
                          f"{r.target} {r.origin}", markup=False)


@records_app.command("import")
def records_import(
    file: Path,
    kind: Annotated[str, typer.Option(help="person | enterprise")] = "person",
    source: Annotated[str, typer.Option(help="provenance: where the file comes from")] = "",
) -> None:
    """Import person or enterprise records from CSV (UTF-8 or GB18030); idempotent by external id."""
    from zhizhi.service import records

    zz = _boot()
    result = _domain(lambda: records.import_csv(zz, file, kind, source or file.name))
    console.print(f"created {result['created']}, updated {result['updated']}, rejected {result['rejected']}")
    for line in result["errors"][:20]:
        err.print(line, markup=False)
