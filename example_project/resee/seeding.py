"""Deterministic demo data for Resee, written fast.

:func:`seed` generates users, categories, contents, their review schedules and a review
history from a seed: the same seed, sizes and day give the same rows. Rows are generated as
a stream and written with ``COPY ... FROM STDIN`` on PostgreSQL (psycopg 3), or with
``bulk_create`` in batches elsewhere, so the default size (1M reviews) stays well under a
minute.

What the data looks like:

- Users ``user0001``, ``user0002``... all with the password :data:`DEMO_PASSWORD` (hashed
  once per run), joined 91 to 400 days ago. Activity is skewed (log-normal weights): a few
  users own many contents and do many reviews, as in production.
- Each user writes mostly in a few favourite categories; popular categories get more.
- The history covers the 90 days before today (none today, so that every timestamp is in
  the past whatever the time of day). Each user is active on runs of consecutive days (a
  two-state Markov chain), so streaks exist; about 80% of reviews are remembered.
- Each schedule is the ladder of :mod:`review.ladder` replayed over its content's history,
  so next review dates are spread and most users have reviews due today.
"""

from __future__ import annotations

import bisect
import datetime
import random
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from itertools import islice
from typing import Any, Final, Protocol

from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import User
from django.core.management.color import no_style
from django.db import connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Max
from django.utils import timezone
from django.utils.text import slugify

from content.models import Category, Content
from review import ladder
from review.models import CompletionKey, ReviewHistory, ReviewSchedule

DEMO_PASSWORD: Final = "demo"
DEMO_USERNAME_REGEX: Final = r"^user[0-9]{4,}$"
HISTORY_DAYS: Final = 90
BULK_BATCH_SIZE: Final = 2000

_DAY_SECONDS: Final = 24 * 60 * 60
_DEMO_SALT: Final = "reseedemodataset"
_INACTIVE_SCHEDULE_SHARE: Final = 0.03

CATEGORY_NAMES: Final = (
    "Python",
    "Django",
    "PostgreSQL",
    "Redis",
    "Algorithms",
    "Networking",
    "Linux",
    "Statistics",
    "Linear Algebra",
    "Spanish",
    "Japanese",
    "World History",
    "Biology",
    "Chemistry",
    "Physics",
    "Music Theory",
    "Economics",
    "Philosophy",
    "Geography",
    "Anatomy",
)
_TITLE_VERBS: Final = (
    "Understanding",
    "Remembering",
    "Comparing",
    "Applying",
    "Explaining",
    "Revisiting",
    "Deriving",
    "Summarising",
)
_ADJECTIVES: Final = (
    "basic",
    "advanced",
    "common",
    "subtle",
    "hidden",
    "essential",
    "classic",
    "modern",
    "tricky",
    "formal",
    "practical",
    "historical",
)
_NOUNS: Final = (
    "concepts",
    "rules",
    "exceptions",
    "patterns",
    "definitions",
    "examples",
    "proofs",
    "terms",
    "structures",
    "methods",
    "mistakes",
    "properties",
    "cases",
    "models",
    "principles",
)
_WORDS: Final = (
    *_ADJECTIVES,
    *_NOUNS,
    "the",
    "a",
    "of",
    "and",
    "in",
    "to",
    "is",
    "with",
    "each",
    "when",
    "which",
    "because",
    "every",
    "between",
    "changes",
    "depends",
    "follows",
    "shows",
    "means",
    "holds",
    "value",
    "order",
    "time",
    "result",
    "system",
    "theory",
    "idea",
    "answer",
    "question",
    "memory",
    "review",
    "step",
)


@dataclass(frozen=True)
class Sizes:
    users: int = 1000
    categories: int = 20
    contents: int = 100_000
    history: int = 1_000_000

    def validate(self) -> None:
        """``ValueError`` if these sizes cannot make a consistent data set."""
        for name in ("users", "categories", "contents", "history"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be zero or more.")
        if self.contents and not (self.users and self.categories):
            raise ValueError("Contents need at least one user and one category.")
        if self.history and not self.contents:
            raise ValueError("A review history needs at least one content.")


@dataclass(frozen=True)
class Counts:
    categories: int
    users: int
    contents: int
    schedules: int
    reviews: int


class DemoDataExists(Exception):
    """There is demo data already; :func:`flush` it first."""


def seed(
    sizes: Sizes, *, seed: int = 42, using: str = "default", copy: bool | None = None
) -> Counts:
    """Write a demo data set in one transaction; :class:`DemoDataExists` if there is one.

    ``copy``: write with ``COPY`` (PostgreSQL only) or with ``bulk_create``; by default
    ``COPY`` where the database is PostgreSQL.
    """
    sizes.validate()
    connection = connections[using]
    if copy is None:
        copy = connection.vendor == "postgresql"
    elif copy and connection.vendor != "postgresql":
        raise ValueError(f"COPY needs PostgreSQL; {using!r} is {connection.vendor}.")
    with transaction.atomic(using=using):
        if has_demo_data(using):
            raise DemoDataExists(
                "The database has demo data already (categories, contents or users named "
                "user0001...); flush it first (seed_demo --flush)."
            )
        generator = _Generator(
            sizes,
            seed=seed,
            today=timezone.localdate(),
            # A fixed salt keeps the data deterministic; the password is public anyway.
            password=make_password(DEMO_PASSWORD, salt=_DEMO_SALT),
            offsets=_IdOffsets.of(using),
        )
        writer: _Writer = _CopyWriter(connection) if copy else _BulkCreateWriter(using)
        with _foreign_keys_validated_at_end(connection) if copy else nullcontext():
            counts = Counts(
                categories=writer.write(Category, _CATEGORY_FIELDS, generator.categories()),
                users=writer.write(User, _USER_FIELDS, generator.users()),
                contents=writer.write(Content, _CONTENT_FIELDS, generator.contents()),
                reviews=writer.write(ReviewHistory, _HISTORY_FIELDS, generator.history()),
                # Last: each schedule replays the ladder over its content's history.
                schedules=writer.write(ReviewSchedule, _SCHEDULE_FIELDS, generator.schedules()),
            )
        _reset_sequences(connection)
    if connection.vendor == "postgresql":
        _analyze(connection)
    return counts


def has_demo_data(using: str = "default") -> bool:
    return (
        Category.objects.using(using).exists()
        or Content.objects.using(using).exists()
        or User.objects.using(using).filter(username__regex=DEMO_USERNAME_REGEX).exists()
    )


def flush(using: str = "default") -> None:
    """Delete every category, content, schedule, review and completion key, and the demo
    users."""
    connection = connections[using]
    flushed = (CompletionKey, ReviewHistory, ReviewSchedule, Content, Category)
    tables = [model._meta.db_table for model in flushed]
    quoted = [connection.ops.quote_name(table) for table in tables]
    with transaction.atomic(using=using), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # TRUNCATE is instant where DELETE would scan a million rows.
            cursor.execute(f"TRUNCATE {', '.join(quoted)}")
        else:
            # In dependency order; the ORM's delete() would load every content first.
            for table in quoted:
                cursor.execute(f"DELETE FROM {table}")
        User.objects.using(using).filter(
            username__regex=DEMO_USERNAME_REGEX, is_staff=False, is_superuser=False
        ).delete()


def username(number: int) -> str:
    return f"user{number:04d}"


# Field names (attnames for foreign keys) in the order the generator yields them.
_CATEGORY_FIELDS: Final = ("id", "name", "slug")
_USER_FIELDS: Final = (
    "id",
    "password",
    "last_login",
    "is_superuser",
    "username",
    "first_name",
    "last_name",
    "email",
    "is_staff",
    "is_active",
    "date_joined",
)
_CONTENT_FIELDS: Final = (
    "id",
    "title",
    "body",
    "author_id",
    "category_id",
    "created_at",
    "updated_at",
)
_HISTORY_FIELDS: Final = ("id", "user_id", "content_id", "result", "reviewed_at")
_SCHEDULE_FIELDS: Final = (
    "id",
    "user_id",
    "content_id",
    "interval_index",
    "next_review_date",
    "is_active",
)
_MODELS: Final[tuple[type[models.Model], ...]] = (
    Category,
    User,
    Content,
    ReviewHistory,
    ReviewSchedule,
)

Row = tuple[Any, ...]


@dataclass(frozen=True)
class _IdOffsets:
    """The highest id in each table: new rows get explicit ids after it."""

    categories: int
    users: int
    contents: int
    history: int
    schedules: int

    @classmethod
    def of(cls, using: str) -> _IdOffsets:
        def max_id(model: type[models.Model]) -> int:
            value = model._default_manager.using(using).aggregate(top=Max("pk"))["top"]
            return int(value or 0)

        return cls(
            categories=max_id(Category),
            users=max_id(User),
            contents=max_id(Content),
            history=max_id(ReviewHistory),
            schedules=max_id(ReviewSchedule),
        )


@dataclass
class _UserProfile:
    id: int
    joined_at: float
    """Seconds since the epoch."""
    weight: float
    skill: float
    favourites: list[int]
    keep_going: float
    """Probability of reviewing on a day after a day with reviews."""
    start_again: float
    """Probability of reviewing on a day after a day without."""
    active_yesterday: bool


class _Generator:
    """Yields the rows of each table; call the methods in the order of :func:`seed`.

    Each kind of row draws from its own random stream, so a change in one (say, longer
    bodies) does not reshuffle the others.
    """

    def __init__(
        self, sizes: Sizes, *, seed: int, today: datetime.date, password: str, offsets: _IdOffsets
    ) -> None:
        self.sizes = sizes
        self.seed = seed
        self.today = today
        self.password = password
        self.offsets = offsets
        self.tz = timezone.get_current_timezone()
        self.first_day = today - datetime.timedelta(days=HISTORY_DAYS)
        self._plan_users_and_categories()
        self._plan_contents()

    def _random(self, stream: str) -> random.Random:
        # A str seed is hashed with SHA-512: the same on every platform and run.
        return random.Random(f"resee-demo:{self.seed}:{stream}")

    def _midnight(self, day: datetime.date) -> datetime.datetime:
        return datetime.datetime.combine(day, datetime.time(), tzinfo=self.tz)

    def _datetime(self, timestamp: float) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(timestamp, tz=self.tz)

    # -- planning: who writes what, and when ------------------------------------------------

    def _plan_users_and_categories(self) -> None:
        rng = self._random("users")
        n_categories = self.sizes.categories
        self.category_ids = [self.offsets.categories + i + 1 for i in range(n_categories)]
        # Zipf-like: the first categories are the popular ones.
        self.category_popularity = [1 / (rank + 1) ** 0.8 for rank in range(n_categories)]
        self.category_difficulty = [rng.uniform(-0.06, 0.06) for _ in range(n_categories)]
        history_starts = self._midnight(self.first_day).timestamp()
        self.profiles: list[_UserProfile] = []
        for i in range(self.sizes.users):
            favourites = (
                sorted(
                    set(
                        rng.choices(
                            range(n_categories),
                            weights=self.category_popularity,
                            k=rng.randint(2, 5),
                        )
                    )
                )
                if n_categories
                else []
            )
            self.profiles.append(
                _UserProfile(
                    id=self.offsets.users + i + 1,
                    joined_at=history_starts - rng.uniform(1, 310) * _DAY_SECONDS,
                    weight=rng.lognormvariate(0, 0.8),
                    skill=rng.uniform(0.68, 0.86),
                    favourites=favourites,
                    keep_going=rng.uniform(0.75, 0.97),
                    start_again=rng.uniform(0.15, 0.5),
                    active_yesterday=rng.random() < 0.75,
                )
            )

    def _plan_contents(self) -> None:
        rng = self._random("contents")
        profiles = self.profiles
        end = self._midnight(self.today).timestamp()
        authors = (
            rng.choices(range(len(profiles)), weights=[p.weight for p in profiles], k=n)
            if (n := self.sizes.contents)
            else []
        )
        has_first: set[int] = set()
        # (created_at, author index, category index); ids follow creation time, as in a
        # table that grew over time.
        planned: list[tuple[float, int, int]] = []
        for author in authors:
            profile = profiles[author]
            if author not in has_first:
                # Each author's first content comes with their account, before the history
                # starts, so every review has a content to review.
                has_first.add(author)
                created = profile.joined_at + rng.uniform(60, 3600)
            else:
                created = rng.uniform(profile.joined_at, end - 1)
            if rng.random() < 0.85:
                category = rng.choice(profile.favourites)
            else:
                category = rng.choices(
                    range(self.sizes.categories), weights=self.category_popularity
                )[0]
            planned.append((created, author, category))
        planned.sort()
        self.planned_contents = planned
        # Per author: their contents' positions in `planned` and creation times, in order.
        self.contents_by_author: dict[int, tuple[list[int], list[float]]] = {}
        for position, (created, author, _) in enumerate(planned):
            positions, times = self.contents_by_author.setdefault(author, ([], []))
            positions.append(position)
            times.append(created)
        # The ladder replayed over the history: per content, its step and last review day.
        self.steps = bytearray(len(planned))
        self.last_review = array("i", bytes(4 * len(planned)))

    def _content_id(self, position: int) -> int:
        return self.offsets.contents + position + 1

    # -- rows --------------------------------------------------------------------------------

    def categories(self) -> Iterator[Row]:
        for i, category_id in enumerate(self.category_ids):
            if i < len(CATEGORY_NAMES):
                name = CATEGORY_NAMES[i]
            else:
                name = f"{CATEGORY_NAMES[i % len(CATEGORY_NAMES)]} {i // len(CATEGORY_NAMES) + 1}"
            yield (category_id, name, slugify(name))

    def users(self) -> Iterator[Row]:
        for number, profile in enumerate(self.profiles, start=1):
            name = username(number)
            yield (
                profile.id,
                self.password,
                None,
                False,
                name,
                "",
                "",
                f"{name}@example.com",
                False,
                True,
                self._datetime(profile.joined_at),
            )

    def contents(self) -> Iterator[Row]:
        rng = self._random("text")
        sentences = [self._sentence(rng) for _ in range(400)]
        names = [row[1] for row in self.categories()]
        for position, (created, author, category) in enumerate(self.planned_contents):
            title = (
                f"{names[category]}: {rng.choice(_TITLE_VERBS)} {rng.choice(_ADJECTIVES)} "
                f"{rng.choice(_NOUNS)} {rng.randint(1, 999)}"
            )
            body = "\n\n".join(
                " ".join(rng.choices(sentences, k=rng.randint(2, 5)))
                for _ in range(rng.randint(1, 3))
            )
            created_at = self._datetime(created)
            edited = rng.random() < 0.2
            updated_at = (
                self._datetime(created + rng.uniform(60, 7 * _DAY_SECONDS))
                if edited
                else created_at
            )
            yield (
                self._content_id(position),
                title,
                body,
                self.profiles[author].id,
                self.category_ids[category],
                created_at,
                min(updated_at, self._midnight(self.today)),
            )

    @staticmethod
    def _sentence(rng: random.Random) -> str:
        words = rng.choices(_WORDS, k=rng.randint(6, 16))
        return " ".join(words).capitalize() + "."

    def history(self) -> Iterator[Row]:
        rng = self._random("history")
        reviews_by_day = self._plan_review_days(rng)
        next_id = self.offsets.history + 1
        for offset in range(HISTORY_DAYS):
            day = self.first_day + datetime.timedelta(days=offset)
            midnight = self._midnight(day).timestamp()
            rows: list[tuple[float, int, int, str]] = []
            for author, count in reviews_by_day.get(day, ()):
                rows.extend(self._session(rng, author, count, day, midnight))
            # Rows are written in time order, as a live table fills: one user's reviews are
            # spread over the table, not side by side.
            rows.sort()
            for at, user_id, content_id, result in rows:
                yield (next_id, user_id, content_id, result, self._datetime(at))
                next_id += 1

    def _plan_review_days(self, rng: random.Random) -> dict[datetime.date, list[tuple[int, int]]]:
        """How many reviews each author does on which day."""
        authors = sorted(self.contents_by_author)
        totals = Counter(
            rng.choices(authors, weights=[self.profiles[a].weight for a in authors], k=n)
            if (n := self.sizes.history)
            else []
        )
        by_day: dict[datetime.date, list[tuple[int, int]]] = {}
        for author in authors:
            if not totals[author]:
                continue
            days = self._active_days(rng, self.profiles[author])
            for day, count in sorted(Counter(rng.choices(days, k=totals[author])).items()):
                by_day.setdefault(day, []).append((author, count))
        return by_day

    def _active_days(self, rng: random.Random, profile: _UserProfile) -> list[datetime.date]:
        """A two-state Markov chain walked back from yesterday: runs of days with reviews."""
        days = []
        active = profile.active_yesterday
        for offset in range(1, HISTORY_DAYS + 1):
            if active:
                days.append(self.today - datetime.timedelta(days=offset))
            active = rng.random() < (profile.keep_going if active else profile.start_again)
        return days or [self.today - datetime.timedelta(days=1)]

    def _session(
        self, rng: random.Random, author: int, count: int, day: datetime.date, midnight: float
    ) -> Iterator[tuple[float, int, int, str]]:
        """One sitting of ``count`` reviews, seconds apart, of contents that exist by then."""
        profile = self.profiles[author]
        positions, created_times = self.contents_by_author[author]
        at = midnight + rng.uniform(6, 22) * 3600
        day_end = midnight + _DAY_SECONDS - 1
        ordinal = day.toordinal()
        for _ in range(count):
            at = min(at + rng.uniform(4, 45), day_end)
            available = max(1, bisect.bisect_right(created_times, at))
            position = positions[rng.randrange(available)]
            category = self.planned_contents[position][2]
            step = self.steps[position]
            chance = profile.skill - self.category_difficulty[category] + 0.015 * step
            remembered = rng.random() < chance
            self.steps[position] = ladder.next_index(step, remembered=remembered)
            self.last_review[position] = ordinal
            result = ReviewHistory.Result.REMEMBERED if remembered else ReviewHistory.Result.FORGOT
            yield (at, profile.id, self._content_id(position), result.value)

    def schedules(self) -> Iterator[Row]:
        rng = self._random("schedules")
        for position, (created, author, _) in enumerate(self.planned_contents):
            step = self.steps[position]
            last_review = self.last_review[position]
            if last_review:
                due = datetime.date.fromordinal(last_review) + datetime.timedelta(
                    days=ladder.interval_days(step)
                )
            else:
                due = ladder.first_review_date(self._datetime(created).date())
            yield (
                self.offsets.schedules + position + 1,
                self.profiles[author].id,
                self._content_id(position),
                step,
                due,
                rng.random() >= _INACTIVE_SCHEDULE_SHARE,
            )


class _Writer(Protocol):
    def write(
        self, model: type[models.Model], fields: Sequence[str], rows: Iterable[Row]
    ) -> int: ...


class _CopyWriter:
    """PostgreSQL: stream the rows with ``COPY ... FROM STDIN`` (psycopg 3)."""

    def __init__(self, connection: BaseDatabaseWrapper) -> None:
        self.connection = connection

    def write(self, model: type[models.Model], fields: Sequence[str], rows: Iterable[Row]) -> int:
        quote = self.connection.ops.quote_name
        columns = ", ".join(quote(_column(model, name)) for name in fields)
        sql = f"COPY {quote(model._meta.db_table)} ({columns}) FROM STDIN"
        self.connection.ensure_connection()
        count = 0
        # The raw psycopg connection, in the transaction Django opened on it.
        with self.connection.connection.cursor() as cursor, cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
        return count


class _BulkCreateWriter:
    """Any other database: ``bulk_create`` in batches.

    The same rows as :class:`_CopyWriter`, except ``auto_now`` fields (``Content.updated_at``),
    which ``bulk_create`` sets to the time of the seed.
    """

    def __init__(self, using: str) -> None:
        self.using = using

    def write(self, model: type[models.Model], fields: Sequence[str], rows: Iterable[Row]) -> int:
        count = 0
        iterator = iter(rows)
        while batch := list(islice(iterator, BULK_BATCH_SIZE)):
            model._default_manager.using(self.using).bulk_create(
                [model(**dict(zip(fields, row, strict=True))) for row in batch]
            )
            count += len(batch)
        return count


def _column(model: type[models.Model], name: str) -> str:
    field = model._meta.get_field(name)
    if not isinstance(field, models.Field) or field.column is None:
        raise TypeError(f"{model.__name__}.{name} is not a concrete field.")
    return field.column


@contextmanager
def _foreign_keys_validated_at_end(connection: BaseDatabaseWrapper) -> Iterator[None]:
    """Drop the foreign keys of the seeded tables, and add them back (validating every row
    in one join per key) when the block ends, in the same transaction.

    Django's keys are DEFERRABLE INITIALLY DEFERRED: kept, each of the ~2M rows would queue
    a trigger that looks its referenced row up at commit, which is most of the time of a
    default seed. This is what the PostgreSQL manual advises for bulk loads
    (https://www.postgresql.org/docs/current/populate.html#POPULATE-RM-FKEYS); DDL is
    transactional in PostgreSQL, so a failed seed leaves the keys as they were.
    """
    quote = connection.ops.quote_name
    tables = [model._meta.db_table for model in _MODELS]
    # PostgreSQL refuses to alter a table with checks still queued in this transaction (say,
    # from a flush in the same transaction): run them now.
    connection.check_constraints()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
            " FROM pg_constraint WHERE contype = 'f' AND conrelid = ANY(%s::regclass[])"
            " ORDER BY 1, 2",
            [tables],
        )
        keys: list[tuple[str, str, str]] = cursor.fetchall()
        for table, name, _ in keys:
            cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT {quote(name)}")
    yield
    with connection.cursor() as cursor:
        for table, name, definition in keys:
            cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {quote(name)} {definition}")


def _reset_sequences(connection: BaseDatabaseWrapper) -> None:
    """Rows were written with explicit ids: move the id sequences past them."""
    statements = connection.ops.sequence_reset_sql(no_style(), list(_MODELS))
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def _analyze(connection: BaseDatabaseWrapper) -> None:
    """Fresh planner statistics, so the first queries on the new data are planned as later
    ones will be."""
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for model in _MODELS:
            cursor.execute(f"ANALYZE {quote(model._meta.db_table)}")
