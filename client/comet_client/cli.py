"""
The C{comet} command: its root, the shared plumbing of every command, and
C{login}, C{logout} and C{completion}.  The command groups live in
L{comet_client.compute}, L{comet_client.storage} and L{comet_client.activity}.

Exit codes (the README lists them): 0 done; 1 the API refused or failed
(its C{reason} is printed) or a waited-for task failed; 2 bad usage
(click's own, and no login); 3 the daemon could not be reached; 130 the
user stopped waiting (Ctrl-C) for a task, which goes on.
"""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console

from comet_client import follow, output, settings
from comet_client.api import ApiError, Client, Unreachable

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class App:
    """What every command uses: the login, the API client (made when first needed), the consoles."""

    def __init__(self, url: str | None = None, token: str | None = None):
        self.url = url
        self.token = token
        # No emoji codes: the API's text (a MAC's ":ab:") is printed as it is.
        self.out = Console(soft_wrap=False, highlight=False, emoji=False)
        self.err = Console(stderr=True, highlight=False, emoji=False)
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = make_client(self.url, self.token)
        return self._client

    # --- printing ---------------------------------------------------------

    def show(self, data, as_json: bool, columns: tuple[str, ...] | None = None):
        if as_json:
            output.print_json(self.out, data)
        elif isinstance(data, list):
            output.listing(self.out, data, columns)
        elif isinstance(data, dict):
            output.resource(self.out, data)

    def watch(self, uri: str, columns: tuple[str, ...], types=(), resources=(),
              as_json: bool = False):
        """
        Show the listing at C{uri}, and again whenever an event of
        C{types} under C{resources} comes (C{GET /events}), until Ctrl-C.
        """
        from rich.live import Live

        try:
            with Live(console=self.out, auto_refresh=False, transient=False) as live:
                # The first item (the stream has opened) draws the listing.
                for _ in self.client.events(types, resources, announce=True):
                    items = self.client.get(uri)
                    if as_json:
                        live.console.out(json.dumps(items, ensure_ascii=False), highlight=False)
                    else:
                        live.update(output.table(items, columns), refresh=True)
        except KeyboardInterrupt:
            sys.exit(EXIT_INTERRUPTED)
        raise Unreachable("the daemon ended the event stream")

    def call(self, method: str, uri: str, body=None, as_json=False, no_wait=False,
             done: str | None = None, params=None):
        """
        Send a request and print its outcome: the resource, or (202) follow
        the task it started, or (204) C{done}.
        """
        answer = self.client.call(method, uri, body, params)
        if answer.code == 202:
            return self.task(answer.body, as_json, no_wait)
        if answer.body is None:
            if done and not as_json:
                self.err.print(done)
            return None
        self.show(answer.body, as_json)
        return answer.body

    def task(self, task: dict, as_json: bool, no_wait: bool) -> dict:
        """Follow C{task} to its outcome (or not, with C{--no-wait}); exit 1 when it failed."""
        if no_wait:
            self.show(task, as_json)
            if not as_json:
                self.err.print(f"Follow it with: comet task wait {task['id']}")
            return task
        try:
            task = follow.wait(follow.source_for(self.client), task, self.err)
        except KeyboardInterrupt:
            self.err.print(f"\nStopped waiting; task {task['id']} goes on."
                           f" Follow it with: comet task wait {task['id']}")
            sys.exit(EXIT_INTERRUPTED)
        if as_json:
            output.print_json(self.out, task)
        else:
            self.out.print(f"task {task['id']} {task['status']}: {task.get('message') or ''}")
        if task["status"] != "finished":
            sys.exit(EXIT_REFUSED)
        return task


def make_client(url: str | None = None, token: str | None = None) -> Client:
    try:
        login = settings.load()
    except settings.SettingsError as e:
        raise click.UsageError(str(e)) from None
    if url:
        login = settings.Login(url=url, token=login.token, user=login.user, password=login.password)
    if token:
        login = settings.Login(url=login.url, token=token)
    if not login.url:
        raise click.UsageError("not logged in: run 'comet login URL' (or set COMET_URL and COMET_TOKEN)")
    return Client(login)


class Refused(click.ClickException):
    exit_code = EXIT_REFUSED


class CannotReach(click.ClickException):
    exit_code = EXIT_UNREACHABLE


class CometGroup(click.Group):
    """A group whose commands turn the API's failures into their exit codes."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ApiError as e:
            raise Refused(e.reason) from None
        except Unreachable as e:
            raise CannotReach(str(e)) from None

    def group(self, *args, **kwargs):
        kwargs.setdefault("cls", CometGroup)
        return super().group(*args, **kwargs)


pass_app = click.make_pass_decorator(App)


def json_option(f):
    """C{--json}: print the API's representation exactly."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print the API's JSON representation.")(f)


def wait_option(f):
    """C{--no-wait}: print the task a long operation started, and return."""
    return click.option("--no-wait", is_flag=True,
                        help="Print the task and return at once; do not wait for its outcome.")(f)


@click.group(cls=CometGroup, context_settings=CONTEXT)
@click.option("--url", envvar="COMET_URL", help="The daemon's URL (default: the login's).", metavar="URL")
@click.option("--token", envvar="COMET_TOKEN", help="An API token (default: the login's).", metavar="TOKEN")
@click.version_option(package_name="comet-client")
@click.pass_context
def cli(ctx, url, token):
    """Drive a Comet daemon: clusters, VMs, templates, storage and tasks.

    Log in once with 'comet login URL'; COMET_URL and COMET_TOKEN override
    the stored login.  Exit codes: 0 done, 1 the API refused (its reason is
    printed) or a task failed, 2 bad usage or not logged in, 3 the daemon
    cannot be reached, 130 stopped waiting for a task (it goes on).
    """
    ctx.obj = App(url, token)


@cli.command()
@click.argument("url")
@click.option("--token", "token", help="An API token (from comet-admin); without it, asks for a user and password.")
@click.option("--user", help="The user name (asked for when not given).")
def login(url, token, user):
    """Log in to the daemon at URL and keep the login for later commands.

    Without --token, asks for a user name and password and exchanges them
    for a token that expires (the daemon's POST /login); the password is
    not kept.  The URL and token are kept in the user's config directory,
    in a file of mode 0600.
    """
    url = url.rstrip("/")
    if token is None:
        user = user or click.prompt("User")
        password = click.prompt("Password", hide_input=True)
        client = Client(settings.Login(url=url, user=user, password=password))
        try:
            token = client.call("POST", "/login").body["token"]
        except ApiError as e:
            raise Refused(f"login refused: {e.reason}") from None
        except Unreachable as e:
            raise CannotReach(str(e)) from None
    candidate = settings.Login(url=url, token=token)
    client = Client(candidate)
    try:
        client.get("/cluster")
    except ApiError as e:
        raise Refused(f"login refused: {e.reason}") from None
    except Unreachable as e:
        raise CannotReach(str(e)) from None
    path = settings.save(candidate)
    click.echo(f"Logged in to {url} (kept in {path}).")


@cli.command()
def logout():
    """Forget the stored login."""
    click.echo("Logged out." if settings.forget() else "Not logged in.")


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh"]))
def completion(shell):
    """Print the shell completion script: eval "$(comet completion bash)"."""
    from click.shell_completion import get_completion_class

    script = get_completion_class(shell)(cli, {}, "comet", "_COMET_COMPLETE").source()
    click.echo(script)


def main():
    from comet_client import activity, compute, storage  # noqa: F401  (they add their commands)

    cli(prog_name="comet")


def command_group(name: str, help: str):
    """A command group of C{comet} (C{comet cluster}, C{comet vm}, ...)."""
    def group():
        pass

    return cli.group(name=name, help=help, context_settings=CONTEXT)(group)

