"""`callbot user create | list | password | disable | enable | token`: staff accounts from the command line.

The first admin is created here (there is no default password). Passwords are asked twice on a terminal,
or read from one line of standard input with --password-stdin (scripts, CI).
"""

from __future__ import annotations

import getpass
import json
import sys
from typing import Annotated

import typer

from callbot.cli import app, out
from knowledge_base.errors import CallbotError
from knowledge_base.models import Role

user_app = typer.Typer(help="Staff accounts of the console (roles: admin, editor, reviewer, agent, viewer).", no_args_is_help=True)
app.add_typer(user_app, name="user")
PasswordStdin = Annotated[bool, typer.Option("--password-stdin", help="Read the password from one line of standard input.")]


def _accounts():  # type: ignore[no-untyped-def]
    from callbot.auth.accounts import StaffAccounts
    from callbot.context import get_store
    from callbot.settings import get_settings

    store = get_store()
    store.migrate()
    return StaffAccounts(store, get_settings().auth)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line.strip():
            raise CallbotError("--password-stdin: standard input held no password line.")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise CallbotError("No terminal to ask for the password: pass it on standard input with --password-stdin.")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat: "):
        raise CallbotError("The two passwords differ; nothing was changed.")
    return first


def _role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise CallbotError(f"Unknown role {value!r}: one of {', '.join(r.value for r in Role)}.") from None


@user_app.command("create")
def user_create(
    username: Annotated[str, typer.Option("--username", "-u", help="Sign-in name (a-z, 0-9, . _ - @).")],
    role: Annotated[str, typer.Option("--role", help="admin | editor | reviewer | agent | viewer")] = "viewer",
    display_name: Annotated[str, typer.Option("--name", help="Shown in the console and to customers (agents).")] = "",
    password_stdin: PasswordStdin = False,
) -> None:
    """Create a staff account (the first one: --role admin)."""
    user = _accounts().create_user(username, _read_password(password_stdin), _role(role), "cli", display_name)
    out.print(f"created {user['username']} ({user['role']})")


@user_app.command("list")
def user_list() -> None:
    """Every account with its role and whether it is active."""
    for u in _accounts().users():
        out.print(f"{u['username']:<24} {u['role']:<9} {'active' if u['active'] else 'disabled':<9} {u['display_name']}",
                  markup=False, highlight=False)


@user_app.command("password")
def user_password(username: Annotated[str, typer.Argument()], password_stdin: PasswordStdin = False) -> None:
    """Set a new password; the user's sessions end."""
    _accounts().update_user(username, "cli", password=_read_password(password_stdin))
    out.print(f"password of {username} changed; their sessions ended")


@user_app.command("disable")
def user_disable(username: Annotated[str, typer.Argument()]) -> None:
    """Disable an account (kept for the audit log); its sessions and tokens end."""
    _accounts().update_user(username, "cli", active=False)
    out.print(f"{username} disabled")


@user_app.command("enable")
def user_enable(username: Annotated[str, typer.Argument()]) -> None:
    _accounts().update_user(username, "cli", active=True)
    out.print(f"{username} enabled")


@user_app.command("token")
def user_token(username: Annotated[str, typer.Argument()],
               label: Annotated[str, typer.Option(help="What the token is for (shown in the audit).")] = "cli") -> None:
    """Issue an API token for scripts: send it as 'Authorization: Bearer TOKEN'. Printed once, stored hashed."""
    issued = _accounts().issue_api_token(username, label, "cli")
    out.print(json.dumps({"username": issued.principal.username, "role": str(issued.principal.role), "token": issued.token}),
              markup=False, highlight=False, soft_wrap=True)
