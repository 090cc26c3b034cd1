"""The database layer of the reference server: a notes table behind an asyncpg pool.

Built for a server that must survive a database failover without a restart:

- the pool starts empty (min_size=0), so the HTTP server comes up even when no
  database answers; the schema is created on the first connection that
  works, and a background probe keeps trying until one does;
- a multi-host DSN is tried host by host, each with its own connect timeout
  (libpq's semantics; asyncpg alone spends one timeout on the whole host list,
  so a black-holed first host would hide a healthy second one), starting with
  the host that last worked; with `target_session_attrs=read-write` a
  promoted replica is found by the next new connection;
- a connection-level failure terminates that connection and expires every
  other pooled one, so connections to a dead or demoted primary are never
  reused;
- every wait is bounded (connect, pool acquire, command), so a failure
  surfaces as an exception the tool layer turns into an MCP tool error rather
  than a hang;
- an operator can expire every pooled connection at once, optionally with a
  new DSN (`NotesStore.repoint`, reached through the admin endpoint).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import asyncpg
import asyncpg.exceptions
from typing_extensions import (
    TypedDict,
)  # pydantic derives output schemas only from this one on 3.11

from harness.server.faults import (
    COMPACTED_SUFFIX,
    PHANTOM_ID_PREFIX,
    damage_order,
    plan_damage,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

DbState = Literal["ok", "unreachable", "unknown"]

APPLICATION_NAME = "mcp-harness-notes"
"""Shown in pg_stat_activity unless the DSN names one."""

SEARCH_LIMIT_MAX = 100
REPORT_PAUSE_S = 0.05

LIBPQ_ONLY_PARAMS = frozenset(
    {
        "connect_timeout",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "load_balance_hosts",
        "fallback_application_name",
        "channel_binding",
        "gssencmode",
    }
)
"""libpq URL parameters asyncpg does not know: it would send them to the server
as settings and the server would refuse the connection, so they are removed
(`connect_timeout` is honoured as the per-host connect timeout)."""

SCHEMA_LOCK_KEY = 0x6E6F746573
"""Advisory lock serialising schema creation across server instances:
concurrent CREATE TABLE IF NOT EXISTS can fail on a unique violation in pg_type."""

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS notes (
    id text PRIMARY KEY,
    title text NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    checksum text,
    parent_id text
);
CREATE INDEX IF NOT EXISTS notes_created_at_idx ON notes (created_at DESC, id);
CREATE OR REPLACE FUNCTION notes_guard() RETURNS trigger LANGUAGE plpgsql AS $guard$
BEGIN
    IF btrim(NEW.title) = '' THEN
        RAISE EXCEPTION 'note %: the title is blank', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.checksum IS NOT NULL AND NEW.checksum !~ '^[0-9a-f]{64}$' THEN
        RAISE EXCEPTION 'note %: the checksum is not 64 lowercase hex digits (sha256)', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$guard$;
DO $migrate$
BEGIN
    IF (SELECT count(*) FROM pg_attribute
        WHERE attrelid = 'notes'::regclass AND attname IN ('checksum', 'parent_id')
          AND NOT attisdropped) < 2 THEN
        ALTER TABLE notes
            ADD COLUMN IF NOT EXISTS checksum text,
            ADD COLUMN IF NOT EXISTS parent_id text;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_trigger
                   WHERE tgrelid = 'notes'::regclass AND tgname = 'notes_guard') THEN
        CREATE OR REPLACE TRIGGER notes_guard BEFORE INSERT OR UPDATE ON notes
            FOR EACH ROW EXECUTE FUNCTION notes_guard();
    END IF;
END
$migrate$;
"""
"""The index serves search_notes: it walks notes newest first and stops after
`limit` title matches. A substring ILIKE cannot use a btree, and a trigram
index would need CREATE EXTENSION, which the server's role may not be allowed.

`checksum` is the client's sha256 of `title || '\\n' || body`, stored as sent;
`parent_id` names an earlier note, a reference the application keeps (no
foreign key: an integrity check is there to find the rows that break it). The
trigger refuses a blank title and a malformed checksum with SQLSTATE 23514,
a caller error. The ALTER and the trigger run only when missing: ALTER TABLE
takes an ACCESS EXCLUSIVE lock even when IF NOT EXISTS skips it, and every
server start would otherwise queue every read and write of notes behind it
(on the standby too, where the lock is replayed)."""

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)
"""Failures that say the connection or the node is unusable, not the query:
including a read-only error, which means the pooled connection now reaches a
standby (for instance a demoted old primary). asyncpg's client-side errors
that are also ValueErrors (a bad query argument, a bad setting) are
InterfaceErrors too, and is_connection_error excludes them."""


class AllHostsFailed(OSError):
    """No host of a multi-host DSN gave a usable connection; says why for each."""

    def __init__(self, failures: Sequence[tuple[str, Exception]]) -> None:
        super().__init__("; ".join(f"{host}: {_describe(exc)}" for host, exc in failures))
        self.failures = list(failures)


def is_connection_error(exc: BaseException) -> bool:
    """True when the connection or node is unusable (retry elsewhere), not the request."""
    return isinstance(exc, CONNECTION_ERRORS) and not isinstance(exc, ValueError)


class NotesError(Exception):
    """A failure a tool reports to its caller as an MCP tool error."""


class DatabaseUnavailable(NotesError):
    """No usable read-write database within the timeouts."""


class DatabaseError(NotesError):
    """The database answered with an error."""


class NoteNotFound(NotesError):
    """get_note on an id that does not exist, or create_note naming an unknown parent."""


class PermissionMissing(NotesError):
    """The database role lacks a privilege a tool needs; the message says which to grant."""


CALLER_SQLSTATE_CLASSES = frozenset({"22", "23"})
"""SQLSTATE classes that blame the request, not the database: data exceptions
(a value the column refuses) and integrity violations."""


def is_infrastructure_failure(exc: NotesError) -> bool:
    """Whether a tool failure says the database is unwell: what a circuit breaker counts.

    An unknown note, or a value the database refuses, is the caller's problem
    and says the database answered; counting it would let one client's bad
    requests cut every client off.
    """
    if isinstance(exc, DatabaseUnavailable):
        return True
    if not isinstance(exc, DatabaseError):
        return False
    cause = exc.__cause__
    if isinstance(cause, ValueError):
        return False
    sqlstate = getattr(cause, "sqlstate", None)
    return not (isinstance(sqlstate, str) and sqlstate[:2] in CALLER_SQLSTATE_CLASSES)


class Note(TypedDict):
    id: str
    title: str
    body: str
    created_at: str
    checksum: str | None
    parent_id: str | None


class CompactResult(TypedDict):
    """What compact_notes damaged: the ground truth an integrity checker is judged against."""

    updated: list[str]
    deleted: list[str]
    invariant_broken: list[str]
    rows_before: int


class CreateResult(TypedDict):
    id: str
    created: bool


class SearchResult(TypedDict):
    query: str
    limit: int
    notes: list[Note]


class PoolState(TypedDict):
    """The pool as the admin endpoint shows it; the DSN without its password."""

    dsn: str
    hosts: list[str]
    last_connected_host: str | None
    """The host the last new connection went to (None before any): after a
    failover, the node the server found as its primary."""
    size: int
    idle: int
    in_use: int
    max_size: int
    waiting: int
    db: DbState


class Repointed(TypedDict):
    """What a repoint did: every open connection expired, the idle ones closed at once."""

    expired: int
    closed_idle: int
    in_use: int
    """Connections busy at the time: each is closed when its call releases it."""
    dsn_changed: bool


class Report(TypedDict):
    notes: int
    body_bytes: int
    distinct_titles: int
    newest: str | None
    digest: str


@dataclass(frozen=True)
class DbSettings:
    """Connection settings; the timeouts bound every wait a tool call can make."""

    dsn: str
    connect_timeout_s: float = 2.0
    command_timeout_s: float = 5.0
    acquire_timeout_s: float = 5.0
    pool_max_size: int = 10
    statement_cache_size: int = 100
    """asyncpg's cache of named prepared statements; 0 behind a pooler in transaction mode,
    where a statement prepared on one server connection is unknown on the next."""
    max_inactive_connection_lifetime_s: float = 60.0
    probe_interval_s: float = 2.0
    retry_max_s: float = 2.0


@dataclass(frozen=True)
class ParsedDsn:
    """A DSN split into one DSN per host, in the order given, plus removed libpq options."""

    hosts: tuple[str, ...]
    libpq_options: dict[str, str]
    has_application_name: bool = False


def split_dsn(dsn: str) -> ParsedDsn:
    """Split a (possibly multi-host) postgres URL into single-host URLs.

    Each single-host URL keeps the user, password, database and every query
    parameter asyncpg understands (target_session_attrs included). A URL
    naming its hosts in the query string (`?host=...`) is kept whole.
    """
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError("the database URL must start with postgresql:// or postgres://")
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = {k: v for k, v in query if k in LIBPQ_ONLY_PARAMS}
    if "connect_timeout" in options:
        try:
            float(options["connect_timeout"])
        except ValueError:
            raise ValueError("connect_timeout must be a number of seconds") from None
    kept = urlencode([(k, v) for k, v in query if k not in LIBPQ_ONLY_PARAMS])
    named = any(k == "application_name" for k, _ in query)
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    hosts = [h for h in hostlist.split(",") if h] if hostlist else []

    def url(netloc: str) -> str:
        # Built by hand: urlunsplit drops the "//" of an empty netloc ("postgresql:///db").
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{kept}" if kept else "")

    if not hosts:
        return ParsedDsn(
            hosts=(url(parts.netloc),), libpq_options=options, has_application_name=named
        )
    singles = tuple(url(f"{userinfo}{at}{host}") for host in hosts)
    return ParsedDsn(hosts=singles, libpq_options=options, has_application_name=named)


def host_of(dsn: str) -> str:
    """host:port of a single-host URL, as logs and the admin endpoint name it."""
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    if host:
        return host
    named = [v for k, v in parse_qsl(parts.query) if k in ("host", "port")]
    return ":".join(named) or "?"


def redact_dsn(dsn: str) -> str:
    """The URL with its passwords (in the user part or as a query parameter) shown as ***."""
    parts = urlsplit(dsn)
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    query = [
        (k, "***" if "password" in k else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    netloc = f"{user}{':***' if colon else ''}{at}{hostlist}"
    return f"{parts.scheme}://{netloc}{parts.path}" + (
        f"?{urlencode(query, safe='*')}" if query else ""
    )


def terminate_idle(pool: Any) -> int:
    """Close the pool's idle connections now; returns how many.

    asyncpg replaces an expired connection only when it is next acquired, and
    has no public call that closes idle ones; this reads the pool's holders
    (private: without them nothing is closed here, and expiry still replaces
    each connection before its next use). It never awaits, so no acquire can
    take a connection between the check and the close.
    """
    holders = getattr(pool, "_holders", None)
    if not isinstance(holders, list):
        return 0
    closed = 0
    for holder in holders:
        if holder.is_connected() and holder.is_idle():
            holder.terminate()
            closed += 1
    return closed


def connect_order(count: int, preferred: int) -> list[int]:
    """Host indexes to try: the host that last gave a usable connection, then the DSN order.

    After a failover that host is the new primary, so new connections do not
    first wait out a connect timeout on a black-holed old primary.
    """
    first = preferred if 0 <= preferred < count else 0
    return [first, *(i for i in range(count) if i != first)]


CREATE_NOTE_SQL = """
WITH parent AS (
    SELECT $5::text IS NULL OR EXISTS (SELECT 1 FROM notes WHERE id = $5::text) AS found
), inserted AS (
    INSERT INTO notes (id, title, body, checksum, parent_id)
    SELECT $1, $2, $3, $4, $5 FROM parent WHERE parent.found
    ON CONFLICT (id) DO NOTHING
    RETURNING true
)
SELECT (SELECT found FROM parent) AS parent_found, EXISTS (SELECT FROM inserted) AS created
"""
"""create_note in one statement: `created` is false when the id already existed
(ON CONFLICT DO NOTHING), `parent_found` false when a named parent does not exist."""

COMPACT_LOCK_KEY = 0x636F6D70616374
"""Advisory lock serialising compact_notes calls: each reads the rows the previous one left."""

GRANT_HINT = (
    "compact_notes must set session_replication_role to bypass the notes_guard trigger: "
    "as a superuser, run `GRANT SET ON PARAMETER session_replication_role TO {role}`"
)


def like_pattern(query: str) -> str:
    """A `%query%` ILIKE pattern matching the query literally (ESCAPE '\\')."""
    escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def clamp_limit(limit: int) -> int:
    """Cap a search limit to 1..SEARCH_LIMIT_MAX."""
    return max(1, min(limit, SEARCH_LIMIT_MAX))


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _note(row: Any) -> Note:
    return Note(
        id=row["id"],
        title=row["title"],
        body=row["body"],
        created_at=_iso(row["created_at"]) or "",
        checksum=row["checksum"],
        parent_id=row["parent_id"],
    )


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class NotesStore:
    """The notes domain over one process-wide asyncpg pool."""

    def __init__(self, settings: DbSettings) -> None:
        self._settings = settings
        self._use_dsn(settings.dsn)
        self._last_host: str | None = None
        self._pool: Any = None
        self.pool_waiting = 0
        """Calls waiting for a pooled connection right now: a storm's pressure on the database."""
        self.pool_wait_s_total = 0.0
        self._maintainer: asyncio.Task[None] | None = None
        self._schema_ready = False
        self._state: DbState = "unknown"

    def _use_dsn(self, dsn: str) -> None:
        """Connect to `dsn` from now on (ValueError if it is not a usable URL)."""
        parsed = split_dsn(dsn)
        connect_timeout = parsed.libpq_options.get("connect_timeout")
        self._settings = replace(self._settings, dsn=dsn)
        self._hosts = parsed.hosts
        self._connect_timeout_s = (
            float(connect_timeout)
            if connect_timeout and float(connect_timeout) > 0
            else self._settings.connect_timeout_s
        )
        self._preferred = 0
        self._server_settings = (
            None if parsed.has_application_name else {"application_name": APPLICATION_NAME}
        )

    @property
    def state(self) -> DbState:
        """Last known database state, as /healthz reports it."""
        return self._state

    def pool_state(self) -> PoolState:
        """The pool now: its DSN (redacted), hosts, size and use, and the database state."""
        pool = self._pool
        size = 0 if pool is None else int(pool.get_size())
        idle = 0 if pool is None else int(pool.get_idle_size())
        return PoolState(
            dsn=redact_dsn(self._settings.dsn),
            hosts=[host_of(h) for h in self._hosts],
            last_connected_host=self._last_host,
            size=size,
            idle=idle,
            in_use=size - idle,
            max_size=self._settings.pool_max_size,
            waiting=self.pool_waiting,
            db=self._state,
        )

    async def repoint(self, dsn: str | None = None) -> Repointed:
        """Expire every pooled connection, so the next calls connect anew, to `dsn` if given.

        After a promotion the new connections find the new primary; with a new
        DSN (ValueError if unusable, and nothing changes) they go there, and
        the schema is checked again on the first one. Idle connections are
        closed at once, busy ones when their call releases them.
        """
        changed = dsn is not None and dsn != self._settings.dsn
        if dsn is not None and changed:
            self._use_dsn(dsn)
            self._schema_ready = False
            self._last_host = None
        pool = self._pool
        if pool is None:
            return Repointed(expired=0, closed_idle=0, in_use=0, dsn_changed=changed)
        size = int(pool.get_size())
        await pool.expire_connections()
        closed = terminate_idle(pool)
        return Repointed(
            expired=size, closed_idle=closed, in_use=size - closed, dsn_changed=changed
        )

    async def start(self) -> None:
        """Create the (empty) pool and the background schema/probe task; needs no database."""
        self._pool = await asyncpg.create_pool(
            connect=self._connect,
            min_size=0,
            max_size=self._settings.pool_max_size,
            max_inactive_connection_lifetime=self._settings.max_inactive_connection_lifetime_s,
        )
        self._maintainer = asyncio.create_task(self._maintain(), name="notes-maintainer")

    async def close(self) -> None:
        """Stop the background task and close the pool, bounded so shutdown never hangs."""
        if self._maintainer is not None:
            self._maintainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintainer
            self._maintainer = None
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=self._settings.command_timeout_s)
            except Exception:
                pool.terminate()
            logger.info("database pool closed")

    async def _connect(self, *args: Any, **kwargs: Any) -> Any:
        """Pool connect hook: try each host in order, each within its own timeout."""
        failures: list[tuple[str, Exception]] = []
        hosts = self._hosts
        for index in connect_order(len(hosts), self._preferred):
            dsn = hosts[index]
            try:
                conn = await asyncpg.connect(
                    dsn,
                    timeout=self._connect_timeout_s,
                    command_timeout=self._settings.command_timeout_s,
                    server_settings=self._server_settings,
                    statement_cache_size=self._settings.statement_cache_size,
                    connection_class=kwargs.get("connection_class", asyncpg.Connection),
                    record_class=kwargs.get("record_class", asyncpg.Record),
                )
            except asyncpg.exceptions.ClientConfigurationError:
                raise
            except Exception as exc:
                failures.append((host_of(dsn), exc))
            else:
                if hosts is self._hosts:
                    self._preferred = index
                    self._last_host = host_of(dsn)
                return conn
        if len(failures) == 1:
            raise failures[0][1]
        raise AllHostsFailed(failures)

    async def _run(self, op: Callable[[Any], Awaitable[T]]) -> T:
        """Run `op` on a pooled connection; map every failure to a NotesError."""
        pool = self._pool
        if pool is None:
            raise DatabaseUnavailable("database unavailable: the server is not started")
        try:
            self.pool_waiting += 1
            waiting_since = time.perf_counter()
            try:
                conn = await pool.acquire(timeout=self._settings.acquire_timeout_s)
            finally:
                self.pool_waiting -= 1
                self.pool_wait_s_total += time.perf_counter() - waiting_since
            try:
                await self._ensure_schema(conn)
                result = await op(conn)
            except Exception as exc:
                if is_connection_error(exc):
                    conn.terminate()
                raise
            finally:
                await pool.release(conn)
        except Exception as exc:
            if is_connection_error(exc):
                await self._on_connection_failure(exc)
                raise DatabaseUnavailable(f"database unavailable: {_describe(exc)}") from exc
            if isinstance(exc, asyncpg.exceptions.UndefinedTableError):
                self._schema_ready = False
            elif not isinstance(exc, asyncpg.exceptions.PostgresError | ValueError):
                raise
            self._mark_ok()
            raise DatabaseError(f"database error: {_describe(exc)}") from exc
        self._mark_ok()
        return result

    async def _on_connection_failure(self, exc: BaseException) -> None:
        """Drop every pooled connection: the others likely reach the same dead node."""
        if self._pool is not None:
            await self._pool.expire_connections()
        if self._state != "unreachable":
            logger.warning("database unreachable: %s", _describe(exc))
        self._state = "unreachable"

    def _mark_ok(self) -> None:
        if self._state == "unreachable":
            logger.warning("database reachable again")
        self._state = "ok"

    async def _ensure_schema(self, conn: Any) -> None:
        """Create the table on this connection's node unless that is already done."""
        if self._schema_ready:
            return
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
            await conn.execute(SCHEMA_SQL)
        self._schema_ready = True
        logger.info("notes schema ready")

    async def _maintain(self) -> None:
        """Probe the database periodically, retrying with backoff while it fails.

        The first successful probe creates the schema (so does the first
        successful tool call, whichever comes first). The probe keeps /healthz
        truthful when no tool is called, and it finds (and drops) dead pooled
        connections before a client does.
        """
        delay = 0.25
        while True:
            try:
                await self._run(lambda conn: conn.fetchval("SELECT 1"))
                delay = 0.25
                await asyncio.sleep(self._settings.probe_interval_s)
            except NotesError as exc:
                logger.info("database check failed: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._settings.retry_max_s)

    async def create_note(
        self,
        note_id: str,
        title: str,
        body: str,
        checksum: str | None = None,
        parent_id: str | None = None,
    ) -> CreateResult:
        """Insert a note unless its id exists; `created` says which happened.

        A parent that does not exist is the caller's error (NoteNotFound). The
        check and the insert are one statement, so no round trip separates them.
        """

        async def insert(conn: Any) -> Any:
            return await conn.fetchrow(CREATE_NOTE_SQL, note_id, title, body, checksum, parent_id)

        row = await self._run(insert)
        if not row["parent_found"]:
            raise NoteNotFound(f"parent note not found: {parent_id!r}")
        return CreateResult(id=note_id, created=bool(row["created"]))

    async def get_note(self, note_id: str) -> Note:
        """One note by id, or NoteNotFound."""

        async def select(conn: Any) -> Any:
            return await conn.fetchrow(
                "SELECT id, title, body, created_at, checksum, parent_id FROM notes WHERE id = $1",
                note_id,
            )

        row = await self._run(select)
        if row is None:
            raise NoteNotFound(f"note not found: {note_id!r}")
        return _note(row)

    async def search_notes(self, query: str, limit: int) -> SearchResult:
        """Notes whose title contains `query` (case-insensitive), newest first."""
        capped = clamp_limit(limit)

        async def select(conn: Any) -> Sequence[Any]:
            rows: Sequence[Any] = await conn.fetch(
                "SELECT id, title, body, created_at, checksum, parent_id FROM notes "
                "WHERE title ILIKE $1 ESCAPE '\\' ORDER BY created_at DESC, id LIMIT $2",
                like_pattern(query),
                capped,
            )
            return rows

        rows = await self._run(select)
        return SearchResult(query=query, limit=capped, notes=[_note(r) for r in rows])

    async def notes_report(self) -> Report:
        """Aggregate every note (full scan, sort, digest) after holding the connection 50 ms."""

        async def aggregate(conn: Any) -> Any:
            async with conn.transaction(readonly=True):
                await conn.execute(f"SELECT pg_sleep({REPORT_PAUSE_S})")
                return await conn.fetchrow(
                    "SELECT count(*) AS notes,"
                    " coalesce(sum(octet_length(body)), 0) AS body_bytes,"
                    " count(DISTINCT title) AS distinct_titles,"
                    " max(created_at) AS newest,"
                    " md5(coalesce(string_agg(id || ':' || md5(title || body), ','"
                    " ORDER BY id), '')) AS digest"
                    " FROM notes"
                )

        row = await self._run(aggregate)
        return Report(
            notes=int(row["notes"]),
            body_bytes=int(row["body_bytes"]),
            distinct_titles=int(row["distinct_titles"]),
            newest=_iso(row["newest"]),
            digest=str(row["digest"]),
        )

    async def compact_notes(
        self, update_fraction: float, delete_fraction: float, invariant_fraction: float, seed: int
    ) -> CompactResult:
        """The corrupt-state release's maintenance tool, with its bug: it damages rows.

        In one transaction, of every note except write-garbage's phantoms, taken
        in a fixed order per seed (`faults.damage_order`), it rewrites the body
        of `update_fraction` (checksum kept: the checksum invariant breaks),
        deletes `delete_fraction` (children keep their parent_id: the parent
        invariant breaks) and blanks the title of `invariant_fraction`, past the
        trigger (session_replication_role = replica), recomputing their
        checksum so that they break the title rule only. The sets are disjoint;
        the ids returned are the rows each statement changed.
        """
        fractions = (update_fraction, delete_fraction, invariant_fraction)

        async def compact(conn: Any) -> CompactResult:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", COMPACT_LOCK_KEY)
                role = await conn.fetchval("SELECT current_user")
                try:
                    await conn.execute("SET LOCAL session_replication_role = replica")
                except asyncpg.exceptions.InsufficientPrivilegeError as exc:
                    raise PermissionMissing(GRANT_HINT.format(role=role)) from exc
                ids = [row["id"] for row in await conn.fetch("SELECT id FROM notes")]
                candidates = (i for i in ids if not i.startswith(PHANTOM_ID_PREFIX))
                plan = plan_damage(damage_order(candidates, seed), fractions)
                updated = await conn.fetch(
                    "UPDATE notes SET body = body || $2 WHERE id = ANY($1::text[]) RETURNING id",
                    plan.update,
                    COMPACTED_SUFFIX,
                )
                deleted = await conn.fetch(
                    "DELETE FROM notes WHERE id = ANY($1::text[]) RETURNING id", plan.delete
                )
                blanked = await conn.fetch(
                    "UPDATE notes SET title = '', checksum = CASE WHEN checksum IS NOT NULL"
                    " THEN encode(sha256(convert_to(E'\\n' || body, 'UTF8')), 'hex') END"
                    " WHERE id = ANY($1::text[]) RETURNING id",
                    plan.break_invariant,
                )
            return CompactResult(
                updated=sorted(row["id"] for row in updated),
                deleted=sorted(row["id"] for row in deleted),
                invariant_broken=sorted(row["id"] for row in blanked),
                rows_before=len(ids),
            )

        return await self._run(compact)
