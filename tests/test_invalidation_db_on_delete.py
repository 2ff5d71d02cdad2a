"""invalidate_on and Django 6.1's database-level on_delete (DB_CASCADE, DB_SET_NULL): the rows
PostgreSQL deletes or changes send no signal. The system check resee_perf.W045 names such a
foreign key; ``db_on_delete=True`` invalidates the rows from the target's pre_delete.

Against the real PostgreSQL (which does the cascade) and Redis."""

from __future__ import annotations

from collections.abc import Iterator

import django
import pytest
from django.core.cache import caches
from django.db import transaction

from resee_perf import _tag_invalidation, cache_aside, invalidate_on
from resee_perf.checks import check_database_on_delete
from resee_perf.testing import isolated_registrations

if django.VERSION < (6, 1):
    pytest.skip("database-level on_delete is new in Django 6.1", allow_module_level=True)

from tests.db_on_delete.models import Book, Note, Shelf

transactional = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _isolate() -> Iterator[None]:
    """Registrations made by a test do not outlive it; our own Redis database is flushed."""
    caches["default"].clear()
    with isolated_registrations():
        yield
    caches["default"].clear()


def book_tags(book: Book) -> list[str]:
    return [f"book:{book.pk}", f"shelf:{book.shelf_id}:books"]


def note_tags(note: Note) -> list[str]:
    return [f"note:{note.pk}", f"shelf:{note.shelf_id}:notes"]


def test_a_database_cascade_is_named_by_the_check() -> None:
    assert check_database_on_delete() == []
    invalidate_on(Book, book_tags)
    invalidate_on(Note, note_tags)

    messages = {m.obj: m for m in check_database_on_delete()}

    assert set(messages) == {Book._meta.get_field("shelf"), Note._meta.get_field("shelf")}
    book = messages[Book._meta.get_field("shelf")]
    assert book.id == "resee_perf.W045"
    assert "Book.shelf (on_delete=DB_CASCADE)" in book.msg
    assert "deleting a db_on_delete.Shelf deletes its db_on_delete.Book rows" in book.msg
    assert "db_on_delete=True" in (book.hint or "")
    note = messages[Note._meta.get_field("shelf")]
    assert "on_delete=DB_SET_NULL" in note.msg
    assert "updates its db_on_delete.Note rows" in note.msg


def test_covered_relations_pass_the_check() -> None:
    invalidate_on(Book, book_tags, db_on_delete=True)
    invalidate_on(Note, note_tags, db_on_delete=True)

    assert check_database_on_delete() == []


@transactional
@pytest.mark.parametrize("covered", [True, False], ids=["db_on_delete", "uncovered"])
def test_deleting_the_parent_invalidates_the_rows_the_database_cascades(covered: bool) -> None:
    invalidate_on(Book, book_tags, db_on_delete=covered)
    shelf = Shelf.objects.create(name="s")
    Book.objects.create(shelf=shelf, title="a")
    Book.objects.create(shelf=shelf, title="b")

    @cache_aside("shelf-titles:{shelf_id}", ttl=300, tags=["shelf:{shelf_id}:books"])
    def titles(shelf_id: int) -> list[str]:
        return sorted(Book.objects.filter(shelf_id=shelf_id).values_list("title", flat=True))

    shelf_id = shelf.pk
    assert titles(shelf_id) == ["a", "b"]

    shelf.delete()

    # PostgreSQL deleted the books (the point of DB_CASCADE): no signal reached invalidate_on.
    assert not Book.objects.exists()
    # Without the cover the entry outlives its rows: what W045 warns about.
    assert titles(shelf_id) == ([] if covered else ["a", "b"])


@transactional
def test_a_queryset_delete_of_parents_invalidates_each_parents_rows() -> None:
    invalidate_on(Book, book_tags, db_on_delete=True)
    shelves = [Shelf.objects.create(name=str(i)) for i in range(2)]
    for shelf in shelves:
        Book.objects.create(shelf=shelf, title=f"on {shelf.name}")
    before = _tag_invalidation.read_generations(
        caches["default"], [f"shelf:{s.pk}:books" for s in shelves]
    )

    Shelf.objects.filter(pk__in=[s.pk for s in shelves]).delete()

    after = _tag_invalidation.read_generations(caches["default"], list(before))
    assert all(after[tag] != before[tag] for tag in before)


@transactional
def test_a_rolled_back_parent_delete_invalidates_nothing() -> None:
    invalidate_on(Book, book_tags, db_on_delete=True)
    shelf = Shelf.objects.create(name="s")
    Book.objects.create(shelf=shelf, title="a")
    tag = f"shelf:{shelf.pk}:books"
    before = _tag_invalidation.read_generations(caches["default"], [tag])

    def delete_then_fail() -> None:
        with transaction.atomic():
            shelf.delete()
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        delete_then_fail()

    assert Book.objects.count() == 1
    assert _tag_invalidation.read_generations(caches["default"], [tag]) == before


@transactional
def test_a_database_set_null_invalidates_the_old_and_the_new_tags() -> None:
    invalidate_on(Note, note_tags, db_on_delete=True)
    shelf = Shelf.objects.create(name="s")
    note = Note.objects.create(shelf=shelf, text="n")
    tags = [f"note:{note.pk}", f"shelf:{shelf.pk}:notes", "shelf:None:notes"]
    before = _tag_invalidation.read_generations(caches["default"], tags)

    shelf.delete()

    note.refresh_from_db()
    assert note.shelf_id is None
    after = _tag_invalidation.read_generations(caches["default"], tags)
    assert {tag for tag in tags if after[tag] != before[tag]} == set(tags)
