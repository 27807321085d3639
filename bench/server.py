"""`bench server`: the cluster's MLflow tracking server, in the foreground.

A database backend (SQLite by default, any SQLAlchemy URI such as postgresql://... for many concurrent writers)
and proxied artifact serving: clients upload and download artifacts over HTTP through the server
(`mlflow-artifacts:/`), so a trial on any node can log a checkpoint that a trial on another node reads.

`--auth` runs MLflow's basic-auth app. Its admin account is made on the first start (a random password) and kept in
`credentials` (mode 0600) in the state directory: the store directory, or for a database URI the directory the
artifacts live in (the working directory). Later starts reuse it; the password is never printed.
"""

from __future__ import annotations

import os
import secrets
import signal
import stat
import subprocess
import sys
from pathlib import Path

from bench import BenchError


class ServerError(BenchError):
    exit_code = 2


# MLflow's SQL stores; anything else is refused before a file or database is touched.
_DATABASES = ("sqlite", "postgresql", "mysql", "mssql")
CREDENTIALS = "credentials"        # MLFLOW_TRACKING_USERNAME=... / MLFLOW_TRACKING_PASSWORD=..., 0600
AUTH_CONFIG = "basic_auth.ini"     # MLFLOW_AUTH_CONFIG_PATH: where the users live, no secret in it
AUTH_DB = "basic_auth.db"
ADMIN = "admin"


def store_uris(store: str | None) -> tuple[str, str]:
    """(backend store URI, artifacts destination) for a directory or a SQLAlchemy URI."""
    if store and "://" in store:
        if store.startswith("sqlite:///"):
            db = Path(store.removeprefix("sqlite:///")).resolve()
            return f"sqlite:///{db}", str(db.parent / "mlartifacts")
        return store, str(Path("mlartifacts").resolve())     # a remote database: artifacts beside the server
    d = Path(store or ".").resolve()
    d.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{d / 'mlflow.db'}", str(d / "mlartifacts")


def database_uri(uri: str) -> str:
    """Validate a database URI and name its driver. A plain postgresql:// means psycopg2 in SQLAlchemy < 2.1 and
    psycopg 3 from 2.1 on; whichever one is installed is the one used, so the README's form works as written."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(uri)
    except (ArgumentError, ValueError):   # ValueError: a port that is not a number
        raise ServerError(f"malformed --store URI {_masked(uri)!r}: expected a directory or "
                          "DIALECT://USER@HOST[:PORT]/DB (e.g. postgresql://bench@db/mlflow)") from None
    if url.get_backend_name() not in _DATABASES:
        raise ServerError(f"--store {url.render_as_string(hide_password=True)}: MLflow stores runs in "
                          f"{', '.join(_DATABASES)} databases only")
    if url.get_backend_name() == "postgresql":
        url = _postgres_driver(url)
    try:
        url.get_dialect().import_dbapi()
    except Exception as e:  # noqa: BLE001 - NoSuchModuleError, ImportError of a driver
        raise ServerError(f"--store {url.render_as_string(hide_password=True)}: {_one_line(e)}") from None
    return url.render_as_string(hide_password=False)


def _postgres_driver(url):
    """postgresql:// unchanged where SQLAlchemy's default driver for it is installed; else the one that is."""
    try:
        dialect = url.get_dialect()
    except Exception as e:  # noqa: BLE001 - NoSuchModuleError: an unknown +driver
        raise ServerError(f"--store {url.drivername}://...: {_one_line(e)}") from None
    try:
        dialect.import_dbapi()
        return url
    except ImportError:
        pass
    have = [d for d in ("psycopg", "psycopg2") if _importable(d)]
    if "+" in url.drivername or not have:
        need = url.get_driver_name() or "a PostgreSQL driver"
        raise ServerError(f"--store {url.drivername}://...: {need} is not installed here; pip install "
                          "'bench[postgres]' (psycopg 3)")
    return url.set(drivername=f"postgresql+{have[0]}")


def _masked(uri: str) -> str:
    """A URI that failed to parse, with whatever stands between user: and @ hidden."""
    import re

    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", uri)


def _importable(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def check_database(uri: str, timeout: float = 5.0) -> None:
    """One connection, in seconds: MLflow would otherwise retry an unreachable database for minutes, then print a
    traceback per worker. A missing database is named (MLflow creates tables, not the database)."""
    if uri.startswith("sqlite:"):
        return
    import sqlalchemy
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    args = {"connect_timeout": int(timeout)} if url.get_backend_name() in ("postgresql", "mysql") else {}
    engine = sqlalchemy.create_engine(url, connect_args=args, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect():
            pass
    except Exception as e:  # noqa: BLE001 - OperationalError and friends, one line
        msg = _one_line(getattr(e, "orig", None) or e)
        hint = (f" (create it first: createdb -h {url.host} {url.database})"
                if "does not exist" in msg and url.database and f'"{url.database}"' in msg else "")
        raise ServerError(f"cannot connect to database {url.render_as_string(hide_password=True)}: {msg}{hint}") \
            from None
    finally:
        engine.dispose()


def _one_line(e: object) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:300] if s else type(e).__name__


def state_dir(store: str | None) -> Path:
    """Where the server's own files live (artifacts, and with --auth the users and the credentials)."""
    return Path(store_uris(store)[1]).parent


def command(host: str, port: int, store: str | None, workers: int | None = None, auth: bool = False) -> list[str]:
    backend, artifacts = store_uris(store)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
           "--artifacts-destination", artifacts, "--serve-artifacts", "--host", host, "--port", str(port)]
    if workers:
        cmd += ["--workers", str(workers)]
    if auth:
        cmd += ["--app-name", "basic-auth"]
    return cmd


def read_credentials(path: Path) -> dict[str, str]:
    """The KEY=VALUE lines of a credentials file (comments and blank lines skipped)."""
    out = {}
    for line in path.read_text().splitlines():
        k, sep, v = line.strip().partition("=")
        if sep and not k.startswith("#"):
            out[k.strip()] = v.strip()
    return out


def ensure_auth(d: Path) -> tuple[dict[str, str], Path]:
    """The environment mlflow's basic-auth app needs, and the credentials file; creates both on first use.
    The admin password reaches MLflow through its environment (MLFLOW_AUTH_ADMIN_PASSWORD), not argv, where every
    local user could read it; MLflow uses it only to create the admin user when the user store has none."""
    creds, ini, db = d / CREDENTIALS, d / AUTH_CONFIG, d / AUTH_DB
    if creds.exists():
        mode = stat.S_IMODE(creds.stat().st_mode)
        if mode & 0o077:
            raise ServerError(f"{creds} is readable by others (mode {mode:o}); chmod 600 it")
        c = read_credentials(creds)
        if not c.get("MLFLOW_TRACKING_USERNAME") or not c.get("MLFLOW_TRACKING_PASSWORD"):
            raise ServerError(f"{creds} lacks MLFLOW_TRACKING_USERNAME or MLFLOW_TRACKING_PASSWORD")
        user, password = c["MLFLOW_TRACKING_USERNAME"], c["MLFLOW_TRACKING_PASSWORD"]
    elif db.exists():
        raise ServerError(f"{db} holds users but {creds} is gone: restore it, or delete {db} to make a new admin")
    else:
        user, password = ADMIN, secrets.token_urlsafe(24)
        _write_private(creds, "# bench server --auth: this server's admin account. Clients: set -a; . THIS_FILE; "
                              f"set +a\nMLFLOW_TRACKING_USERNAME={user}\nMLFLOW_TRACKING_PASSWORD={password}\n")
    # The users' password hashes: as private as the password (SQLite takes an empty file as a new database).
    os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(db, 0o600)
    # Rewritten each start (no secret in it): the users' database sits beside the credentials.
    # auth_cache_ttl_seconds: without it every request pays a PBKDF2 hash of the password.
    ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{db}\nadmin_username = {user}\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                   "auth_cache_ttl_seconds = 60\n")
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_USERNAME": user,
           "MLFLOW_AUTH_ADMIN_PASSWORD": password,
           # Flask's CSRF key for the sign-up form; one per start is enough (all workers share it).
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32)}
    return env, creds


def _write_private(path: Path, text: str) -> None:
    """Created 0600 from the first byte (never world-readable, whatever the umask), then renamed into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def prepare(host: str, port: int, store: str | None, workers: int | None = None,
            auth: bool = False) -> tuple[list[str], dict[str, str], Path | None]:
    """Check everything that can be wrong with the input, then create the state directory: (argv, env, the
    credentials file or None). Nothing is written when a check fails."""
    if auth and not _importable("flask_wtf"):
        raise ServerError("--auth needs Flask-WTF (MLflow's basic-auth app): pip install 'mlflow[auth]'")
    cmd = command(host, port, store, workers, auth)
    i = cmd.index("--backend-store-uri") + 1
    if not cmd[i].startswith("sqlite:"):
        cmd[i] = database_uri(cmd[i])
    check_database(cmd[i])
    d = state_dir(store)
    d.mkdir(parents=True, exist_ok=True)
    # MLflow 3's server also starts a job runner (four huey consumers) for its GenAI jobs; bench logs runs only,
    # and those processes took CPU from the trials on every node. MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true in
    # the environment brings them back.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    from sqlalchemy.engine import make_url

    if make_url(cmd[i]).password:
        # A database password on argv is readable by every local user (ps); the environment only by us.
        env["MLFLOW_BACKEND_STORE_URI"] = cmd[i]
        del cmd[i - 1:i + 1]
    creds = None
    if auth:
        extra, creds = ensure_auth(d)
        env.update(extra)
    return cmd, env, creds


def serve(host: str = "127.0.0.1", port: int = 5000, store: str | None = None, workers: int | None = None,
          auth: bool = False) -> int:
    cmd, env, creds = prepare(host, port, store, workers, auth)
    backend = cmd[cmd.index("--backend-store-uri") + 1] if "--backend-store-uri" in cmd \
        else env["MLFLOW_BACKEND_STORE_URI"]
    from sqlalchemy.engine import make_url

    print(f"tracking server on http://{host}:{port} (store {make_url(backend).render_as_string(hide_password=True)}"
          f", artifacts {cmd[cmd.index('--artifacts-destination') + 1]})", file=sys.stderr, flush=True)
    if creds:
        print(f"basic auth: clients need MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD from {creds} "
              f"(set -a; . {creds}; set +a)", file=sys.stderr, flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        if auth:
            print(f"warning: {host} exposes the tracking server to every host that reaches this port, and basic "
                  "auth sends the password unencrypted over HTTP; keep it inside the cluster's private network",
                  file=sys.stderr, flush=True)
        else:
            print(f"warning: {host} exposes the tracking server, unauthenticated, to every host that reaches this "
                  "port; keep it inside the cluster's private network, or start it with --auth",
                  file=sys.stderr, flush=True)
    try:
        proc = subprocess.Popen(cmd, start_new_session=True, env=env)
    except OSError as e:
        raise ServerError(f"cannot start mlflow server: {e}") from None

    def forward(sig, _frame):
        _signal_group(proc, sig)

    signal.signal(signal.SIGTERM, forward)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        _signal_group(proc, signal.SIGTERM)
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            return proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """mlflow server runs uvicorn/gunicorn workers in its own session: signal that session, which we own."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
